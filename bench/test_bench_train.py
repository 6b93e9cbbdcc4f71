"""Training and prediction speed: fastbp against scikit-learn, the numpy loop, PyTorch, JAX and its BLAS work.

Each case is one run of the harness's protocol (:mod:`fastbp.bench.cases`),
shared by the tests that read it; the targets are :data:`fastbp.bench.targets.TARGETS`.
"""

import pytest

from fastbp.bench import report
from fastbp.bench.cases import partial_fit_case, predict_case, training_case
from fastbp.bench.peers import BlasOnly, FastbpFit, NumpyLoop, digits_problem, mnist_problem
from fastbp.bench.protocol import choose_threads, quiet_warnings
from fastbp.bench.run import DIGITS_PEERS, Size

SIZE = Size()  # the full benchmark's rounds and sizes: the same measurement as README's Results


@pytest.fixture(scope="module")
def digits():
    comp = training_case(digits_problem(), DIGITS_PEERS, SIZE.rounds)
    print("\n" + report.training_section(comp))
    return {"digits": comp}


@pytest.mark.parametrize("key", ["digits/scikit-learn", "digits/numpy", "digits/jax", "digits/torch",
                                 "digits/accuracy"])
def test_digits_batch_32(digits, target, key):
    target(digits, key)


def test_mnist_sized(target):
    problem = mnist_problem(SIZE.mnist_rows, SIZE.mnist_epochs)
    comp = training_case(problem, [FastbpFit, BlasOnly, NumpyLoop], SIZE.mnist_rounds)
    print("\n" + report.training_section(comp))
    target({"mnist": comp}, "mnist/blas")
    target({"mnist": comp}, "mnist/numpy")


def test_partial_fit_epoch(target):
    comp = partial_fit_case(digits_problem(), SIZE.rounds)
    print("\n" + report.training_section(comp))
    target({"partial_fit": comp}, "partial_fit")


@pytest.fixture(scope="module")
def predict():
    return {"predict": predict_case(digits_problem(), SIZE.rounds)}


@pytest.mark.parametrize("key", ["predict", "predict_proba"])
def test_one_row(predict, target, key):
    target(predict, key)


@pytest.mark.parametrize("peer_class", DIGITS_PEERS, ids=[p.name for p in DIGITS_PEERS])
def test_digits_fit(benchmark, peer_class):
    """pytest-benchmark: 20 digits epochs from fresh weights, each peer at its best thread count."""
    pytest.importorskip({"PyTorch eager": "torch", "JAX jit(lax.scan)": "jax"}.get(peer_class.name, "numpy"))
    benchmark.group = "train: digits, 20 epochs at batch 32"
    peer = peer_class(digits_problem())
    with quiet_warnings():
        peer.call(1, epochs=1).run()  # compilation and first-call costs stay out of the timing
        call = peer.call(choose_threads(lambda n: peer.call(n, epochs=1)).threads)
        with call.context():
            benchmark(call.run)

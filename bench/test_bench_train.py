"""Training epochs: fastbp against scikit-learn, the plain-numpy loop and the BLAS work itself.

Epoch times are ratios measured in this one process, peers interleaved one
epoch per round, medians (:func:`fastbp.benchmark.bench_training`).  Every
peer trains the same number of epochs with the same settings (SGD lr 0.01,
momentum 0.9 without Nesterov, alpha 0, float32), so accuracies compare.
"""

import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from sklearn.neural_network import MLPClassifier as SklearnMLP

from fastbp import MLPClassifier
from fastbp.benchmark import (BLAS, EST, FAST, NUMPY, SKLEARN, Estimator, FastbpTrainer, NumpyLoop, bench_training,
                              digits_case, mnist_case, ratio)

MNIST_ROWS = 20000  # of 60000, to keep the suite short; the ratios do not depend on the row count


def _report(res):
    t = res["timings"]
    print(f"\n{res['name']}, {res['epochs']} epochs (time ratios: medians of per-round ratios):")
    for peer in t:
        acc = res["accuracy"].get(peer)
        print(f"  {peer:40s} {ratio(t, peer, FAST):6.2f}x fastbp's epoch time, {ratio(t, peer, BLAS):5.2f}x BLAS-only"
              + ("" if acc is None else f", train accuracy {acc:.4f}"))


@pytest.fixture(scope="module")
def digits():
    return digits_case()


@pytest.mark.parametrize("peer", [FAST, EST, NUMPY, SKLEARN])
def test_digits_epoch(benchmark, digits, peer):
    """pytest-benchmark: one digits epoch of each peer, side by side in one group."""
    _, X, y, hidden, batch = digits
    benchmark.group = "train: digits epoch"
    if peer == FAST:
        trainer = FastbpTrainer(X, y, hidden, batch)
    elif peer == NUMPY:
        start = FastbpTrainer(X, y, hidden, batch).net
        trainer = NumpyLoop(X, y, start.coefs, start.intercepts, batch)
    else:
        trainer = Estimator(MLPClassifier if peer == EST else SklearnMLP, X, y, hidden, batch)
    trainer.epoch()  # compilation / first-call costs stay out of the timing
    benchmark(trainer.epoch)


def test_digits_against_sklearn_and_numpy(digits):
    # 1 warm-up + 19 = 20 epochs; no pause between peers: these products are too small to wake BLAS threads
    res = bench_training(digits, rounds=19, peers={FAST, EST, NUMPY, SKLEARN, BLAS}, settle=0.0)
    _report(res)
    t, acc = res["timings"], res["accuracy"]
    assert ratio(t, SKLEARN, FAST) >= 10, f"fastbp only {ratio(t, SKLEARN, FAST):.2f}x faster than scikit-learn"
    assert ratio(t, NUMPY, FAST) >= 3, f"fastbp only {ratio(t, NUMPY, FAST):.2f}x faster than the numpy loop"
    assert abs(acc[FAST] - acc[SKLEARN]) <= 0.01, acc
    assert abs(acc[FAST] - acc[NUMPY]) <= 0.01, acc


def test_mnist_sized_against_blas_and_numpy():
    res = bench_training(mnist_case(MNIST_ROWS), rounds=7, peers={FAST, NUMPY, BLAS})
    _report(res)
    t = res["timings"]
    assert ratio(t, FAST, BLAS) <= 1.35, f"fastbp's epoch is {ratio(t, FAST, BLAS):.2f}x its BLAS-only time"
    assert ratio(t, NUMPY, FAST) >= 1.2, f"fastbp only {ratio(t, NUMPY, FAST):.2f}x faster than the numpy loop"


def _peak_bytes(peer):
    peer.epoch()  # buffers allocated, kernels compiled
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    peer.epoch()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize("batch", [32, 200], ids=["one-chunk", "two-chunks"])
def test_no_allocation_per_step(digits, batch):
    """The traced peak of one epoch does not grow with its number of steps (N rows vs 4N)."""
    _, X, y, hidden, _ = digits
    small = _peak_bytes(FastbpTrainer(X, y, hidden, batch))
    large = _peak_bytes(FastbpTrainer(np.tile(X, (4, 1)), np.tile(y, 4), hidden, batch))
    print(f"\ntracemalloc peak of one epoch at batch {batch}: {small} B at {len(X) // batch + 1} steps, "
          f"{large} B at {4 * len(X) // batch + 1} steps")
    assert abs(large - small) <= 4096 and large <= 64 * 1024, (small, large)


_NRT_COUNT = r"""
import json, sys, numpy as np
from numba.core.runtime import rtsys
from fastbp.benchmark import FastbpTrainer, digits_case
_, X, y, hidden, _ = digits_case()
batch, counts = int(sys.argv[1]), []
for reps in (1, 4):
    peer = FastbpTrainer(np.tile(X, (reps, 1)), np.tile(y, reps), hidden, batch)
    peer.epoch()
    before = rtsys.get_allocation_stats().alloc
    peer.epoch()
    counts.append(rtsys.get_allocation_stats().alloc - before)
print(json.dumps(counts))
"""


@pytest.mark.parametrize("batch", [32, 200], ids=["one-chunk", "two-chunks"])
def test_no_nopython_allocation_per_step(batch):
    """Numba's own allocation counter (NUMBA_NRT_STATS) gives the same count for an epoch of 4x the steps."""
    env = {**os.environ, "NUMBA_NRT_STATS": "1"}
    out = subprocess.run([sys.executable, "-c", _NRT_COUNT, str(batch)], env=env, check=True, capture_output=True,
                         text=True)
    small, large = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nnopython allocations per epoch at batch {batch}: {small} and {large} at 4x the steps")
    assert small == large, (small, large)

"""The harness's own yardsticks compute what they claim (so that a ratio to them means something)."""

import numpy as np
import pytest

from fastbp.bench.peers import BlasOnly, NumpyLoop, Problem, gemm
from fastbp.bench.protocol import Call, alternate, ratio


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["AB", "AtB", "ABt"])
def test_gemm_is_a_product_in_place(dtype, layout):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((7, 5) if layout == "AtB" else (5, 7)).astype(dtype)
    B = rng.standard_normal((3, 7) if layout == "ABt" else (7, 3)).astype(dtype)
    A, B = (A.T if layout == "AtB" else A), (B.T if layout == "ABt" else B)
    out = np.full((5, 3), np.nan, dtype)
    gemm(A, B, out)
    np.testing.assert_allclose(out, A @ B, rtol=1e-5)


def _toy(rows=64):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((rows, 4)).astype(np.float32)
    return Problem("toy", X, (X[:, 0] > 0).astype(np.int64), (8,), 16, 3)


def test_numpy_loop_learns_and_blas_only_runs():
    problem = _toy()
    loop = NumpyLoop(problem)
    loop.train(30, 1)
    assert loop.accuracy() > 0.9
    BlasOnly(problem).train(1, 1)
    assert problem.epoch_flops() == 2 * 64 * (2 * (4 * 8 + 8 * 2) + 8 * 2)


def test_alternate_times_every_round_per_unit():
    counts = {"a": 0, "b": 0}
    calls = {name: Call(lambda name=name: counts.__setitem__(name, counts[name] + 1), units=2) for name in counts}
    times = alternate(calls, rounds=4)
    assert counts == {"a": 4, "b": 4} and all(len(t) == 4 for t in times.values())
    assert ratio({"a": [2.0, 4.0, 6.0], "b": [1.0, 1.0, 1.0]}, "a", "b").median == 4.0

"""Kernels against their numpy twins (pytest-benchmark), and the speed-ups fastbp promises.

The pytest-benchmark tests put each kernel beside its twin in one group per
(op, shape, dtype).  ``test_required_speedups`` measures the ratios that must
hold, kernel and twin interleaved in rounds in this one process (medians),
with :func:`fastbp.benchmark.interleaved`.
"""

import time

import pytest

from fastbp.benchmark import KERNEL_SHAPES, SETTLE, interleaved, kernel_pairs, ratio

# (op, shape, dtype, minimum speed-up of the kernel over its twin)
REQUIRED = [("forward", "small", "float32", 1.8), ("forward", "large", "float32", 1.05),
            ("backward", "small", "float32", 1.3)]


@pytest.mark.parametrize("impl", ["kernel", "reference"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", list(KERNEL_SHAPES))
@pytest.mark.parametrize("op", ["forward", "backward"])
def test_kernel_pair(benchmark, op, shape, dtype, impl):
    n, n_in, n_out = KERNEL_SHAPES[shape]
    benchmark.group = f"{op} {shape} {n}x{n_in}->{n_out} {dtype}"
    fn = kernel_pairs(n, n_in, n_out, dtype)[op, impl]
    fn()  # compilation / cache load stays out of the timing
    time.sleep(SETTLE)  # the other BLAS library's threads (kernel: scipy's, twin: numpy's) stop spinning
    benchmark(fn)


def test_required_speedups():
    measured = {}
    for op, shape, dtype, _ in REQUIRED:
        pairs = kernel_pairs(*KERNEL_SHAPES[shape], dtype)
        t = interleaved({impl: pairs[op, impl] for impl in ("kernel", "reference")}, rounds=11, min_round=0.05)
        measured[op, shape, dtype] = ratio(t, "reference", "kernel")
    print("\nkernel speed-ups over the numpy twin (median of per-round ratios, 11 interleaved rounds):")
    for (op, shape, dtype, need) in REQUIRED:
        print(f"  {op:8s} {shape:6s} {KERNEL_SHAPES[shape]} {dtype}: {measured[op, shape, dtype]:.2f}x (need {need}x)")
    failed = {key: round(measured[key[:3]], 2) for key in REQUIRED if measured[key[:3]] < key[3]}
    assert not failed, f"speed-ups below the requirement (op, shape, dtype, need): {failed}"

"""Kernels against their numpy twins: pytest-benchmark groups, and the speed-ups fastbp promises."""

import pytest

from fastbp.bench.cases import KERNEL_SHAPES, kernel_case, kernel_pairs
from fastbp.bench.targets import TARGETS


@pytest.mark.parametrize("impl", ["kernel", "reference"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", list(KERNEL_SHAPES))
@pytest.mark.parametrize("op", ["forward", "backward"])
def test_kernel_pair(benchmark, op, shape, dtype, impl):
    n, n_in, n_out = KERNEL_SHAPES[shape]
    benchmark.group = f"{op} {shape} {n}x{n_in}->{n_out} {dtype}"
    fn = kernel_pairs(n, n_in, n_out, dtype)[op, impl]
    fn()  # compilation / cache load stays out of the timing
    benchmark(fn)


@pytest.mark.parametrize("key", [k for k in TARGETS if k.startswith("kernel/")])
def test_kernel_speedup(target, key):
    _, shape, dtype = key.split("/")[1].split()
    target({"kernels": {f"{shape} {dtype}": kernel_case(shape, dtype, rounds=11)}}, key)

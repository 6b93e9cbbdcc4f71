"""Compile time as a user meets it: fresh processes, an empty Numba cache, then a filled one, then a warm-up."""

import pytest

from fastbp.bench import report
from fastbp.bench.compile_time import compile_costs


@pytest.fixture(scope="module")
def costs():
    result = compile_costs()
    print("\n" + report.compile_section(result))
    return {"compile": result}


@pytest.mark.parametrize("key", ["compile/cold fit", "compile/cold train", "compile/second train",
                                 "compile/after warmup"])
def test_compile(costs, target, key):
    target(costs, key)

"""Performance suite, run apart from the unit tests: ``python -m pytest bench -q``.

The targets come from :mod:`fastbp.bench.targets`, measured by the harness's
own protocol (peers alternating in this one process, nothing between rounds).
The summary says what they were measured under: the BLAS libraries and the
OPENBLAS_* variables, and the machine's load, which on a shared machine moves
every ratio here.
"""

import os

import pytest
from threadpoolctl import threadpool_info

from fastbp.bench.targets import verdict

_LOAD_AT_START = []


def pytest_configure(config):
    _LOAD_AT_START[:] = os.getloadavg()


def pytest_terminal_summary(terminalreporter):
    import scipy.linalg.cython_blas  # noqa: F401  (scipy's BLAS, the one numba's np.dot calls)

    blas = ", ".join(f"{os.path.basename(p['filepath'])} {p['version']} {p.get('architecture')} "
                     f"{p['num_threads']} threads" for p in threadpool_info() if p["user_api"] == "blas")
    env = ", ".join(f"{k}={os.environ.get(k, '(not set)')}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    start, end = (" ".join(f"{v:.2f}" for v in load) for load in (_LOAD_AT_START, os.getloadavg()))
    terminalreporter.write_line(f"fastbp bench: BLAS {blas}; {env}")
    terminalreporter.write_line(f"fastbp bench: load average (1, 5, 15 min) at start {start}, at end {end}")


@pytest.fixture
def target():
    """``target(results, key)``: assert one of fastbp's targets (skip when a peer is not installed)."""

    def check(results, key):
        met, message = verdict(results, key)
        print("\n" + message)
        if met is None:
            pytest.skip(message)
        assert met, message

    return check

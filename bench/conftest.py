"""Performance suite, run apart from the unit tests: ``python -m pytest bench -q``.

The summary says what the ratios were measured under: BLAS libraries and
threads (every peer gets the same), OPENBLAS_* variables, and the machine's
load, which on a shared machine moves every ratio here.
"""

import os

from threadpoolctl import threadpool_info

_LOAD_AT_START = []


def pytest_configure(config):
    _LOAD_AT_START[:] = os.getloadavg()


def pytest_terminal_summary(terminalreporter):
    import scipy.linalg.cython_blas  # noqa: F401  (scipy's BLAS, the one numba's np.dot calls)

    blas = ", ".join(f"{os.path.basename(p['filepath'])} {p['version']} {p.get('architecture')} "
                     f"{p['num_threads']} threads" for p in threadpool_info() if p["user_api"] == "blas")
    env = ", ".join(f"{k}={os.environ.get(k, '(not set)')}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    load = "load average (1, 5, 15 min) at start %.2f %.2f %.2f" % tuple(_LOAD_AT_START)
    terminalreporter.write_line(f"fastbp bench: BLAS {blas}; {env}")
    terminalreporter.write_line(f"fastbp bench: {load}, at end %.2f %.2f %.2f" % os.getloadavg())

"""Compile (or load from the on-disk cache) the kernels a training run uses, ahead of time.

Compilation is a user-facing cost: the first process compiles for a few
seconds, later ones load the cached machine code in a fraction of that.
``warmup`` pays it up front and says how long it took, so that timings of the
training itself are not mixed with it; ``fastbp train`` warms up only its own
path, ``fastbp warmup`` every path (for a container image or a CI step).
"""

import sys
import time
import warnings

import numpy as np

DTYPES = ("float32", "float64")
SOLVERS = ("sgd", "adam", "lbfgs")
TASKS = ("classification", "regression")
# Batches of this many rows or more run in row chunks on Numba's threads (fastbp.network.chunk_count).
CHUNKED_ROWS = 200


def _names(value, allowed, what):
    names = (value,) if isinstance(value, str) else tuple(value)
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ValueError(f"{what} must be a non-empty selection of {allowed}, got {value!r}")
    return names


def warmup(dtypes=DTYPES, solvers=SOLVERS, tasks=TASKS, chunked=True) -> float:
    """Tiny fits (and predicts) through the public estimators for every combination asked; the seconds spent.

    ``chunked`` adds a fit whose batches run in row chunks (which starts Numba's
    thread pool) for each combination.  Other output activations (logistic, exp)
    share the compiled functions of their task.
    """
    from .estimator import MLPClassifier, MLPRegressor

    dtypes, solvers = _names(dtypes, DTYPES, "dtypes"), _names(solvers, SOLVERS, "solvers")
    tasks = _names(tasks, TASKS, "tasks")
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        X = rng.standard_normal((8, 3)).astype(dtype)
        y = np.arange(8) % 3
        for task in tasks:
            cls, target = (MLPClassifier, y) if task == "classification" else (MLPRegressor, y.astype(dtype))
            for solver in solvers:
                runs = [(X, target, 4)]
                if chunked:
                    runs.append((np.tile(X, (CHUNKED_ROWS // 8, 1)), np.tile(target, CHUNKED_ROWS // 8), CHUNKED_ROWS))
                for rows, labels, batch in runs:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        cls(hidden_layer_sizes=(4,), solver=solver, max_iter=1, batch_size=batch).fit(
                            rows, labels).predict(rows)
    return time.perf_counter() - started


def compiled_count() -> int:
    """How many of fastbp's functions this process compiled rather than loaded from Numba's cache (so far)."""
    try:
        from numba.core.dispatcher import Dispatcher
    except ImportError:
        return 0
    count = 0
    for name, module in list(sys.modules.items()):
        if name.startswith("fastbp.") and module is not None:
            for value in list(vars(module).values()):
                if isinstance(value, Dispatcher):  # under NUMBA_DISABLE_JIT there are none
                    count += len(value.overloads) - sum(value.stats.cache_hits.values())
    return count

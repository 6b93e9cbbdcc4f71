"""Compile (or load from the on-disk cache) the kernels a training run uses, ahead of time.

Compilation is a user-facing cost: the first process compiles for a few
seconds, later ones load the cached machine code in a fraction of that.
``warmup`` pays it up front and says how long it took, so that timings of the
training itself are not mixed with it; ``fastbp train`` warms up only its own
path, ``fastbp warmup`` every path (for a container image or a CI step).
"""

import itertools
import time
import warnings

import numpy as np
from numba.core import event as _numba_event

from ._config import ACTIVATIONS, CHUNK_ROWS

DTYPES = ("float32", "float64")
SOLVERS = ("sgd", "adam", "lbfgs")
# Numba compiles fastbp's entry points per network kind, a pair of hidden and output activations
# (fastbp.step.kernels_for): each task stands for one output activation.
TASKS = ("multiclass", "binary", "regression", "poisson")  # softmax, logistic, identity, exp
# Batches of this many rows or more run in row chunks on threads (fastbp.network.chunk_count).
CHUNKED_ROWS = 2 * CHUNK_ROWS


def _names(value, allowed, what):
    names = (value,) if isinstance(value, str) else tuple(value)
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ValueError(f"{what} must be a non-empty selection of {allowed}, got {value!r}")
    return names


def _estimator(task, X, **params):
    """The estimator and target of a tiny fit of ``task`` on ``X``."""
    from .estimator import MLPClassifier, MLPRegressor

    rows = np.arange(X.shape[0])
    if task in ("multiclass", "binary"):
        return MLPClassifier(**params), rows % (3 if task == "multiclass" else 2)
    return MLPRegressor(loss="poisson" if task == "poisson" else "squared_error", **params), (rows % 3).astype(X.dtype)


def warmup(dtypes=DTYPES, solvers=SOLVERS, tasks=TASKS, chunked=True, activations=("relu",), halves=None) -> float:
    """Tiny fits (and predicts) through the public estimators for every combination asked; the seconds spent.

    ``tasks`` name the output activations (multiclass: softmax, binary and
    multilabel: logistic, regression: identity, poisson: exp) and ``activations``
    the hidden ones (by default relu, the estimators' default: each more costs as
    much again); ``chunked`` adds, for each combination, a fit whose batches run
    in row chunks on several threads, and ``halves`` one whose batches run in unit
    halves (:mod:`fastbp.halves`, for wide hidden layers; by default as ``chunked``).
    """
    from .network import HALVES_MIN_UNITS

    dtypes, solvers = _names(dtypes, DTYPES, "dtypes"), _names(solvers, SOLVERS, "solvers")
    tasks, activations = _names(tasks, TASKS, "tasks"), _names(activations, ACTIVATIONS, "activations")
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        small = rng.standard_normal((8, 3)).astype(dtype)
        fits = [(small, 4, 4)]
        if chunked:
            fits.append((np.tile(small, (CHUNKED_ROWS // 8, 1)), CHUNKED_ROWS, 4))
        if chunked if halves is None else halves:  # a network wide enough, and batches small enough, for halves
            fits.append((small, 1, HALVES_MIN_UNITS))
        for task, activation, solver, (X, batch, width) in itertools.product(tasks, activations, solvers, fits):
            if solver == "lbfgs" and width == HALVES_MIN_UNITS:
                continue  # full-batch: no halves
            model, y = _estimator(task, X, hidden_layer_sizes=(width,), activation=activation, solver=solver,
                                  max_iter=1, batch_size=batch)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(X, y).predict(X)
    return time.perf_counter() - started


class _CompileCounter(_numba_event.Listener):
    """Counts Numba's "numba:compile" events: fired for real compilations only, not for loads from the cache."""

    def __init__(self):
        self.count = 0

    def on_start(self, event):
        self.count += 1

    def on_end(self, event):
        pass


_COUNTER = _CompileCounter()
_numba_event.register("numba:compile", _COUNTER)


def compiled_count() -> int:
    """How many functions Numba compiled (rather than loaded from its cache) since fastbp.warmup was imported.

    Counted from Numba's compile events, so it sees every function, also those
    fastbp compiles per network kind outside any module's namespace.
    """
    return _COUNTER.count

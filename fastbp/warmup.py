"""Compile (or load from the on-disk cache) every kernel a training run uses, ahead of time.

Compilation is a user-facing cost: the first process compiles for a few
seconds, later ones load the cached machine code in a fraction of that.
``warmup`` pays it up front and says how long it took, so that timings of
the training itself are not mixed with it.
"""

import time
import warnings

import numpy as np


def warmup(dtypes=("float32", "float64")) -> float:
    """Run a tiny fit of every solver (sgd, adam, lbfgs) for each dtype, classifier and regressor, and one in
    row chunks (which starts Numba's thread pool); returns the seconds spent.  Other output activations
    (logistic, exp) share the same compiled functions."""
    from .estimator import MLPClassifier, MLPRegressor

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for dtype in [dtypes] if isinstance(dtypes, str) else dtypes:
        X = rng.standard_normal((8, 3)).astype(dtype)
        y = np.arange(8) % 3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for solver in ("sgd", "adam", "lbfgs"):
                MLPClassifier(hidden_layer_sizes=(4,), solver=solver, max_iter=1, batch_size=4).fit(X, y).predict(X)
            MLPRegressor(hidden_layer_sizes=(4,), max_iter=1, batch_size=4).fit(X, y.astype(dtype)).predict(X)
            # batches of 200+ rows run in row chunks on Numba's threads: start that pool here too
            rows = np.tile(X, (50, 1))
            MLPClassifier(hidden_layer_sizes=(4,), max_iter=1, batch_size=200).fit(rows, np.tile(y, 50))
    return time.perf_counter() - started

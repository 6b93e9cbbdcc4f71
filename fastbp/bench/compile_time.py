"""What compilation costs a user: fresh processes with an empty Numba cache, then with the cache filled.

Every figure is one fresh process (start-up costs are not a distribution to
take medians of), run with ``NUMBA_CACHE_DIR`` pointing at a new, empty folder
so that nothing compiled before this benchmark is found, and importing the
same fastbp as this process.
"""

import glob
import json
import os
import subprocess
import sys
import tempfile
import time

from .protocol import child_env

_CLI = "from fastbp._entry import main; main()"  # what the `fastbp` console script runs (fastbp._entry:main)

# A first and a second fit of one estimator in a fresh process: seconds of `import fastbp` and of each fit.
_FIRST_FIT = """import json, sys, time
import numpy as np
from sklearn.datasets import load_digits
X, y = load_digits(return_X_y=True)
X = ((X - X.mean(axis=0)) / np.maximum(X.std(axis=0), 1e-12)).astype(np.float32)
kind, params = sys.argv[1], json.loads(sys.argv[2])
times = [time.perf_counter()]
import fastbp
import warnings
warnings.simplefilter("ignore")
cls = getattr(fastbp, kind)
for _ in range(2):
    times.append(time.perf_counter())
    cls(**params).fit(X, y if kind == "MLPClassifier" else y.astype(np.float32))
times.append(time.perf_counter())
print(json.dumps(dict(zip(("import", "first fit", "second fit"), np.diff(times).tolist()))))
"""

COLD_FIT = ("MLPClassifier", {"hidden_layer_sizes": [128], "solver": "sgd", "batch_size": 32,
                              "learning_rate_init": 0.01, "max_iter": 1})
# One first fit per solver after a warm-up: sgd at batch 32, adam with its defaults (batch 200: row chunks), lbfgs.
SOLVER_FITS = {
    "sgd": COLD_FIT,
    "adam (defaults: batch 200, row chunks)": ("MLPClassifier", {"max_iter": 1}),
    "lbfgs": ("MLPClassifier", {"solver": "lbfgs", "max_iter": 1}),
    "regressor, adam": ("MLPRegressor", {"max_iter": 1}),
}


def _run(args, cache):
    """``(seconds start to exit, completed process)`` of ``python args...`` with NUMBA_CACHE_DIR=cache, once the
    background compiles it started (:mod:`fastbp._background`) have finished too, as they would for a user
    before the next process (and so that they take no core from the next measurement)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=child_env(NUMBA_CACHE_DIR=cache), capture_output=True,
                          text=True, check=False)  # the caller reads the exit status
    seconds = time.perf_counter() - started
    _settle(cache)
    return seconds, done


def _settle(cache, timeout=300.0):
    """Wait until no background compile holds a lock in the cache folder ``cache``."""
    deadline = time.monotonic() + timeout
    while glob.glob(os.path.join(cache, "**", "fastbp-compiling-*.lock"), recursive=True):
        if time.monotonic() > deadline:
            raise RuntimeError(f"a background compile in {cache} took over {timeout:.0f} s")
        time.sleep(0.1)


def _checked(seconds_and_done, what):
    seconds, done = seconds_and_done
    if done.returncode:
        raise RuntimeError(f"{what} exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    return seconds, done


def first_fit(kind, params, cache) -> dict:
    """Seconds of ``import fastbp``, the first and the second fit, and the whole process, in a fresh process."""
    wall, done = _checked(_run(["-c", _FIRST_FIT, kind, json.dumps(params)], cache), f"a first {kind} fit")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process": wall}


def warmup(cache) -> tuple:
    """``(seconds, command)`` of ``fastbp warmup``; ``fastbp.warmup.warmup()`` where the CLI has no such command."""
    seconds, done = _run(["-c", _CLI, "warmup"], cache)
    if done.returncode == 0:
        return seconds, "fastbp warmup"
    if "invalid choice" not in done.stderr:
        raise RuntimeError(f"fastbp warmup exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    call = "from fastbp.warmup import warmup; warmup()"
    return _checked(_run(["-c", call], cache), "warmup()")[0], f"python -c '{call}' (no `fastbp warmup` command)"


def compile_costs() -> dict:
    """Cold and cached first fits, ``fastbp train digits`` cold and again, first fits after a warm-up."""
    result = {}
    with tempfile.TemporaryDirectory(prefix="fastbp-bench-cache-") as root:
        cold = os.path.join(root, "fit")
        result["fit"] = {"empty": first_fit(*COLD_FIT, cold), "filled": first_fit(*COLD_FIT, cold)}
        train = os.path.join(root, "train")
        result["train"] = {run: _checked(_run(["-c", _CLI, "train", "digits"], train), "fastbp train digits")[0]
                           for run in ("cold", "second")}
        warm = os.path.join(root, "warmup")
        result["warmup"] = dict(zip(("seconds", "command"), warmup(warm)))
        result["after warmup"] = {solver: first_fit(kind, params, warm)
                                  for solver, (kind, params) in SOLVER_FITS.items()}
    return result

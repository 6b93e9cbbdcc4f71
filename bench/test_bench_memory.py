"""No allocation in the steady state: an epoch of 4x the steps peaks no higher than one of N steps.

Through the public API: the second ``partial_fit`` call on the same rows (the
first allocated the buffers and compiled), once at batch ``b`` and once at
``b / 4``.  What a call allocates per row (labels, shuffled order) is the same
for both; anything allocated per step would show as the difference.
"""

import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fastbp import MLPClassifier
from fastbp.bench.protocol import child_env

BATCHES = {"one-chunk": 32, "row-chunks": 800}  # 800 rows: 8 row chunks, 200: 2


def _rows():
    X, y = load_digits(return_X_y=True)
    return np.tile(X.astype(np.float32) / 16, (4, 1)), np.tile(y, 4)


def _peak_bytes(batch, X, y):
    model = MLPClassifier((128,), solver="sgd", batch_size=batch, learning_rate_init=0.01)
    model.partial_fit(X, y, classes=np.unique(y))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    model.partial_fit(X, y)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize("batch", BATCHES.values(), ids=BATCHES.keys())
def test_no_allocation_per_step(batch):
    X, y = _rows()
    few, many = _peak_bytes(batch, X, y), _peak_bytes(batch // 4, X, y)
    print(f"\ntracemalloc peak of an epoch: {few} B at batch {batch}, {many} B at batch {batch // 4} (4x the steps)")
    assert many <= few + 4096, (few, many)  # per-call buffers may follow the batch size; per-step ones may not exist


_NRT_COUNT = r"""
import json, sys
import numpy as np
from numba.core.runtime import rtsys
from sklearn.datasets import load_digits
from fastbp import MLPClassifier
X, y = load_digits(return_X_y=True)
X = X.astype(np.float32) / 16
batch, counts = int(sys.argv[1]), []
for reps in (1, 4):
    model = MLPClassifier((128,), solver="sgd", batch_size=batch, learning_rate_init=0.01)
    rows, labels = np.tile(X, (reps, 1)), np.tile(y, reps)
    model.partial_fit(rows, labels, classes=np.unique(y))
    before = rtsys.get_allocation_stats().alloc
    model.partial_fit(rows, labels)
    counts.append(rtsys.get_allocation_stats().alloc - before)
print(json.dumps(counts))
"""


@pytest.mark.parametrize("batch", [32, 200], ids=["one-chunk", "row-chunks"])
def test_no_nopython_allocation_per_step(batch):
    """Numba's own allocation counter (NUMBA_NRT_STATS) gives the same count for an epoch of 4x the steps."""
    out = subprocess.run([sys.executable, "-c", _NRT_COUNT, str(batch)], env=child_env(NUMBA_NRT_STATS="1"),
                         check=True, capture_output=True, text=True)
    small, large = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nnopython allocations per epoch at batch {batch}: {small}, and {large} at 4x the steps")
    assert small == large, (small, large)

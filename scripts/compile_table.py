"""Where a cold first fit's compile time goes, per compiled function.

Run with an empty cache, in the checkout to measure::

    NUMBA_CACHE_DIR=$(mktemp -d) PYTHONPATH=. python scripts/compile_table.py [sgd|adam|lbfgs] [batch_size]

Fits ``MLPClassifier(hidden_layer_sizes=(128,), max_iter=1)`` on digits (float32)
and prints, for each function Numba compiled, its seconds exclusive and inclusive
of the callees it compiled on the way (from ``numba:compile`` events), then the
time spent holding LLVM's lock and the fit's wall and CPU time.
"""

import sys
import time
import warnings

import numpy as np
from numba.core import event


def _durations(records):
    """``{name: [exclusive, inclusive]}`` from a RecordingListener's nested start/end events."""
    stack, table = [], {}
    for stamp, ev in records:
        name = ev.data["dispatcher"].py_func.__qualname__ if ev.data and "dispatcher" in ev.data else ev.kind
        if ev.is_start:
            stack.append([name, stamp, 0.0])
            continue
        name, start, children = stack.pop()
        row = table.setdefault(name, [0.0, 0.0])
        row[0] += stamp - start - children
        row[1] += stamp - start
        if stack:
            stack[-1][2] += stamp - start
    return table


def main(solver="sgd", batch_size="32"):
    compiles, llvm = event.RecordingListener(), event.RecordingListener()
    event.register("numba:compile", compiles)
    event.register("numba:llvm_lock", llvm)
    from sklearn.datasets import load_digits

    import fastbp

    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    model = fastbp.MLPClassifier(hidden_layer_sizes=(128,), solver=solver, batch_size=int(batch_size), max_iter=1,
                                 learning_rate_init=0.01)
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    table = _durations(compiles.buffer)
    for name, (own, total) in sorted(table.items(), key=lambda item: -item[1][0]):
        print(f"{name:48s} exclusive {own:5.2f} s  inclusive {total:5.2f} s")
    locked = sum(row[0] for row in _durations(llvm.buffer).values())
    print(f"sum {sum(row[0] for row in table.values()):.2f} s; LLVM lock held {locked:.2f} s; "
          f"fit {wall:.2f} s wall, {cpu:.2f} s CPU")


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Per-call overhead of the estimators, as interleaved A/B ratios in one process (medians of many rounds).

* partial_fit: 20 ``partial_fit`` calls (one epoch each) against a 20-epoch ``fit`` on digits
  (64-128-10 ReLU, batch 32, SGD momentum 0.9, float32); target <= 1.2.
* one-row ``predict`` / ``predict_proba``: fastbp against scikit-learn's (same data and
  network size); target <= 0.5.

Usage: ``python scripts/overhead_ab.py [--rounds N]``.  Ratios only: the machine is
shared, so single absolute times mean little.
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
from sklearn import neural_network as sknn
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's fastbp
import fastbp  # noqa: E402


def _seconds(fn, repeat):
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def _ratios(a, b, rounds, repeat):
    """Median and range of ``time(a) / time(b)`` over rounds of A B A B ..."""
    ratios = []
    for _ in range(rounds):
        ratios.append(_seconds(a, repeat) / _seconds(b, repeat))
    return np.median(ratios), min(ratios), max(ratios)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    classes = np.unique(y)
    params = dict(hidden_layer_sizes=(128,), solver="sgd", batch_size=32, learning_rate_init=0.01, momentum=0.9,
                  random_state=0, tol=0.0, n_iter_no_change=10**9)
    epochs = 20  # as issue 11 measures it: 20 partial_fit calls against a 20-epoch fit
    fitted = fastbp.MLPClassifier(max_iter=epochs, **params)
    partial = fastbp.MLPClassifier(**params).partial_fit(X, y, classes=classes)
    fitted.fit(X, y)  # compile and warm both paths

    def partial_epochs():
        for _ in range(epochs):
            partial.partial_fit(X, y)

    print(f"fastbp from {fastbp.__file__}")
    print("partial_fit epoch / fit epoch: median %.3f (min %.3f, max %.3f)"
          % _ratios(partial_epochs, lambda: fitted.fit(X, y), args.rounds, 1))
    sk = sknn.MLPClassifier(max_iter=5, **params).fit(X, y)
    row = X[:1].copy()
    for method in ("predict", "predict_proba"):
        fb_call, sk_call = getattr(fitted, method), getattr(sk, method)
        print(f"one-row {method}, fastbp / scikit-learn: median %.3f (min %.3f, max %.3f)"
              % _ratios(lambda: fb_call(row), lambda: sk_call(row), args.rounds, 200))


if __name__ == "__main__":
    main()

"""The benchmark behind ``fastbp bench`` and ``scripts/bench.py``: markdown tables in DIR/bench.md, a plot in bench.png.

Peers run in one process in interleaved rounds (A B C, then C B A, ...); times are medians over rounds, ratios
the medians of per-round ratios; warm-up calls (compilation, cache loads) are timed apart and reported on their
own.  Every peer gets the same BLAS thread count (PyTorch as many threads).
"""

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from . import kernels, reference
from ._atomic import atomic_write
from ._config import jit
from .estimator import MLPClassifier
from .network import Network
from .optim import SGDOptimizer
from .step import _block
from .trainer import Trainer

FAST, EST, NUMPY = "fastbp Trainer.epoch", "fastbp MLPClassifier.partial_fit", "numpy loop (fastbp.reference)"
SKLEARN, TORCH = "scikit-learn MLPClassifier.partial_fit", "PyTorch eager CPU"
BLAS = "BLAS only (the epoch's np.dot calls)"
KERNEL_SHAPES = {"small": (32, 64, 128), "medium": (256, 256, 256), "large": (1024, 784, 256)}
LR, MOMENTUM = 0.01, 0.9
# numpy and fastbp (numba's np.dot) call two different OpenBLAS builds, each with its own thread pool, whose idle
# threads keep spinning for ~0.2 s after a call: a GEMM of one library started in that window ran 2-3x slower on
# 2 cores.  Pausing this long before every timed block gives each peer a machine as it would find it alone.
SETTLE = 0.25


@dataclass
class Timing:
    """Seconds per call: the median over rounds, each round's, and the warm-up calls' total."""

    median: float
    rounds: list
    warmup: float


def interleaved(fns: dict, rounds: int = 7, number: int | None = None, warmup: int = 1,
                min_round: float = 0.02, settle: float = SETTLE) -> dict:
    """Time the callables ``fns`` in interleaved rounds: ``{name: Timing}``.

    ``warmup`` calls of each first, timed apart; then each round makes ``number`` calls of every function (by
    default enough for ``min_round`` s), forward order on even rounds, reverse on odd ones, garbage collector off,
    after an untimed pause of ``settle`` seconds (see ``SETTLE``).
    """
    warm, counts, times = {}, {}, {name: [] for name in fns}
    for name, fn in fns.items():
        started = time.perf_counter()
        for _ in range(warmup):
            fn()
        warm[name] = time.perf_counter() - started
        counts[name] = number
        if number is None:
            started = time.perf_counter()
            fn()
            counts[name] = max(1, int(np.ceil(min_round / max(time.perf_counter() - started, 1e-7))))
    names = list(fns)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            fn, n, enabled = fns[name], counts[name], gc.isenabled()
            time.sleep(settle)
            gc.disable()
            started = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - started) / n)
            if enabled:
                gc.enable()
    return {name: Timing(statistics.median(times[name]), times[name], warm[name]) for name in names}


def ratio(timings: dict, slow: str, fast: str) -> float:
    """How many times faster ``fast`` ran than ``slow``: the median of per-round ratios (a load change between
    rounds cancels out of each, as both ran side by side)."""
    return statistics.median(s / f for s, f in zip(timings[slow].rounds, timings[fast].rounds))


def table(headers, rows) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return platform.processor() or "unknown"


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def blas_threads() -> int:
    """The thread count of the first BLAS library loaded (numpy's)."""
    return next((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), 1)


def header() -> str:
    import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS: the one numba's np.dot calls)

    env = "; ".join(f"{k}={os.environ[k]!r} IS SET (unset it in the benchmark command)" if k in os.environ
                    else f"{k} not set" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    rows = [("date", datetime.datetime.now().isoformat(timespec="seconds")),
            ("machine", f"{platform.platform()}; {_cpu_model()}; {os.cpu_count()} cores"),
            ("versions", f"python {platform.python_version()}, numpy {_version('numpy')}, numba {_version('numba')}, "
                         f"scipy {_version('scipy')}, sklearn {_version('sklearn')}, torch {_version('torch')}"),
            ("environment", env), ("load average at start (1, 5, 15 min)", "%.2f %.2f %.2f" % os.getloadavg())]
    rows += [(f"{p['user_api']} library {os.path.basename(p['filepath'])}",
              f"{p['internal_api']} {p['version']}, kernel/architecture {p.get('architecture')}, "
              f"{p['num_threads']} threads ({p.get('threading_layer')})") for p in threadpool_info()]
    rows.append(("threads", f"every peer: {blas_threads()} BLAS threads, torch.set_num_threads({blas_threads()}); "
                            "numpy and sklearn call numpy's BLAS, fastbp (numba's np.dot) calls scipy's"))
    return "## Machine\n\n" + table(("what", "value"), rows)


def kernel_pairs(n, n_in, n_out, dtype, seed=0) -> dict:
    """``{(op, impl): callable}``: forward (relu) and backward (affine with dX + relu), kernel and twin."""
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((n, n_in)), 0).astype(dtype)  # a ReLU layer's output
    W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
    b, dY = rng.standard_normal(n_out).astype(dtype), rng.standard_normal((n, n_out)).astype(dtype)
    out, dX, dW, db = np.empty((n, n_out), dtype), np.empty_like(X), np.empty_like(W), np.empty_like(b)
    pairs = {}
    for impl, mod in (("kernel", kernels), ("reference", reference)):
        pairs["forward", impl] = lambda mod=mod: mod.affine_forward(X, W, b, "relu", out)
        pairs["backward", impl] = lambda mod=mod: mod.activation_backward(
            X, mod.affine_backward(X, W, dY, dX, dW, db)[0], "relu")
    return pairs


def bench_kernels(rounds=7):
    rows, speedups = [], {}
    for shape, (n, n_in, n_out) in KERNEL_SHAPES.items():
        for dtype in ("float32", "float64"):
            # No pause at the small shape: its products stay on one thread (no pool spins), as for digits below.
            t = interleaved({f"{op}/{impl}": fn for (op, impl), fn in kernel_pairs(n, n_in, n_out, dtype).items()},
                            rounds=rounds, settle=0.0 if shape == "small" else SETTLE)
            for op, flops in (("forward", 2 * n * n_in * n_out), ("backward", 4 * n * n_in * n_out)):
                k, r = t[f"{op}/kernel"].median, t[f"{op}/reference"].median
                speedups[shape, dtype, op] = ratio(t, f"{op}/reference", f"{op}/kernel")
                rows.append((f"{shape} {n}x{n_in}->{n_out}", dtype, op, f"{k * 1e6:.1f}", f"{r * 1e6:.1f}",
                             f"**{speedups[shape, dtype, op]:.2f}x**", f"{flops / k / 1e9:.1f}",
                             f"{flops / r / 1e9:.1f}"))
    note = ("forward = `affine_forward(relu)`; backward = `affine_backward` (with dX) + `activation_backward(relu)`. "
            f"Times: medians of {rounds} interleaved rounds, each (but at the small shape) after an untimed {SETTLE} s "
            "pause (kernels call scipy's OpenBLAS, the twins numpy's: see SETTLE); speed-up: median of per-round ratios; GFLOP/s: GEMM "
            "flops only.")
    return "## Kernels vs numpy twins\n\n" + note + "\n\n" + table(
        ("shape (batch x in->out)", "dtype", "op", "kernel us/call", "reference us/call", "speed-up",
         "kernel GFLOP/s", "reference GFLOP/s"), rows), speedups


def _standardise(X):
    std = X.std(axis=0)
    return ((X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


def digits_case():
    """``(name, X float32, y, hidden sizes, batch size)``: scikit-learn's digits, standardised."""
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return "digits 1797x64, 64-128-10, batch 32", _standardise(X), y, (128,), 32


def mnist_case(n_rows=60000):
    """An MNIST-sized problem: ``make_classification(n_rows, 784, n_informative=50, n_classes=10)``."""
    from sklearn.datasets import make_classification
    X, y = make_classification(n_rows, 784, n_informative=50, n_classes=10, random_state=0)
    return f"MNIST-sized {n_rows}x784, 784-256-128-10, batch 128", _standardise(X), y, (256, 128), 128


class FastbpTrainer:
    """fastbp's epoch loop: ``Trainer.epoch``, one nopython call per epoch, rows shuffled in Python."""

    def __init__(self, X, y, hidden, batch, seed=0):
        self.X, self.y, self.rng = X, y, np.random.default_rng(seed)
        self.Y, self.sw = np.eye(y.max() + 1, dtype=X.dtype)[y], np.ones(len(X), X.dtype)
        self.order = np.arange(len(X), dtype=np.int64)
        self.net = Network([X.shape[1], *hidden, self.Y.shape[1]], "relu", "softmax", X.dtype)
        self.net.initialize(self.rng)
        optimizer = SGDOptimizer(self.net.n_params, X.dtype, LR, "constant", MOMENTUM, nesterov=False)
        self.trainer = Trainer(self.net, optimizer, batch, alpha=0.0)

    def epoch(self):
        self.rng.shuffle(self.order)
        self.trainer.epoch(self.X, self.Y, self.sw, self.order)

    def accuracy(self):
        return float(np.mean(self.net.forward(self.X).argmax(axis=1) == self.y))


class Estimator:
    """scikit-learn's or fastbp's MLPClassifier; one epoch is one ``partial_fit`` call."""

    def __init__(self, cls, X, y, hidden, batch, seed=2):
        self.X, self.y, self.classes = X, y, np.unique(y)
        self.model = cls(hidden, activation="relu", solver="sgd", alpha=0.0, batch_size=batch, learning_rate_init=LR,
                         momentum=MOMENTUM, nesterovs_momentum=False, random_state=seed, tol=0.0,
                         n_iter_no_change=np.inf)

    def epoch(self):
        self.model.partial_fit(self.X, self.y, classes=self.classes)

    def accuracy(self):
        return float(np.mean(self.model.predict(self.X) == self.y))


class NumpyLoop:
    """The plain-numpy training loop on :mod:`fastbp.reference`; it computes no loss (less work than the others)."""

    def __init__(self, X, y, coefs, intercepts, batch, seed=1):
        self.X, self.y, self.batch, self.rng = X, y, batch, np.random.default_rng(seed)
        self.Y = np.eye(y.max() + 1, dtype=X.dtype)[y]
        self.W, self.b = [c.copy() for c in coefs], [i.copy() for i in intercepts]
        self.grads = [np.empty_like(p) for p in self.W + self.b]
        self.velocity = [np.zeros_like(p) for p in self.W + self.b]
        self.outs = [np.empty((batch, w.shape[1]), X.dtype) for w in self.W]
        self.deltas = [np.empty_like(o) for o in self.outs]

    def epoch(self):
        L, order = len(self.W), self.rng.permutation(len(self.X))
        dW, db = self.grads[:L], self.grads[L:]
        for start in range(0, len(order), self.batch):
            idx = order[start:start + self.batch]
            nb, A = idx.size, [self.X[idx]]
            for i in range(L):
                A.append(reference.affine_forward(A[i], self.W[i], self.b[i], "softmax" if i == L - 1 else "relu",
                                                  self.outs[i][:nb]))
            D = reference.output_delta(A[L], self.Y[idx], self.deltas[L - 1][:nb])
            for i in range(L - 1, -1, -1):
                dX = self.deltas[i - 1][:nb] if i else None
                reference.affine_backward(A[i], self.W[i], D, dX, dW[i], db[i])
                D = reference.activation_backward(A[i], dX, "relu") if i else None
            for p, g, v in zip(self.W + self.b, self.grads, self.velocity):
                v *= MOMENTUM
                v -= (LR / nb) * g
                p += v

    def accuracy(self):
        A = self.X
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            A = reference.affine_forward(A, W, b, "relu" if i < len(self.W) - 1 else "identity")
        return float(np.mean(A.argmax(axis=1) == self.y))


class TorchLoop:
    """PyTorch eager on the CPU: ``nn.Sequential`` + ``optim.SGD`` + cross-entropy, fastbp's initial weights."""

    def __init__(self, X, y, coefs, intercepts, batch, seed=3):
        import torch
        torch.set_num_threads(blas_threads())
        torch.manual_seed(seed)
        self.torch, self.batch, self.y_np = torch, batch, y
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
        layers = []
        for W, b in zip(coefs, intercepts):
            linear = torch.nn.Linear(*W.shape)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                linear.bias.copy_(torch.from_numpy(b))
            layers += [linear, torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers[:-1])
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=False)
        self.loss = torch.nn.CrossEntropyLoss()

    def epoch(self):
        order = self.torch.randperm(len(self.X))
        for start in range(0, len(order), self.batch):
            idx = order[start:start + self.batch]
            self.opt.zero_grad()
            self.loss(self.model(self.X[idx]), self.y[idx]).backward()
            self.opt.step()

    def accuracy(self):
        with self.torch.no_grad():
            return float(np.mean(self.model(self.X).argmax(dim=1).numpy() == self.y_np))


@jit
def _blas_epoch(params, grad, sizes, coef_off, xbuf, acts, deltas, act_off, n_rows, batch):
    for start in range(0, n_rows, batch):
        n = min(batch, n_rows - start)
        X0 = A = _block(xbuf, 0, n, sizes[0])
        for i in range(sizes.size - 1):
            Z = _block(acts, act_off[i], n, sizes[i + 1])
            np.dot(A, _block(params, coef_off[i], sizes[i], sizes[i + 1]), Z)
            A = Z
        for i in range(sizes.size - 2, -1, -1):
            D = _block(deltas, act_off[i], n, sizes[i + 1])
            A_prev = X0 if i == 0 else _block(acts, act_off[i - 1], n, sizes[i])
            np.dot(A_prev.T, D, _block(grad, coef_off[i], sizes[i], sizes[i + 1]))
            if i > 0:
                W = _block(params, coef_off[i], sizes[i], sizes[i + 1])
                np.dot(D, W.T, _block(deltas, act_off[i - 1], n, sizes[i]))


def epoch_flops(units, n_rows) -> int:
    """GEMM flops of one epoch: X @ W and A.T @ D for every layer, D @ W.T for all but the first."""
    products = [a * b for a, b in zip(units[:-1], units[1:])]
    return 2 * n_rows * (2 * sum(products) + sum(products[1:]))


class BlasOnly:
    """Exactly the np.dot calls of an epoch, same shapes, from nopython like fastbp: per minibatch X @ W per layer,
    dW = A.T @ D per layer, dX = D @ W.T for layers > 0."""

    def __init__(self, units, n_rows, batch, dtype):
        self.net = Network(units, "relu", "softmax", dtype)
        self.net.initialize(np.random.default_rng(0))
        self.n_rows, self.batch, self.grad = n_rows, batch, np.empty_like(self.net.params)
        self.xbuf = np.random.default_rng(1).standard_normal(batch * units[0]).astype(dtype)
        self.acts, self.act_off = self.net._activation_buffer(batch)
        self.deltas = np.full_like(self.acts, 1e-3)

    def epoch(self):
        net = self.net
        _blas_epoch(net.params, self.grad, net.sizes, net.coef_off, self.xbuf, self.acts, self.deltas, self.act_off,
                    self.n_rows, self.batch)


def bench_training(case, rounds, peers=None, settle=SETTLE) -> dict:
    """Peers of ``case`` interleaved, one epoch per round after one warm-up epoch; timings and accuracies.

    ``settle=0`` suits small layers: their products stay below OpenBLAS's threading threshold (no thread pool
    spins), and a pause before a 1 ms epoch would time a cold cache instead.
    """
    from sklearn.neural_network import MLPClassifier as SkMLP
    name, X, y, hidden, batch = case
    fast = FastbpTrainer(X, y, hidden, batch)
    units, coefs, intercepts = fast.net.layer_units, fast.net.coefs, fast.net.intercepts
    makers = {FAST: lambda: fast, EST: lambda: Estimator(MLPClassifier, X, y, hidden, batch),
              NUMPY: lambda: NumpyLoop(X, y, coefs, intercepts, batch),
              SKLEARN: lambda: Estimator(SkMLP, X, y, hidden, batch),
              TORCH: lambda: TorchLoop(X, y, coefs, intercepts, batch),
              BLAS: lambda: BlasOnly(units, len(X), batch, X.dtype)}
    objs, missing = {}, []
    for peer, make in makers.items():
        try:
            if peers is None or peer in peers:
                objs[peer] = make()
        except ImportError:
            missing.append(peer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        timings = interleaved({peer: obj.epoch for peer, obj in objs.items()}, rounds=rounds, number=1, settle=settle)
    accuracy = {peer: obj.accuracy() for peer, obj in objs.items() if not isinstance(obj, BlasOnly)}
    return {"name": name, "timings": timings, "accuracy": accuracy, "missing": missing,
            "flops": epoch_flops(units, len(X)), "epochs": 1 + rounds}


def training_section(results, peak, extra="") -> str:
    rows = []
    for res in results:
        t = res["timings"]
        for peer, timing in t.items():
            acc, gflops = res["accuracy"].get(peer), res["flops"] / timing.median / 1e9
            rows.append((res["name"], peer, f"{timing.median * 1e3:.2f}", f"**{ratio(t, peer, FAST):.2f}x**",
                         f"{gflops:.1f}", f"{100 * gflops / peak:.0f}%", "-" if acc is None else f"{acc:.4f}",
                         f"{timing.warmup:.3f}"))
        rows += [(res["name"], peer, "not installed", "", "", "", "", "") for peer in res["missing"]]
    epochs = "; ".join(f"{r['name']}: {r['epochs']}" for r in results)
    note = ("Same work for every peer: ReLU, softmax + log loss, SGD lr 0.01, momentum 0.9 (no Nesterov), alpha 0, "
            "float32. One epoch per round; both estimators are timed per `partial_fit` call (one epoch, input "
            "validation included). fastbp, the numpy loop and PyTorch start from the same weights. Training accuracy "
            f"after the same number of epochs (warm-up epoch included): {epochs}. GFLOP/s = GEMM flops of an epoch "
            f"/ its time; time ratios are medians of per-round ratios. MNIST-sized: an untimed {SETTLE} s pause before "
            "each timed epoch lets the other OpenBLAS pool's threads stop spinning; digits: none (its products run "
            "single-threaded)." + extra)
    return "## Training: time per epoch\n\n" + note + "\n\n" + table(
        ("case", "peer", "ms/epoch (median)", "time / fastbp's", "GFLOP/s", "% of float32 GEMM peak",
         "train accuracy", "warm-up epoch s (excluded)"), rows)


DEFAULT_DATASETS = ("digits", "breast_cancer", "iris", "moons")


def bench_defaults(seeds=(0, 1, 2), timing_rounds=3) -> dict:
    """fastbp's and scikit-learn's ``MLPClassifier()`` with default parameters, as a drop-in user would run them.

    Each dataset is split 75/25 (stratified) and standardised, float32 (:func:`fastbp.datasets.load_dataset`), once
    per seed, which is also the ``random_state``.  Returns mean test accuracies per dataset and, for digits, the
    fit times of ``timing_rounds`` pairs of fits per seed (fastbp and scikit-learn alternating; fastbp's kernels
    warmed up first; each fit after an untimed ``SETTLE`` pause, so that neither starts while the other's thread
    pools still spin); the speed-up is the median of the per-pair ratios.
    """
    from sklearn.neural_network import MLPClassifier as SkMLP

    from .datasets import load_dataset
    from .warmup import warmup

    warmup("float32")
    accuracy, fit_seconds = {}, {"fastbp": [], "sklearn": []}
    for name in DEFAULT_DATASETS:
        scores = {"fastbp": [], "sklearn": []}
        for seed in seeds:
            data = load_dataset(name, random_state=seed, dtype=np.float32)
            for repeat in range(timing_rounds if name == "digits" else 1):  # refits are identical: time them
                for peer, cls in (("fastbp", MLPClassifier), ("sklearn", SkMLP)):
                    model = cls(random_state=seed)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        time.sleep(SETTLE)
                        started = time.perf_counter()
                        model.fit(data.X_train, data.y_train)
                        elapsed = time.perf_counter() - started
                    if repeat == 0:
                        scores[peer].append(model.score(data.X_test, data.y_test))
                    if name == "digits":
                        fit_seconds[peer].append(elapsed)
        accuracy[name] = {peer: float(np.mean(v)) for peer, v in scores.items()}
    return {"accuracy": accuracy, "fit_seconds": fit_seconds, "seeds": len(seeds),
            "speedup": statistics.median(s / f for s, f in zip(fit_seconds["sklearn"], fit_seconds["fastbp"]))}


def defaults_section(res) -> str:
    rows = [(name, f"{acc['fastbp']:.4f}", f"{acc['sklearn']:.4f}", f"{acc['fastbp'] - acc['sklearn']:+.4f}")
            for name, acc in res["accuracy"].items()]
    fits = res["fit_seconds"]
    return ("## Drop-in: default parameters\n\n`MLPClassifier()` of each library with defaults (adam, 100 ReLU units, "
            "batch 200, up to 200 epochs with tol-based stopping), 75/25 stratified split, standardised, float32, "
            f"mean test accuracy over random_state {', '.join(str(s) for s in range(res['seeds']))}.\n\n"
            + table(("dataset", "fastbp", "scikit-learn", "difference"), rows)
            + f"\n\nFitting digits: scikit-learn's fit time / fastbp's, median of {len(fits['fastbp'])} interleaved pairs "
            f"of fits ({len(fits['fastbp']) // res['seeds']} per seed): **{res['speedup']:.1f}x** "
            f"(fastbp {statistics.median(fits['fastbp']) * 1e3:.0f} ms, scikit-learn "
            f"{statistics.median(fits['sklearn']) * 1e3:.0f} ms in this run; compilation excluded by a warm-up; each fit "
            f"after an untimed {SETTLE} s pause).")


@jit
def _nopython_dot(A, B, C):
    np.dot(A, B, C)


def gemm_peaks(n=2048, rounds=5) -> dict:
    fns, rng = {}, np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        A, B, C = (rng.standard_normal((n, n)).astype(dtype) for _ in range(3))
        fns["numpy np.dot (numpy's BLAS)", dtype] = lambda A=A, B=B, C=C: np.dot(A, B, out=C)
        fns["nopython np.dot (scipy's BLAS)", dtype] = lambda A=A, B=B, C=C: _nopython_dot(A, B, C)
    return {key: 2 * n ** 3 / t.median / 1e9 for key, t in interleaved(fns, rounds=rounds, number=1).items()}


def limit_section(results, peaks) -> str:
    peers = [p for p in results[0]["timings"] if p != BLAS]
    rows = []
    for res in results:
        t = res["timings"]
        rows.append((res["name"], f"{res['flops'] / 1e9:.2f}", f"{t[BLAS].median * 1e3:.2f}",
                     f"{res['flops'] / t[BLAS].median / 1e9:.1f}", *[f"{ratio(t, p, BLAS):.2f}x" for p in peers]))
    return "\n\n".join([
        "## The limit: BLAS", "GEMM peak: `np.dot` of 2048x2048 matrices, median of 5 interleaved rounds.",
        table(("caller (library)", "dtype", "GFLOP/s"), [(*k, f"{v:.1f}") for k, v in peaks.items()]),
        "BLAS-only epoch: exactly the `np.dot` calls of one training epoch with the same shapes (per minibatch X @ W "
        "per layer, A.T @ D per layer, D @ W.T for layers > 0), called from nopython (scipy's BLAS, as fastbp) and "
        "interleaved with the trainers above. Each trainer's epoch time as a multiple of it:",
        table(("case", "GFLOP/epoch", "BLAS-only ms/epoch", "BLAS-only GFLOP/s", *peers), rows)])


_FIRST_FIT = """import json, time, warnings
times = [time.perf_counter()]
import numpy as np, fastbp
X, y = np.random.default_rng(0).standard_normal((1797, 64)).astype(np.float32), np.arange(1797) % 10
warnings.simplefilter("ignore")
for _ in range(2):
    times.append(time.perf_counter())
    fastbp.MLPClassifier((128,), solver="sgd", batch_size=32, learning_rate_init=0.01, max_iter=1).fit(X, y)
print(json.dumps(np.diff(times + [time.perf_counter()]).tolist()))
"""


def compile_cost() -> str:
    with tempfile.TemporaryDirectory(prefix="fastbp-numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = [json.loads(subprocess.run([sys.executable, "-c", _FIRST_FIT], env=env, check=True, text=True,
                                          capture_output=True).stdout.splitlines()[-1]) for _ in range(2)]
    what = ("cold (empty NUMBA_CACHE_DIR)", "cached (same NUMBA_CACHE_DIR)")
    rows = [(w, f"{imp:.2f}", f"{first:.2f}", f"{second * 1e3:.1f}", f"{first / second:.0f}x")
            for w, (imp, first, second) in zip(what, runs)]
    note = ("A fresh process each: `import fastbp`, then two `MLPClassifier(solver='sgd', max_iter=1).fit` of one "
            "epoch on 1797x64 float32 (64-128-10, batch 32). One run each: a compile cost, not a steady-state time.")
    return "## Compile cost\n\n" + note + "\n\n" + table(
        ("process", "import s", "first fit s", "second fit ms", "first / second"), rows)


def plot(speedups, results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    ax1.bar(range(len(speedups)), list(speedups.values()))
    ax1.axhline(1.0, color="k", lw=0.8)
    ax1.set_xticks(range(len(speedups)), ["\n".join(key) for key in speedups], fontsize=6)
    ax1.set(ylabel="kernel speed-up over its numpy twin", title="kernels vs reference")
    peers, width = [p for p in results[0]["timings"] if p != BLAS], 0.8 / len(results)
    for k, res in enumerate(results):
        t = res["timings"]
        ax2.bar(np.arange(len(peers)) + k * width, [ratio(t, p, BLAS) for p in peers], width, label=res["name"])
    ax2.axhline(1.0, color="k", lw=0.8)
    ax2.set_yscale("log")
    ax2.set_xticks(np.arange(len(peers)) + 0.4 - width / 2, [p.replace(" ", "\n", 2) for p in peers], fontsize=6)
    ax2.set(ylabel="epoch time / BLAS-only epoch time (nopython)", title="training epoch vs its BLAS work")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def build_parser():
    parser = argparse.ArgumentParser(prog="fastbp bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and epochs: a few minutes on 2 cores")
    parser.add_argument("--out", default="bench-results", help="folder for bench.md and bench.png")
    parser.add_argument("--threads", type=int, default=None, help="BLAS (and torch) threads for every peer")
    return parser


def main(argv=None, report=print) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # `fastbp bench -- --quick`: the CLI passes its separator along
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    started, sections = time.perf_counter(), []

    def emit(text):
        sections.append(text)
        report(text + "\n")

    with threadpool_limits(args.threads, user_api="blas") if args.threads else nullcontext():
        emit(f"# fastbp benchmark{' --quick' if args.quick else ''}\n\n" + header())
        kernel_text, speedups = bench_kernels()
        emit(kernel_text)
        peaks = gemm_peaks()
        rows = 12000 if args.quick else 60000
        results = [bench_training(digits_case(), 5 if args.quick else 19, settle=0.0),
                   bench_training(mnist_case(rows), 5)]
        quick = f" --quick: the MNIST-sized case uses {rows} of 60000 rows." if args.quick else ""
        emit(training_section(results, max(v for (_, dtype), v in peaks.items() if dtype == "float32"), quick))
        emit(limit_section(results, peaks))
        emit(defaults_section(bench_defaults((0,) if args.quick else (0, 1, 2))))
        emit(compile_cost())
    plot(speedups, results, os.path.join(args.out, "bench.png"))
    emit(f"Plot: bench.png. Benchmark time {time.perf_counter() - started:.0f} s; load average at the end "
         "%.2f %.2f %.2f." % os.getloadavg())
    text = ("\n\n".join(sections) + "\n").encode()
    atomic_write(os.path.join(args.out, "bench.md"), lambda f: f.write(text))
    return 0

"""The measurements: each returns a :class:`Comparison` (or plain numbers) that the report and ``bench/`` read."""

import itertools
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from .. import _background
from .frameworks import JaxScan, TorchLoop, choose_jax_threads, installed
from .peers import FastbpFit, FastbpPartialFit, SklearnFit
from .protocol import ALL_CORES, THREAD_COUNTS, Call, Spread, alternate, blas_threads, choose_threads, quiet_warnings
from .protocol import ratio as round_ratio

BACKGROUND_SECONDS = 300


@dataclass
class Comparison:
    """Peers measured side by side: seconds per unit (epoch, fit or call), one value per round."""

    name: str
    unit: str
    seconds: dict
    threads: dict = field(default_factory=dict)  # peer -> ThreadChoice
    accuracy: dict = field(default_factory=dict)
    first_call: dict = field(default_factory=dict)  # peer -> seconds of its untimed first call (compiling, caching)
    missing: dict = field(default_factory=dict)  # peer -> why it did not run
    flops: int = 0  # GEMM flops per unit
    extra: dict = field(default_factory=dict)

    def time(self, peer) -> Spread:
        return Spread.of(self.seconds[peer])

    def ratio(self, slow, fast) -> Spread:
        return round_ratio(self.seconds, slow, fast)


def _timed(call: Call) -> float:
    with call.context():
        started = time.perf_counter()
        call.run()
        return time.perf_counter() - started


def training_case(problem, peer_classes, rounds, probe_rounds=3) -> Comparison:
    """Peers train ``problem`` for ``problem.epochs`` epochs per round, from fresh weights, alternating.

    Before the rounds: each peer's first call (one epoch: compiling, caches),
    timed apart; then the background compile that fastbp's first call may have
    started (:mod:`fastbp._background`: its two-core schedule, which a user's later
    fits and processes get), waited for and timed in ``extra``; then each peer's
    thread count (:func:`~fastbp.bench.protocol.choose_threads`, in rounds of
    ``problem.probe_epochs``).  After them: each peer's training accuracy.
    """
    peers, comp = {}, Comparison(problem.name, "epoch", {}, flops=problem.epoch_flops())
    for cls in peer_classes:
        module = {TorchLoop: "torch", JaxScan: "jax"}.get(cls)
        if module and not installed(module):
            comp.missing[cls.name] = "not installed"
            continue
        if cls is JaxScan:
            comp.threads[cls.name] = choose_jax_threads()
        peers[cls.name] = cls(problem)
    probe = min(problem.epochs, problem.probe_epochs)
    with quiet_warnings():
        for name, peer in peers.items():
            comp.first_call[name] = _timed(peer.call(ALL_CORES, epochs=1))
        started = time.perf_counter()
        if not _background.wait(BACKGROUND_SECONDS):
            raise RuntimeError(f"fastbp's background compile took over {BACKGROUND_SECONDS} s")
        comp.extra["background compile s"] = time.perf_counter() - started
        for name, peer in peers.items():
            if name not in comp.threads:
                comp.threads[name] = choose_threads(lambda n, peer=peer: peer.call(n, probe), probe_rounds)
        comp.seconds = alternate({name: peer.call(comp.threads[name].threads) for name, peer in peers.items()}, rounds)
    comp.accuracy = {name: peer.accuracy() for name, peer in peers.items()}
    return comp


def partial_fit_case(problem, rounds) -> Comparison:
    """fastbp's ``fit(max_iter=N)`` against N ``partial_fit`` calls of one epoch each."""
    return training_case(problem, [FastbpFit, FastbpPartialFit], rounds)


class DefaultsFit:
    """``MLPClassifier(random_state=seed).fit`` of one library, the seed (and split) cycling over ``datasets``."""

    def __init__(self, base, datasets):
        self.base, self.datasets, self.models = base, datasets, []
        self.seeds = itertools.cycle(range(len(datasets)))

    def call(self, threads):
        def run():
            seed = next(self.seeds)
            data = self.datasets[seed]
            self.models.append((seed, base.make(threads, random_state=seed).fit(data.X_train, data.y_train)))

        base = self.base
        return Call(run, 1, lambda: base.context(threads))

    def test_accuracy(self):
        return float(np.mean([m.score(self.datasets[s].X_test, self.datasets[s].y_test) for s, m in self.models]))


def defaults_case(pairs=9, seeds=3, pause=0.0, threads=None) -> Comparison:
    """``MLPClassifier()`` with its defaults on digits (75/25 split, standardised, float32): fastbp, scikit-learn.

    ``pairs`` alternating pairs of fits, pair ``i`` on split and seed ``i % seeds``.
    ``threads`` ({peer: ThreadChoice}) reuses an earlier choice (for the
    settled column); else it is chosen here.
    """
    from ..datasets import load_dataset

    datasets = [load_dataset("digits", random_state=s, dtype=np.float32) for s in range(seeds)]
    peers = {"fastbp": DefaultsFit(FastbpFit(None), datasets), "scikit-learn": DefaultsFit(SklearnFit(None), datasets)}
    comp = Comparison("MLPClassifier() defaults, digits", "fit", {}, extra={"seeds": seeds})
    with quiet_warnings():
        for name, peer in peers.items():
            comp.first_call[name] = _timed(peer.call(ALL_CORES))
            comp.threads[name] = (threads or {}).get(name) or choose_threads(peer.call)
        for peer in peers.values():
            peer.models.clear()
            peer.seeds = itertools.cycle(range(seeds))
        comp.seconds = alternate({n: p.call(comp.threads[n].threads) for n, p in peers.items()}, pairs, pause)
    comp.accuracy = {name: peer.test_accuracy() for name, peer in peers.items()}
    comp.extra["n_iter"] = {name: Spread.of([m.n_iter_ for _, m in peer.models]) for name, peer in peers.items()}
    return comp


def defaults_accuracy(names=("breast_cancer", "iris", "moons"), seeds=3) -> dict:
    """``{dataset: {library: mean test accuracy}}`` of ``MLPClassifier()`` with defaults: the drop-in's accuracy."""
    from sklearn.neural_network import MLPClassifier as SkMLP

    from .. import MLPClassifier
    from ..datasets import load_dataset

    result = {}
    with quiet_warnings():
        for name in names:
            data = [load_dataset(name, random_state=s, dtype=np.float32) for s in range(seeds)]
            result[name] = {lib: float(np.mean([cls(random_state=s).fit(d.X_train, d.y_train).score(d.X_test, d.y_test)
                                                for s, d in enumerate(data)]))
                            for lib, cls in (("fastbp", MLPClassifier), ("scikit-learn", SkMLP))}
    return result


def _repeat(fn, seconds=0.02):
    """A Call of ``fn`` repeated for about ``seconds``, timed per call of ``fn``."""
    fn()
    started = time.perf_counter()
    fn()
    number = max(1, int(seconds / max(time.perf_counter() - started, 1e-7)))
    return Call(lambda: [fn() for _ in range(number)], number)


def predict_case(problem, rounds=9) -> Comparison:
    """One-row ``predict`` and ``predict_proba`` of fitted fastbp and scikit-learn models (20 epochs on ``problem``)."""
    comp = Comparison(f"one row of {problem.name}", "call", {})
    row, calls = problem.X[:1].copy(), {}
    with quiet_warnings():
        for peer in (FastbpFit(problem), SklearnFit(problem)):
            peer.train(problem.epochs, ALL_CORES)
            for method in ("predict", "predict_proba"):
                bound = getattr(peer.model, method)
                calls[f"{peer.name.split()[0]} {method}"] = _repeat(lambda bound=bound: bound(row))
        comp.seconds = alternate(calls, rounds)
    return comp


KERNEL_SHAPES = {"small": (32, 64, 128), "medium": (256, 256, 256), "large": (1024, 784, 256)}


def kernel_pairs(n, n_in, n_out, dtype, seed=0) -> dict:
    """``{(op, impl): callable}``: forward (relu) and backward (affine with dX, then relu), fastbp.kernels and twin."""
    from .. import kernels, reference

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


def kernel_case(shape, dtype, rounds=7) -> Comparison:
    """A kernel and its numpy twin, alternating; flops per call in ``extra``."""
    n, n_in, n_out = KERNEL_SHAPES[shape]
    comp = Comparison(f"{shape} {n}x{n_in}->{n_out} {dtype}", "call", {})
    calls = {f"{op}/{impl}": _repeat(fn) for (op, impl), fn in kernel_pairs(n, n_in, n_out, dtype).items()}
    comp.seconds = alternate(calls, rounds)
    comp.extra["flops"] = {"forward": 2 * n * n_in * n_out, "backward": 4 * n * n_in * n_out}
    return comp


def gemm_peaks(n=2048, rounds=3) -> dict:
    """``{(library, dtype, threads): GFLOP/s}``: an n x n product, median of alternating rounds."""
    from .peers import gemm

    rng, calls = np.random.default_rng(0), {}
    for dtype in ("float32", "float64"):
        A, B, C = (rng.standard_normal((n, n)).astype(dtype) for _ in range(3))
        for threads in THREAD_COUNTS:
            context = partial(blas_threads, threads)
            calls["numpy's", dtype, threads] = Call(lambda A=A, B=B, C=C: np.dot(A, B, out=C), 1, context)
            calls["scipy's (fastbp's)", dtype, threads] = Call(lambda A=A, B=B, C=C: gemm(A, B, C), 1, context)
    times = alternate(calls, rounds)
    return {key: 2 * n ** 3 / Spread.of(t).median / 1e9 for key, t in times.items()}


def peak(peaks: dict, threads: int, dtype="float32") -> float:
    """The machine's GEMM peak at ``threads`` threads: the faster library."""
    return max(v for (_, d, n), v in peaks.items() if d == dtype and n == min(threads, max(THREAD_COUNTS)))

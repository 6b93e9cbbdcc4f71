"""How the benchmark times things: peers alternate A B A B ... in one process, nothing between their rounds.

A user's process does not pause between a numpy computation and a fit, so
neither does this: one peer's round starts as soon as the other's ends, with
its BLAS threads perhaps still spinning, as they would be in that process.
Each peer runs at its own best thread count, entered outside the timing (see
:func:`choose_threads`).  Every time is a median over rounds with its min-max
beside it; every ratio is the median (and min-max) of per-round ratios, so a
load change on the machine that hits both peers of a round cancels out of it.
"""

import os
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

ALL_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
THREAD_COUNTS = tuple(sorted({1, ALL_CORES}))


@dataclass(frozen=True)
class Spread:
    """The median of some values and their range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values):
        return cls(statistics.median(values), min(values), max(values))

    def format(self, scale=1.0, digits=2, suffix=""):
        m, lo, hi = (f"{v * scale:.{digits}f}" for v in (self.median, self.low, self.high))
        return f"{m}{suffix} ({lo}–{hi})"


@dataclass
class Call:
    """One timed round of a peer: ``run()`` does ``units`` epochs (or calls); times are per unit.

    ``context`` is entered around ``run``, outside the timing: the peer's thread count.
    """

    run: Callable[[], object]
    units: int = 1
    context: Callable = nullcontext


def alternate(calls: dict, rounds: int, pause: float = 0.0) -> dict:
    """``{name: [seconds per unit, one per round]}``: the calls in the same order each round, back to back.

    ``pause`` > 0 sleeps before each timed run: only for a column labelled "settled", never for the headline.
    """
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            with call.context():
                if pause:
                    time.sleep(pause)
                started = time.perf_counter()
                call.run()
                times[name].append((time.perf_counter() - started) / call.units)
    return times


def ratio(times: dict, slow: str, fast: str) -> Spread:
    """How many times longer ``slow`` took than ``fast``: median and range of the per-round ratios."""
    return Spread.of([s / f for s, f in zip(times[slow], times[fast])])


@dataclass
class ThreadChoice:
    """The thread count a peer runs at, and each candidate's median seconds per unit that chose it."""

    threads: int
    medians: dict = field(default_factory=dict)
    how: str = "alternating rounds in this process"

    def format(self):
        if not self.medians:
            return f"{self.threads}"
        tried = ", ".join(f"{n}: {t * 1e3:.3g}" for n, t in sorted(self.medians.items()))
        return f"**{self.threads}** (ms at {tried})"


def choose_threads(call_at: Callable[[int], Call], rounds: int = 3) -> ThreadChoice:
    """The faster of 1 thread and all cores for a peer: ``call_at(n)`` is its round at ``n`` threads."""
    if len(THREAD_COUNTS) == 1:
        return ThreadChoice(THREAD_COUNTS[0])
    times = alternate({n: call_at(n) for n in THREAD_COUNTS}, rounds)
    medians = {n: statistics.median(t) for n, t in times.items()}
    return ThreadChoice(min(medians, key=medians.get), medians)


_controller = None


def blas_threads(n: int):
    """A context with every BLAS library (numpy's and scipy's OpenBLAS) at ``n`` threads; all cores: as they are.

    One controller, made once: threadpoolctl's inspection of the loaded
    libraries costs milliseconds, setting a count microseconds.
    """
    global _controller
    if n >= ALL_CORES:
        return nullcontext()
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401  (scipy's BLAS, the one fastbp's nopython gemm calls)
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=n, user_api="blas")


def child_env(**overrides) -> dict:
    """The environment for a fresh Python process that imports the same fastbp as this one."""
    import fastbp

    root = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]), **overrides)


@contextmanager
def quiet_warnings():
    """ConvergenceWarning and friends off: a fixed epoch budget makes them noise."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield

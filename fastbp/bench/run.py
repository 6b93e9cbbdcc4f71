"""``fastbp bench`` / ``scripts/bench.py``: the command line, declared once, and the order of the run."""

import argparse
import dataclasses
import functools
import json
import os
import sys
import time

from . import report
from .cases import (
    KERNEL_SHAPES,
    defaults_accuracy,
    defaults_case,
    gemm_peaks,
    kernel_case,
    partial_fit_case,
    peak,
    predict_case,
    training_case,
)
from .frameworks import JaxScan, TorchLoop
from .peers import BlasOnly, FastbpFit, NumpyLoop, SklearnFit, digits_problem, mnist_problem

SECTIONS = ("digits", "partial_fit", "predict", "mnist", "defaults", "kernels", "compile")
DIGITS_PEERS = [FastbpFit, SklearnFit, NumpyLoop, TorchLoop, JaxScan]


@dataclasses.dataclass(frozen=True)
class Size:
    """Rounds and sizes of a run: full (README's Results) or ``--quick``."""

    rounds: int = 9  # digits, partial_fit, predict; the defaults' pairs
    mnist_rows: int = 60000
    mnist_epochs: int = 10  # per fit: what fit's own set-up (validating 188 MB, ...) is spread over, as in real use
    mnist_rounds: int = 5
    seeds: int = 3
    kernel_rounds: int = 7


QUICK = Size(rounds=5, mnist_rows=12000, mnist_epochs=2, mnist_rounds=3, seeds=1, kernel_rounds=5)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastbp bench", description="fastbp against scikit-learn, numpy, PyTorch, JAX and its own BLAS work: "
        "peers alternating in one process, medians and ranges; writes DIR/bench.md, DIR/bench.png, DIR/bench.json.",
        epilog="Unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for this command if they are set "
        "(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...); the report says which were.")
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds, 12000 MNIST-sized rows: a few minutes on 2 cores")
    parser.add_argument("--out", default="bench-results", metavar="DIR",
                        help="folder for the report (default bench-results)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), metavar="NAME",
                        help=f"only these parts: {', '.join(SECTIONS)} (default: all)")
    return parser


def measure_all(args, emit) -> dict:
    """Run the chosen sections in order, emitting each one's markdown as it is done; the raw results."""
    size, results, want = QUICK if args.quick else Size(), {}, set(args.sections)
    peak_at = None
    if want & {"digits", "partial_fit", "mnist"}:  # the peaks their GFLOP/s are a share of
        results["gemm"] = peaks = gemm_peaks()
        emit(report.gemm_section(peaks))
        peak_at = functools.partial(peak, peaks)
    if "digits" in want:
        results["digits"] = training_case(digits_problem(), DIGITS_PEERS, size.rounds)
        emit(report.training_section(results["digits"], peak_at, "SGD lr 0.01, momentum 0.9, float32; every peer "
             "trains 20 epochs from fresh weights per round and is timed per epoch of that: the estimators through "
             "`fit(max_iter=20)`, the numpy loop as written from the seed, PyTorch's usual loop, JAX's jit of a "
             "`lax.scan` over each epoch's minibatches. Training accuracy after the last round's 20 epochs. "))
    if "partial_fit" in want:
        results["partial_fit"] = partial_fit_case(digits_problem(), size.rounds)
        emit(report.training_section(results["partial_fit"], peak_at, "fastbp's `fit(max_iter=20)` against 20 "
             "`partial_fit` calls of one epoch each (same settings as above). ", "partial_fit: an epoch per call"))
    if "predict" in want:
        results["predict"] = predict_case(digits_problem(), size.rounds)
        emit(report.calls_section("One-row predict", "Models fitted for 20 epochs on digits as above; `predict(X[:1])` "
             "and `predict_proba(X[:1])`, each round ~20 ms of calls, alternating.", results["predict"],
             [(f"fastbp / scikit-learn {m}", f"fastbp {m}", f"scikit-learn {m}") for m in ("predict", "predict_proba")]
             ))
    if "mnist" in want:
        problem = mnist_problem(size.mnist_rows, size.mnist_epochs)
        results["mnist"] = training_case(problem, [FastbpFit, BlasOnly, NumpyLoop], size.mnist_rounds)
        emit(report.training_section(results["mnist"], peak_at, f"{size.mnist_epochs} epochs per round, timed per "
             "epoch. BLAS only: the epoch's matrix products alone (`X @ W` and `A.T @ D` per layer, `D @ W.T` for "
             "all but the first, per minibatch, into preallocated arrays, through scipy's BLAS; fastbp itself "
             "multiplies the smallest of them, the 10-output layer's, with its own kernel). "))
    if "defaults" in want:
        live = defaults_case(size.rounds, size.seeds)
        results["defaults"] = live
        settled = defaults_case(size.rounds, size.seeds, pause=0.25, threads=live.threads)
        emit(report.defaults_section(live, settled, defaults_accuracy(seeds=size.seeds)))
    if "kernels" in want:
        results["kernels"] = {f"{shape} {dtype}": kernel_case(shape, dtype, size.kernel_rounds)
                              for shape in KERNEL_SHAPES for dtype in ("float32", "float64")}
        emit(report.kernels_section(results["kernels"]))
    if "compile" in want:
        from .compile_time import compile_costs

        results["compile"] = compile_costs()
        emit(report.compile_section(results["compile"]))
    return results


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {" / ".join(map(str, k)) if isinstance(k, tuple) else str(k): _jsonable(v) for k, v in value.items()}
    return [_jsonable(v) for v in value] if isinstance(value, (list, tuple)) else value


def main(argv=None, emit=print) -> int:
    from .._atomic import atomic_write

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv[1:] if argv[:1] == ["--"] else argv)
    os.makedirs(args.out, exist_ok=True)
    started, load, sections, last = time.perf_counter(), os.getloadavg(), [], [time.perf_counter()]

    def add(text):  # each section with the seconds it took, to size runs by
        now = time.perf_counter()
        text += f"\n\n*({now - last[0]:.0f} s)*" if sections else ""
        last[0] = now
        sections.append(text)
        emit(text + "\n")

    add(f"# fastbp benchmark{' (--quick)' if args.quick else ''}")
    results = measure_all(args, add)
    end_load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    tail = (f"Benchmark time {time.perf_counter() - started:.0f} s; load average (1, 5, 15 min) at the end {end_load}. "
            "Plot: bench.png; every round's time: bench.json.")
    sections.append(tail)
    emit(tail)
    sections[1:1] = [report.summary(results), report.machine("fastbp bench " + " ".join(argv), load)]
    report.plot(results, os.path.join(args.out, "bench.png"))
    files = {"bench.md": "\n\n".join(sections) + "\n", "bench.json": json.dumps(_jsonable(results), indent=1)}
    for name, text in files.items():
        atomic_write(os.path.join(args.out, name), lambda f, text=text: f.write(text.encode()))
    emit(report.summary(results))
    return 0

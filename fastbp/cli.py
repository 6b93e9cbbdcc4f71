"""The ``fastbp`` command: ``fastbp train [DATASET]``, ``fastbp warmup`` and ``fastbp bench``.

``train`` fits an MLP on a named scikit-learn toy dataset, showing a progress
line per epoch, then reports the test score, the steady-state time per epoch
and the compile (or cache-load) time apart.  Before it compiles it says so on
stderr, and compiles only its own solver, dtype and task.  Errors print one line
and exit with status 2, never a traceback: bad values, targets that cannot be
written and networks too large for the machine's memory are found before
training.  Ctrl-C at any moment prints one line and exits with status 130.
"""

import argparse
import importlib.util
import os
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager

import numpy as np

from ._atomic import atomic_write, check_target
from ._config import ACTIVATIONS
from ._entry import collect_again
from .datasets import DATASETS, load_dataset
from .warmup import CHUNKED_ROWS

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a program stopped by Ctrl-C
# How long Ctrl-C waits for a fit to stop at the end of its epoch before the process exits without it.
STOP_WAIT_SECONDS = 0.5


def _positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _hidden_sizes(text):
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 128,64, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastbp", description="Fast backprop for MLPs on the CPU.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an MLP on a scikit-learn toy dataset")
    train.add_argument("dataset", nargs="?", default="digits", choices=sorted(DATASETS), metavar="DATASET",
                       help=f"one of {', '.join(sorted(DATASETS))} (default: digits)")
    train.add_argument("--hidden", type=_hidden_sizes, default=(128,),
                       help="hidden layer sizes, e.g. 128,64 (default 128)")
    train.add_argument("--activation", default="relu", choices=["relu", "logistic", "tanh", "identity"])
    train.add_argument("--solver", choices=["sgd", "adam", "lbfgs"],
                       help="default: sgd for classification, adam for regression (raw targets make plain SGD diverge)")
    train.add_argument("--epochs", type=_positive_int, default=20, help="epochs (default 20)")
    train.add_argument("--batch-size", type=_positive_int, default=32, help="minibatch size (default 32)")
    train.add_argument("--lr", type=float, default=0.01, help="initial learning rate (default 0.01)")
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    train.add_argument("--alpha", type=float, default=0.0, help="L2 penalty (default 0)")
    train.add_argument("--seed", type=int, default=0, help="random seed for split, init and shuffling (default 0)")
    train.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    train.add_argument("--save", metavar="PATH", help="write the trained model (with its preprocessing) to PATH")
    train.add_argument("--plot", metavar="PATH", help="write a PNG of the loss and validation curves to PATH")
    train.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    warm = sub.add_parser("warmup", help="compile every kernel ahead of time (for a container image or a CI step)")
    warm.add_argument("--dtype", nargs="+", choices=["float32", "float64"], default=["float32", "float64"],
                      help="dtypes to compile for (default: both)")
    warm.add_argument("--activation", nargs="+", choices=list(ACTIVATIONS), default=["relu"],
                      help="hidden activations to compile for (default: relu, the estimators' default; each more "
                           "takes as long again)")
    warm.add_argument("--clear", action="store_true", help="delete fastbp's cached compiled code first")
    bench = sub.add_parser("bench", help="run the benchmark suite (see scripts/bench.py)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER,
                       help="arguments for the benchmark, e.g. --quick --out DIR")
    return parser


def _progress_line(epoch, total, loss, score, seconds, width=20):
    filled = int(width * epoch / total)
    bar = "#" * filled + "." * (width - filled)
    score_text = "" if score is None else f"  val {score:.4f}"
    return f"epoch {epoch:>{len(str(total))}}/{total} [{bar}] loss {loss:.4f}{score_text}  {seconds * 1e3:.1f} ms"


class Progress:
    """Where a command is, so that Ctrl-C can say in one line what was done and what was not."""

    def __init__(self, epochs=None):
        self.phase = "starting"
        self.epochs, self.done = epochs, 0
        self.saved = []
        self.stop = threading.Event()  # set by Ctrl-C: a fit stops at the end of its epoch

    def interrupted(self) -> str:
        saved = f"wrote {', '.join(self.saved)}" if self.saved else "nothing saved"
        if self.epochs is not None and self.phase in ("training", "saving"):
            return f"interrupted after {self.done} of {self.epochs} epochs; {saved}"
        where = {"compiling": "while compiling fastbp's kernels", "training": "while training",
                 "saving": "after training"}
        return f"interrupted {where.get(self.phase, 'before training')}; {saved}"


def train(args, out=None, err=None, progress=None) -> int:
    from sklearn.model_selection import train_test_split

    from . import MLPClassifier, MLPRegressor, TrainingDivergedWarning
    from .network import PREDICT_CHUNK

    # Looked up per call, not bound at import: redirect_stdout and test capture must see the output.
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    progress = Progress(args.epochs) if progress is None else progress
    for name, expected, valid in (("lr", "> 0", lambda v: v > 0), ("momentum", "in [0, 1]", lambda v: 0 <= v <= 1),
                                  ("alpha", ">= 0", lambda v: v >= 0)):
        value = getattr(args, name)
        if not (np.isfinite(value) and valid(value)):
            raise ValueError(f"--{name} must be {expected}, got {value}")
    _check_targets(args)  # before training, not after it: a typo must not cost the whole run
    data = load_dataset(args.dataset, random_state=args.seed, dtype=np.dtype(args.dtype))
    classify = data.task == "classification"
    X_fit, X_val, y_fit, y_val = train_test_split(data.X_train, data.y_train, test_size=0.1, random_state=args.seed,
                                                  stratify=data.y_train if classify else None)
    solver = args.solver or ("sgd" if classify else "adam")
    n_classes = len(np.unique(y_fit)) if classify else 0
    units = [X_fit.shape[1], *args.hidden, (1 if n_classes == 2 else n_classes) if classify else
             (1 if y_fit.ndim == 1 else y_fit.shape[1])]
    step_rows = X_fit.shape[0] if solver == "lbfgs" else min(args.batch_size, X_fit.shape[0])
    # the validation score after each epoch runs forward in chunks of PREDICT_CHUNK rows
    check_memory(units, np.dtype(args.dtype).itemsize, solver, max(step_rows, min(X_val.shape[0], PREDICT_CHUNK)))
    collect_again()  # everything imported, the dataset loaded: the work starts (see fastbp._entry)
    cls = MLPClassifier if classify else MLPRegressor
    curves = {"loss": [], "val": [], "seconds": []}
    model = cls(hidden_layer_sizes=args.hidden, activation=args.activation, solver=solver, alpha=args.alpha,
                batch_size=args.batch_size, learning_rate_init=args.lr, momentum=args.momentum,
                nesterovs_momentum=False, max_iter=args.epochs, random_state=args.seed, tol=0.0,
                n_iter_no_change=args.epochs + 1)

    def on_epoch(info):
        score = model.score(X_val, y_val)
        curves["loss"].append(info.loss)
        curves["val"].append(score)
        curves["seconds"].append(info.seconds)
        progress.done = info.epoch
        if not args.quiet:
            print(_progress_line(info.epoch, args.epochs, info.loss, score, info.seconds), file=err, flush=True)
        return progress.stop.is_set()

    if solver != "lbfgs":
        model.set_params(callbacks=[on_epoch])
    else:
        progress.epochs = None  # L-BFGS reports no epochs as it goes

    def compile_and_fit():
        from .network import Network

        progress.phase = "compiling"
        task = ("multiclass" if n_classes > 2 else "binary") if classify else "regression"
        halves = solver != "lbfgs" and Network(units, args.activation, "identity", args.dtype).splits_units(step_rows)
        compile_seconds = _compile(args.dtype, solver, task, args.activation, step_rows >= CHUNKED_ROWS, halves, err)
        progress.phase = "training"
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=Warning)  # the fixed epoch budget makes ConvergenceWarning noise
            warnings.simplefilter("error", category=TrainingDivergedWarning)  # but a diverged run ends in its line
            try:
                model.fit(X_fit, y_fit)
            except TrainingDivergedWarning as exc:
                raise FloatingPointError(str(exc)) from None
        return compile_seconds, time.perf_counter() - started

    compile_seconds, fit_seconds = run_interruptibly(compile_and_fit, progress, err)
    progress.phase = "saving"
    model.set_params(callbacks=None)
    metric = "accuracy" if classify else "R^2"
    print(f"dataset {data.name}: {data.X_train.shape[0]} train / {data.X_test.shape[0]} test rows, "
          f"{data.X_train.shape[1]} features, {args.dtype}", file=out)
    print(f"test {metric}: {model.score(data.X_test, data.y_test):.4f}", file=out)
    steady = curves["seconds"][1:] or curves["seconds"]
    if steady:
        print(f"time per epoch: {np.median(steady) * 1e3:.2f} ms (median of {len(steady)} epochs after the first)",
              file=out)
    print(f"total fit: {fit_seconds:.2f} s; compile / cache load before it: {compile_seconds:.2f} s", file=out)
    # Each file is written whole or not begun: Ctrl-C while writing one is answered once it is written.
    if args.save:
        _save(model, data, args.save, progress)
        print(f"saved model to {args.save} (predicts on raw features)", file=out)
    if args.plot:
        with _deferred_interrupts():
            _plot(curves, metric, args.plot)
            progress.saved.append(args.plot)
        print(f"wrote plot to {args.plot}", file=out)
    return 0


def _save(model, data, path, progress):
    """The model behind the dataset's scaling, as one pipeline that predicts on raw features."""
    # Imported here, not with the rest: only a run that saves pays for them.
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from .io import save

    scaler = StandardScaler()
    scaler.mean_, scaler.scale_ = data.mean.astype(np.float64), data.scale.astype(np.float64)
    scaler.var_, scaler.n_features_in_, scaler.n_samples_seen_ = scaler.scale_ ** 2, data.mean.shape[0], 1
    with _deferred_interrupts():
        save(Pipeline([("scale", scaler), ("mlp", model)]), path)
        progress.saved.append(path)


def _check_targets(args):
    """Every file the run will write can be written: a regular file (or a new one) in a writable folder."""
    for option in ("save", "plot"):
        target = getattr(args, option)
        if target is None:
            continue
        try:
            check_target(target)
        except (ValueError, OSError) as exc:
            raise type(exc)(f"--{option} {target or repr(target)}: {exc}") from None
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise ImportError('--plot needs matplotlib, which is not installed: pip install "fastbp[plot]"')


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable on Linux; physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(units, itemsize, solver, rows) -> None:
    """Refuse, before allocating anything, a network whose parameters and workspace cannot fit in memory.

    A lower bound of what training holds: the parameters, their gradient and the
    optimizer's state (L-BFGS: scipy's float64 copies and ten correction pairs),
    and each layer's activations and deltas for ``rows`` rows.
    """
    n_params = sum(a * b + b for a, b in zip(units[:-1], units[1:]))
    vectors = {"sgd": 3 * itemsize, "adam": 4 * itemsize, "lbfgs": 2 * itemsize + 24 * 8}[solver]
    needed = vectors * n_params + 2 * itemsize * rows * sum(units)
    available = available_memory()
    if needed > available:
        raise ValueError(f"a {'-'.join(map(str, units))} network needs at least {needed / 2 ** 30:.1f} GiB for its "
                         f"parameters and workspace ({solver}, {rows} rows per step); {available / 2 ** 30:.1f} GiB "
                         "of memory is available")


def _compile(dtype, solver, task, activation, chunked, halves, err):
    """Warm up only this run's path, saying so before (it may take seconds) and how long it took."""
    from ._cache import active_dir, cache_files
    from .warmup import compiled_count, warmup

    cached = any(name.endswith(".nbi") for name in cache_files(active_dir()))
    what = f"for {dtype} ({solver}, {activation}, {task})"
    print(f"loading fastbp's compiled kernels {what} from the cache..." if cached else
          f"compiling fastbp's kernels {what}: first run on this machine, cached afterwards...", file=err, flush=True)
    before = compiled_count()
    seconds = warmup(dtypes=(dtype,), solvers=(solver,), tasks=(task,), chunked=chunked, activations=(activation,),
                     halves=halves)
    compiled = compiled_count() - before
    print(f"ready in {seconds:.1f} s ({f'compiled {compiled} functions' if compiled else 'cached'})", file=err,
          flush=True)
    return seconds


def run_interruptibly(work, progress, err):
    """``work()`` in a worker thread while this thread waits, so that Ctrl-C is answered within a second.

    Numba's compiler cannot be interrupted, and a fit only stops between epochs:
    on Ctrl-C a fit is asked to stop (its callbacks see ``progress.stop``) and
    given :data:`STOP_WAIT_SECONDS`; if it is still running then (or compiling),
    the process prints the one line and exits with status 130 at once.
    """
    result, done = {}, threading.Event()

    def target():
        try:
            result["value"] = work()
        except BaseException as exc:  # handed to the waiting thread, which raises it
            result["error"] = exc
        finally:
            done.set()

    # Waiting on an Event, not Thread.join: a join interrupted by Ctrl-C marks a running thread as ended
    # (Python 3.11's Thread._wait_for_tstate_lock releases the lock the running thread holds).
    threading.Thread(target=target, name="fastbp-work", daemon=True).start()
    try:
        while not done.wait(0.05):
            pass
    except KeyboardInterrupt:
        progress.stop.set()
        try:
            if progress.phase == "training":
                done.wait(STOP_WAIT_SECONDS)
        except KeyboardInterrupt:
            pass
        if not done.is_set():
            print(progress.interrupted(), file=err, flush=True)
            sys.stdout.flush()
            os._exit(EXIT_INTERRUPTED)  # the worker cannot be stopped; exiting does not wait for it
        raise
    if "error" in result:
        raise result["error"]
    if progress.stop.is_set():  # stopped at an epoch's end by Ctrl-C: the model is partial
        raise KeyboardInterrupt
    return result["value"]


@contextmanager
def _deferred_interrupts():
    """Ctrl-C in the block is answered when it ends (main thread only: signal handlers live there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def warmup_command(args, out=None, progress=None) -> int:
    """``fastbp warmup``: compile every path for the dtypes asked, after deleting the cache if asked."""
    from ._cache import clear
    from .warmup import compiled_count, warmup

    out = sys.stdout if out is None else out
    progress = Progress() if progress is None else progress
    if args.clear:
        print(f"deleted {len(clear())} cached files of fastbp's compiled code", file=out)
    progress.phase = "compiling"
    seconds = run_interruptibly(lambda: warmup(dtypes=tuple(args.dtype), activations=tuple(args.activation)),
                                progress, sys.stderr)
    print(f"fastbp's kernels for {', '.join(args.dtype)} and {', '.join(args.activation)} ready in {seconds:.1f} s "
          f"({compiled_count()} functions compiled, the rest loaded from the cache)", file=out)
    return 0


def _plot(curves, metric, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(curves["loss"]) + 1)
    ax.plot(epochs, curves["loss"], color="tab:blue", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="tab:blue")
    other = ax.twinx()
    other.plot(epochs, curves["val"], color="tab:orange", label=f"validation {metric}")
    other.set_ylabel(f"validation {metric}", color="tab:orange")
    ax.set_title("fastbp training")
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        # Handed over whole: argparse's REMAINDER would refuse a leading option such as --quick.
        from .bench import main as bench_main

        collect_again()
        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    progress = Progress(getattr(args, "epochs", None))
    try:
        if args.command == "warmup":
            collect_again()
            return warmup_command(args, progress=progress)
        return train(args, progress=progress)
    except KeyboardInterrupt:
        print(progress.interrupted(), file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError, FloatingPointError, ImportError, MemoryError) as exc:
        print(f"fastbp: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        collect_again()  # a command that ended before it started its work


def run() -> None:
    """The command's entry point: :func:`main`, then exit at once with its status.

    Exiting through ``os._exit`` skips the interpreter's teardown, which here takes
    0.5-0.9 s after numpy, scikit-learn and Numba have been imported (measured from
    the last line printed to the process's end); the command has nothing left to
    clean up: its files are written, flushed and closed.
    """
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    run()

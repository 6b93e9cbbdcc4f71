"""The ``fastbp`` command: ``fastbp train [DATASET]`` and ``fastbp bench``.

``train`` fits an MLP on a named scikit-learn toy dataset, showing a progress
line per epoch, then reports the test score, the steady-state time per epoch
and the compile (or cache-load) time apart.  Errors print one line and exit
with status 2, never a traceback.
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

from ._atomic import atomic_write
from .datasets import DATASETS, load_dataset

EXIT_USAGE = 2


def _positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _hidden_sizes(text):
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 128,64, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 128,64, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastbp", description="Fast backprop for MLPs on the CPU.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an MLP on a scikit-learn toy dataset")
    train.add_argument("dataset", nargs="?", default="digits", choices=sorted(DATASETS), metavar="DATASET",
                       help=f"one of {', '.join(sorted(DATASETS))} (default: digits)")
    train.add_argument("--hidden", type=_hidden_sizes, default=(128,), help="hidden layer sizes, e.g. 128,64 (default 128)")
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
    bench = sub.add_parser("bench", help="run the benchmark suite (see scripts/bench.py)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for the benchmark, e.g. --quick --out DIR")
    return parser


def _progress_line(epoch, total, loss, score, seconds, width=20):
    filled = int(width * epoch / total)
    bar = "#" * filled + "." * (width - filled)
    score_text = "" if score is None else f"  val {score:.4f}"
    return f"epoch {epoch:>{len(str(total))}}/{total} [{bar}] loss {loss:.4f}{score_text}  {seconds * 1e3:.1f} ms"


def train(args, out=None, err=None) -> int:
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from . import MLPClassifier, MLPRegressor
    from .io import save
    from .warmup import warmup

    # Looked up per call, not bound at import: redirect_stdout and test capture must see the output.
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    for name in ("lr", "momentum", "alpha"):
        value = getattr(args, name)
        if not np.isfinite(value) or value < 0 or (name == "lr" and value == 0) or (name == "momentum" and value > 1):
            raise ValueError(f"--{name} must be {'> 0' if name == 'lr' else 'in [0, 1]' if name == 'momentum' else '>= 0'}, got {value}")
    for option in ("save", "plot"):  # before training, not after it: a typo must not cost the whole run
        target = getattr(args, option)
        folder = os.path.dirname(os.path.abspath(target)) if target else None
        if folder is not None and not os.path.isdir(folder):
            raise FileNotFoundError(f"--{option} {target}: there is no folder {folder!r} to write it in")
    data = load_dataset(args.dataset, random_state=args.seed, dtype=np.dtype(args.dtype))
    classify = data.task == "classification"
    X_fit, X_val, y_fit, y_val = train_test_split(data.X_train, data.y_train, test_size=0.1, random_state=args.seed,
                                                  stratify=data.y_train if classify else None)
    compile_seconds = warmup(args.dtype)
    cls = MLPClassifier if classify else MLPRegressor
    solver = args.solver or ("sgd" if classify else "adam")
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
        if not args.quiet:
            print(_progress_line(info.epoch, args.epochs, info.loss, score, info.seconds), file=err, flush=True)
        return False

    if solver != "lbfgs":
        model.set_params(callbacks=[on_epoch])
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=Warning)  # the fixed epoch budget makes ConvergenceWarning noise
        model.fit(X_fit, y_fit)
    fit_seconds = time.perf_counter() - started
    model.set_params(callbacks=None)
    metric = "accuracy" if classify else "R^2"
    print(f"dataset {data.name}: {data.X_train.shape[0]} train / {data.X_test.shape[0]} test rows, "
          f"{data.X_train.shape[1]} features, {args.dtype}", file=out)
    print(f"test {metric}: {model.score(data.X_test, data.y_test):.4f}", file=out)
    steady = curves["seconds"][1:] or curves["seconds"]
    if steady:
        print(f"time per epoch: {np.median(steady) * 1e3:.2f} ms (median of {len(steady)} epochs after the first)", file=out)
    print(f"total fit: {fit_seconds:.2f} s; compile / cache load before it: {compile_seconds:.2f} s", file=out)
    if args.save:
        scaler = StandardScaler()
        scaler.mean_, scaler.scale_ = data.mean.astype(np.float64), data.scale.astype(np.float64)
        scaler.var_, scaler.n_features_in_, scaler.n_samples_seen_ = scaler.scale_ ** 2, data.mean.shape[0], 1
        save(Pipeline([("scale", scaler), ("mlp", model)]), args.save)
        print(f"saved model to {args.save} (predicts on raw features)", file=out)
    if args.plot:
        _plot(curves, metric, args.plot)
        print(f"wrote plot to {args.plot}", file=out)
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

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return train(args)
    except (ValueError, TypeError, OSError, FloatingPointError, ImportError) as exc:
        print(f"fastbp: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

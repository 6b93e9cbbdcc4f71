"""The benchmark's report: markdown sections for DIR/bench.md, the plot, and the machine it ran on."""

import datetime
import os
import platform

from .peers import BlasOnly, FastbpFit
from .protocol import THREAD_COUNTS
from .targets import TARGETS, measure

FAST = FastbpFit.name


def table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return platform.processor() or "unknown"


def machine(command: str, load) -> str:
    """Where and how it ran: versions, the BLAS kernels threadpoolctl sees, the OpenBLAS variables, the load."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS, the one fastbp's nopython gemm calls)
    from threadpoolctl import threadpool_info

    env = "; ".join(f"{k}={os.environ[k]!r} IS SET (unset it in the benchmark command)" if k in os.environ
                    else f"{k} not set" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    versions = ", ".join(f"{m} {_version(m)}" for m in ("numpy", "numba", "scipy", "sklearn", "torch", "jax"))
    rows = [("command", f"`{command}`"), ("date", datetime.datetime.now().isoformat(timespec="seconds")),
            ("machine", f"{platform.platform()}; {_cpu_model()}; {os.cpu_count()} cores"),
            ("versions", f"python {platform.python_version()}, {versions}"), ("environment", env),
            ("load average at start (1, 5, 15 min)", " ".join(f"{v:.2f}" for v in load))]
    rows += [(f"{p['user_api']} library {os.path.basename(p['filepath'])}",
              f"{p['internal_api']} {p['version']}, kernel {p.get('architecture')}, {p['num_threads']} threads")
             for p in threadpool_info()]
    return "## Machine\n\n" + table(("what", "value"), rows)


def summary(results) -> str:
    """Every target the run can show: measured, required, met.  README's Results table is this one."""
    rows = []
    for key, value in measure(results).items():
        target = TARGETS[key]
        rows.append((target.what, target.show(value), target.describe(), "yes" if target.met(value) else "**no**"))
    return ("## Summary\n\nMedian (min–max) of per-round ratios, peers alternating with nothing between rounds; "
            "compile figures: one fresh process each.\n\n" + table(("what", "measured", "target", "met"), rows))


def gemm_section(peaks) -> str:
    rows = [(lib, dtype, threads, f"{gflops:.0f}") for (lib, dtype, threads), gflops in sorted(peaks.items())]
    return ("## GEMM peak\n\n2048x2048 products, median of 3 alternating rounds, each library at 1 thread and at all "
            "cores (threadpoolctl).\n\n" + table(("BLAS", "dtype", "threads", "GFLOP/s"), rows))


def training_section(comp, peak_at=None, note="", title=None) -> str:
    """A training comparison: per-epoch times, ratios to fastbp's, GFLOP/s, thread choice, accuracy."""
    rows = []
    for peer in comp.seconds:
        t, threads = comp.time(peer), comp.threads[peer].threads
        gflops = comp.flops / t.median / 1e9
        acc = comp.accuracy.get(peer)
        share = "-" if peak_at is None else f"{100 * gflops / peak_at(threads):.0f}%"
        rows.append((peer, comp.threads[peer].format(), t.format(1e3), f"**{comp.ratio(peer, FAST).format()}**",
                     f"{gflops:.1f}", share, "-" if acc is None else f"{acc:.4f}", f"{comp.first_call[peer]:.2f}"))
    rows += [(peer, why, "", "", "", "", "", "") for peer, why in comp.missing.items()]
    how = {c.how for c in comp.threads.values()}
    waited = comp.extra.get("background compile s", 0.0)
    if waited >= 0.05:
        note += (f"fastbp's first call started the compile of its two-core schedule in another process "
                 f"(`fastbp._background`, as for any user's first fit); the rounds began when it had finished, "
                 f"{waited:.1f} s later (later processes load that code from the cache). ")
    return (f"## {title or comp.name}\n\n{note}Threads: each peer's faster of {' and '.join(map(str, THREAD_COUNTS))} "
            f"({'; '.join(sorted(how))}; ms per epoch). % of peak: of the GEMM peak at the peer's thread count.\n\n"
            + table(("peer", "threads", "ms/epoch median (min–max)", "time / fastbp's", "GFLOP/s", "% of peak",
                     "train accuracy", "first call s (excluded)"), rows))


def defaults_section(comp, settled, accuracy) -> str:
    n_iter = comp.extra["n_iter"]
    rows = [(peer, comp.threads[peer].format(), comp.time(peer).format(1e3, 0),
             f"**{comp.ratio('scikit-learn', peer).format()}**", settled.time(peer).format(1e3, 0),
             settled.ratio("scikit-learn", peer).format(), n_iter[peer].format(digits=0),
             f"{comp.accuracy[peer]:.4f}") for peer in comp.seconds]
    acc_rows = [(name, f"{a['fastbp']:.4f}", f"{a['scikit-learn']:.4f}", f"{a['fastbp'] - a['scikit-learn']:+.4f}")
                for name, a in accuracy.items()]
    pairs = len(comp.seconds["fastbp"])
    return ("## Drop-in: `MLPClassifier()` defaults on digits\n\nadam, 100 ReLU units, batch 200, up to 200 epochs "
            "with tol-based stopping; 75/25 stratified split, standardised, float32; pair *i* uses split and "
            f"random_state *i* mod {comp.extra['seeds']}. {pairs} alternating pairs of fits with "
            "nothing between them; *settled*: the same pairs again with an untimed 0.25 s pause before each fit "
            "(numpy's idle BLAS threads stop spinning; a user's process does not pause, so this column is not the "
            "headline).\n\n" + table(("library", "threads", "ms/fit median (min–max)", "scikit-learn's / this",
                                      "settled ms/fit", "settled ratio", "epochs (n_iter_)", "test accuracy"), rows)
            + "\n\nTest accuracy of `MLPClassifier()` on the other datasets (no timing):\n\n"
            + table(("dataset", "fastbp", "scikit-learn", "difference"), acc_rows))


def calls_section(title, note, comp, pairs) -> str:
    """Per-call times of alternating callables and the ratios of ``pairs`` [(label, numerator, denominator)]."""
    rows = [(name, comp.time(name).format(1e6, 1)) for name in comp.seconds]
    ratios = [(label, f"**{comp.ratio(num, den).format()}**") for label, num, den in pairs]
    return (f"## {title}\n\n{note}\n\n" + table(("call", "µs median (min–max)"), rows) + "\n\n"
            + table(("ratio", "median (min–max)"), ratios))


def kernels_section(kernels) -> str:
    rows = []
    for comp in kernels.values():
        for op, flops in comp.extra["flops"].items():
            k, r = comp.time(f"{op}/kernel"), comp.time(f"{op}/reference")
            rows.append((comp.name, op, k.format(1e6, 1), r.format(1e6, 1),
                         f"**{comp.ratio(f'{op}/reference', f'{op}/kernel').format()}**",
                         f"{flops / k.median / 1e9:.1f}", f"{flops / r.median / 1e9:.1f}"))
    return ("## Kernels vs their numpy twins\n\n`fastbp.kernels` against `fastbp.reference` (same validation, so "
            "the pair differs only in the arithmetic): forward = `affine_forward(relu)`; backward = `affine_backward` "
            "(with dX) + `activation_backward(relu)`. Alternating rounds of ~20 ms, 7 rounds, all cores.\n\n"
            + table(("shape", "op", "kernel µs", "twin µs", "twin / kernel", "kernel GFLOP/s", "twin GFLOP/s"), rows))


def compile_section(costs) -> str:
    fit, train, warm = costs["fit"], costs["train"], costs["warmup"]
    rows = [(f"first fit, {run} cache", f"{r['import']:.2f}", f"{r['first fit']:.2f}", f"{r['second fit']:.3f}",
             f"{r['process']:.2f}") for run, r in fit.items()]
    rows += [(f"after warm-up: {solver}", f"{r['import']:.2f}", f"{r['first fit']:.2f}", f"{r['second fit']:.3f}",
              f"{r['process']:.2f}") for solver, r in costs["after warmup"].items()]
    return ("## Compile time\n\nFresh processes with `NUMBA_CACHE_DIR` set to a new empty folder, then the same "
            "folder again, filled by the first. Fit: `MLPClassifier(solver='sgd', batch_size=32, max_iter=1)` on "
            "digits, float32 (import fastbp, then two fits). "
            f"`fastbp train digits`, start to exit: **{train['cold']:.2f} s** cold, "
            f"**{train['second']:.2f} s** the second run. Warm-up (`{warm['command']}`) in an empty cache: "
            f"{warm['seconds']:.1f} s; then each solver's first fit in a new process:\n\n"
            + table(("process", "import fastbp s", "first fit s", "second fit s", "process start to exit s"), rows))


def plot(results, path) -> None:
    """Left: each peer's epoch time / fastbp's; right: each target's measured / required value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._atomic import atomic_write

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    labels, values, errors = [], [], [[], []]
    for key in ("digits", "mnist"):
        comp = results.get(key)
        for peer in (comp.seconds if comp else ()):
            if peer != FAST:
                r = comp.ratio(peer, FAST)
                labels.append(f"{key}\n{peer}".replace(BlasOnly.name, "BLAS only"))
                values.append(r.median)
                errors[0].append(r.median - r.low)
                errors[1].append(r.high - r.median)
    left.bar(range(len(values)), values, yerr=errors, capsize=3)
    left.axhline(1.0, color="k", lw=0.8)
    left.set_yscale("log")
    left.set_xticks(range(len(values)), labels, fontsize=6)
    left.set(ylabel="epoch time / fastbp's (median, min-max)", title="training: peers against fastbp")
    measured = measure(results)
    keys = [k for k in measured if TARGETS[k].unit == "x"]
    scores = [getattr(measured[k], "median", measured[k]) / TARGETS[k].bound for k in keys]
    scores = [s if TARGETS[k].at_least else 1 / s for k, s in zip(keys, scores)]
    right.barh(range(len(keys)), scores, color=["tab:green" if s >= 1 else "tab:red" for s in scores])
    right.axvline(1.0, color="k", lw=0.8)
    right.set_yticks(range(len(keys)), keys, fontsize=7)
    right.set(xlabel="measured / target (≥ 1: met)", title="targets")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)

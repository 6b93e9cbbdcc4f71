"""What fastbp promises (issues 10 and 11, "What it must show"), and how each figure is read off the results.

One list for both the report's summary and the assertions in ``bench/``, so the
two cannot drift apart.  Ratios are medians of per-round ratios; compile figures
are seconds of one fresh process each.
"""

from dataclasses import dataclass

from .frameworks import JaxScan, TorchLoop
from .peers import BlasOnly, FastbpFit, FastbpPartialFit, NumpyLoop, SklearnFit


@dataclass(frozen=True)
class Target:
    what: str
    at_least: bool
    bound: float
    unit: str = "x"

    def met(self, value) -> bool:
        value = getattr(value, "median", value)
        return value >= self.bound if self.at_least else value <= self.bound

    def show(self, value):
        if hasattr(value, "format"):
            return value.format(suffix=self.unit)
        return f"{value:+.4f}" if self.unit == "" else f"{value:.2f}{self.unit}"

    def describe(self):
        return f"{'≥' if self.at_least else '≤'} {self.bound:g}{self.unit}"


FAST = FastbpFit.name
TARGETS = {
    "digits/scikit-learn": Target("digits batch 32: scikit-learn's fit time / fastbp's", True, 12),
    "digits/numpy": Target("digits batch 32: the numpy loop's time / fastbp's", True, 3.5),
    "digits/jax": Target("digits batch 32: JAX's time / fastbp's", True, 2.2),
    "digits/torch": Target("digits batch 32: PyTorch's time / fastbp's", True, 12),
    "digits/accuracy": Target("digits batch 32: largest training-accuracy gap to fastbp's", False, 0.01, ""),
    "defaults/scikit-learn": Target("`MLPClassifier()` on digits: scikit-learn's fit time / fastbp's", True, 8),
    "defaults/accuracy": Target("`MLPClassifier()` on digits: fastbp's test accuracy - scikit-learn's", True, -0.01,
                                ""),
    "mnist/blas": Target("MNIST-sized: fastbp's epoch / its BLAS-only epoch", False, 1.10),
    "mnist/numpy": Target("MNIST-sized: the numpy loop's time / fastbp's", True, 1.2),
    "partial_fit": Target("an epoch of `partial_fit` calls / an epoch of `fit`", False, 1.2),
    "predict": Target("one-row `predict`: fastbp's time / scikit-learn's", False, 0.5),
    "predict_proba": Target("one-row `predict_proba`: fastbp's time / scikit-learn's", False, 0.5),
    "compile/cold fit": Target("first fit, empty cache (sgd, float32, digits, batch 32, 1 epoch)", False, 3.0, " s"),
    "compile/cold train": Target("`fastbp train digits`, empty cache, start to exit", False, 5.0, " s"),
    "compile/second train": Target("`fastbp train digits` again, start to exit", False, 1.5, " s"),
    "compile/after warmup": Target("slowest first fit of a solver after `fastbp warmup`", False, 0.5, " s"),
    "kernel/forward small float32": Target("kernel / twin: fused forward 32x64->128 float32", True, 1.8),
    "kernel/forward large float32": Target("kernel / twin: fused forward 1024x784->256 float32", True, 1.05),
    "kernel/backward small float32": Target("kernel / twin: backward 32x64->128 float32", True, 1.3),
}
PEER_KEYS = {SklearnFit.name: "digits/scikit-learn", NumpyLoop.name: "digits/numpy", JaxScan.name: "digits/jax",
             TorchLoop.name: "digits/torch"}


def measure(results: dict) -> dict:
    """``{target key: Spread or float}`` for the targets that ``results`` (any subset of the run's) can show."""
    out = {}
    digits = results.get("digits")
    if digits:
        out.update({key: digits.ratio(peer, FAST) for peer, key in PEER_KEYS.items() if peer in digits.seconds})
        out["digits/accuracy"] = max(abs(a - digits.accuracy[FAST]) for a in digits.accuracy.values())
    if results.get("defaults"):
        d = results["defaults"]
        out["defaults/scikit-learn"] = d.ratio("scikit-learn", "fastbp")
        out["defaults/accuracy"] = d.accuracy["fastbp"] - d.accuracy["scikit-learn"]
    if results.get("mnist"):
        out["mnist/blas"] = results["mnist"].ratio(FAST, BlasOnly.name)
        out["mnist/numpy"] = results["mnist"].ratio(NumpyLoop.name, FAST)
    if results.get("partial_fit"):
        out["partial_fit"] = results["partial_fit"].ratio(FastbpPartialFit.name, FAST)
    if results.get("predict"):
        for method in ("predict", "predict_proba"):
            out[method] = results["predict"].ratio(f"fastbp {method}", f"scikit-learn {method}")
    for shape_dtype, comp in (results.get("kernels") or {}).items():
        for op in ("forward", "backward"):
            key = f"kernel/{op} {shape_dtype}"
            if key in TARGETS:
                out[key] = comp.ratio(f"{op}/reference", f"{op}/kernel")
    compile_costs = results.get("compile")
    if compile_costs:
        out["compile/cold fit"] = compile_costs["fit"]["empty"]["first fit"]
        out["compile/cold train"] = compile_costs["train"]["cold"]
        out["compile/second train"] = compile_costs["train"]["second"]
        out["compile/after warmup"] = max(r["first fit"] for r in compile_costs["after warmup"].values())
    return out


def verdict(results: dict, key: str):
    """``(met, message)`` for target ``key``; ``(None, why)`` when the results cannot show it (a peer not installed)."""
    target, value = TARGETS[key], measure(results).get(key)
    if value is None:
        missing = ", ".join(f"{peer}: {why}" for comp in results.values()
                            for peer, why in getattr(comp, "missing", {}).items())
        return None, f"{target.what}: not measured ({missing or 'not in these results'})"
    return target.met(value), f"{target.what}: {target.show(value)}, target {target.describe()}"

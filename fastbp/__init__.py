"""fastbp: fast backpropagation for multi-layer perceptrons on the CPU.

The names below are imported on first use (PEP 562), so ``import fastbp`` is
cheap and the command line can answer Ctrl-C while numpy, scikit-learn and
Numba are still loading (see :mod:`fastbp._entry`).
"""

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "MLPClassifier": "estimator", "MLPRegressor": "estimator", "gradients": "network", "EpochInfo": "trainer",
    "TrainingDivergedError": "trainer", "TrainingDivergedWarning": "_base", "save": "io", "load": "io",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        from importlib import import_module

        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # once: later lookups do not come here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_EXPORTS})

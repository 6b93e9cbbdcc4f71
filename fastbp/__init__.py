"""fastbp: fast backpropagation for multi-layer perceptrons on the CPU."""

from ._base import TrainingDivergedWarning
from .estimator import MLPClassifier, MLPRegressor
from .network import Network, gradients
from .trainer import EpochInfo, TrainingDivergedError

__version__ = "0.1.0"
__all__ = ["MLPClassifier", "MLPRegressor", "Network", "gradients", "EpochInfo", "TrainingDivergedError",
           "TrainingDivergedWarning", "save", "load", "__version__"]


def __getattr__(name):
    # fastbp.save / fastbp.load without importing fastbp.io (and its zip and JSON code) on `import fastbp`.
    if name in ("save", "load"):
        from . import io

        return getattr(io, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

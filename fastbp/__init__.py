"""fastbp: fast backpropagation for multi-layer perceptrons on the CPU."""

from .estimator import MLPClassifier, MLPRegressor
from .network import Network, gradients
from .trainer import EpochInfo, TrainingDivergedError

__version__ = "0.1.0"
__all__ = ["MLPClassifier", "MLPRegressor", "Network", "gradients", "EpochInfo", "TrainingDivergedError", "__version__"]

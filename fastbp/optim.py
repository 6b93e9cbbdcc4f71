"""Optimizers: SGD (momentum, Nesterov) and Adam, with scikit-learn's update rules.

These objects hold the policy and the state (velocities, moments, step count,
the current learning rate); the arithmetic runs in nopython, fused into the
training step (:func:`fastbp.step._step_segment_source`), which takes the scalars
as one bundle (:meth:`hyper`).  The state is one array with a row per state
vector, each laid out like the network's parameters: SGD's velocity, or Adam's
two moments.
"""

import numpy as np

from ._config import ADAM, SGD
from .step import AdamHyper, SGDHyper

LEARNING_RATE_SCHEDULES = ("constant", "invscaling", "adaptive")


def _remembered(optimizer, bundle, dtype, *scalars):
    """``bundle(*scalars)``, the floats cast to ``dtype`` (bools kept), remembered on ``optimizer`` for the next
    epoch: the casts cost microseconds per epoch, and the scalars rarely change."""
    key = (dtype, scalars)
    last = getattr(optimizer, "_hyper", None)
    if last is None or last[0] != key:
        cast = np.dtype(dtype).type
        last = optimizer._hyper = key, bundle(*(v if isinstance(v, bool) else cast(v) for v in scalars))
    return last[1]


class SGDOptimizer:
    """Stochastic gradient descent with momentum, as scikit-learn defines it.

    ``velocity = momentum * velocity - lr * grad``; ``param += velocity``, or with
    Nesterov ``param += momentum * velocity - lr * grad``.  ``invscaling`` sets
    ``lr = lr_init / (t + 1) ** power_t`` after each epoch (``t`` = samples seen);
    ``adaptive`` divides ``lr`` by 5 whenever the loss stops improving.
    """

    def __init__(self, n_params, dtype, learning_rate_init=0.1, lr_schedule="constant", momentum=0.9,
                 nesterov=False, power_t=0.5):
        self.learning_rate_init = float(learning_rate_init)
        self.learning_rate = float(learning_rate_init)
        self.lr_schedule = lr_schedule
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.power_t = float(power_t)
        self.state = np.zeros((1, n_params), dtype)
        self.t = 0  # optimizer steps taken

    @property
    def velocity(self):
        return self.state[0]

    solver = SGD

    def hyper(self, dtype) -> SGDHyper:
        """The step's scalars for the epoch kernel, in the parameters' dtype (so float32 stays float32)."""
        return _remembered(self, SGDHyper, dtype, self.learning_rate, self.momentum, self.nesterov)

    def iteration_ends(self, time_step: int) -> None:
        if self.lr_schedule == "invscaling":
            self.learning_rate = self.learning_rate_init / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg: str, verbose: bool, report=print) -> bool:
        """Whether to stop on a plateau; ``adaptive`` first lowers the learning rate."""
        if self.lr_schedule != "adaptive":
            if verbose:
                report(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                report(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            report(msg + " Setting learning rate to %f" % self.learning_rate)
        return False

    def arrays(self) -> dict:
        return {"velocity": self.velocity}


class AdamOptimizer:
    """Adam (Kingma & Ba), as scikit-learn defines it.

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``param -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``, with ``t``
    counting steps.
    """

    def __init__(self, n_params, dtype, learning_rate_init=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.learning_rate_init = float(learning_rate_init)
        self.learning_rate = float(learning_rate_init)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.state = np.zeros((2, n_params), dtype)  # the first and second moments
        self.t = 0

    @property
    def m1(self):
        return self.state[0]

    @property
    def m2(self):
        return self.state[1]

    solver = ADAM

    def hyper(self, dtype) -> AdamHyper:
        """The step's scalars for the epoch kernel, in the parameters' dtype; the rate is bias-corrected per step."""
        return _remembered(self, AdamHyper, dtype, self.learning_rate, self.beta_1, self.beta_2, self.epsilon)

    def iteration_ends(self, time_step: int) -> None:
        """Adam's step size needs no per-epoch change."""

    def trigger_stopping(self, msg: str, verbose: bool, report=print) -> bool:
        if verbose:
            report(msg + " Stopping.")
        return True

    def arrays(self) -> dict:
        return {"m1": self.m1, "m2": self.m2}


"""Backpropagation layers in plain numpy, for teaching.

Backpropagation finds the gradient of a loss with respect to every input and
parameter using one forward pass and one backward pass:

* ``forward`` computes the layer's output and stores what ``backward`` will
  need (its inputs, its output or a mask).
* ``backward`` receives ``dout``, the gradient of the loss with respect to the
  layer's output, and applies the chain rule to return the gradient with
  respect to the layer's inputs. Calling ``backward`` from the last layer to
  the first carries the error all the way back.

This is far faster than finite differences, which need extra forward passes
for every parameter. The price is memory: every layer keeps its intermediate
values until the backward pass has used them.

Every layer here returns new arrays and never modifies the arrays it is given.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Mul", "Add", "Sigmoid", "ReLU", "Tanh", "Affine", "SoftmaxWithLoss"]


class Mul:
    """Multiplication node ``out = x * y``; works on scalars and arrays."""

    def forward(self, x: ArrayLike, y: ArrayLike) -> ArrayLike:
        self.x, self.y = x, y
        return x * y

    def backward(self, dout: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        """Return ``(dx, dy) = (dout * y, dout * x)``: each input gets the other."""
        return dout * self.y, dout * self.x


class Add:
    """Addition node ``out = x + y``; works on scalars and arrays."""

    def forward(self, x: ArrayLike, y: ArrayLike) -> ArrayLike:
        return x + y

    def backward(self, dout: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        """Return ``(dout * 1, dout * 1)``: the gradient passes on unchanged."""
        return dout * 1, dout * 1


class Sigmoid:
    """Logistic function ``out = 1 / (1 + exp(-x))``.

    Computed as ``(1 + tanh(x / 2)) / 2``, the same function without overflow
    warnings for large negative ``x``.
    """

    def forward(self, x: ArrayLike) -> np.ndarray:
        self.out = 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))
        return self.out

    def backward(self, dout: ArrayLike) -> np.ndarray:
        """Return ``dout * (1 - out) * out``, using the output stored by ``forward``."""
        return dout * (1.0 - self.out) * self.out


class ReLU:
    """Rectified linear unit ``out = max(x, 0)``.

    The gradient at exactly ``x == 0`` is taken to be 0.
    """

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = np.asarray(x)
        self.mask = x <= 0
        return np.where(self.mask, 0, x)

    def backward(self, dout: ArrayLike) -> np.ndarray:
        """Return a new array: ``dout`` where ``x > 0`` and 0 elsewhere."""
        return np.where(self.mask, 0.0, dout)


class Tanh:
    """Hyperbolic tangent ``out = tanh(x)``."""

    def forward(self, x: ArrayLike) -> np.ndarray:
        self.out = np.tanh(np.asarray(x, dtype=float))
        return self.out

    def backward(self, dout: ArrayLike) -> np.ndarray:
        """Return ``dout * (1 - out**2)``, using the output stored by ``forward``."""
        return dout * (1.0 - self.out**2)


class Affine:
    """Fully connected layer ``out = x @ W + b``.

    Parameters
    ----------
    W : array_like, shape (n_in, n_out)
        Weights; copied, so the caller's array is never modified.
    b : array_like, shape (n_out,)
        Biases; copied.

    Attributes
    ----------
    dW, db : ndarray
        Gradients of the loss with respect to ``W`` and ``b``, set by ``backward``.
    """

    def __init__(self, W: ArrayLike, b: ArrayLike) -> None:
        self.W = np.array(W, dtype=float)
        self.b = np.array(b, dtype=float)
        if self.W.ndim != 2:
            raise ValueError(f"Affine: W must be 2-D, got shape {self.W.shape}")
        if self.b.shape != (self.W.shape[1],):
            raise ValueError(
                f"Affine: b of shape {self.b.shape} does not match W of shape "
                f"{self.W.shape}: expected shape ({self.W.shape[1]},)"
            )

    def forward(self, x: ArrayLike) -> np.ndarray:
        """Map one sample of shape (n_in,) or a batch of shape (n, n_in)."""
        x = np.asarray(x)
        if x.ndim not in (1, 2) or x.shape[-1] != self.W.shape[0]:
            raise ValueError(
                f"Affine: input of shape {x.shape} does not match W of shape "
                f"{self.W.shape}: expected last dimension {self.W.shape[0]}"
            )
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout: ArrayLike) -> np.ndarray:
        """Store ``dW`` and ``db`` and return ``dx = dout @ W.T`` (same shape as x)."""
        dout = np.asarray(dout)
        expected = self.x.shape[:-1] + (self.W.shape[1],)
        if dout.shape != expected:
            raise ValueError(
                f"Affine: dout of shape {dout.shape} does not match output of "
                f"shape {expected}"
            )
        if self.x.ndim == 1:
            self.dW = np.outer(self.x, dout)
            self.db = dout.copy()
        else:
            self.dW = self.x.T @ dout
            self.db = dout.sum(axis=0)
        return dout @ self.W.T


class SoftmaxWithLoss:
    """Softmax followed by the mean cross-entropy loss.

    The softmax subtracts each row's maximum before ``exp`` so it cannot
    overflow. Probabilities are clipped to at least ``np.finfo(float).eps``
    (about 2.2e-16) before the log, so the loss is finite (at most about 36
    per sample) even when a predicted probability rounds to 0.
    """

    def forward(self, x: ArrayLike, t: ArrayLike) -> float:
        """Return the mean cross-entropy loss.

        Parameters
        ----------
        x : array_like, shape (n, k) or (k,)
            Scores (logits); a 1-D ``x`` is one sample.
        t : array_like, shape (n,) or (n, k)
            Integer class labels in ``[0, k)`` or one-hot rows. For a 1-D
            ``x``: a single label or one one-hot row of shape (k,).
        """
        x = np.asarray(x, dtype=float)
        t = np.asarray(t)
        self.x_shape, t_shape = x.shape, t.shape
        if x.ndim == 1:
            x, t = x[np.newaxis], t[np.newaxis]
        if x.ndim != 2 or x.size == 0:
            raise ValueError(
                "SoftmaxWithLoss: x must be a non-empty 1-D or 2-D array, "
                f"got shape {self.x_shape}"
            )
        n, k = x.shape
        if t.shape == (n,):
            if not np.issubdtype(t.dtype, np.integer):
                raise ValueError(
                    f"SoftmaxWithLoss: labels must be integers, got dtype {t.dtype}"
                )
            if t.min() < 0 or t.max() >= k:
                raise ValueError(
                    f"SoftmaxWithLoss: labels must lie in [0, {k}), "
                    f"got values from {t.min()} to {t.max()}"
                )
            t = np.eye(k)[t]
        elif t.shape != (n, k):
            raise ValueError(
                f"SoftmaxWithLoss: t of shape {t_shape} does not match x of shape "
                f"{self.x_shape}: expected integer labels or one-hot rows of "
                f"length {k}"
            )
        e = np.exp(x - x.max(axis=1, keepdims=True))
        self.p = e / e.sum(axis=1, keepdims=True)
        self.t = t
        log_p = np.log(np.clip(self.p, np.finfo(float).eps, 1.0))
        return float(-np.sum(t * log_p) / n)

    def backward(self, dout: float = 1.0) -> np.ndarray:
        """Return ``dout * (p - t) / n``, the gradient with respect to ``x``."""
        dx = dout * (self.p - self.t) / self.p.shape[0]
        return dx.reshape(self.x_shape)

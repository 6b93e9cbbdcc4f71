"""Plain-numpy twins of :mod:`fastbp.kernels`: the oracle for tests, the baseline for benchmarks.

Each function has the name, signature and semantics of its kernel and is the
numpy a reader would write from the seed notebook (``np.dot(X, W) + b``,
``np.dot(dY, W.T)``, ``np.dot(X.T, dY)``, ``np.sum(dY, axis=0)``): no tricks
either way.  Arguments are validated by the same checks as the kernels, so a
benchmark pair differs only in the arithmetic.
"""

import numpy as np

from ._config import ACTIVATIONS, ALL_ACTIVATIONS, OUT_ACTIVATIONS, activation_code
from ._validation import check_affine_backward, check_loss_inputs, check_matrix, check_out, check_vector


def _activate(Z, activation):
    if activation == "relu":
        return np.maximum(Z, 0)
    if activation == "logistic":
        return 1 / (1 + np.exp(-Z))
    if activation == "tanh":
        return np.tanh(Z)
    if activation == "exp":
        return np.exp(Z)
    if activation == "softmax":
        e = np.exp(Z - Z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return Z


def affine_forward(X, W, b, activation="identity", out=None):
    """``out = act(X @ W + b)``."""
    activation_code(activation, ALL_ACTIVATIONS)
    X = check_matrix(X, "X")
    W = check_matrix(W, "W", rows=X.shape[1], dtype=X.dtype, rows_of="X.shape[1]")
    b = check_vector(b, "b", length=W.shape[1], dtype=X.dtype, length_of="W.shape[1]")
    out = check_out(out, "out", (X.shape[0], W.shape[1]), X.dtype, inputs={"X": X, "W": W, "b": b})
    Z = np.dot(X, W) + b
    if not np.isfinite(Z).all():
        raise ValueError("affine_forward: X, W or b contains NaN or infinity (or X @ W + b overflowed); "
                         "expected finite values")
    out[...] = _activate(Z, activation)
    if activation == "exp" and not np.isfinite(out).all():
        raise ValueError("affine_forward: X, W or b contains NaN or infinity (or X @ W + b overflowed); "
                         "expected finite values")
    return out


def activation_backward(Z, dZ, activation):
    """``dZ *= act'(Z)`` in place, from the output ``Z``; ReLU'(0) = 0."""
    activation_code(activation, ACTIVATIONS)
    Z = check_matrix(Z, "Z")
    dZ = check_out(dZ, "dZ", Z.shape, Z.dtype, allocate=False)
    if not (np.isfinite(Z).all() and np.isfinite(dZ).all()):
        raise ValueError("activation_backward: Z or dZ contains NaN or infinity; expected finite values")
    if activation == "relu":
        dZ[Z <= 0] = 0
    elif activation == "logistic":
        dZ *= Z * (1 - Z)
    elif activation == "tanh":
        dZ *= 1 - Z**2
    return dZ


def affine_backward(X, W, dY, dX, dW, db):
    """``dW = X.T @ dY``, ``db = sum_rows dY``, ``dX = dY @ W.T`` unless ``dX is None``."""
    X, W, dY, dX, dW, db = check_affine_backward(X, W, dY, dX, dW, db)
    dW[...] = np.dot(X.T, dY)
    db[...] = np.sum(dY, axis=0)
    finite = np.isfinite(dW).all()
    if dX is not None:
        dX[...] = np.dot(dY, W.T)
        finite = finite and np.isfinite(dX).all()
    if not finite:
        raise ValueError("affine_backward: X, dY or (when dX is computed) W contains NaN or infinity, or a product "
                         "overflowed; expected finite values")
    return dX, dW, db


def output_activation(Z, out_activation):
    """Apply an output activation in place."""
    activation_code(out_activation, OUT_ACTIVATIONS, "out_activation")
    Z = check_out(Z, "Z", None, None, allocate=False)
    if not np.isfinite(Z).all():
        raise ValueError("output_activation: Z contains NaN or infinity; expected finite values")
    Z[...] = _activate(Z, out_activation)
    return Z


def output_loss(out, Y, out_activation, sample_weight=None):
    """Mean (sample-weighted) loss; see :func:`fastbp.kernels.output_loss`."""
    activation_code(out_activation, OUT_ACTIVATIONS, "out_activation")
    out, Y, sw = check_loss_inputs(out, Y, sample_weight)
    eps = np.finfo(out.dtype).eps
    p = np.clip(out.astype(np.float64), eps, 1 - eps)
    y = Y.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if out_activation == "softmax":
            per_row = -np.where(y != 0, y * np.log(p), 0).sum(axis=1)
        elif out_activation == "logistic":
            per_row = -(np.where(y != 0, y * np.log(p), 0) + np.where(y != 1, (1 - y) * np.log(1 - p), 0)).sum(axis=1)
        elif out_activation == "exp":
            q = out.astype(np.float64)
            per_row = (np.where(y != 0, y * np.log(y / q), 0) - y + q).sum(axis=1)
        else:
            per_row = 0.5 * ((y - out) ** 2).sum(axis=1)
    return float(np.dot(sw, per_row) / sw.sum())


def output_delta(out, Y, delta=None, sample_weight=None):
    """``delta = (out - Y) * sample_weight[:, None]``."""
    out, Y, sw = check_loss_inputs(out, Y, sample_weight)
    delta = check_out(delta, "delta", out.shape, out.dtype)
    delta[...] = (out - Y) * sw[:, None]
    return delta


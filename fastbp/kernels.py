"""Numba kernels for one layer of backprop, writing into caller-owned arrays.

The public functions validate their arguments (shapes, dtypes, contiguity,
activation names) and raise ``ValueError`` / ``TypeError`` that say what was
expected; the ``_``-prefixed kernels behind them trust their inputs and are what
the whole-network code in :mod:`fastbp.step` calls.  :mod:`fastbp.reference`
holds a plain-numpy twin of every public function here.

Conventions
-----------
* ``X`` is (n_samples, n_in), ``W`` (n_in, n_out), ``b`` (n_out,), as in
  scikit-learn's ``coefs_`` / ``intercepts_``.
* Derivatives are computed from a layer's *output* ``Z = act(X @ W + b)``.
  ReLU'(0) is taken as 0, everywhere in fastbp.
* The output losses return the (sample-weighted) *sum* over samples; callers
  divide by the weight total once (see :func:`fastbp.step.objective`).
"""

import numpy as np

from ._config import (
    ACTIVATIONS,
    ALL_ACTIVATIONS,
    EXP,
    LOGISTIC,
    OUT_ACTIVATIONS,
    RELU,
    SOFTMAX,
    TANH,
    activation_code,
    jit,
    jit_inline,
    specialize,
)
from ._intrinsics import gemm
from ._validation import check_affine_backward, check_loss_inputs, check_matrix, check_out, check_vector

# 2^n for n = -126 ... 0: the scaling step of _exp_nonpositive.
_POW2_NONPOSITIVE = (2.0 ** np.arange(-126, 1)).astype(np.float32)


@jit_inline
def _exp_nonpositive(x):
    """``e^x`` for a float32 ``x <= 0`` in plain arithmetic that LLVM vectorizes.

    The softmax's exponentials dominate its cost, and Numba's LLVM here has no
    vector math library, so ``np.exp`` is a scalar ``expf`` call per element.
    ``x = n ln2 + r`` with ``|r| <= ln2 / 2`` (ln2 split in two for exactness),
    ``e^r`` by its Taylor polynomial of degree 6, ``2^n`` from a table.  Relative
    error below 5e-7 on [-87, 0]; below -87 (e^x < 2e-38) it returns e^-87,
    which is 0 next to the row's largest term 1.  The input and the index are
    clamped, so no input (NaN included) can read outside the table.
    """
    # clamp to [-87, 0] with comparisons that also send NaN and infinities inside (so in plain Python too)
    x = x if x > np.float32(-87.0) else np.float32(-87.0)
    x = x if x < np.float32(0.0) else np.float32(0.0)
    n = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))
    r = (x - n * np.float32(0.693145751953125)) - n * np.float32(1.428606765330187e-06)
    p = np.float32(1.0) + r * (np.float32(1.0) + r * (np.float32(0.5) + r * (np.float32(1.0 / 6.0) + r * (
        np.float32(1.0 / 24.0) + r * (np.float32(1.0 / 120.0) + r * np.float32(1.0 / 720.0))))))
    k = np.int64(n) + 126
    k = k if k > 0 else 0  # comparisons, not min/max: each of those is a compiled function of its own
    return p * _POW2_NONPOSITIVE[k if k < 126 else 126]


@jit_inline
def _exp_shifted(flat):
    """``flat[k] = e^flat[k]`` in place, for a softmax block shifted to ``<= 0`` (this softmax and fastbp.step's).

    float32 by the vectorizable :func:`_exp_nonpositive`; float64 keeps ``np.exp``'s precision.
    """
    if flat.itemsize == 4:
        for k in range(flat.size):
            flat[k] = _exp_nonpositive(flat[k])
    else:
        for k in range(flat.size):
            flat[k] = np.exp(flat[k])


# One kernel per activation, with the finiteness check riding along in the same
# pass: ``abs(v) < inf`` is False exactly for NaN and infinities, an ordered
# comparison that fastmath (which here keeps NaN and infinity semantics) cannot
# fold away and that vectorizes as a count.  It is taken before the
# activation because ReLU would turn a NaN into 0.  Each returns whether every
# pre-activation ``Z + b`` was finite.  Separate kernels, not one with a branch
# per activation: the whole-network code compiles only the ones a network uses.
# The pointwise ones are one source (_pointwise_forward) compiled per activation.

_activate = _derivative = None  # the scalar function of each compiled copy below


def _pointwise_forward(Z, b):
    """``Z = act(Z + b)`` in place, elementwise."""
    zero, one, inf = Z.dtype.type(0), Z.dtype.type(1), Z.dtype.type(np.inf)
    bad = 0
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            v = Z[i, j] + b[j]
            bad += 0 if abs(v) < inf else 1
            Z[i, j] = _activate(v, zero, one)
    return bad == 0


def _pointwise_backward(Z, dZ, db):
    """``dZ *= act'(Z)`` in place, the derivative taken from the output ``Z``; ``db`` = the result's column sums.

    Those sums are the bias gradient of the layer whose delta ``dZ`` becomes, taken in the same pass.
    """
    zero, one = Z.dtype.type(0), Z.dtype.type(1)
    db[:] = zero
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            d = _derivative(Z[i, j], dZ[i, j], zero, one)
            dZ[i, j] = d
            db[j] += d


@jit_inline
def _identity(v, zero, one):
    return v


@jit_inline
def _identity_derivative(z, d, zero, one):
    return d


@jit_inline
def _relu(v, zero, one):
    return v if v > zero else zero


@jit_inline
def _relu_derivative(z, d, zero, one):
    # ReLU'(0) = 0.  A product, not ``d if z > zero else zero``: LLVM turns that select between the
    # loaded ``d`` and zero into a masked store of zeros, which AMD's cores run microcoded (on a Zen 3,
    # 6% of a digits epoch).  Without fastmath's nnan, LLVM may not fold the product back.
    return d * (one if z > zero else zero)


@jit_inline
def _logistic(v, zero, one):
    return one / (one + np.exp(-v))


@jit_inline
def _logistic_derivative(z, d, zero, one):
    return d * (z * (one - z))


@jit_inline
def _tanh(v, zero, one):
    return np.tanh(v)


@jit_inline
def _tanh_derivative(z, d, zero, one):
    return d * (one - z * z)


# The scalar function and derivative of each hidden activation code (also the whole-network code's, fastbp.step).
ACTIVATE = (_identity, _relu, _logistic, _tanh)
DERIVATIVE = (_identity_derivative, _relu_derivative, _logistic_derivative, _tanh_derivative)

_identity_forward = jit(specialize(_pointwise_forward, "_identity", _activate=_identity))
_relu_forward = jit(specialize(_pointwise_forward, "_relu", _activate=_relu))
_logistic_forward = jit(specialize(_pointwise_forward, "_logistic", _activate=_logistic))
_tanh_forward = jit(specialize(_pointwise_forward, "_tanh", _activate=_tanh))


@jit
def _exp_forward(Z, b):
    """``Z = exp(Z + b)`` in place; an overflow of exp counts as not finite too."""
    inf = Z.dtype.type(np.inf)
    bad = 0
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            v = Z[i, j] + b[j]
            e = np.exp(v)
            bad += 0 if abs(v) < inf and e < inf else 1
            Z[i, j] = e
    return bad == 0


@jit
def _softmax_forward(Z, b):
    """``Z = softmax(Z + b)`` row by row, in place.

    Three passes: shift each row by its maximum, exponentiate the whole block as
    one flat loop (at a softmax's 10 columns a per-row exp loop hardly
    vectorizes: measured 2x slower), then normalise each row.
    """
    n, m = Z.shape
    one, inf = Z.dtype.type(1), Z.dtype.type(np.inf)
    bad = 0
    for i in range(n):
        top = Z[i, 0] + b[0]
        for j in range(m):
            v = Z[i, j] + b[j]
            bad += 0 if abs(v) < inf else 1
            Z[i, j] = v
            top = v if v > top else top
        for j in range(m):
            Z[i, j] -= top
    _exp_shifted(Z.reshape(Z.size))
    for i in range(n):
        total = Z.dtype.type(0)
        for j in range(m):
            total += Z[i, j]
        inv = one / total
        for j in range(m):
            Z[i, j] *= inv
    return bad == 0


# The forward kernel of each activation code (fastbp._config's order).
FORWARD = (_identity_forward, _relu_forward, _logistic_forward, _tanh_forward, _softmax_forward, _exp_forward)


@jit
def _bias_activation(Z, b, code):
    """``Z[i] = act(Z[i] + b)`` in place for activation ``code``; returns whether every pre-activation was finite."""
    if code == RELU:
        return _relu_forward(Z, b)
    if code == LOGISTIC:
        return _logistic_forward(Z, b)
    if code == TANH:
        return _tanh_forward(Z, b)
    if code == EXP:
        return _exp_forward(Z, b)
    if code == SOFTMAX:
        return _softmax_forward(Z, b)
    return _identity_forward(Z, b)


@jit
def _affine_forward(X, W, b, code, out):
    gemm(X, W, out, 0, 0)
    return _bias_activation(out, b, code)


_identity_backward = jit(specialize(_pointwise_backward, "_identity", _derivative=_identity_derivative))
_relu_backward = jit(specialize(_pointwise_backward, "_relu", _derivative=_relu_derivative))
_logistic_backward = jit(specialize(_pointwise_backward, "_logistic", _derivative=_logistic_derivative))
_tanh_backward = jit(specialize(_pointwise_backward, "_tanh", _derivative=_tanh_derivative))


# The backward kernel of each hidden activation code.
BACKWARD = (_identity_backward, _relu_backward, _logistic_backward, _tanh_backward)


@jit
def _activation_backward(Z, dZ, code):
    """``dZ *= act'(Z)`` in place, the derivative taken from the output ``Z``."""
    db = np.empty(Z.shape[1], Z.dtype)  # the column sums the kernels also take, unused here
    if code == RELU:
        _relu_backward(Z, dZ, db)
    elif code == LOGISTIC:
        _logistic_backward(Z, dZ, db)
    elif code == TANH:
        _tanh_backward(Z, dZ, db)
    return dZ


@jit
def _all_finite(a):
    """Whether no element of ``a`` is NaN or infinite (the test of ``_bias_activation``)."""
    flat = a.reshape(a.size)
    inf = a.dtype.type(np.inf)
    bad = 0
    for k in range(flat.size):
        bad += 0 if abs(flat[k]) < inf else 1
    return bad == 0


@jit
def _column_sums(dY, db):
    n, m = dY.shape
    db[:] = 0
    for i in range(n):
        for j in range(m):
            db[j] += dY[i, j]


@jit
def _affine_backward(X, W, dY, dX, dW, db, need_dx):
    """``dW = X.T @ dY``, ``db = sum_rows dY`` and, if ``need_dx``, ``dX = dY @ W.T``."""
    gemm(X, dY, dW, 1, 0)
    _column_sums(dY, db)
    if need_dx:
        gemm(dY, W, dX, 0, 1)


# The output losses: each the sample-weighted *sum* over rows of the loss paired
# with an output activation, whose gradient at the pre-activation is
# ``output - target``.  Probabilities are clipped to [eps, 1 - eps] like
# scikit-learn, so a confident wrong answer gives a large, finite loss.


_unit_loss = None  # the scalar loss of each compiled copy below


@jit_inline
def _eps(out):
    """The machine epsilon of ``out``'s dtype, as a float (a literal: ``np.finfo`` compiles a function of its own)."""
    return 1.1920928955078125e-07 if out.itemsize == 4 else 2.220446049250313e-16


@jit_inline
def _clip(p, eps):
    """``p`` clipped to ``[eps, 1 - eps]``."""
    p = p if p > eps else eps
    return p if p < 1.0 - eps else 1.0 - eps


@jit_inline
def _log_unit(p, y, eps):
    """softmax: the log loss."""
    return -y * np.log(_clip(p, eps)) if y != 0.0 else 0.0


@jit_inline
def _binary_log_unit(p, y, eps):
    """logistic: the binary log loss of each output."""
    p = _clip(p, eps)
    return (-y * np.log(p) if y != 0.0 else 0.0) + (-(1.0 - y) * np.log(1.0 - p) if y != 1.0 else 0.0)


@jit_inline
def _squared_unit(p, y, eps):
    """identity: half the squared error of each output."""
    return 0.5 * (y - p) * (y - p)


@jit_inline
def _poisson_unit(p, y, eps):
    """exp: half the Poisson deviance."""
    return p - y + (y * np.log(y / p) if y != 0.0 else 0.0)


# The scalar loss paired with each output activation code (None: not an output activation).
_UNIT_LOSS = (_squared_unit, None, _binary_log_unit, None, _log_unit, _poisson_unit)


def _pointwise_output(out, Y, sw, delta, db, backward):
    """``(loss sum, weight sum)`` over the rows and, with ``backward``, where backward starts.

    The loss is ``sum_i sw[i] * sum_j loss(out[i, j], Y[i, j])``, in float64.  With
    ``backward``, in the same pass, ``delta = (out - Y) * sw[:, None]`` (the gradient
    of the summed loss at the output's pre-activation, :func:`_output_delta`) and
    ``db`` its column sums, the output layer's intercept gradient.
    """
    eps = _eps(out)
    total = 0.0
    weight = 0.0
    if backward:
        db[:] = 0
    for i in range(out.shape[0]):
        w = sw[i]
        if backward:
            for j in range(out.shape[1]):
                d = (out[i, j] - Y[i, j]) * w
                delta[i, j] = d
                db[j] += d
        row = 0.0
        for j in range(out.shape[1]):
            y = float(Y[i, j])
            if y != y:  # never (targets are finite), but a second exit keeps LLVM from vectorizing this loop,
                break  # which would take the log of every element, not only where the target is not 0
            row += _unit_loss(float(out[i, j]), y, eps)
        total += w * row
        weight += w
    return total, weight


# The loss and start of backward for each output activation code (None: not an output activation):
# compiled kernels for Python callers (validation, output_loss), and the same source inlined into the
# whole-network chunk pass (fastbp.step), so that training and validation losses are one computation.
OUTPUT = tuple(None if unit is None else jit(specialize(_pointwise_output, "_" + ALL_ACTIVATIONS[c], _unit_loss=unit))
               for c, unit in enumerate(_UNIT_LOSS))
OUTPUT_INLINE = tuple(None if unit is None else jit_inline(specialize(_pointwise_output, "_" + ALL_ACTIVATIONS[c],
                                                                     _unit_loss=unit))
                      for c, unit in enumerate(_UNIT_LOSS))


def loss_sum(out, Y, sw, code):
    """Sample-weighted sum over rows of the loss paired with output ``code``: its OUTPUT kernel, no backward.

    The delta and intercept-gradient arguments are placeholders the kernel does not
    write without ``backward``; only the one output kernel is compiled.
    """
    return OUTPUT[code](out, Y, sw, np.empty((1, 1), out.dtype), np.empty(1, out.dtype), False)[0]


@jit
def _output_delta(out, Y, sw, delta):
    """``delta = (out - Y) * sw[:, None]``: the gradient of the summed loss at the pre-activation."""
    n, m = out.shape
    for i in range(n):
        w = sw[i]
        for j in range(m):
            delta[i, j] = (out[i, j] - Y[i, j]) * w
    return delta


# --------------------------------------------------------------------------- public API


def affine_forward(X, W, b, activation="identity", out=None):
    """Fused affine layer: ``out = act(X @ W + b)``.

    One BLAS product into ``out`` followed by one pass over ``out`` that adds
    the bias and applies the activation; no temporaries.

    Parameters
    ----------
    X : ndarray (n_samples, n_in), float32 or float64
    W : ndarray (n_in, n_out), same dtype
    b : ndarray (n_out,), same dtype
    activation : {"identity", "relu", "logistic", "tanh", "softmax", "exp"}
    out : ndarray (n_samples, n_out), same dtype, C-contiguous, optional
        Allocated when omitted.

    Returns
    -------
    out : ndarray (n_samples, n_out)
    """
    code = activation_code(activation, ALL_ACTIVATIONS)
    X = check_matrix(X, "X")
    W = check_matrix(W, "W", rows=X.shape[1], dtype=X.dtype, rows_of="X.shape[1]")
    b = check_vector(b, "b", length=W.shape[1], dtype=X.dtype, length_of="W.shape[1]")
    out = check_out(out, "out", (X.shape[0], W.shape[1]), X.dtype, inputs={"X": X, "W": W, "b": b})
    if not _affine_forward(X, W, b, code, out):
        raise ValueError("affine_forward: X, W or b contains NaN or infinity (or X @ W + b overflowed); "
                         "expected finite values")
    return out


def activation_backward(Z, dZ, activation):
    """Multiply ``dZ`` in place by the activation's derivative, taken from the output ``Z``.

    ReLU'(0) = 0.  Returns ``dZ``.
    """
    code = activation_code(activation, ACTIVATIONS)
    Z = check_matrix(Z, "Z")
    dZ = check_out(dZ, "dZ", Z.shape, Z.dtype, allocate=False)
    if not (_all_finite(Z) and _all_finite(dZ)):
        raise ValueError("activation_backward: Z or dZ contains NaN or infinity; expected finite values")
    return _activation_backward(Z, dZ, code)


def affine_backward(X, W, dY, dX, dW, db):
    """Backward pass of an affine layer into caller-owned buffers.

    ``dW = X.T @ dY``, ``db = dY.sum(axis=0)`` and ``dX = dY @ W.T`` unless
    ``dX is None`` (the first layer needs no input gradient).

    Returns
    -------
    (dX, dW, db)
    """
    X, W, dY, dX, dW, db = check_affine_backward(X, W, dY, dX, dW, db)
    need_dx = dX is not None
    if not need_dx:
        dX = dY  # a placeholder of the right type; the kernel does not touch it
    _affine_backward(X, W, dY, dX, dW, db, need_dx)
    # A non-finite X or dY always reaches dW (and W reaches dX): checking the
    # results costs one pass over them instead of one over every input.  W is
    # not read when dX is None.
    if not (_all_finite(dW) and (not need_dx or _all_finite(dX))):
        raise ValueError("affine_backward: X, dY or (when dX is computed) W contains NaN or infinity, or a product "
                         "overflowed; expected finite values")
    return (dX if need_dx else None), dW, db


def output_activation(Z, out_activation):
    """Apply an output activation in place ("identity", "logistic", "softmax" or "exp")."""
    code = activation_code(out_activation, OUT_ACTIVATIONS, "out_activation")
    Z = check_out(Z, "Z", None, None, allocate=False)
    if not _bias_activation(Z, np.zeros(Z.shape[1], Z.dtype), code):
        raise ValueError("output_activation: Z contains NaN or infinity; expected finite values")
    return Z


def output_loss(out, Y, out_activation, sample_weight=None):
    """Mean loss of an output layer against 2-D targets ``Y``.

    softmax → log loss; logistic → binary log loss (summed over outputs);
    identity → half the squared error (summed over outputs); exp → half the
    Poisson deviance.  Averaged over samples, weighted by ``sample_weight``.
    """
    code = activation_code(out_activation, OUT_ACTIVATIONS, "out_activation")
    out, Y, sw = check_loss_inputs(out, Y, sample_weight)
    return float(loss_sum(out, Y, sw, code) / float(sw.sum()))


def output_delta(out, Y, delta=None, sample_weight=None):
    """``delta = (out - Y) * sample_weight[:, None]``: the loss gradient at the output's pre-activation.

    Not divided by the number of samples; the caller applies ``1 / sum(weights)`` once.
    """
    out, Y, sw = check_loss_inputs(out, Y, sample_weight)
    delta = check_out(delta, "delta", out.shape, out.dtype)
    return _output_delta(out, Y, sw, delta)


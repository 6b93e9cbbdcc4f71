"""Checks at the public boundary: shapes, dtypes, contiguity, finiteness.

Inputs that can be handled are converted (non-contiguous, read-only, integer,
or of another float dtype than the first array); output buffers cannot be
converted, so a wrong one is refused.  Every error names the argument, what it
got and what was expected.
"""

import os

import numpy as np

from ._config import FLOAT_DTYPES


def _float_dtype_for(a: np.ndarray, name: str) -> np.dtype:
    if a.dtype in FLOAT_DTYPES:
        return a.dtype
    if a.dtype.kind in "biuf":
        return np.dtype(np.float64)
    raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}: expected float32 or float64 (or integers)")


def as_float_array(a, name: str, ndim: int, dtype=None) -> np.ndarray:
    """``a`` as a C-contiguous float32/float64 array of ``ndim`` dimensions with at least one element per axis."""
    if (type(a) is np.ndarray and a.ndim == ndim and a.size and a.flags.c_contiguous
            and (a.dtype.char in "fd" if dtype is None else a.dtype == dtype)):
        return a  # the common case first: this runs on every public kernel call, and costs are per call
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} must be array-like of numbers: {exc}") from None
    target = _float_dtype_for(a, name) if dtype is None else np.dtype(dtype)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got an array of shape {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{name} has shape {a.shape}: expected at least one element along every axis")
    if a.dtype.kind not in "biuf":
        _float_dtype_for(a, name)
    return np.ascontiguousarray(a, dtype=target)


def check_matrix(a, name, rows=None, dtype=None, rows_of="expected"):
    """A 2-D float input, converted where possible; ``rows`` checks the first axis."""
    a = as_float_array(a, name, 2, dtype)
    if rows is not None and a.shape[0] != rows:
        raise ValueError(f"{name} has shape {a.shape}: expected {rows} rows to match {rows_of}")
    return a


def check_vector(a, name, length=None, dtype=None, length_of="expected"):
    """A 1-D float input of ``length`` elements."""
    a = as_float_array(a, name, 1, dtype)
    if length is not None and a.shape[0] != length:
        raise ValueError(f"{name} has shape {a.shape}: expected ({length},) to match {length_of}")
    return a


def check_out(out, name, shape, dtype, allocate=True, inputs=None):
    """A caller-owned output buffer: exact shape and dtype, C-contiguous, writeable, apart from ``inputs``.

    ``None`` allocates one when ``allocate``; ``shape`` / ``dtype`` of None
    accept any (the buffer is then only checked for being a writeable float
    array with no empty axis).  ``inputs`` maps names to arrays the buffer must
    not overlap: BLAS writes the product while still reading its operands.
    """
    if out is None and allocate:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(out).__name__}")
    if dtype is not None and out.dtype != dtype:
        raise ValueError(f"{name} has dtype {out.dtype}: expected {np.dtype(dtype)}")
    if dtype is None and out.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} has dtype {out.dtype}: expected float32 or float64")
    if shape is not None and out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}: expected {tuple(shape)}")
    if shape is None and (out.ndim != 2 or 0 in out.shape):
        raise ValueError(f"{name} must be 2-D with at least one row and column, got shape {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous to be written in place; pass np.ascontiguousarray({name})")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only; pass a writeable array")
    for other, array in (inputs or {}).items():
        if np.may_share_memory(out, array):
            raise ValueError(f"{name} overlaps {other}: pass a separate output buffer")
    return out


def check_sample_weight(sample_weight, n_rows, dtype, length_of="X.shape[0]"):
    """Per-row weights: finite, non-negative, with a positive sum (ones when None)."""
    if sample_weight is None:
        return np.ones(n_rows, dtype)
    sw = check_vector(sample_weight, "sample_weight", length=n_rows, dtype=dtype, length_of=length_of)
    if not np.isfinite(sw).all():
        raise ValueError("sample_weight contains NaN or infinity; expected finite weights")
    if (sw < 0).any() or not sw.sum() > 0:
        raise ValueError("sample_weight must be non-negative with a positive sum")
    return sw


def check_affine_backward(X, W, dY, dX, dW, db):
    """The arguments of ``affine_backward``, converted or checked; ``dX`` stays None when None."""
    X = check_matrix(X, "X")
    W = check_matrix(W, "W", rows=X.shape[1], dtype=X.dtype, rows_of="X.shape[1]")
    dY = check_matrix(dY, "dY", rows=X.shape[0], dtype=X.dtype, rows_of="X.shape[0]")
    if dY.shape[1] != W.shape[1]:
        raise ValueError(f"dY has {dY.shape[1]} columns but W has {W.shape[1]}: expected dY of shape {(X.shape[0], W.shape[1])}")
    operands = {"X": X, "W": W, "dY": dY}
    dW = check_out(dW, "dW", W.shape, X.dtype, allocate=False, inputs=operands)
    db = check_out(db, "db", (W.shape[1],), X.dtype, allocate=False, inputs={**operands, "dW": dW})
    if dX is not None:
        dX = check_out(dX, "dX", X.shape, X.dtype, allocate=False, inputs={**operands, "dW": dW, "db": db})
    return X, W, dY, dX, dW, db


def check_loss_inputs(out, Y, sample_weight):
    """``(out, Y, weights)`` of an output loss: same shape and dtype, finite."""
    out = check_matrix(out, "out")
    Y = check_matrix(Y, "Y", dtype=out.dtype)
    if Y.shape != out.shape:
        raise ValueError(f"Y has shape {Y.shape} but out has shape {out.shape}: expected the same shape")
    if not (np.isfinite(out).all() and np.isfinite(Y).all()):
        raise ValueError("out or Y contains NaN or infinity; expected finite values")
    return out, Y, check_sample_weight(sample_weight, out.shape[0], out.dtype, "out.shape[0]")


def check_network_size(layer_units, batch_rows, dtype) -> int:
    """Bytes that training a network of ``layer_units`` on batches of ``batch_rows`` needs; ``ValueError`` past memory.

    Counted in Python integers, so absurd sizes (``10**20`` units) give this
    error rather than an overflow: the parameters times the copies training
    keeps of them (the vector, its gradient, up to two optimizer states, the
    epoch-start backup of all three, the best weights of early stopping), plus
    every layer's activations and deltas and the gathered inputs and targets
    for one batch.  Compared with the machine's physical memory, where the
    platform tells it, so that a hopeless fit fails at once instead of after
    seconds of allocation.
    """
    units = [int(u) for u in layer_units]
    if len(units) < 2 or min(units) < 1:
        raise ValueError(f"layer sizes {units}: expected at least an input and an output layer of positive sizes")
    itemsize = np.dtype(dtype).itemsize
    n_params = sum(a * b + b for a, b in zip(units[:-1], units[1:]))
    rows = max(int(batch_rows), 1)
    needed = itemsize * (8 * n_params + 2 * rows * sum(units[1:]) + rows * (units[0] + units[-1]))
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): nothing to compare with
        return needed
    if needed > available:
        raise ValueError(f"a network with layer sizes {units} ({n_params} parameters) needs about {needed} bytes to "
                         f"train on batches of {rows} rows in {np.dtype(dtype)}; this machine has {available} bytes "
                         "of memory: expected smaller hidden_layer_sizes or batch_size")
    return needed

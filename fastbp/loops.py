"""The loops the whole-network code inlines: over a block's rows, a run of parameters, an epoch's state.

:mod:`fastbp.step` (the chunk pass, the optimizer step) and :mod:`fastbp.halves`
both call these, so each computation has one source: a hidden layer's
activation and its derivative, the output activation, and the optimizer's
update of a contiguous run of parameters.  They are inlined (``inline="always"``),
not called: a compiled callee would be optimised and code-generated again in
every caller.  Each is a copy per network kind or optimizer (:func:`row_kernels`,
:func:`updates`), its globals naming that kind's activations or solver, so Numba
prunes the other branches before typing.
"""

import functools
from collections import namedtuple

import numpy as np

from ._config import ADAM, ALL_ACTIVATIONS, EXP, IDENTITY, RELU, SGD, SOFTMAX, jit_inline, specialize
from ._intrinsics import next_uint32, next_uint64
from .kernels import ACTIVATE, DERIVATIVE, OUTPUT_INLINE, _exp_shifted

# Set in each copy (row_kernels, updates): the network's activation codes and scalar functions, the solver.
_HIDDEN, _OUT, _SOLVER = RELU, SOFTMAX, SGD
_hidden_act = _hidden_derivative = _out_act = _update_span = None


def _activate_rows_source(Z, b):
    """``Z = act(Z + b)`` with the hidden activation, in place; returns True if some ``Z + b`` was NaN or infinite.

    Checked before the activation, which could hide them (ReLU of NaN is 0), as a sum of ``v * 0``: that is 0
    when every ``v`` is finite and NaN otherwise (fastmath without ``nnan`` / ``ninf`` may not fold it), and
    it vectorizes, where counting ``not abs(v) < inf`` made the loop 2.6x slower.  (Reassociated, ``a * 0 + b *
    0`` may become ``(a + b) * 0``: two finite values whose sum overflows then read as not finite, a false
    divergence only at the edge of the float range.)
    """
    zero, one = Z.dtype.type(0), Z.dtype.type(1)
    check = zero
    for r in range(Z.shape[0]):
        row = Z[r]
        for j in range(row.size):
            v = row[j] + b[j]
            check += v * zero
            row[j] = _hidden_act(v, zero, one)
    return not check == zero


def _derive_rows_source(A, D, db):
    """``D = D * act'`` in place, the derivative taken from the layer's output ``A``; ``db`` gets its column sums."""
    zero, one = D.dtype.type(0), D.dtype.type(1)
    for j in range(db.size):
        db[j] = zero
    for r in range(D.shape[0]):
        for j in range(D.shape[1]):
            d = _hidden_derivative(A[r, j], D[r, j], zero, one)
            D[r, j] = d
            db[j] += d


def _output_rows_source(out, b, flat):
    """``out = out_act(out + b)`` in place, the output activation (``flat``: ``out``'s elements as one 1-D view).

    Returns True if some ``out + b`` was NaN or infinite (or, for ``exp``, overflowed), checked as in
    :func:`_activate_rows_source`.
    """
    zero, one = out.dtype.type(0), out.dtype.type(1)
    m, n_out = out.shape
    check = zero
    if _OUT == SOFTMAX:
        # Shift each row by its maximum, exponentiate the block as one flat loop (at 10 columns a loop
        # per row hardly vectorizes: 2x slower), then normalise each row.
        for r in range(m):
            top = out[r, 0] + b[0]
            for j in range(n_out):
                v = out[r, j] + b[j]
                check += v * zero
                out[r, j] = v
                top = v if v > top else top
            for j in range(n_out):
                out[r, j] -= top
        _exp_shifted(flat)
        for r in range(m):
            total = zero
            for j in range(n_out):
                total += out[r, j]
            inv = one / total
            for j in range(n_out):
                out[r, j] *= inv
    elif _OUT == EXP:
        for r in range(m):
            for j in range(n_out):
                v = out[r, j] + b[j]
                e = np.exp(v)
                check += (v + e) * zero  # an overflow of exp counts too
                out[r, j] = e
    else:
        for r in range(m):
            for j in range(n_out):
                v = out[r, j] + b[j]
                check += v * zero
                out[r, j] = _out_act(v, zero, one)
    return not check == zero


def _update_span_source(p, g0, g1, has_g1, state, lo, split, scale, lr, hyper, alpha):
    """The optimizer step on the parameters ``p = params[lo:lo + p.size]``; returns their ``||W||^2`` before it.

    The gradient of parameter ``w`` is ``(raw + alpha * w) * scale``, ``raw`` being
    ``g0`` (plus ``g1`` with ``has_g1``: a second chunk's, added as it is read).
    Only ``p[:split]`` are coefficients, with the L2 term and in the norm; the
    rest are intercepts.  SGD: ``v = momentum * v - lr * g``, ``w += v``
    (Nesterov: ``w += momentum * v - lr * g``).  Adam: moments ``m = b1 m + (1 -
    b1) g`` and ``v = b2 v + (1 - b2) g^2``, ``w -= lr m / (sqrt(v) + eps)``, ``lr``
    being the bias-corrected rate of this step.  ``state`` rows hold the velocity
    or the two moments, at the parameters' offsets.

    The loops run over slices indexed from 0: LLVM vectorizes those, but not a
    ``range(lo, hi)`` loop whose ``lo`` is a computed quotient (measured 9x slower).
    """
    hi = lo + p.size
    zero, one = p.dtype.type(0), p.dtype.type(1)
    norm = zero
    if _SOLVER == SGD:
        velocity = state[0][lo:hi]
        momentum, nesterov = hyper.momentum, hyper.nesterov
        for k in range(p.size):
            w = p[k]
            g = ((g0[k] + g1[k] if has_g1 else g0[k]) + (alpha if k < split else zero) * w) * scale
            v = momentum * velocity[k] - lr * g
            velocity[k] = v
            p[k] = w + (momentum * v - lr * g) if nesterov else w + v
            norm += w * w if k < split else zero
    else:
        m1, m2 = state[0][lo:hi], state[1][lo:hi]
        beta_1, beta_2, epsilon = hyper.beta_1, hyper.beta_2, hyper.epsilon
        for k in range(p.size):
            w = p[k]
            g = ((g0[k] + g1[k] if has_g1 else g0[k]) + (alpha if k < split else zero) * w) * scale
            m = beta_1 * m1[k] + (one - beta_1) * g
            v = beta_2 * m2[k] + (one - beta_2) * (g * g)
            m1[k] = m
            m2[k] = v
            p[k] = w - lr * m / (np.sqrt(v) + epsilon)
            norm += w * w if k < split else zero
    return norm


def _update_runs_source(runs, p, g, state, scale, lr, hyper, alpha):
    """The optimizer step on the runs ``[offset, length, in norm, half]`` (rows of ``runs``) of ``p``; ``||W||^2``.

    Each run is one :func:`_update_span_source` call, its norm (of the runs marked
    "in norm": the coefficients) added to its half's sum, in the runs' order.  So
    the norm is bitwise the same whether the runs lie in the whole parameter vector
    (a one-chunk step, both halves' runs interleaved) or in a unit half's packed
    copy of its own (:mod:`fastbp.halves`, one half's runs): a vectorized sum's
    result depends on where each run starts and ends, not only on its elements.
    """
    norm_0 = norm_1 = 0.0
    r = 0
    while r < runs.shape[0]:
        lo, n, in_norm, half = runs[r, 0], runs[r, 1], runs[r, 2], runs[r, 3]
        r += 1
        if alpha == 0:  # no L2 term: each element's step is the same in any span, and no norm is asked for,
            while r < runs.shape[0] and runs[r, 0] == lo + n:  # so adjacent runs go as one: fewer, longer loops
                n += runs[r, 1]
                r += 1
            in_norm = 0
        span, grad = p[lo:lo + n], g[lo:lo + n]
        norm = _update_span(span, grad, grad, False, state, lo, n if in_norm else 0, scale, lr, hyper, alpha)
        if half == 0:
            norm_0 += norm
        else:
            norm_1 += norm
    return norm_0 + norm_1


def _step_rate_source(params, hyper, t):
    """The learning rate of optimizer step ``t`` (Adam's with its bias correction), in the parameters' dtype."""
    if _SOLVER == SGD:
        return params.dtype.type(hyper.lr)
    return params.dtype.type(hyper.lr * np.sqrt(1.0 - hyper.beta_2 ** t) / (1.0 - hyper.beta_1 ** t))


@jit_inline
def epoch_ended(losses, worker, completed, loss, best, stale, plan):
    """After epoch ``completed`` of a call, of loss ``loss``: worker 0 records it, and every worker applies
    run_epochs' stopping rule (scikit-learn's ``tol`` and ``n_iter_no_change``, without early stopping)
    alike; ``(epochs completed, best loss, epochs without improvement, whether to stop)``."""
    if worker == 0:
        losses[completed] = loss
    stale = stale + 1 if loss > best - plan.tol else 0
    return completed + 1, (loss if loss < best else best), stale, stale > plan.patience


@jit_inline
def report_epochs(sync, t, status, completed):
    """Worker 0's results of a call of epochs: ``t`` after the last completed epoch, the status, the epochs done."""
    sync[3] = t
    sync[4] = status
    sync[5] = completed


@jit_inline
def gather(rows, order, start, r_lo, r_hi, col_lo, col_hi, x, y, sw):
    """Rows ``order[start + r]`` of ``rows``, for ``r`` in ``[r_lo, r_hi)``, into row ``r`` of the flat batch buffers.

    ``x`` gets their columns ``[col_lo, col_hi)`` (only those entries of a sparse
    ``rows`` are densified), ``y`` their targets and ``sw`` their sample weights.
    """
    width, n_out, zero = col_hi - col_lo, rows.Y.shape[1], x.dtype.type(0)
    sparse = rows.indptr.size > 0
    for r in range(r_lo, r_hi):
        src = order[start + r]
        row = x[r * width:(r + 1) * width]
        if sparse:
            for j in range(width):
                row[j] = zero
            for e in range(rows.indptr[src], rows.indptr[src + 1]):
                col = rows.indices[e]
                if col_lo <= col < col_hi:
                    row[col - col_lo] = rows.data[e]
        else:
            # The row's columns as one view, indexed from 0: ``X[src, col_lo + j]`` wraps a negative index
            # around in each element, which LLVM vectorized as gathers.  (Element loops: slice assignment
            # costs more than these short rows.)
            source = rows.X[src, col_lo:col_hi]
            for j in range(width):
                row[j] = source[j]
        target, y_row = rows.Y[src], y[r * n_out:(r + 1) * n_out]
        for j in range(n_out):
            y_row[j] = target[j]
        sw[r] = rows.sw[src]


_ALL_32_BITS = np.uint64(0xFFFFFFFF)


@jit_inline
def shuffle(order, next32, next64, draws):
    """Shuffle ``order`` in place exactly as ``numpy.random.Generator.shuffle`` does, drawing as it does.

    ``next32``, ``next64`` and ``draws`` are the generator's bit generator as its C interface gives it (the
    addresses of its ``next_uint32`` and ``next_uint64`` and its ``state_address``), so its state moves as
    numpy's shuffle would move it.  numpy's walk: from the last index ``i`` down to 1, swap with ``j =
    random_interval(i)``, a draw masked to the smallest all-ones mask >= ``i``, drawn again until it is at
    most ``i`` (32-bit draws while ``i`` fits in 32 bits).
    """
    for i in range(order.size - 1, 0, -1):
        top = np.uint64(i)
        mask = top
        for shift in (1, 2, 4, 8, 16, 32):
            mask |= mask >> np.uint64(shift)
        narrow = top <= _ALL_32_BITS
        j = top + np.uint64(1)
        while j > top:
            j = (next_uint32(next32, draws) if narrow else next_uint64(next64, draws)) & mask
        k = np.int64(j)
        order[i], order[k] = order[k], order[i]


@jit_inline
def order_is_valid(order, n_rows):
    """Whether every index of ``order`` is a row of ``n_rows``: the epochs check it before touching anything."""
    for r in range(order.size):
        if order[r] < 0 or order[r] >= n_rows:
            return False
    return True


@jit_inline
def back_up(params, state, backup):
    """``backup = [params, *state]``: what an epoch's caller restores if it diverges."""
    for j in range(params.size):  # a loop per row: each one vectorizes
        backup[0, j] = params[j]
    for i in range(state.shape[0]):
        for j in range(params.size):
            backup[i + 1, j] = state[i, j]


@jit_inline
def all_finite(params, state):
    """Whether the parameters and optimizer state are finite (after an epoch's last update)."""
    inf = params.dtype.type(np.inf)
    bad = 0
    for j in range(params.size):  # a loop per row, each over contiguous memory: each one vectorizes
        bad += not abs(params[j]) < inf
    for i in range(state.shape[0]):
        for j in range(params.size):
            bad += not abs(state[i, j]) < inf
    return bad == 0


RowKernels = namedtuple("RowKernels", "activate_rows derive_rows output_rows out_start")


@functools.cache
def row_kernels(hidden_code: int, out_code: int) -> RowKernels:
    """The loops over a block's rows that every whole-network function of this kind inlines (no call, no library)."""
    names = dict(_HIDDEN=hidden_code, _OUT=out_code, _hidden_act=ACTIVATE[hidden_code],
                 _hidden_derivative=DERIVATIVE[hidden_code],
                 _out_act=ACTIVATE[out_code if out_code < len(ACTIVATE) else IDENTITY])
    suffix = f"_{ALL_ACTIVATIONS[hidden_code]}_{ALL_ACTIVATIONS[out_code]}"
    return RowKernels(*(jit_inline(specialize(f, suffix, **names))
                        for f in (_activate_rows_source, _derive_rows_source, _output_rows_source)),
                      OUTPUT_INLINE[out_code])


Updates = namedtuple("Updates", "span runs rate")


@functools.cache
def updates(solver: int) -> Updates:
    """One optimizer's update of a span and of runs, and its step rate, to be inlined (:func:`_update_span_source`)."""
    suffix = "_adam" if solver == ADAM else "_sgd"
    span, rate = (jit_inline(specialize(f, suffix, _SOLVER=solver)) for f in (_update_span_source, _step_rate_source))
    return Updates(span, jit_inline(specialize(_update_runs_source, suffix, _update_span=span)), rate)

"""Whole-network backprop in nopython: forward, loss, backward, update, epochs.

Data crosses into nopython as a few named bundles (namedtuples, whose fields
Numba passes as plain arguments):

* :class:`Layout`: the layer sizes and where each layer's coefficients and
  intercepts start in the flat parameter vector;
* :class:`Workspace`: per row chunk, every layer's activations and deltas, the
  raw gradient and the chunk's loss, weight and finiteness;
* :class:`Rows`: the training set (dense, or the arrays of a CSR matrix) with its
  targets and sample weights, and :class:`Batch`: the buffers a minibatch is
  gathered into;
* :class:`SGDHyper` / :class:`AdamHyper`: the optimizer's scalars, and
  :class:`Penalty`: the L2 term and the loss scaling.

Layer ``i`` sees ``W = params[coef_off[i]:...]`` as an (n_in, n_out) block and its
output block ``acts[c][act_off[i]:...]`` as (n_rows, n_out): views
(:func:`fastbp._intrinsics.block`), so nothing is allocated per step and one
compiled function serves any depth.

The raw gradient is ``X.T @ delta`` and ``sum_rows delta`` with ``delta =
(output - target) * sample_weight``.  The loss is defined once,
:func:`objective`; its gradient's scaling by ``1 / sum(sample_weight)`` and its
L2 term ``alpha * W`` are applied once, fused into the optimizer update (one
pass over the parameters instead of two), or, for full-batch gradients, as
:func:`_loss_gradient` sums the chunks.

A batch is processed in row chunks: each chunk has its own activation and
gradient blocks, so the chunks may run on several threads; their losses and
gradients are summed in one fixed order.  The chunk count comes from the batch
size alone (``Network.chunk_count``), so one thread or many give bitwise the same
result.  The loops over chunks and parameter segments are ``prange`` loops.

Compile time follows the shape of this code: each jitted callee is compiled on
its own, then linked into its caller and optimised and code-generated again, so
the call tree is kept shallow (entry point, chunk pass, layer kernels) and small
helpers take arrays, not whole bundles.  The entry points are compiled per
kind of network (:func:`kernels_for`, :func:`epoch_for`): a copy whose chunk pass
calls only that network's activation and loss kernels and whose epoch calls only
its optimizer's step, serially (``prange`` is ``range``) and, only when a fit
first runs chunks on threads, with ``parallel=True``.
"""

import functools
from collections import namedtuple

import numpy as np
from numba import prange

from ._config import (
    ADAM,
    ALL_ACTIVATIONS,
    EPOCH_BAD_ORDER,
    EPOCH_DIVERGED,
    EPOCH_DONE,
    jit,
    jit_inner,
    jit_parallel,
    specialize,
)
from ._intrinsics import block as _block
from ._intrinsics import gemm
from .kernels import BACKWARD, FORWARD, OUTPUT, _all_finite

Layout = namedtuple("Layout", "sizes coef_off icpt_off n_coef")
Workspace = namedtuple("Workspace", "acts deltas act_off grads chunk_loss chunk_weight chunk_finite seg_norm")
Rows = namedtuple("Rows", "X data indices indptr Y sw")
Batch = namedtuple("Batch", "x y sw")
SGDHyper = namedtuple("SGDHyper", "lr momentum nesterov")
AdamHyper = namedtuple("AdamHyper", "lr beta_1 beta_2 epsilon")
Penalty = namedtuple("Penalty", "alpha loss_scale")


def objective(data_loss, squared_norm, weight, alpha, loss_scale):
    """The training loss: ``(data_loss * loss_scale + alpha / 2 * ||W||^2) / weight``.

    ``data_loss`` is the sample-weighted sum of the output loss over rows
    (:func:`fastbp.kernels.loss_sum`), ``weight`` the sum of the weights.
    Training, ``gradients``, L-BFGS and validation all report this.
    """
    return (data_loss * loss_scale + 0.5 * alpha * squared_norm) / weight


_objective = jit_inner(objective)


# The activation and loss kernels of a network, set in each compiled copy of
# _chunk_pass (see kernels_for), and that copy, set in each copy of an entry point.
_hidden_forward = _out_forward = _hidden_backward = _out_start = _chunk_pass = None


def _chunk_pass_source(c, n_chunks, n, backward, batch, layout, ws, params):
    """Forward and, with ``backward``, loss and raw gradient of row chunk ``c`` of ``n_chunks`` of an ``n``-row batch.

    The batch is ``batch``'s flat C-order rows.  The chunk works in ``ws.acts[c]``
    / ``ws.deltas[c]``, writes its finiteness into ``ws.chunk_finite[c]`` and, with
    ``backward``, its raw gradient into ``ws.grads[c]`` and its loss and weight
    sums into ``ws.chunk_loss[c]`` / ``ws.chunk_weight[c]``.

    Forward, layer by layer: ``Z = act(A @ W + b)`` (``layers.Affine.forward`` and
    the activations' ``forward`` are the readable versions).  Backward from the
    output delta: ``dW = A_prev.T @ D``, ``db = sum_rows D``, ``D_prev = (D @ W.T) *
    act'(A_prev)``, the derivative taken from the layer's output
    (``layers.Affine.backward``, ``layers.ReLU.backward``, ``layers.Sigmoid.backward``).
    """
    sizes, coef_off, icpt_off = layout.sizes, layout.coef_off, layout.icpt_off
    last = sizes.size - 2
    n_in, n_out = sizes[0], sizes[last + 1]
    lo, hi = n * c // n_chunks, n * (c + 1) // n_chunks
    m = hi - lo
    X0 = _block(batch.x, lo * n_in, m, n_in)
    acts, deltas, act_off = ws.acts[c], ws.deltas[c], ws.act_off
    A = X0
    finite = True
    for i in range(last + 1):
        Z = _block(acts, act_off[i], m, sizes[i + 1])
        gemm(A, _block(params, coef_off[i], sizes[i], sizes[i + 1]), Z, 0, 0)
        b = params[icpt_off[i]:icpt_off[i] + sizes[i + 1]]
        finite = (_out_forward(Z, b) if i == last else _hidden_forward(Z, b)) and finite
        A = Z
    ws.chunk_finite[c] = finite
    if not backward:
        return
    grad = ws.grads[c]
    # Each delta's producer also writes its column sums, its layer's intercept gradient.
    ws.chunk_loss[c], ws.chunk_weight[c] = _out_start(A, _block(batch.y, lo * n_out, m, n_out), batch.sw[lo:hi],
                                                      _block(deltas, act_off[last], m, n_out),
                                                      grad[icpt_off[last]:icpt_off[last] + n_out], backward)
    for i in range(last, -1, -1):
        D = _block(deltas, act_off[i], m, sizes[i + 1])
        A_prev = X0 if i == 0 else _block(acts, act_off[i - 1], m, sizes[i])
        gemm(A_prev, D, _block(grad, coef_off[i], sizes[i], sizes[i + 1]), 1, 0)
        if i > 0:
            D_prev = _block(deltas, act_off[i - 1], m, sizes[i])
            gemm(D, _block(params, coef_off[i], sizes[i], sizes[i + 1]), D_prev, 0, 1)
            _hidden_backward(A_prev, D_prev, grad[icpt_off[i - 1]:icpt_off[i - 1] + sizes[i]])


@jit_inner
def _gather(rows, order, start, lo, hi, batch, n_in):
    """Copy the rows ``order[start + lo:start + hi]`` of ``rows`` into rows ``lo:hi`` of ``batch``.

    Each chunk gathers its own rows, so that the copy runs on the thread, and
    lands in the cache, that uses it.  Only these rows of a sparse ``rows`` are densified.
    """
    sparse = rows.indptr.size > 0
    n_out = rows.Y.shape[1]
    zero = batch.x.dtype.type(0)
    for r in range(lo, hi):
        src = order[start + r]
        x = batch.x[r * n_in:(r + 1) * n_in]
        if sparse:
            for j in range(n_in):
                x[j] = zero
            for k in range(rows.indptr[src], rows.indptr[src + 1]):
                x[rows.indices[k]] = rows.data[k]
        else:
            for j in range(n_in):  # element loops: slice assignment costs more than these short rows
                x[j] = rows.X[src, j]
        for j in range(n_out):
            batch.y[r * n_out + j] = rows.Y[src, j]
        batch.sw[r] = rows.sw[src]


# The optimizer steps on ``p = params[lo:hi]``, with the gradient ``(g0 (+ g1) +
# alpha * W) * scale`` from the chunks' raw gradients on the slice (see
# _step_segment); each returns ``||W||^2`` before the step.  The flags are loop-invariant,
# so LLVM splits each loop into one straight copy per case.  The loops run over
# slices indexed from 0: LLVM vectorizes those, but not a ``range(lo, hi)`` loop
# whose ``lo`` is a computed quotient (measured 9x slower).


@jit_inner
def _sgd_slice(p, g0, g1, has_g1, state, lo, hi, scale, hyper, t, alpha):
    """SGD: ``v = momentum * v - lr * g``, ``W += v`` (Nesterov: ``W += momentum * v - lr * g``)."""
    velocity = state[0][lo:hi]
    lr, momentum, nesterov = hyper.lr, hyper.momentum, hyper.nesterov
    norm = p.dtype.type(0)
    for k in range(p.size):
        w = p[k]
        g = ((g0[k] + g1[k] if has_g1 else g0[k]) + alpha * w) * scale
        v = momentum * velocity[k] - lr * g
        velocity[k] = v
        p[k] = w + (momentum * v - lr * g) if nesterov else w + v
        norm += w * w
    return norm


@jit_inner
def _adam_slice(p, g0, g1, has_g1, state, lo, hi, scale, hyper, t, alpha):
    """Adam, at step ``t``: moments ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``, bias-corrected rate."""
    m1, m2 = state[0][lo:hi], state[1][lo:hi]
    beta_1, beta_2, epsilon = hyper.beta_1, hyper.beta_2, hyper.epsilon
    lr = p.dtype.type(hyper.lr * np.sqrt(1.0 - beta_2 ** t) / (1.0 - beta_1 ** t))
    one = p.dtype.type(1)
    norm = p.dtype.type(0)
    for k in range(p.size):
        w = p[k]
        g = ((g0[k] + g1[k] if has_g1 else g0[k]) + alpha * w) * scale
        m = beta_1 * m1[k] + (one - beta_1) * g
        v = beta_2 * m2[k] + (one - beta_2) * (g * g)
        m1[k] = m
        m2[k] = v
        p[k] = w - lr * m / (np.sqrt(v) + epsilon)
        norm += w * w
    return norm


# The step of each solver code (fastbp._config's order).
OPTIMIZER_STEPS = (_sgd_slice, _adam_slice)
_optimizer_slice = None  # set in each compiled copy of _step_segment (see epoch_for)


def _step_segment(s, n_seg, params, grads, state, n_coef, scale, hyper, t, alpha, seg_norm):
    """The step on segment ``s`` of ``n_seg`` of the coefficients, and on the intercepts (without L2) for the last.

    ``seg_norm[s]`` gets the segment's ``||W||^2`` before the step.  Each segment stays on one
    thread, and only it touches its slice of the parameters, state and gradients.
    (A function, not the body of the caller's ``prange`` loop: there, Numba's
    parallel lowering lost the write into ``seg_norm``, an array of a bundle.)
    """
    bounds = ((n_coef * s // n_seg, n_coef * (s + 1) // n_seg), (n_coef, params.size if s == n_seg - 1 else n_coef))
    for part in range(2):
        lo, hi = bounds[part]
        # Chunks 2, 3, ... are summed into chunk 0's raw gradient; chunk 1's is added as the step reads
        # it, so with two chunks chunk 0's is not written back (on two threads a write would pull its
        # cache lines from the other core).
        g0 = grads[0][lo:hi]
        for c in range(2, n_seg):
            extra = grads[c][lo:hi]
            for k in range(g0.size):
                g0[k] += extra[k]
        norm = _optimizer_slice(params[lo:hi], g0, grads[1][lo:hi] if n_seg > 1 else g0, n_seg > 1, state, lo, hi,
                                scale, hyper, t, alpha if part == 0 else alpha - alpha)
        if part == 0:
            seg_norm[s] = norm


@jit_inner
def _chunk_totals(chunk_loss, chunk_weight, chunk_finite, n_chunks):
    """``(loss sum, weight sum, all finite)`` of the chunks, summed in chunk order."""
    loss = 0.0
    weight = 0.0
    finite = True
    for c in range(n_chunks):
        loss += chunk_loss[c]
        weight += chunk_weight[c]
        finite = finite and chunk_finite[c]
    return loss, weight, finite and np.isfinite(loss)


def _train_epoch(rows, order, batch_size, layout, ws, batch, params, state, backup, hyper, penalty, t):
    """One epoch of minibatch training over the rows ``order`` of ``rows``.

    First ``backup`` gets a copy of ``params`` and ``state`` (its rows) for the
    caller to restore on divergence.  Returns ``(sum over batches of batch_loss *
    batch_rows, t, status)``: ``EPOCH_DONE``; ``EPOCH_DIVERGED`` at the first batch
    whose loss is not finite (before its update), or when the state is not finite
    after the last update (only the next forward would see it); or
    ``EPOCH_BAD_ORDER``, before anything is touched, when ``order`` indexes outside
    ``rows``.  ``t`` counts optimizer steps (Adam's bias correction).
    """
    n_rows = order.size
    for r in range(n_rows):
        if order[r] < 0 or order[r] >= rows.sw.size:
            return 0.0, t, EPOCH_BAD_ORDER
    for j in range(params.size):  # a loop per row: each one vectorizes
        backup[0, j] = params[j]
    for i in range(state.shape[0]):
        for j in range(params.size):
            backup[i + 1, j] = state[i, j]
    dtype = params.dtype.type
    alpha, n_coef = penalty.alpha, layout.n_coef
    backward = n_rows > 0  # True, but not a compile-time literal: one compiled chunk pass serves every caller
    total = 0.0
    for start in range(0, n_rows, batch_size):
        nb = batch_size if batch_size < n_rows - start else n_rows - start  # not min(): a compiled function
        k = ws.acts.shape[0] if ws.acts.shape[0] < nb else nb
        for c in prange(k):  # prange counts in uint64: pass int64, the serial loop's type, for one compiled callee
            chunk = np.int64(c)
            _gather(rows, order, start, nb * chunk // k, nb * (chunk + 1) // k, batch, layout.sizes[0])
            _chunk_pass(chunk, k, nb, backward, batch, layout, ws, params)
        data_loss, weight, finite = _chunk_totals(ws.chunk_loss, ws.chunk_weight, ws.chunk_finite, k)
        if not weight > 0.0:
            continue  # every row weighs 0: nothing to learn, and 1 / weight would be infinite
        if not finite:
            return total, t, EPOCH_DIVERGED
        t += 1
        scale = dtype(1.0 / weight)
        for s in prange(k):  # one parameter segment per chunk, on the chunk's thread
            _step_segment(np.int64(s), k, params, ws.grads, state, n_coef, scale, hyper, t, alpha, ws.seg_norm)
        norm = 0.0
        for s in range(k):
            norm += ws.seg_norm[s]
        total += _objective(data_loss, norm, weight, penalty.alpha, penalty.loss_scale) * nb
    finite = _all_finite(params) and _all_finite(state.reshape(state.size))
    return total, t, EPOCH_DONE if finite else EPOCH_DIVERGED


def _loss_gradient(batch, layout, ws, params, penalty):
    """Full-batch loss of the rows of ``batch``, its gradient left in ``ws.grads[0]``; NaN if not finite.

    For ``gradients`` and L-BFGS: the chunks read the rows in place.
    """
    n = batch.sw.size
    k = ws.acts.shape[0] if ws.acts.shape[0] < n else n
    backward = n > 0  # True, not as a literal (see _train_epoch)
    for c in prange(k):
        _chunk_pass(np.int64(c), k, n, backward, batch, layout, ws, params)
    data_loss, weight, finite = _chunk_totals(ws.chunk_loss, ws.chunk_weight, ws.chunk_finite, k)
    if not finite:
        return np.nan
    grad = ws.grads[0]
    dtype = params.dtype.type
    alpha, scale = dtype(penalty.alpha), dtype(1.0) / dtype(weight)
    norm = 0.0
    for j in range(grad.size):
        for c in range(1, k):
            grad[j] += ws.grads[c, j]
        if j < layout.n_coef:  # (raw + alpha * W) * scale for coefficients, raw * scale for intercepts
            grad[j] = (grad[j] + alpha * params[j]) * scale
            norm += params[j] * params[j]
        else:
            grad[j] = grad[j] * scale
    return _objective(data_loss, norm, weight, penalty.alpha, penalty.loss_scale)


def _predict(params, layout, X, out, ws, chunk):
    """Network output for every row of ``X`` into ``out``, ``chunk`` rows at a time (bounded memory).

    ``ws`` needs one chunk's activations for ``chunk`` rows; returns whether every value was finite.
    """
    n, n_in = X.shape
    flat = X.reshape(X.size)
    last = layout.sizes.size - 2
    n_out = layout.sizes[last + 1]
    backward = n < 0  # False, not as a literal (see _train_epoch)
    finite = True
    for start in range(0, n, chunk):
        m = chunk if chunk < n - start else n - start
        rows = Batch(flat[start * n_in:(start + m) * n_in], flat, flat)
        _chunk_pass(np.int64(0), np.int64(1), m, backward, rows, layout, ws, params)  # int64, not literals: one callee
        finite = finite and ws.chunk_finite[0]
        result = ws.acts[0, ws.act_off[last]:ws.act_off[last] + m * n_out]
        target = out[start:start + m].reshape(m * n_out)
        for j in range(m * n_out):
            target[j] = result[j]
    return finite


Kernels = namedtuple("Kernels", "chunk_pass loss_gradient loss_gradient_chunked predict")


@functools.cache
def kernels_for(hidden_code: int, out_code: int) -> Kernels:
    """The compiled entry points for networks of one hidden and one output activation.

    Each is a copy of its source above whose chunk pass calls that pair's
    kernels (:func:`fastbp._config.specialize`), compiled at its first call; the
    ``_chunked`` ones run their ``prange`` loops on Numba's threads, and the
    others, where ``prange`` is ``range``, never pay for the parallel lowering.
    """
    suffix = _suffix(hidden_code, out_code)
    chunk_pass = jit_inner(specialize(_chunk_pass_source, suffix, _hidden_forward=FORWARD[hidden_code],
                                      _out_forward=FORWARD[out_code], _hidden_backward=BACKWARD[hidden_code],
                                      _out_start=OUTPUT[out_code]))
    return Kernels(chunk_pass, jit(specialize(_loss_gradient, suffix, _chunk_pass=chunk_pass)),
                   jit_parallel(specialize(_loss_gradient, suffix + "_parallel", _chunk_pass=chunk_pass)),
                   jit(specialize(_predict, suffix, _chunk_pass=chunk_pass)))


@functools.cache
def epoch_for(hidden_code: int, out_code: int, solver: int, parallel: bool):
    """The compiled epoch (:func:`_train_epoch`) for one kind of network and optimizer, serial or on threads."""
    suffix = _suffix(hidden_code, out_code) + ("_adam" if solver == ADAM else "_sgd")
    suffix += "_parallel" if parallel else ""
    step = jit_inner(specialize(_step_segment, suffix, _optimizer_slice=OPTIMIZER_STEPS[solver]))
    source = specialize(_train_epoch, suffix, _chunk_pass=kernels_for(hidden_code, out_code).chunk_pass,
                        _step_segment=step)
    return (jit_parallel if parallel else jit)(source)


def _suffix(hidden_code, out_code):
    return f"_{ALL_ACTIVATIONS[hidden_code]}_{ALL_ACTIVATIONS[out_code]}"

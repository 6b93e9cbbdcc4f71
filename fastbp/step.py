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

Compile time follows the shape of this code.  Each jitted callee is compiled on
its own, then linked into every caller and optimised and code-generated again
there; Numba's own inlining (``inline="always"``) of a function as large as the
chunk pass costs more still.  So the call tree is two levels deep: an entry
point (epoch, full-batch gradient, predict) and the flat functions it calls, the
chunk pass and the optimizer step, with their loops written out and only scalar
helpers inlined; small helpers take arrays, not whole bundles; none of it
allocates, so it is compiled without reference counting
(:data:`fastbp._config.NO_NRT`).  Everything is
compiled per kind of network (:func:`kernels_for`, :func:`epoch_for`): a copy
whose globals name that network's activations, loss and optimizer, so Numba
prunes every other one's branch before typing it.  An epoch is compiled in one of
three copies: for batches of one row chunk (the optimizer step inlined), and for
chunked batches serially (``prange`` is ``range``) and, only when a fit first runs
chunks on threads, with ``parallel=True``.
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
    EXP,
    IDENTITY,
    RELU,
    SGD,
    SOFTMAX,
    jit,
    jit_inline,
    jit_inner,
    jit_parallel,
    specialize,
)
from ._intrinsics import block as _block
from ._intrinsics import gemm
from .kernels import ACTIVATE, DERIVATIVE, OUTPUT_INLINE, _exp_shifted

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


_objective = jit_inner(objective, nrt=False)


# Set in each compiled copy of the sources below (see kernels_for and epoch_for): the network's
# activation codes and scalar functions, its optimizer's code, and the copies an entry point calls.
# Numba reads globals as constants and prunes the branches they decide before it types anything,
# so each copy compiles only its own network's code.
_HIDDEN, _OUT, _SOLVER, _CHUNKED = RELU, SOFTMAX, SGD, True
_hidden_act = _hidden_derivative = _out_act = _out_start = _chunk_pass = _step_segment = None


def _chunk_pass_source(c, n_chunks, n, backward, batch, layout, ws, params):
    """Forward and, with ``backward``, loss and raw gradient of row chunk ``c`` of ``n_chunks`` of an ``n``-row batch.

    The batch is ``batch``'s flat C-order rows.  The chunk works in ``ws.acts[c]``
    / ``ws.deltas[c]``, writes its finiteness into ``ws.chunk_finite[c]`` and, with
    ``backward``, its raw gradient into ``ws.grads[c]`` and its loss and weight
    sums into ``ws.chunk_loss[c]`` / ``ws.chunk_weight[c]``.

    Forward, layer by layer: ``Z = act(A @ W + b)`` (``layers.Affine.forward`` and
    the activations' ``forward`` are the readable versions; fastbp.kernels has each
    loop as a public kernel).  Backward from the output delta ``(out - Y) * sw``:
    ``dW = A_prev.T @ D``, ``db = sum_rows D``, ``D_prev = (D @ W.T) * act'(A_prev)``,
    the derivative taken from the layer's output (``layers.Affine.backward``,
    ``layers.ReLU.backward``, ``layers.Sigmoid.backward``).  Each delta's producer
    also writes its column sums, the intercept gradient, in the same pass.

    One flat function, not a call per layer kernel: each compiled callee is
    optimised and code-generated again inside every caller, which made compile
    time grow with the depth of the call tree.  The output kernel (loss, delta
    and intercept gradient: ``kernels.OUTPUT_INLINE``, the source of validation's
    ``kernels.OUTPUT``) and the softmax's exponential are inlined, not called.
    """
    sizes, coef_off, icpt_off = layout.sizes, layout.coef_off, layout.icpt_off
    last = sizes.size - 2
    n_in, n_out = sizes[0], sizes[last + 1]
    lo, hi = n * c // n_chunks, n * (c + 1) // n_chunks
    m = hi - lo
    acts, deltas, act_off, grad = ws.acts[c], ws.deltas[c], ws.act_off, ws.grads[c]
    zero, one, inf = params.dtype.type(0), params.dtype.type(1), params.dtype.type(np.inf)
    bad = 0  # pre-activations that are NaN or infinite, for which abs(v) < inf is False (taken before ReLU hides them)
    X0 = _block(batch.x, lo * n_in, m, n_in)
    A = X0
    for i in range(last):
        width = sizes[i + 1]
        Z = _block(acts, act_off[i], m, width)
        gemm(A, _block(params, coef_off[i], sizes[i], width), Z, 0, 0)
        b = params[icpt_off[i]:icpt_off[i] + width]
        for r in range(m):
            for j in range(width):
                v = Z[r, j] + b[j]
                bad += not abs(v) < inf
                Z[r, j] = _hidden_act(v, zero, one)
        A = Z
    out = _block(acts, act_off[last], m, n_out)
    gemm(A, _block(params, coef_off[last], sizes[last], n_out), out, 0, 0)
    b = params[icpt_off[last]:icpt_off[last] + n_out]
    if _OUT == SOFTMAX:
        # Shift each row by its maximum, exponentiate the block as one flat loop (at 10 columns a loop
        # per row hardly vectorizes: 2x slower), then normalise each row.
        for r in range(m):
            top = out[r, 0] + b[0]
            for j in range(n_out):
                v = out[r, j] + b[j]
                bad += not abs(v) < inf
                out[r, j] = v
                top = v if v > top else top
            for j in range(n_out):
                out[r, j] -= top
        _exp_shifted(acts[act_off[last]:act_off[last] + m * n_out])
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
                bad += not (abs(v) < inf and e < inf)  # an overflow of exp counts too
                out[r, j] = e
    else:
        for r in range(m):
            for j in range(n_out):
                v = out[r, j] + b[j]
                bad += not abs(v) < inf
                out[r, j] = _out_act(v, zero, one)
    ws.chunk_finite[c] = bad == 0
    if not backward:
        return
    # The loss (sum over rows of sw * loss, in float64), the output delta (out - Y) * sw and its column sums.
    ws.chunk_loss[c], ws.chunk_weight[c] = _out_start(out, _block(batch.y, lo * n_out, m, n_out), batch.sw[lo:hi],
                                                      _block(deltas, act_off[last], m, n_out),
                                                      grad[icpt_off[last]:icpt_off[last] + n_out], backward)
    for i in range(last, -1, -1):
        D = _block(deltas, act_off[i], m, sizes[i + 1])
        A_prev = X0 if i == 0 else _block(acts, act_off[i - 1], m, sizes[i])
        gemm(A_prev, D, _block(grad, coef_off[i], sizes[i], sizes[i + 1]), 1, 0)
        if i == 0:
            break
        width = sizes[i]
        D_prev = _block(deltas, act_off[i - 1], m, width)
        gemm(D, _block(params, coef_off[i], width, sizes[i + 1]), D_prev, 0, 1)
        db = grad[icpt_off[i - 1]:icpt_off[i - 1] + width]
        for j in range(width):
            db[j] = zero
        for r in range(m):
            for j in range(width):
                d = _hidden_derivative(A_prev[r, j], D_prev[r, j], zero, one)
                D_prev[r, j] = d
                db[j] += d


def _step_segment_source(s, n_seg, params, grads, state, n_coef, scale, hyper, t, alpha, seg_norm):
    """The optimizer step on segment ``s`` of ``n_seg`` of the coefficients, and on the intercepts (no L2) for the last.

    The gradient of parameter ``w`` is ``(raw + alpha * w) * scale``, ``raw`` the
    chunks' raw gradients summed.  SGD: ``v = momentum * v - lr * g``, ``w += v``
    (Nesterov: ``w += momentum * v - lr * g``).  Adam, at step ``t``: moments ``m =
    b1 m + (1 - b1) g`` and ``v = b2 v + (1 - b2) g^2``, ``w -= lr_t m / (sqrt(v) +
    eps)`` with the bias-corrected ``lr_t``.  ``seg_norm[s]`` gets the segment's
    ``||W||^2`` before the step.  Each segment stays on one thread, and only it
    touches its slice of the parameters, state and gradients.  (A function, not
    the body of the caller's ``prange`` loop: there, Numba's parallel lowering lost
    the write into ``seg_norm``, an array of a bundle; and one compiled function
    serves the serial and the parallel epoch, which so compute bitwise the same.)

    The loops run over slices indexed from 0: LLVM vectorizes those, but not a
    ``range(lo, hi)`` loop whose ``lo`` is a computed quotient (measured 9x slower).
    """
    lo = n_coef * s // n_seg
    hi = params.size if s == n_seg - 1 else n_coef * (s + 1) // n_seg
    split = n_coef - lo  # p[:split] are coefficients, p[split:] intercepts (no L2, not in the norm)
    # Chunks 2, 3, ... are summed into chunk 0's raw gradient; chunk 1's is added as the step reads
    # it, so with two chunks chunk 0's is not written back (on two threads a write would pull its
    # cache lines from the other core).
    g0 = grads[0][lo:hi]
    g1, has_g1 = g0, False
    if _CHUNKED and n_seg > 1:
        for c in range(2, n_seg):
            extra = grads[c][lo:hi]
            for k in range(g0.size):
                g0[k] += extra[k]
        g1, has_g1 = grads[1][lo:hi], True
    p = params[lo:hi]
    zero, one = p.dtype.type(0), p.dtype.type(1)
    norm = zero
    if _SOLVER == SGD:
        velocity = state[0][lo:hi]
        lr, momentum, nesterov = hyper.lr, hyper.momentum, hyper.nesterov
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
        lr = p.dtype.type(hyper.lr * np.sqrt(1.0 - beta_2 ** t) / (1.0 - beta_1 ** t))
        for k in range(p.size):
            w = p[k]
            g = ((g0[k] + g1[k] if has_g1 else g0[k]) + (alpha if k < split else zero) * w) * scale
            m = beta_1 * m1[k] + (one - beta_1) * g
            v = beta_2 * m2[k] + (one - beta_2) * (g * g)
            m1[k] = m
            m2[k] = v
            p[k] = w - lr * m / (np.sqrt(v) + epsilon)
            norm += w * w if k < split else zero
    seg_norm[s] = norm


@functools.partial(jit_inner, nrt=False)
def _chunk_totals(chunk_loss, chunk_weight, chunk_finite, n_chunks):
    """``(loss sum, weight sum, all finite)`` of the chunks, summed in chunk order."""
    loss = 0.0
    weight = 0.0
    finite = True
    for c in range(n_chunks):
        loss += chunk_loss[c]
        weight += chunk_weight[c]
        finite = finite and chunk_finite[c]
    return loss, weight, finite and abs(loss) < np.inf


def _train_epoch(rows, order, batch_size, layout, ws, batch, params, state, backup, hyper, penalty, t):
    """One epoch of minibatch training over the rows ``order`` of ``rows``.

    First ``backup`` gets a copy of ``params`` and ``state`` (its rows) for the
    caller to restore on divergence.  Returns ``(sum over batches of batch_loss *
    batch_rows, t, status)``: ``EPOCH_DONE``; ``EPOCH_DIVERGED`` at the first batch
    whose loss is not finite (before its update), or when the state is not finite
    after the last update (only the next forward would see it); or
    ``EPOCH_BAD_ORDER``, before anything is touched, when ``order`` indexes outside
    ``rows``.  ``t`` counts optimizer steps (Adam's bias correction).

    Each chunk first gathers its own rows of the minibatch, so that the copy runs
    on the thread, and lands in the cache, that uses it; only those rows of a
    sparse ``rows`` are densified.
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
    zero, inf = dtype(0), dtype(np.inf)
    n_in, n_out = layout.sizes[0], rows.Y.shape[1]
    sparse = rows.indptr.size > 0
    bx, by, bsw = batch.x, batch.y, batch.sw
    backward = n_rows > 0  # True, but not a compile-time literal: one compiled chunk pass serves every caller
    total = 0.0
    for start in range(0, n_rows, batch_size):
        nb = batch_size if batch_size < n_rows - start else n_rows - start  # not min(): a compiled function
        # one chunk: np.int64(1), not a literal 1, so that the chunk pass has the signature predict calls it with
        k = (ws.acts.shape[0] if ws.acts.shape[0] < nb else nb) if _CHUNKED else np.int64(1)
        for c in prange(k):  # prange counts in uint64: pass int64, the serial loop's type, for one compiled callee
            chunk = np.int64(c)
            for r in range(nb * chunk // k, nb * (chunk + 1) // k):
                src = order[start + r]
                x = bx[r * n_in:(r + 1) * n_in]
                if sparse:
                    for j in range(n_in):
                        x[j] = zero
                    for e in range(rows.indptr[src], rows.indptr[src + 1]):
                        x[rows.indices[e]] = rows.data[e]
                else:
                    for j in range(n_in):  # element loops: slice assignment costs more than these short rows
                        x[j] = rows.X[src, j]
                for j in range(n_out):
                    by[r * n_out + j] = rows.Y[src, j]
                bsw[r] = rows.sw[src]
            _chunk_pass(chunk, k, nb, backward, batch, layout, ws, params)
        data_loss, weight, finite = _chunk_totals(ws.chunk_loss, ws.chunk_weight, ws.chunk_finite, k)
        if not weight > 0.0:
            continue  # every row weighs 0: nothing to learn, and 1 / weight would be infinite
        if not finite:
            return total, t, EPOCH_DIVERGED
        t += 1
        scale = dtype(1.0 / weight)
        for s in prange(k):  # one parameter segment per chunk, on the chunk's thread
            _step_segment(np.int64(s), k, params, ws.grads, state, layout.n_coef, scale, hyper, t, penalty.alpha,
                          ws.seg_norm)
        norm = 0.0
        for s in range(k):
            norm += ws.seg_norm[s]
        total += _objective(data_loss, norm, weight, penalty.alpha, penalty.loss_scale) * nb
    bad = 0
    for j in range(params.size):
        bad += not abs(params[j]) < inf
        for i in range(state.shape[0]):
            bad += not abs(state[i, j]) < inf
    return total, t, EPOCH_DONE if bad == 0 else EPOCH_DIVERGED


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

    Each is a copy of its source above whose chunk pass has that pair's code
    (:func:`fastbp._config.specialize`), compiled at its first call; the
    ``_chunked`` ones run their ``prange`` loops on Numba's threads, and the
    others, where ``prange`` is ``range``, never pay for the parallel lowering.
    """
    suffix = _suffix(hidden_code, out_code)
    chunk_pass = jit_inner(specialize(_chunk_pass_source, suffix, _HIDDEN=hidden_code, _OUT=out_code,
                                      _hidden_act=ACTIVATE[hidden_code], _hidden_derivative=DERIVATIVE[hidden_code],
                                      _out_act=ACTIVATE[out_code if out_code < len(ACTIVATE) else IDENTITY],
                                      _out_start=OUTPUT_INLINE[out_code]), nrt=False)
    return Kernels(chunk_pass, jit(specialize(_loss_gradient, suffix, _chunk_pass=chunk_pass), nrt=False),
                   jit_parallel(specialize(_loss_gradient, suffix + "_parallel", _chunk_pass=chunk_pass), nrt=False),
                   jit(specialize(_predict, suffix, _chunk_pass=chunk_pass), nrt=False))


@functools.cache
def epoch_for(hidden_code: int, out_code: int, solver: int, parallel: bool, chunked: bool = True):
    """The compiled epoch (:func:`_train_epoch`) for one kind of network and optimizer, serial or on threads.

    Without ``chunked`` (a workspace of one row chunk), a leaner copy that runs every batch as one chunk.
    """
    suffix = _suffix(hidden_code, out_code) + ("_adam" if solver == ADAM else "_sgd") + ("" if chunked else "_one")
    # The chunked epochs, serial and parallel, call one compiled step, so that they compute bitwise the same
    # (each compiled copy may contract a * b + c into fused multiply-adds differently); the one-chunk epoch,
    # whatever the thread count, inlines its own (one library less to compile and link).
    step = specialize(_step_segment_source, suffix, _SOLVER=solver, _CHUNKED=chunked)
    step = jit_inner(step, nrt=False) if chunked else jit_inline(step)
    source = specialize(_train_epoch, suffix + ("_parallel" if parallel else ""), _CHUNKED=chunked,
                        _chunk_pass=kernels_for(hidden_code, out_code).chunk_pass, _step_segment=step)
    return (jit_parallel if parallel else jit)(source, nrt=False)


def _suffix(hidden_code, out_code):
    return f"_{ALL_ACTIVATIONS[hidden_code]}_{ALL_ACTIVATIONS[out_code]}"

"""Whole-network backprop in nopython: forward, loss, backward, update, epochs.

Everything here works on the flat parameter vector of :class:`fastbp.network.Network`
(all coefficients, then all intercepts, scikit-learn's packing order) and on
flat workspace buffers, through offset arrays that the Python side computes
once.  Layer ``i`` sees ``W = params[coef_off[i]:...].reshape(n_in, n_out)``
and its output block ``acts[act_off[i]:...].reshape(n_rows, n_out)``; a reshape
of a contiguous slice is a view, so nothing is allocated per step and one
compiled function serves any depth.

The raw gradient left in ``grad`` by :func:`_backward` is ``X.T @ delta`` and
``sum_rows delta`` with ``delta = (output - target) * sample_weight``.  The
scaling by ``1 / sum(sample_weight)`` and the L2 term ``alpha * W`` are applied
exactly once: by :func:`_scale_gradient` for full-batch gradients, or fused
into the optimizer update (one pass over the parameters instead of two).

A batch is processed in row chunks (:func:`_batch_gradient`): each chunk has
its own activation and gradient blocks, so the chunks may run on several
threads; their losses and gradients are then summed in one fixed order.  The chunk
count comes from the batch size alone (``Network.chunk_count``), so one thread
or many give bitwise the same result.
"""

import numpy as np
from numba import prange

from ._config import jit, jit_parallel
from .kernels import _activation_backward, _all_finite, _bias_activation, _column_sums, _output_delta, _output_loss

SGD, ADAM = 0, 1
EPOCH_DONE, EPOCH_DIVERGED, EPOCH_BAD_ORDER = 0, 1, 2  # _train_epoch's status


@jit
def _block(buf, offset, rows, cols):
    """A (rows, cols) C-contiguous view of the flat ``buf`` starting at ``offset``."""
    return buf[offset:offset + rows * cols].reshape((rows, cols))


@jit
def _forward(params, sizes, coef_off, icpt_off, X0, acts, act_off, hidden_code, out_code):
    """Forward through every layer; returns whether all pre-activations were finite."""
    n = X0.shape[0]
    n_layers = sizes.size - 1
    A = X0
    finite = True
    for i in range(n_layers):
        W = _block(params, coef_off[i], sizes[i], sizes[i + 1])
        b = params[icpt_off[i]:icpt_off[i] + sizes[i + 1]]
        Z = _block(acts, act_off[i], n, sizes[i + 1])
        np.dot(A, W, Z)
        code = out_code if i == n_layers - 1 else hidden_code
        finite = _bias_activation(Z, b, code) and finite
        A = Z
    return finite


@jit
def _backward(params, grad, sizes, coef_off, icpt_off, X0, acts, deltas, act_off, hidden_code):
    """Raw gradients from the output delta already stored in the last delta block."""
    n = X0.shape[0]
    for i in range(sizes.size - 2, -1, -1):
        D = _block(deltas, act_off[i], n, sizes[i + 1])
        A_prev = X0 if i == 0 else _block(acts, act_off[i - 1], n, sizes[i])
        dW = _block(grad, coef_off[i], sizes[i], sizes[i + 1])
        np.dot(A_prev.T, D, dW)
        _column_sums(D, grad[icpt_off[i]:icpt_off[i] + sizes[i + 1]])
        if i > 0:
            W = _block(params, coef_off[i], sizes[i], sizes[i + 1])
            D_prev = _block(deltas, act_off[i - 1], n, sizes[i])
            np.dot(D, W.T, D_prev)
            _activation_backward(A_prev, D_prev, hidden_code)


@jit
def _loss_and_delta(sizes, Y, sw, acts, deltas, act_off, out_code):
    """Weighted loss sum of the batch, and the output delta written in place."""
    n = Y.shape[0]
    last = sizes.size - 2
    out = _block(acts, act_off[last], n, sizes[last + 1])
    delta = _block(deltas, act_off[last], n, sizes[last + 1])
    _output_delta(out, Y, sw, delta)
    return _output_loss(out, Y, sw, out_code)


@jit
def _squared_norm(params, n_coef):
    total = 0.0
    for k in range(n_coef):
        total += params[k] * params[k]
    return total


@jit
def _scale_gradient(params, grad, n_coef, alpha, scale):
    """Turn raw sums into the gradient: ``(raw + alpha * W) * scale`` for coefficients, ``raw * scale`` for intercepts."""
    for k in range(n_coef):
        grad[k] = (grad[k] + alpha * params[k]) * scale
    for k in range(n_coef, params.size):
        grad[k] = grad[k] * scale


@jit
def _sgd_segment(params, grad, other, has_other, velocity, lo, hi, scale, alpha, lr, momentum, nesterov):
    """SGD on ``params[lo:hi]`` with the gradient ``grad (+ other)``; returns ``||W||^2`` of the values before.

    ``other`` (a second chunk's gradient) is added as it is read, so ``grad`` is
    never written here: on two threads, a write would pull its cache lines back
    from the core that produced them.  The two flags are loop-invariant, so LLVM
    splits the loop into one straight copy per case.  The loop runs over slices
    indexed from 0: LLVM vectorizes that, but not a ``range(lo, hi)`` loop whose
    ``lo`` is a computed quotient (measured 9x slower).
    """
    p, g_, o, vel = params[lo:hi], grad[lo:hi], other[lo:hi], velocity[lo:hi]
    norm = params.dtype.type(0)
    for k in range(p.size):
        w = p[k]
        raw = g_[k] + o[k] if has_other else g_[k]
        g = (raw + alpha * w) * scale
        v = momentum * vel[k] - lr * g
        vel[k] = v
        p[k] = w + (momentum * v - lr * g) if nesterov else w + v
        norm += w * w
    return norm


@jit
def _adam_segment(params, grad, other, has_other, m1, m2, lo, hi, scale, alpha, lr_t, beta_1, beta_2, epsilon):
    """Adam on ``params[lo:hi]`` with the gradient ``grad (+ other)``, as :func:`_sgd_segment`; returns ``||W||^2``."""
    p, g_, o, a, b = params[lo:hi], grad[lo:hi], other[lo:hi], m1[lo:hi], m2[lo:hi]
    one = params.dtype.type(1)
    norm = params.dtype.type(0)
    for k in range(p.size):
        w = p[k]
        raw = g_[k] + o[k] if has_other else g_[k]
        g = (raw + alpha * w) * scale
        m = beta_1 * a[k] + (one - beta_1) * g
        v = beta_2 * b[k] + (one - beta_2) * (g * g)
        a[k] = m
        b[k] = v
        p[k] = w - lr_t * m / (np.sqrt(v) + epsilon)
        norm += w * w
    return norm


@jit
def _gather(X, csr, Y, sw, order, start, stop, Xb, Yb, swb):
    """Copy the minibatch rows ``order[start:stop]`` into the batch buffers.

    ``csr = (data, indices, indptr)`` of a CSR matrix when ``X`` is sparse (then
    ``X`` is a placeholder); only the batch is ever densified.
    """
    data, indices, indptr = csr
    sparse = indptr.size > 0
    n_in, n_out = Xb.shape[1], Yb.shape[1]
    zero = Xb.dtype.type(0)
    for r in range(stop - start):
        src = order[start + r]
        if sparse:
            for c in range(n_in):
                Xb[r, c] = zero
            for k in range(indptr[src], indptr[src + 1]):
                Xb[r, indices[k]] = data[k]
        else:
            for c in range(n_in):  # element loops: slice assignment costs more than these short rows
                Xb[r, c] = X[src, c]
        for c in range(n_out):
            Yb[r, c] = Y[src, c]
        swb[r] = sw[src]


@jit
def _chunk_gradient(c, n_chunks, n, gather, X, csr, Y, sw, order, start, xbuf, ybuf, swbuf, batch, params, grad,
                    partial, sizes, coef_off, icpt_off, acts, deltas, act_off, hidden_code, out_code, chunk_out):
    """Forward, loss and raw gradient of row chunk ``c`` of ``n_chunks`` of an ``n``-row batch.

    The batch is ``batch = (x, y, sw)``, flat C-order rows.  With ``gather`` these
    are the buffers ``xbuf`` / ``ybuf`` / ``swbuf``, and the chunk first copies its
    own rows ``order[start + lo:start + hi]`` of (X, Y, sw) there (see :func:`_gather`),
    so that the copy runs on the thread, and lands in the cache, that uses it.
    Without, ``batch`` may be read-only and the buffers are not touched.  Chunk
    ``c`` works in ``acts[c]`` / ``deltas[c]``, writes its raw gradient into
    ``grad`` (chunk 0) or ``partial[c - 1]``, and its loss sum, finiteness and
    weight sum into ``chunk_out[c, :3]``.
    """
    n_in, n_out = sizes[0], sizes[sizes.size - 1]
    lo, hi = n * c // n_chunks, n * (c + 1) // n_chunks
    if gather:
        _gather(X, csr, Y, sw, order, start + lo, start + hi, _block(xbuf, lo * n_in, hi - lo, n_in),
                _block(ybuf, lo * n_out, hi - lo, n_out), swbuf[lo:hi])
    X0 = _block(batch[0], lo * n_in, hi - lo, n_in)
    Y0 = _block(batch[1], lo * n_out, hi - lo, n_out)
    sw0 = batch[2][lo:hi]
    weight = params.dtype.type(0)
    for r in range(hi - lo):
        weight += sw0[r]
    a = acts[c]
    d = deltas[c]
    finite = _forward(params, sizes, coef_off, icpt_off, X0, a, act_off, hidden_code, out_code)
    chunk_out[c, 0] = _loss_and_delta(sizes, Y0, sw0, a, d, act_off, out_code)
    chunk_out[c, 1] = 1.0 if finite else 0.0
    chunk_out[c, 2] = weight
    if c == 0:
        _backward(params, grad, sizes, coef_off, icpt_off, X0, a, d, act_off, hidden_code)
    else:
        _backward(params, partial[c - 1], sizes, coef_off, icpt_off, X0, a, d, act_off, hidden_code)


@jit_parallel
def _chunks_parallel(n_chunks, n, gather, X, csr, Y, sw, order, start, xbuf, ybuf, swbuf, batch, params, grad, partial,
                     sizes, coef_off, icpt_off, acts, deltas, act_off, hidden_code, out_code, chunk_out):
    for c in prange(n_chunks):  # prange counts in uint64: call with int64, the serial loop's compiled types
        _chunk_gradient(np.int64(c), n_chunks, n, gather, X, csr, Y, sw, order, start, xbuf, ybuf, swbuf, batch,
                        params, grad, partial, sizes, coef_off, icpt_off, acts, deltas, act_off, hidden_code,
                        out_code, chunk_out)


@jit
def _batch_gradient(parallel, n_chunks, n, gather, X, csr, Y, sw, order, start, xbuf, ybuf, swbuf, batch, params,
                    grad, partial, sizes, coef_off, icpt_off, acts, deltas, act_off, hidden_code, out_code, chunk_out):
    """Raw gradient of chunk 0 into ``grad`` and of the others into ``partial``; returns
    ``(loss sum, all finite, weight sum)`` summed in chunk order.  The chunks run on
    Numba's threads when ``parallel``."""
    if parallel and n_chunks > 1:
        _chunks_parallel(n_chunks, n, gather, X, csr, Y, sw, order, start, xbuf, ybuf, swbuf, batch, params, grad,
                         partial, sizes, coef_off, icpt_off, acts, deltas, act_off, hidden_code, out_code, chunk_out)
    else:  # the loop in place rather than in a serial twin: each call layer passes ~25 arrays (~2% at batch 32)
        for c in range(n_chunks):
            _chunk_gradient(c, n_chunks, n, gather, X, csr, Y, sw, order, start, xbuf, ybuf, swbuf, batch, params,
                            grad, partial, sizes, coef_off, icpt_off, acts, deltas, act_off, hidden_code, out_code,
                            chunk_out)
    loss = 0.0
    weight = 0.0
    finite = True
    for c in range(n_chunks):
        loss += chunk_out[c, 0]
        finite = finite and chunk_out[c, 1] != 0.0
        weight += chunk_out[c, 2]
    return loss, finite, weight


@jit
def _add_partials(grad, partial, n_partial, lo, hi):
    """``grad[lo:hi] += partial[0][lo:hi] + ...``, in chunk order (slices, as in :func:`_sgd_segment`)."""
    g = grad[lo:hi]
    for c in range(n_partial):
        part = partial[c][lo:hi]
        for k in range(g.size):
            g[k] += part[k]


@jit
def _segment_step(solver, params, grad, partial, n_partial, state_1, state_2, lo, hi, scale, alpha, lr, momentum,
                  nesterov, beta_1, beta_2, epsilon):
    """The optimizer step on ``params[lo:hi]`` with the sum of the chunks' gradients; returns ``||W||^2`` before.

    Chunks 2, 3, ... are first summed into ``grad``; chunk 1's gradient is added as the step reads it.
    """
    if n_partial > 1:
        _add_partials(grad, partial[1:], n_partial - 1, lo, hi)
    has_other = n_partial >= 1
    other = partial[0] if has_other else grad
    if solver == ADAM:
        return _adam_segment(params, grad, other, has_other, state_1, state_2, lo, hi, scale, alpha, lr, beta_1,
                             beta_2, epsilon)
    return _sgd_segment(params, grad, other, has_other, state_1, lo, hi, scale, alpha, lr, momentum, nesterov)


@jit
def _update_segment(s, n_seg, solver, params, grad, partial, n_partial, state_1, state_2, n_coef, scale, alpha, lr,
                    momentum, nesterov, beta_1, beta_2, epsilon, seg_out):
    """The optimizer step on segment ``s`` of ``n_seg`` of the coefficients (the last segment also takes the
    intercepts, without L2); ``seg_out[s, 3]`` gets the segment's ``||W||^2`` before the step.

    ``lr`` is Adam's bias-corrected rate, or SGD's rate.  Each segment stays on one thread, and the
    optimizer state of a segment is only ever touched by it.
    """
    lo, hi = n_coef * s // n_seg, n_coef * (s + 1) // n_seg
    seg_out[s, 3] = _segment_step(solver, params, grad, partial, n_partial, state_1, state_2, lo, hi, scale, alpha,
                                  lr, momentum, nesterov, beta_1, beta_2, epsilon)
    if s == n_seg - 1:
        _segment_step(solver, params, grad, partial, n_partial, state_1, state_2, n_coef, params.size, scale,
                      params.dtype.type(0), lr, momentum, nesterov, beta_1, beta_2, epsilon)


@jit_parallel
def _updates_parallel(n_seg, solver, params, grad, partial, n_partial, state_1, state_2, n_coef, scale, alpha, lr,
                      momentum, nesterov, beta_1, beta_2, epsilon, seg_out):
    for s in prange(n_seg):
        _update_segment(np.int64(s), n_seg, solver, params, grad, partial, n_partial, state_1, state_2, n_coef,
                        scale, alpha, lr, momentum, nesterov, beta_1, beta_2, epsilon, seg_out)


@jit
def _train_epoch(X, csr, Y, sw, order, batch_size, params, grad, partial, state_1, state_2, backup,
                 sizes, coef_off, icpt_off, n_coef, xbuf, ybuf, swbuf, acts, deltas, act_off, chunk_out,
                 hidden_code, out_code, solver, lr, momentum, nesterov, beta_1, beta_2, epsilon,
                 alpha, loss_scale, t, parallel):
    """One epoch of minibatch training over the rows ``order`` of (X, Y, sw).

    ``X`` is dense, or a placeholder when ``csr`` holds a CSR matrix (see :func:`_gather`).
    Each batch is cut into row chunks (:func:`_chunk_gradient`) and the update into
    as many parameter segments (:func:`_update_segment`); both run on Numba's
    threads when ``parallel``.

    First ``backup`` (3 rows) gets a copy of ``params``, ``state_1`` and ``state_2``
    for the caller to restore on divergence.  Returns ``(sum over batches of
    batch_loss * batch_rows, t, status)``: ``EPOCH_DONE``; ``EPOCH_DIVERGED`` at the
    first batch whose loss is not finite (before its update), or when the state is
    not finite after the last update (only the next forward would see it); or
    ``EPOCH_BAD_ORDER``, before anything is touched, when ``order`` indexes outside
    ``X``.  ``t`` counts optimizer steps (Adam's bias correction).
    """
    n_rows = order.size
    for r in range(n_rows):
        if order[r] < 0 or order[r] >= sw.size:
            return 0.0, t, EPOCH_BAD_ORDER
    for k in range(params.size):
        backup[0, k] = params[k]
        backup[1, k] = state_1[k]
        backup[2, k] = state_2[k]
    total = 0.0
    for start in range(0, n_rows, batch_size):
        nb = min(batch_size, n_rows - start)
        k = min(acts.shape[0], nb)
        gather = nb > 0  # True, but not a compile-time literal: one compiled chunk function serves both callers
        data_loss, finite, weight = _batch_gradient(parallel, k, nb, gather, X, csr, Y, sw, order, start, xbuf, ybuf,
                                                    swbuf, (xbuf, ybuf, swbuf), params, grad, partial, sizes,
                                                    coef_off, icpt_off, acts, deltas, act_off, hidden_code, out_code,
                                                    chunk_out)
        if not weight > 0.0:
            continue  # every row weighs 0: nothing to learn, and 1 / weight would be infinite
        if not (finite and np.isfinite(data_loss)):
            return total, t, EPOCH_DIVERGED
        scale = params.dtype.type(1.0 / weight)
        t += 1
        step_lr = lr * np.sqrt(1.0 - beta_2 ** t) / (1.0 - beta_1 ** t) if solver == ADAM else lr
        step_lr = params.dtype.type(step_lr)
        if parallel and k > 1:
            _updates_parallel(k, solver, params, grad, partial, k - 1, state_1, state_2, n_coef, scale, alpha,
                              step_lr, momentum, nesterov, beta_1, beta_2, epsilon, chunk_out)
        else:
            for s in range(k):
                _update_segment(s, k, solver, params, grad, partial, k - 1, state_1, state_2, n_coef, scale, alpha,
                                step_lr, momentum, nesterov, beta_1, beta_2, epsilon, chunk_out)
        norm = 0.0
        for s in range(k):
            norm += chunk_out[s, 3]
        batch_loss = (data_loss * loss_scale + 0.5 * alpha * norm) / weight
        total += batch_loss * nb
    finite = _all_finite(params) and _all_finite(state_1) and _all_finite(state_2)
    return total, t, EPOCH_DONE if finite else EPOCH_DIVERGED


@jit
def _loss_gradient(params, grad, partial, sizes, coef_off, icpt_off, n_coef, X, Y, sw, acts, deltas, act_off,
                   chunk_out, hidden_code, out_code, alpha, loss_scale, parallel):
    """Full-batch loss and scaled gradient (for ``gradients`` and L-BFGS); NaN loss if not finite."""
    n = sw.size
    k = min(acts.shape[0], n)
    # No gather: the chunks read (X, Y, sw) in place; the gather arguments are unused placeholders.
    no_rows, no_values = np.empty(0, np.int64), np.empty(0, params.dtype)
    gather = no_rows.size > 0  # False, not as a literal (see _train_epoch)
    data_loss, finite, weight = _batch_gradient(parallel, k, n, gather, X, (no_values, no_rows, no_rows), Y, sw,
                                                no_rows, 0, no_values, no_values, no_values,
                                                (X.reshape(X.size), Y.reshape(Y.size), sw), params, grad, partial,
                                                sizes, coef_off, icpt_off, acts, deltas, act_off, hidden_code,
                                                out_code, chunk_out)
    if not (finite and np.isfinite(data_loss)):
        return np.nan
    _add_partials(grad, partial, k - 1, 0, grad.size)
    weight = sw.sum()
    _scale_gradient(params, grad, n_coef, params.dtype.type(alpha), params.dtype.type(1) / weight)
    return (data_loss * loss_scale + 0.5 * alpha * _squared_norm(params, n_coef)) / weight


@jit
def _predict(params, sizes, coef_off, icpt_off, X, out, acts, act_off, chunk, hidden_code, out_code):
    """Network output for every row of ``X`` into ``out``, ``chunk`` rows at a time (bounded memory)."""
    n, n_in = X.shape
    flat = X.reshape(X.size)
    last = sizes.size - 2
    n_out = sizes[last + 1]
    finite = True
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        X0 = _block(flat, start * n_in, stop - start, n_in)
        finite = _forward(params, sizes, coef_off, icpt_off, X0, acts, act_off, hidden_code, out_code) and finite
        out[start:stop, :] = _block(acts, act_off[last], stop - start, n_out)
    return finite

"""Small batches on two cores: every layer's units cut in two halves, one half per worker.

A batch too small to split by rows (``Network.chunk_count`` gives one chunk)
leaves the second core idle, and splitting its rows anyway does not pay: each
step both workers would read every parameter the other had just updated, tens
of kilobytes crossing between the cores' caches.  So here each worker owns half
of every layer's units.  For the epoch it copies its half's parameters and
optimizer state into buffers of its own, packed contiguously (only the lines at
the two halves' boundaries are shared), trains them there, and copies them back
at the end.
What crosses between the cores each step is small: partial products of the
batch's rows.

The layers alternate between two ways of cutting, counted from the output
layer, which is always a *row* layer:

* a **column** layer cuts its output units: worker ``h`` computes
  ``A_out[:, half] = act(A_in @ W[:, half] + b[half])`` from the whole input;
* a **row** layer cuts its input units, which are the halves of the column
  layer before it (or of the features, for the first layer): worker ``h``
  computes the partial product ``P_h = A_in[:, half] @ W[half, :]`` and, after a
  barrier, both add ``P_0 + P_1`` (worker 0's partial carries the intercept, which
  worker 0 owns) and apply the activation, so both hold the whole output.

Backward mirrors it.  A row layer's delta is whole, so each worker takes its
rows of the gradient, ``A_in[:, half].T @ D``, and its half of the previous delta,
``D @ W[half, :].T``, with no exchange.  A column layer's delta is cut, so each
worker takes its columns of the gradient, ``A_in.T @ D[:, half]``, and the
previous delta is the sum of both workers' ``D[:, half] @ W[:, half].T``, after a
barrier.  A network of one hidden layer (a column layer, then the output row
layer) so needs one barrier per step.  The output loss and delta are computed by
both workers, each in its own buffers.

The cut depends on the layer sizes only, so one worker running both halves in
turn (``n_workers == 1``) computes bitwise what two do.  With one hidden layer
the result is bitwise the one-chunk step's too: every element of every product
is the same sum whether the product is cut by halves of the units or not, except
the output layer's, which the chunk pass cuts as the halves do (``Layout.out_cut``),
and the norm ``||W||^2``, which both sum over the same runs of parameters
(``Layout.runs``, :func:`fastbp.loops.update_runs`).  So such a network's batches
may run in either (``Trainer._schedule``).  With more layers the result equals the
chunk pass's to rounding: the hidden layers' products are summed in another order.
Shared buffers are double-buffered by parity wherever a fast worker could write
the next one while the other still reads: ``partial`` by barrier, ``stats`` (each
half's non-finite counts by step, its norm by update).
"""

import functools
from collections import namedtuple

import numpy as np

from ._config import ADAM, EPOCH_ABORTED, EPOCH_BAD_ORDER, EPOCH_DIVERGED, EPOCH_DONE, jit, jit_inline, specialize
from ._intrinsics import block as _block
from ._intrinsics import gemm, meet, roll_call, wide_vectors
from .loops import (
    all_finite,
    back_up,
    epoch_ended,
    gather,
    order_is_valid,
    report_epochs,
    row_kernels,
    shuffle,
    updates,
)
from .step import _objective, _suffix

# Per half ``h``: the gathered batch (``x[h]``: its own feature columns if layer 0 is a row layer, all of them
# if a column layer; ``y[h]``, ``sw[h]``); each layer's output and delta at ``act_off`` (a column layer's half as a
# (rows, half) block, a row layer's whole); the packed parameters ``w[h]``, raw gradient ``g[h]`` and optimizer
# state ``state[h]``, laid out by ``pack[h, i] = [coefficient offset, intercept offset]`` with ``pack[h, -1] =
# [coefficients, length]`` (all of the half's coefficients, then its intercepts), and ``copies[h]``: the runs
# ``[offset in params, offset in w[h], length, in norm]`` copied in and out, and ``runs[h]`` the same runs as the
# update takes them (``[offset in w[h], length, in norm, 0]``: loops.update_runs); ``spare[h]``: where worker 1
# writes the row layers' intercept gradients it computes but does not own.  Shared: ``partial`` (half, barrier
# parity, rows * widest layer), ``stats`` (parity, half, [non-finite count, ||W||^2, row layers' non-finite count]: the
# counts by step, the norm by update, so that a norm is not overwritten before the other half reads it) and
# ``zeros``, a zero intercept for the sum of two partials that already hold theirs.
Halves = namedtuple("Halves", "x y sw acts deltas act_off w g state spare pack copies runs cut partial stats zeros")

_LINE = 16  # float32 elements in a 64-byte cache line


def unit_cut(n: int) -> int:
    """Where ``n`` units are cut in two: near the middle, on a multiple of 16 when both halves are that wide."""
    if n < 2 * _LINE:
        return n // 2
    return (n // 2 + _LINE // 2) // _LINE * _LINE


def is_row_layer(i, last):
    """Layer ``i`` cuts its input units (a row layer), else its output units; ``last`` is the output layer."""
    return (last - i) % 2 == 0


_is_row = jit_inline(is_row_layer)


def _layout(sizes, coef_off, icpt_off, cut):
    """``(pack, copies)`` of :class:`Halves` for both halves: ``copies[h]`` rows ``[offset in params, offset in
    w[h], length, in norm]`` (coefficients, then intercepts), padded with empty runs.  Fresh arrays each call."""
    pack, copies = _layout_of(*_tuples(sizes, coef_off, icpt_off, cut))
    return pack.copy(), copies.copy()


def _tuples(*arrays):
    """Each array as a tuple of Python ints: the hashable key of the layouts kept below."""
    return tuple(tuple(int(v) for v in a) for a in arrays)


@functools.lru_cache(maxsize=32)
def _layout_of(sizes, coef_off, icpt_off, cut):
    """:func:`_layout` of tuples, kept: building it is ~0.15 ms of Python, once per network and fit otherwise."""
    last = len(sizes) - 2
    pack = np.zeros((2, last + 2, 2), np.int64)
    copies = [[], []]
    for h in range(2):
        coefs, icpts = [], []  # (offset in params, rows, row length, params row stride) of each layer's half
        for i in range(last + 1):
            n_in, n_out = int(sizes[i]), int(sizes[i + 1])
            if is_row_layer(i, last):
                lo, hi = (0, cut[i]) if h == 0 else (cut[i], n_in)
                coefs.append((coef_off[i] + lo * n_out, 1, (hi - lo) * n_out, 0))
                icpts.append((icpt_off[i], 1, n_out if h == 0 else 0, 0))
            else:
                lo, hi = (0, cut[i + 1]) if h == 0 else (cut[i + 1], n_out)
                coefs.append((coef_off[i] + lo, n_in, hi - lo, n_out))
                icpts.append((icpt_off[i] + lo, 1, hi - lo, 0))
        at = 0
        for column, blocks in enumerate((coefs, icpts)):
            for i, (start, n_rows, length, stride) in enumerate(blocks):
                pack[h, i, column] = at
                copies[h].extend((start + r * stride, at + r * length, length, 1 - column)
                                 for r in range(n_rows) if length)
                at += n_rows * length
            pack[h, last + 1, column] = at
    width = max(len(c) for c in copies)
    return pack, np.array([c + [(0, 0, 0, 0)] * (width - len(c)) for c in copies], np.int64).reshape(2, width, 4)


def one_chunk_order(sizes, coef_off, icpt_off, n_coef, n_params, as_halves):
    """``(out_cut, runs)`` of :class:`fastbp.step.Layout`: with ``as_halves``, the halves' cut of the output
    layer and both halves' runs in the parameter vector's order (so a one-chunk step sums as they do);
    else no cut, and the coefficients and the intercepts as one run each."""
    if not as_halves:
        return 0, np.array([[0, n_coef, 1, 0], [n_coef, n_params - n_coef, 0, 0]], np.int64)
    out_cut, runs = _one_chunk_runs(*_tuples(sizes, coef_off, icpt_off))
    return out_cut, runs.copy()


@functools.lru_cache(maxsize=32)
def _one_chunk_runs(sizes, coef_off, icpt_off):
    """``one_chunk_order`` of tuples with ``as_halves``, kept (as ``_layout_of``)."""
    cut = tuple(unit_cut(n) for n in sizes)
    _, copies = _layout_of(sizes, coef_off, icpt_off, cut)
    runs = [(src, n, in_norm, h) for h in range(2) for src, _, n, in_norm in copies[h].tolist() if n]
    return cut[1], np.array(sorted(runs), np.int64).reshape(-1, 4)


def workspace(net, rows: int, state_rows: int) -> Halves:
    """The buffers of :func:`_halves_epoch` for ``net``, batches of up to ``rows`` rows and ``state_rows`` of state."""
    sizes, dtype = net.sizes, net.dtype
    acts, act_off = net._activation_buffer(rows)
    cut = np.array([unit_cut(int(n)) for n in sizes], np.int64)
    pack, copies = _layout(sizes, net.coef_off, net.icpt_off, cut)
    runs = np.zeros_like(copies)
    runs[:, :, :3] = copies[:, :, 1:]
    n_packed, widest = int(pack[:, -1, 1].max()), int(sizes.max())

    def per_half(*shape):
        return np.empty((2, *shape), dtype)

    return Halves(per_half(rows * int(sizes[0])), per_half(rows * int(sizes[-1])), per_half(rows),
                  per_half(acts.size), per_half(acts.size), act_off, per_half(n_packed), per_half(n_packed),
                  per_half(state_rows, n_packed), per_half(widest), pack, copies, runs, cut, per_half(2, rows * widest),
                  np.zeros((2, 2, 8)), np.zeros(widest, dtype))


@jit_inline
def _half(cut, sizes, j, h):
    """``(lo, hi)``: half ``h`` of the ``sizes[j]`` units of layer boundary ``j``."""
    return (0, cut[j]) if h == 0 else (cut[j], sizes[j])


@jit_inline
def _add(P0, P1, Z):
    """``Z = P0 + P1``: the two workers' partial products."""
    for r in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            Z[r, j] = P0[r, j] + P1[r, j]


@jit_inline
def _copy(copies, params, state, w, w_state, into_half):
    """Copy a half's parameters and state between ``params`` / ``state`` and its packed ``w`` / ``w_state``."""
    for k in range(copies.shape[0]):
        src, dst, n = copies[k, 0], copies[k, 1], copies[k, 2]
        _copy_run(params[src:src + n], w[dst:dst + n], into_half)
        for s in range(state.shape[0]):
            _copy_run(state[s, src:src + n], w_state[s, dst:dst + n], into_half)


@jit_inline
def _copy_run(whole, packed, into_half):
    """``packed = whole``, or back: views indexed from 0 (``w[dst + j]`` wraps each index around: gathers)."""
    if into_half:
        for j in range(whole.size):
            packed[j] = whole[j]
    else:
        for j in range(whole.size):
            whole[j] = packed[j]


_activate_rows = _derive_rows = _output_rows = _out_start = _update_runs = _step_rate = None  # set per copy


def _halves_epoch(worker, n_workers, sync, losses, rows, order, batch_size, layout, hw, batch, params, state, backup,
                  hyper, penalty, t, plan, pass_at):
    """Worker ``worker``'s halves of up to ``plan.epochs`` epochs, ``n_workers`` being 1 or 2.

    :func:`fastbp.step._train_epoch`'s contract and arguments, ``hw`` (:class:`Halves`) in place of its
    workspace (``batch`` and ``pass_at`` are unused): a worker started by a thread pool is passed as ``-1 -
    w`` and first answers a roll call; each epoch worker 0 shuffles ``order`` (with ``plan.draws``) and
    backs up the parameters; every worker applies the stopping rule alike; worker 0 leaves the losses in
    ``losses`` and the epochs completed, ``t`` and the status in ``sync[5]``, ``sync[3]``, ``sync[4]``.
    """
    wide_vectors()
    w = worker if worker >= 0 else -1 - worker
    n_rows = order.size
    status = EPOCH_DONE
    if not order_is_valid(order, rows.sw.size):
        status = EPOCH_BAD_ORDER
    elif worker < 0 and not roll_call(sync, n_workers):
        status = EPOCH_ABORTED
    sizes, cut, pack = layout.sizes, hw.cut, hw.pack
    last = sizes.size - 2
    n_in, n_out = sizes[0], sizes[last + 1]
    first, stop = (w, w + 1) if n_workers > 1 else (0, 2)
    first_row_layer = _is_row(0, last)  # then each half gathers only its own feature columns
    dtype = params.dtype.type
    arrivals = 0  # barriers this worker has reached
    n_updates = 0
    best, stale, completed, t_done = plan.best, plan.stale, 0, t
    for _ in range(plan.epochs if status == EPOCH_DONE else 0):
        if plan.draws != 0:  # after the last epoch's final barrier: no worker still reads the order
            if w == 0:
                shuffle(order, plan.next32, plan.next64, plan.draws)
            arrivals += 1
            if not meet(sync, n_workers, arrivals):
                status = EPOCH_ABORTED
                break
        if w == 0:
            back_up(params, state, backup)
        for h in range(first, stop):
            _copy(hw.copies[h], params, state, hw.w[h], hw.state[h], True)
        total = 0.0
        pending = False  # the last step's objective awaits the other half's norm
        p_loss = p_weight = 0.0
        p_nb = p_par = 0
        for step, start in enumerate(range(0, n_rows, batch_size)):
            nb = batch_size if batch_size < n_rows - start else n_rows - start
            par = step % 2
            data_loss = weight = 0.0
            for h in range(first, stop):
                glo, ghi = _half(cut, sizes, 0, h) if first_row_layer else (0, n_in)
                gather(rows, order, start, 0, nb, glo, ghi, hw.x[h], hw.y[h], hw.sw[h])
                hw.stats[par, h, 0] = 0.0
                hw.stats[par, h, 2] = 0.0
            for i in range(last + 1):  # forward
                width_in, width = sizes[i], sizes[i + 1]
                row = _is_row(i, last)
                pp = (arrivals + 1) % 2
                if row:  # each half's partial product, then the barrier before both add them
                    for h in range(first, stop):
                        lo, hi = _half(cut, sizes, i, h)
                        wh = hw.w[h]
                        A = _block(hw.x[h] if i == 0 else hw.acts[h], 0 if i == 0 else hw.act_off[i - 1], nb, hi - lo)
                        P = _block(hw.partial[h, pp], 0, nb, width)
                        gemm(A, _block(wh, pack[h, i, 0], hi - lo, width), P, 0, 0)
                        if h == 0:
                            b = wh[pack[0, i, 1]:pack[0, i, 1] + width]
                            for r in range(nb):
                                for j in range(width):
                                    P[r, j] += b[j]
                    arrivals += 1
                    if not meet(sync, n_workers, arrivals):
                        status = EPOCH_ABORTED
                        break
                for h in range(first, stop):
                    if row:  # the whole output: the partials' sum, whose intercept is in worker 0's
                        Z = _block(hw.acts[h], hw.act_off[i], nb, width)
                        _add(_block(hw.partial[0, pp], 0, nb, width), _block(hw.partial[1, pp], 0, nb, width), Z)
                        b = hw.zeros[:width]
                    else:  # this half's columns, from the whole input
                        lo, hi = _half(cut, sizes, i + 1, h)
                        wh = hw.w[h]
                        A = (_block(hw.x[h], 0, nb, n_in) if i == 0
                             else _block(hw.acts[h], hw.act_off[i - 1], nb, width_in))
                        Z = _block(hw.acts[h], hw.act_off[i], nb, hi - lo)
                        gemm(A, _block(wh, pack[h, i, 0], width_in, hi - lo), Z, 0, 0)
                        b = wh[pack[h, i, 1]:pack[h, i, 1] + hi - lo]
                    slot = 2 if row else 0  # a row layer's count is the same in both halves: counted once
                    if i < last:
                        hw.stats[par, h, slot] += _activate_rows(Z, b)
                        continue
                    hw.stats[par, h, slot] += _output_rows(Z, b, hw.acts[h][hw.act_off[i]:hw.act_off[i] + nb * width])
                    db = hw.g[0][pack[0, i, 1]:pack[0, i, 1] + width] if h == 0 else hw.spare[h][:width]
                    loss_h, weight_h = _out_start(Z, _block(hw.y[h], 0, nb, n_out), hw.sw[h][:nb],
                                                  _block(hw.deltas[h], hw.act_off[i], nb, width), db, nb > 0)
                    if h == first:
                        data_loss, weight = loss_h, weight_h
            if status != EPOCH_DONE:
                break
            # The output layer's barrier has passed: every half's forward of this step is done, and so are
            # the norms of the step before, which each half wrote before its first barrier of this step.
            if pending:
                norm = hw.stats[p_par, 0, 1] + hw.stats[p_par, 1, 1]
                total += _objective(p_loss, norm, p_weight, penalty.alpha, penalty.loss_scale) * p_nb
                pending = False
            bad = hw.stats[par, 0, 0] + hw.stats[par, 1, 0] + hw.stats[par, first, 2]
            learns = weight > 0.0  # else every row weighs 0: nothing to learn, and 1 / weight would be infinite
            if learns and not (bad == 0.0 and abs(data_loss) < np.inf):  # both halves see it alike
                status = EPOCH_DIVERGED
                break
            for i in range(last, -1, -1):  # backward
                width_in, width = sizes[i], sizes[i + 1]
                row = _is_row(i, last)
                pp = (arrivals + 1) % 2
                for h in range(first, stop):  # the gradient of this half's parameters, and its share of D_prev
                    if row:  # the delta is whole: this half's rows of W
                        lo, hi = _half(cut, sizes, i, h)
                        D = _block(hw.deltas[h], hw.act_off[i], nb, width)
                        A = _block(hw.x[h] if i == 0 else hw.acts[h], 0 if i == 0 else hw.act_off[i - 1], nb, hi - lo)
                        W_h, prev = _block(hw.w[h], pack[h, i, 0], hi - lo, width), hw.deltas[h]
                        gemm(A, D, _block(hw.g[h], pack[h, i, 0], hi - lo, width), 1, 0)
                    else:  # the delta is this half's columns: this half's columns of W; D_prev is a partial sum
                        lo, hi = _half(cut, sizes, i + 1, h)
                        D = _block(hw.deltas[h], hw.act_off[i], nb, hi - lo)
                        A = (_block(hw.x[h], 0, nb, n_in) if i == 0
                             else _block(hw.acts[h], hw.act_off[i - 1], nb, width_in))
                        W_h, prev = _block(hw.w[h], pack[h, i, 0], width_in, hi - lo), hw.partial[h, pp]
                        gemm(A, D, _block(hw.g[h], pack[h, i, 0], width_in, hi - lo), 1, 0)
                    if i > 0:
                        gemm(D, W_h, _block(prev, hw.act_off[i - 1] if row else 0, nb, hi - lo if row else width_in),
                             0, 1)
                if i == 0:
                    continue
                if not row:
                    arrivals += 1
                    if not meet(sync, n_workers, arrivals):
                        status = EPOCH_ABORTED
                        break
                for h in range(first, stop):  # D_prev *= act'(A_prev), and its column sums: an intercept gradient
                    if row:  # this half's columns of the column layer before, which it owns
                        lo, hi = _half(cut, sizes, i, h)
                        n, db = hi - lo, hw.g[h][pack[h, i - 1, 1]:pack[h, i - 1, 1] + hi - lo]
                        D_prev = _block(hw.deltas[h], hw.act_off[i - 1], nb, n)
                    else:  # the whole delta of the row layer before, whose intercept worker 0 owns
                        n = width_in
                        D_prev = _block(hw.deltas[h], hw.act_off[i - 1], nb, n)
                        _add(_block(hw.partial[0, pp], 0, nb, n), _block(hw.partial[1, pp], 0, nb, n), D_prev)
                        db = hw.g[0][pack[0, i - 1, 1]:pack[0, i - 1, 1] + n] if h == 0 else hw.spare[h][:n]
                    _derive_rows(_block(hw.acts[h], hw.act_off[i - 1], nb, n), D_prev, db)
            if status != EPOCH_DONE:
                break
            if learns:
                t += 1
                scale = dtype(1.0 / weight)
                lr = _step_rate(params, hyper, t)
                for h in range(first, stop):
                    hw.stats[n_updates % 2, h, 1] = _update_runs(hw.runs[h], hw.w[h], hw.g[h], hw.state[h], scale,
                                                                 lr, hyper, penalty.alpha)
                pending, p_loss, p_weight, p_nb, p_par = True, data_loss, weight, nb, n_updates % 2
                n_updates += 1
        if status != EPOCH_DONE:  # the caller restores the backup (the halves' copies were not written back)
            break
        for h in range(first, stop):
            _copy(hw.copies[h], params, state, hw.w[h], hw.state[h], False)
        arrivals += 1  # every update is copied back: the last step's norms, and the check of the final state
        if not meet(sync, n_workers, arrivals):
            status = EPOCH_ABORTED
            break
        if pending:
            norm = hw.stats[p_par, 0, 1] + hw.stats[p_par, 1, 1]
            total += _objective(p_loss, norm, p_weight, penalty.alpha, penalty.loss_scale) * p_nb
        if not all_finite(params, state):  # every worker: all of them stop alike
            status = EPOCH_DIVERGED
            break
        t_done = t
        completed, best, stale, patience_spent = epoch_ended(losses, w, completed, total / n_rows, best, stale, plan)
        if patience_spent:
            break
    if w == 0:
        report_epochs(sync, t_done, status, completed)


@functools.cache
def halves_epoch_for(hidden_code: int, out_code: int, solver: int):
    """The compiled :func:`_halves_epoch` for one kind of network and optimizer."""
    rk = row_kernels(hidden_code, out_code)
    update = updates(solver)
    suffix = _suffix(hidden_code, out_code) + ("_adam" if solver == ADAM else "_sgd")
    return jit(specialize(_halves_epoch, suffix, _activate_rows=rk.activate_rows, _derive_rows=rk.derive_rows,
                          _output_rows=rk.output_rows, _out_start=rk.out_start, _update_runs=update.runs,
                          _step_rate=update.rate), nrt=False)

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
result.  An epoch's chunks and parameter segments are shared out among workers
that run the whole epoch side by side, meeting at a barrier after each phase of a
step (:func:`_train_epoch`: the iterations of one ``prange`` loop on Numba's pool,
or else :func:`fastbp._threads.run_workers`' threads); a full-batch gradient's
chunks run in a ``prange`` loop.  (:mod:`fastbp.halves` trains small
batches of wide networks on two cores the other way: by cutting layers, not rows.)

Compile time follows the shape of this code.  Each jitted callee is compiled on
its own, then linked into every caller and optimised and code-generated again
there; Numba's own inlining (``inline="always"``) of a function as large as the
chunk pass costs more still.  So the call tree is two levels deep: an entry
point (epoch, full-batch gradient, predict) and the flat functions it calls, the
chunk pass (compiled once and called through its native address,
:func:`chunk_pass_address`, so no entry point links it in) and the optimizer
step, with their loops written out and only small
helpers inlined (the loops over a block's rows, :func:`row_kernels`, and the
update of a run of parameters, :func:`updates`); small helpers take arrays, not
whole bundles; none of it allocates, so it is compiled without reference
counting (:data:`fastbp._config.NO_NRT`).  Everything is compiled per kind of
network (:func:`kernels_for`, :func:`epoch_for`): a copy whose globals name that
network's activations, loss and optimizer, so Numba prunes every other one's
branch before typing it.  An epoch is compiled in one of two copies: for batches
of one row chunk (the optimizer step inlined), and for chunked batches.
"""

import functools
from collections import namedtuple

import numpy as np
from numba import config, prange
from numba.core.compiler_lock import global_compiler_lock

from . import _background
from ._config import (
    ADAM,
    ALL_ACTIVATIONS,
    EPOCH_ABORTED,
    EPOCH_BAD_ORDER,
    EPOCH_DIVERGED,
    EPOCH_DONE,
    jit,
    jit_inline,
    jit_inner,
    jit_parallel,
    specialize,
)
from ._intrinsics import block as _block
from ._intrinsics import call_native, gemm, meet, roll_call, wide_vectors
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

# ``out_cut`` and ``runs``: the order of unit halves' arithmetic (fastbp.halves), which a one-chunk step follows
# for a network that may also train in them (``Network.halves_exact``), so that both give bitwise the same
# result: the output layer's product cut at ``out_cut`` hidden units (0: whole), and the runs of parameters
# ``[offset, length, in norm, half]`` whose update sums ``||W||^2`` (loops.update_runs).
Layout = namedtuple("Layout", "sizes coef_off icpt_off n_coef out_cut runs")
# ``partial``: per chunk, the output layer's second partial product, then zeros (an intercept already added).
Workspace = namedtuple("Workspace", "acts deltas act_off grads chunk_loss chunk_weight chunk_finite seg_norm partial")
Rows = namedtuple("Rows", "X data indices indptr Y sw")
Batch = namedtuple("Batch", "x y sw")
SGDHyper = namedtuple("SGDHyper", "lr momentum nesterov")
AdamHyper = namedtuple("AdamHyper", "lr beta_1 beta_2 epsilon")
Penalty = namedtuple("Penalty", "alpha loss_scale")
# The epochs of one call (see _train_epoch): a bit generator's C interface as int64 (draws, its next_uint32 and
# next_uint64, and its state; 0: no shuffle), then the stopping rule's scalars.  Flat: Numba's parallel lowering
# cannot pass a tuple nested in a heterogeneous one.
Plan = namedtuple("Plan", "epochs next32 next64 draws tol patience best stale")


def objective(data_loss, squared_norm, weight, alpha, loss_scale):
    """The training loss: ``(data_loss * loss_scale + alpha / 2 * ||W||^2) / weight``.

    ``data_loss`` is the sample-weighted sum of the output loss over rows
    (:func:`fastbp.kernels.loss_sum`), ``weight`` the sum of the weights.
    Training, ``gradients``, L-BFGS and validation all report this.
    """
    return (data_loss * loss_scale + 0.5 * alpha * squared_norm) / weight


_objective = jit_inner(objective, nrt=False)


# Set in each compiled copy of the sources below (see kernels_for and epoch_for): the inlined loops of
# the network's kind and optimizer (fastbp.loops), and the copies an entry point calls.  Numba reads
# globals as constants and prunes the branches they decide before it types anything, so each copy
# compiles only its own network's code.
_CHUNKED = True
_PASS_BY_ADDRESS = not config.DISABLE_JIT  # the epochs call the chunk pass through its address (see _train_epoch)
_out_start = _chunk_pass = _step_segment = _update_span = _update_runs = _step_rate = None
_activate_rows = _derive_rows = _output_rows = None


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
    wide_vectors()  # the activations' loops in AVX-512 vectors where the products have them
    sizes, coef_off, icpt_off = layout.sizes, layout.coef_off, layout.icpt_off
    last = sizes.size - 2
    n_in, n_out = sizes[0], sizes[last + 1]
    lo, hi = n * c // n_chunks, n * (c + 1) // n_chunks
    m = hi - lo
    acts, deltas, act_off, grad = ws.acts[c], ws.deltas[c], ws.act_off, ws.grads[c]
    bad = 0  # pre-activations that are NaN or infinite
    X0 = _block(batch.x, lo * n_in, m, n_in)
    A = X0
    for i in range(last):
        width = sizes[i + 1]
        Z = _block(acts, act_off[i], m, width)
        gemm(A, _block(params, coef_off[i], sizes[i], width), Z, 0, 0)
        bad += _activate_rows(Z, params[icpt_off[i]:icpt_off[i] + width])
        A = Z
    out = _block(acts, act_off[last], m, n_out)
    b = params[icpt_off[last]:icpt_off[last] + n_out]
    cut = layout.out_cut
    if cut > 0:  # as unit halves add it: (A[:, :cut] @ W[:cut] + b) + A[:, cut:] @ W[cut:], then a zero intercept
        gemm(A[:, :cut], _block(params, coef_off[last], cut, n_out), out, 0, 0)
        for r in range(m):
            for j in range(n_out):
                out[r, j] += b[j]
        second = _block(ws.partial[c], 0, m, n_out)
        gemm(A[:, cut:], _block(params, coef_off[last] + cut * n_out, sizes[last] - cut, n_out), second, 0, 0)
        for r in range(m):
            for j in range(n_out):
                out[r, j] = out[r, j] + second[r, j]
        b = ws.partial[c][ws.partial.shape[1] - n_out:]
    else:
        gemm(A, _block(params, coef_off[last], sizes[last], n_out), out, 0, 0)
    bad += _output_rows(out, b, acts[act_off[last]:act_off[last] + m * n_out])
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
        _derive_rows(A_prev, D_prev, grad[icpt_off[i - 1]:icpt_off[i - 1] + width])


def _step_segment_source(s, n_seg, params, grads, state, layout, scale, hyper, t, alpha, seg_norm):
    """The optimizer step (:func:`_update_span_source`) on segment ``s`` of ``n_seg`` of the coefficients.

    The last segment also takes the intercepts (no L2).  The raw gradient is the
    chunks' ``grads`` summed.  ``seg_norm[s]`` gets the segment's ``||W||^2`` before
    the step.  Each segment stays on one worker, and only it touches its slice of
    the parameters, state and gradients.  A single segment (one chunk) updates the
    runs ``layout.runs`` in turn (:func:`fastbp.loops.update_runs`).
    """
    lr = _step_rate(params, hyper, t)
    if not _CHUNKED or n_seg == 1:
        seg_norm[0] = _update_runs(layout.runs, params, grads[0], state, scale, lr, hyper, alpha)
        return
    n_coef = layout.n_coef
    lo = n_coef * s // n_seg
    hi = params.size if s == n_seg - 1 else n_coef * (s + 1) // n_seg
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
    seg_norm[s] = _update_span(params[lo:hi], g0, g1, has_g1, state, lo, n_coef - lo, scale, lr, hyper, alpha)


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


def _train_epoch(worker, n_workers, sync, losses, rows, order, batch_size, layout, ws, batch, params, state, backup,
                 hyper, penalty, t, plan, pass_at):
    """Worker ``worker``'s share of up to ``plan.epochs`` epochs of minibatch training over rows ``order`` of ``rows``.

    ``n_workers`` threads run this side by side, each with its own ``worker`` in
    ``[0, n_workers)`` and the same ``sync``, an int64 array of six zeros
    (:func:`fastbp._intrinsics.meet`), or one thread runs it alone (``n_workers ==
    1``).  A worker ``w`` started by a thread pool (:func:`_pool_epoch`) is passed
    as ``-1 - w`` and first answers a roll call
    (:func:`fastbp._intrinsics.roll_call`).  Each batch's row chunks and then its
    parameter segments are shared out among the workers, with a barrier after
    each: the chunks' gradients are complete before any segment's update reads
    them, and every update is done before any chunk's next forward reads the
    parameters.  What is computed depends on the chunk count only, never on
    ``n_workers``: one thread or several give bitwise the same result.

    Each epoch (:class:`Plan`): with ``plan.draws`` set, worker 0 first shuffles ``order`` in place as
    ``Generator.shuffle`` would (:func:`fastbp.loops.shuffle`; a barrier before anyone reads it), then copies
    ``params`` and ``state`` into ``backup`` (its rows) for the caller to restore on divergence.  After each
    epoch every worker applies scikit-learn's stopping rule to the epoch's loss (the mean of the batch losses
    by rows), from ``plan.best`` and ``plan.stale`` (the best loss and the epochs without an improvement of
    ``plan.tol``): more than ``plan.patience`` such epochs end the run, as they end scikit-learn's loop.  The
    caller repeats the rule's bookkeeping from ``losses``.

    Worker 0 leaves its results in ``losses[e]`` (epoch ``e``'s loss), ``sync[5]``
    (the epochs completed), ``sync[3]`` (``t`` after the last of them, which counts optimizer
    steps: Adam's bias correction) and ``sync[4]``, the status: ``EPOCH_DONE``; ``EPOCH_DIVERGED``
    at the first batch whose loss is not finite (before its update), or when the
    state is not finite after an epoch's last update (only the next forward would
    see it); ``EPOCH_BAD_ORDER``, before anything is touched, when ``order`` indexes
    outside ``rows``; or ``EPOCH_ABORTED`` when a barrier saw ``sync[1]`` set
    (another worker failed to start, or the roll call found the pool's workers
    not all running at once: only scratch space was touched then).

    Each chunk first gathers its own rows of the minibatch, so that the copy runs
    on the thread, and lands in the cache, that uses it; only those rows of a
    sparse ``rows`` are densified.

    The chunk pass is called through ``pass_at``, its native entry point for these arguments' types
    (:func:`native_address`), not linked in: linked, it was optimised and code-generated
    again inside the epoch, about a third of a first fit's compile time.  (Without the JIT it is called
    as the Python function it then is.)
    """
    wide_vectors()  # this function's loops in AVX-512 vectors where the products have them (the update, the gather)
    w = worker if worker >= 0 else -1 - worker
    n_rows = order.size
    status = EPOCH_DONE
    if not order_is_valid(order, rows.sw.size):
        status = EPOCH_BAD_ORDER
    elif _CHUNKED and worker < 0 and not roll_call(sync, n_workers):
        status = EPOCH_ABORTED
    dtype = params.dtype.type
    n_in = layout.sizes[0]
    backward = n_rows > 0  # True, but not a compile-time literal: one compiled chunk pass serves every caller
    arrivals = 0  # barriers this worker has reached
    best, stale, completed, t_done = plan.best, plan.stale, 0, t
    for _ in range(plan.epochs if status == EPOCH_DONE else 0):
        if plan.draws != 0:
            if w == 0:
                shuffle(order, plan.next32, plan.next64, plan.draws)
            if _CHUNKED:
                arrivals += 1
                if not meet(sync, n_workers, arrivals):
                    status = EPOCH_ABORTED
                    break
        if w == 0:
            back_up(params, state, backup)
        total = 0.0
        for start in range(0, n_rows, batch_size):
            nb = batch_size if batch_size < n_rows - start else n_rows - start  # not min(): a compiled function
            # one chunk: np.int64(1), not a literal 1, so that the chunk pass has the signature predict calls it with
            k = (ws.acts.shape[0] if ws.acts.shape[0] < nb else nb) if _CHUNKED else np.int64(1)
            for chunk in range(k * w // n_workers, k * (w + 1) // n_workers):
                gather(rows, order, start, nb * chunk // k, nb * (chunk + 1) // k, 0, n_in, batch.x, batch.y, batch.sw)
                if _PASS_BY_ADDRESS:
                    call_native(pass_at, chunk, k, nb, backward, batch, layout, ws, params)
                else:
                    _chunk_pass(chunk, k, nb, backward, batch, layout, ws, params)
            if _CHUNKED:  # (one chunk runs on one worker: nothing to meet)
                arrivals += 1
                if not meet(sync, n_workers, arrivals):
                    status = EPOCH_ABORTED
                    break
            data_loss, weight, finite = _chunk_totals(ws.chunk_loss, ws.chunk_weight, ws.chunk_finite, k)
            learns = weight > 0.0  # else every row weighs 0: nothing to learn, and 1 / weight would be infinite
            if learns and not finite:
                status = EPOCH_DIVERGED
                break
            if learns:
                t += 1
                scale = dtype(1.0 / weight)
                for s in range(k * w // n_workers, k * (w + 1) // n_workers):  # one segment per chunk
                    _step_segment(s, k, params, ws.grads, state, layout, scale, hyper, t, penalty.alpha, ws.seg_norm)
            if _CHUNKED:
                arrivals += 1
                if not meet(sync, n_workers, arrivals):
                    status = EPOCH_ABORTED
                    break
            if learns:
                norm = 0.0
                for s in range(k):
                    norm += ws.seg_norm[s]
                total += _objective(data_loss, norm, weight, penalty.alpha, penalty.loss_scale) * nb
        if status == EPOCH_DONE and not all_finite(params, state):  # every worker: all of them stop alike
            status = EPOCH_DIVERGED
        if status != EPOCH_DONE:
            break
        t_done = t
        completed, best, stale, patience_spent = epoch_ended(losses, w, completed, total / n_rows, best, stale, plan)
        if patience_spent:
            break
    if w == 0:
        report_epochs(sync, t_done, status, completed)


@functools.partial(jit_parallel, nrt=False)
def _pool_epoch(address, n_workers, sync, losses, rows, order, batch_size, layout, ws, batch, params, state, backup,
                hyper, penalty, t, plan, pass_at):
    """Every worker of a chunked epoch, as the iterations of a ``prange`` loop on Numba's thread pool.

    ``address`` is the native entry point of the compiled chunked :func:`_train_epoch` for these
    arguments' types (:func:`native_address`), called through it
    (:func:`fastbp._intrinsics.call_native`), not linked into this function: linking would optimise and
    code-generate the whole epoch again here, seconds of a first fit.  One copy serves every kind of
    network; one call unboxes the arguments once, where a thread per worker would each unbox them in
    turn under the GIL.
    """
    for w in prange(n_workers):
        call_native(address, np.int64(-1 - w), n_workers, sync, losses, rows, order, batch_size, layout, ws, batch,
                    params, state, backup, hyper, penalty, t, plan, pass_at)


def _loss_gradient(batch, layout, ws, params, penalty, pass_at):
    """Full-batch loss of the rows of ``batch``, its gradient left in ``ws.grads[0]``; NaN if not finite.

    For ``gradients`` and L-BFGS: the chunks read the rows in place.  ``pass_at``: the chunk pass's
    native entry point (:func:`chunk_pass_address`), as for the epochs.
    """
    n = batch.sw.size
    k = ws.acts.shape[0] if ws.acts.shape[0] < n else n
    backward = n > 0  # True, not as a literal (see _train_epoch)
    for c in prange(k):
        if _PASS_BY_ADDRESS:
            call_native(pass_at, np.int64(c), k, n, backward, batch, layout, ws, params)
        else:
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


def _predict(params, layout, X, out, ws, chunk, pass_at):
    """Network output for every row of ``X`` into ``out``, ``chunk`` rows at a time (bounded memory).

    ``ws`` needs one chunk's activations for ``chunk`` rows; returns whether every value was finite.
    ``pass_at``: the chunk pass's native entry point (:func:`chunk_pass_address`), as for the epochs.
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
        if _PASS_BY_ADDRESS:  # int64, not literals: the signature every caller uses
            call_native(pass_at, np.int64(0), np.int64(1), m, backward, rows, layout, ws, params)
        else:
            _chunk_pass(np.int64(0), np.int64(1), m, backward, rows, layout, ws, params)
        finite = finite and ws.chunk_finite[0]
        result = ws.acts[0, ws.act_off[last]:ws.act_off[last] + m * n_out]
        target = out[start:start + m].reshape(m * n_out)
        for j in range(m * n_out):
            target[j] = result[j]
    return finite


_ADDRESSES = {}  # native entry points by (dispatcher, the arguments' type key): see native_address
_PASS_ADDRESSES = {}  # chunk passes' entry points by (dispatcher, the batch's dtypes and flags): chunk_pass_address


def native_address(dispatcher, args, type_key=None) -> int:
    """The native entry point of the compiled ``dispatcher`` (an epoch, a chunk pass) for ``args``' types.

    Compiled, or loaded from the cache, if need be.  Numba's own typing of the arguments (``typeof``)
    takes about 0.4 ms for an epoch's bundles, so it runs once per process and kind of arguments: the
    key that finds it again is what decides an array's Numba type (dtype, dimensions, layout,
    writeability, alignment), read off each argument; ``type_key``: ``_type_key(args)``, when the caller has it.
    """
    key = (dispatcher, _type_key(args) if type_key is None else type_key)
    address = _ADDRESSES.get(key)
    if address is None:
        signature = tuple(dispatcher.typeof_pyval(a) for a in args)
        if signature not in dispatcher.overloads:
            dispatcher.compile(signature)
        compiled = dispatcher.overloads[signature]
        address = _ADDRESSES[key] = compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name)
    return address


_READY = {}  # (dispatcher, _type_key of the arguments) -> (their Numba signature, _background.generation(), found)


def ready(dispatcher, args, type_key=None) -> bool:
    """Whether ``dispatcher`` has machine code for ``args``' types without compiling it now: compiled in this
    process, or found in Numba's on-disk cache and loaded (as ``Dispatcher.compile`` loads it).  The cache is
    read once per process and kind of arguments, and again after each background compile of this process
    (:mod:`fastbp._background`); another process's is found by the next process.  ``type_key``: as for
    :func:`native_address`."""
    if config.DISABLE_JIT:
        return False  # nothing is compiled: plain Python functions
    key, generation = (dispatcher, _type_key(args) if type_key is None else type_key), _background.generation()
    signature, looked, found = _READY.get(key, (None, None, False))
    if found:
        return True  # machine code once found stays: no lookup of the signature (hashing it takes 20 us)
    if signature is None:
        signature = tuple(dispatcher.typeof_pyval(a) for a in args)
    if looked != generation and signature not in dispatcher.overloads:
        _load_cached(dispatcher, signature)
    found = signature in dispatcher.overloads
    _READY[key] = signature, generation, found
    return found


def _load_cached(dispatcher, signature) -> None:
    """Add ``dispatcher``'s code for ``signature`` from the on-disk cache when it is there; never compile."""
    with global_compiler_lock:
        compiled = dispatcher._cache.load_overload(signature, dispatcher.targetctx)
        if compiled is not None:
            dispatcher.targetctx.insert_user_function(compiled.entry_point, compiled.fndesc, [compiled.library])
            dispatcher.add_overload(compiled)


def _type_key(value):
    """What decides ``value``'s Numba type, nested as its tuples are: an array's dtype, dimensions and flags
    (``flags.num``: contiguity, alignment and writeability, and some that do not matter, such as owning its
    data: a key finer than the type is only looked up again), else the type."""
    if isinstance(value, np.ndarray):
        return value.dtype, value.ndim, value.flags.num
    if isinstance(value, tuple):
        return type(value), *map(_type_key, value)
    return type(value)


def chunk_pass_address(chunk_pass, batch, layout, ws, params) -> int:
    """The native entry point of ``chunk_pass`` as the epochs, predict and the full-batch gradient call it
    (``call_native``) on ``batch`` (a :class:`Batch` of 1-D C-contiguous arrays); 0 without the JIT.

    ``layout``, ``ws`` and ``params`` are the network's own arrays (C-contiguous, writable, aligned, of its
    dtype), so the batch's arrays decide the types: a lookup of their dtypes and flags, a microsecond,
    finds the address again (predict asks at every call).
    """
    if not _PASS_BY_ADDRESS:
        return 0
    key = (chunk_pass, params.dtype.str, *((a.dtype.str, a.flags.writeable, a.flags.aligned) for a in batch))
    address = _PASS_ADDRESSES.get(key)
    if address is None:
        probe = (np.int64(0), np.int64(1), np.int64(1), True, batch, layout, ws, params)
        address = _PASS_ADDRESSES[key] = native_address(chunk_pass, probe)
    return address


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
    rk = row_kernels(hidden_code, out_code)
    chunk_pass = jit_inner(specialize(_chunk_pass_source, suffix, _activate_rows=rk.activate_rows,
                                      _derive_rows=rk.derive_rows, _output_rows=rk.output_rows,
                                      _out_start=rk.out_start), nrt=False)
    return Kernels(chunk_pass, jit(specialize(_loss_gradient, suffix, _chunk_pass=chunk_pass), nrt=False),
                   jit_parallel(specialize(_loss_gradient, suffix + "_parallel", _chunk_pass=chunk_pass), nrt=False),
                   jit(specialize(_predict, suffix, _chunk_pass=chunk_pass), nrt=False))


@functools.cache
def epoch_for(hidden_code: int, out_code: int, solver: int, chunked: bool = True):
    """The compiled epoch (:func:`_train_epoch`) for one kind of network and optimizer.

    Without ``chunked`` (a workspace of one row chunk), a leaner copy that runs every batch as one chunk
    on one worker, with no barriers.  Both inline their optimizer step (one library less to compile and link).
    """
    suffix = _suffix(hidden_code, out_code) + ("_adam" if solver == ADAM else "_sgd") + ("" if chunked else "_one")
    update = updates(solver)
    step = jit_inline(specialize(_step_segment_source, suffix, _CHUNKED=chunked, _update_span=update.span,
                                 _update_runs=update.runs, _step_rate=update.rate))
    source = specialize(_train_epoch, suffix, _CHUNKED=chunked,
                        _chunk_pass=kernels_for(hidden_code, out_code).chunk_pass, _step_segment=step)
    return jit(source, nrt=False)


def _suffix(hidden_code, out_code):
    return f"_{ALL_ACTIVATIONS[hidden_code]}_{ALL_ACTIVATIONS[out_code]}"

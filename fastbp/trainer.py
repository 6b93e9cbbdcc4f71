"""The thin Python trainer: epochs, shuffling, convergence, early stopping, callbacks.

Policy lives here, arithmetic in nopython: each epoch, or a run of epochs, is
one call of :func:`fastbp.step._train_epoch` (compiled per kind of network and
optimizer by ``epoch_for``), which gathers every minibatch, runs forward, the
output delta, backward and the optimizer update with no allocation per step.
The row indices (never the data) are shuffled with the caller's
``numpy.random.Generator``, by Python or, in a run, by the compiled epochs
drawing from it as its ``shuffle`` would; Python does the per-epoch bookkeeping,
with scikit-learn's meanings for ``tol``, ``n_iter_no_change`` and early stopping.
"""

import ctypes
import time
from dataclasses import dataclass

import numba
import numpy as np

from ._background import compile_later
from ._config import ADAM, ALL_ACTIVATIONS, EPOCH_ABORTED, EPOCH_BAD_ORDER, EPOCH_DIVERGED
from ._threads import epoch_threads, pool_failed, run_workers, workers
from .halves import halves_epoch_for
from .step import (
    Batch,
    Penalty,
    Plan,
    Rows,
    _pool_epoch,
    _type_key,
    chunk_pass_address,
    epoch_for,
    native_address,
    ready,
)

_TASKS = {code: task for code, task in zip(map(ALL_ACTIVATIONS.index, ("softmax", "logistic", "identity", "exp")),
                                            ("multiclass", "binary", "regression", "poisson"))}  # fastbp.warmup's
ONE_EPOCH = Plan(1, 0, 0, 0, 0.0, 0.0, float("inf"), 0)  # Trainer.epoch: no shuffle, no stopping rule
_PLAN_TYPES = (int, int, int, int, float, float, float, int)  # n_iter_no_change may be inf: a float


class TrainingDivergedError(FloatingPointError, ValueError):
    """The training loss became NaN or infinite; the weights were restored to their last finite values."""


@dataclass(frozen=True)
class EpochInfo:
    """What a callback or progress display sees after each epoch."""

    epoch: int
    loss: float
    learning_rate: float
    seconds: float
    validation_score: float | None = None
    validation_loss: float | None = None


class Trainer:
    """Runs epochs of a :class:`~fastbp.network.Network` with an optimizer.

    Buffers (minibatch, activations, deltas, gradient, a backup of the
    parameters) are allocated here once, for the given batch size.
    """

    def __init__(self, network, optimizer, batch_size: int, alpha: float, loss_scale: float = 1.0):
        self.network = network
        self.optimizer = optimizer
        self.batch_size = int(batch_size)
        self.penalty = Penalty(network.dtype.type(alpha), float(loss_scale))
        n_in, n_out = network.layer_units[0], network.layer_units[-1]
        rows = self.batch_size
        self.batch = Batch(np.empty(rows * n_in, network.dtype), np.empty(rows * n_out, network.dtype),
                           np.empty(rows, network.dtype))
        self._backup = np.empty((1 + optimizer.state.shape[0], network.n_params), network.dtype)  # params, state
        self._parts, self._halves = network.parts(rows), network.splits_units(rows)  # what each epoch runs in
        # Batches of one chunk that unit halves compute bitwise alike (Network.halves_exact): see _schedule.
        self._halves_optional = network.halves_optional(rows)
        self._halves_wanted = False
        self._rows_of = self._rows = None
        self._address = None  # (key, address) of the last pool epoch (_native_address)

    def epoch(self, X, Y, sample_weight, order) -> float:
        """One pass over the rows ``order``; returns scikit-learn's epoch loss (mean of batch losses by rows).

        Raises :class:`TrainingDivergedError` if a batch loss is not finite, after
        restoring the parameters and optimizer state of the start of the epoch.
        """
        losses, error = self.epochs(X, Y, sample_weight, order, ONE_EPOCH)
        if error is not None:
            raise error
        return losses[0]

    def epochs(self, X, Y, sample_weight, order, plan):
        """Up to ``plan.epochs`` passes over the rows ``order`` in one call (:class:`fastbp.step.Plan`: shuffling
        ``order`` before each, stopping by scikit-learn's rule: see :func:`fastbp.step._train_epoch`).

        Returns ``(losses, error)``: each completed epoch's loss, and None or what ended the run, for the
        caller to raise after its bookkeeping of the completed epochs: a :class:`TrainingDivergedError`
        (the parameters and optimizer state are those of the start of the epoch that diverged), or the
        ``KeyboardInterrupt`` of a Ctrl-C, which Python answers only once the compiled call has returned
        and which must not lose the epochs that call completed.
        """
        net, opt = self.network, self.optimizer
        _check_epoch_inputs(net, X, Y, sample_weight, order)
        plan = Plan._make(kind(value) for kind, value in zip(_PLAN_TYPES, plan))  # one compiled signature
        if self._rows_of is not X:  # convert a sparse matrix's indices once per fit, not per epoch
            self._rows_of, self._rows = X, _rows(X, Y, sample_weight, net.dtype)
        rows = self._rows
        if rows.Y is not Y or rows.sw is not sample_weight:
            rows = self._rows = rows._replace(Y=Y, sw=sample_weight)
        losses, t, status, interrupt = self._run(rows, order, plan)
        # run_workers raises a worker's error first, and _run retries a pool's: a bug
        if status == EPOCH_ABORTED and interrupt is None:
            raise RuntimeError("an epoch's workers stopped without an error")
        if status == EPOCH_BAD_ORDER:
            raise ValueError(f"order must be a non-empty 1-D array of row indices in [0, {sample_weight.size})")
        opt.t = t
        if status == EPOCH_DIVERGED:
            np.copyto(net.params, self._backup[0])
            np.copyto(opt.state, self._backup[1:])
        if interrupt is not None:
            return losses, interrupt
        if status == EPOCH_DIVERGED:
            return losses, TrainingDivergedError(
                "training diverged: the loss became NaN or infinite, so the weights were restored to their "
                f"last finite values; lower learning_rate_init (now {opt.learning_rate:g}) or scale the inputs")
        return losses, None

    def _run(self, rows, order, plan):
        """``(losses, t, status, interrupt)`` of ``plan``'s epochs, on unit halves or on row chunks, on as many
        threads as allowed; ``t`` as of the last completed epoch; ``interrupt``: None, or the Ctrl-C raised
        as the call returned (row chunks leave their results in ``sync``, so those are still known).

        The workers (of row chunks or of unit halves alike) run as one ``prange`` call on Numba's pool where it
        can run them side by side
        (:func:`fastbp._threads.epoch_threads`), else on :func:`fastbp._threads.run_workers`' threads; a
        pool that did not start them all at once (the roll call gave up, having touched only scratch
        space) is not used again, and the epochs run again on those threads.
        """
        net, opt = self.network, self.optimizer
        kind = (net.hidden_code, net.out_code, opt.solver)
        training = (net.params, opt.state, self._backup, opt.hyper(net.dtype), self.penalty, opt.t)
        sync, losses = np.zeros(6, np.int64), np.empty(plan.epochs)
        sync[3] = opt.t  # what the results below say if a Ctrl-C comes before the epochs start: nothing done
        start = (losses, rows, order, self.batch_size, net.layout)
        training = (self.batch, *training, plan)
        epoch, args, threads, pool, type_key = self._schedule(kind, sync, start, training)
        interrupt = None
        try:
            with workers(threads, pool):
                if pool:
                    _pool_epoch(self._native_address(epoch, threads, sync, args, type_key), threads, sync, *args)
                else:
                    run_workers(epoch, threads, args, sync)  # raises a Ctrl-C once every worker is done
        except KeyboardInterrupt as exc:  # the compiled epochs ran to their end, or did not start
            interrupt = exc
        if self._halves_wanted:
            self._halves_wanted = False
            compile_later(net.dtype.name, ALL_ACTIVATIONS[net.hidden_code], _TASKS[net.out_code],
                          "adam" if opt.solver == ADAM else "sgd")
        if pool and sync[4] == EPOCH_ABORTED and interrupt is None:
            pool_failed()
            return self._run(rows, order, plan)
        return list(losses[:sync[5]]), int(sync[3]), int(sync[4]), interrupt

    def _schedule(self, kind, sync, start, training):
        """``(epoch, args, threads, on_pool, type_key)``: the compiled epoch to run now, its arguments after
        ``(worker, n_workers, sync)``, its workers, and ``_type_key`` of all its arguments where this computed it
        (else None): one key for their three lookups here and in :meth:`_native_address` (each ~10 us, a few
        percent of a ``partial_fit`` call's Python).

        Unit halves where the shapes choose them (``Network.splits_units``, on any number of threads).  A
        batch of one chunk of a network that they compute bitwise alike (``Network.halves_exact``) trains in
        them too when two threads are free and their code is ready, compiled in this process or on disk
        (:func:`fastbp.step.ready`: never compiled for it, so a first fit compiles only the one-chunk
        epoch; then :mod:`fastbp._background` compiles them, as ``fastbp warmup`` does); else in one chunk,
        with the same result.
        """
        net = self.network
        if self._halves or self._halves_optional:
            # the same arguments, the halves' buffers in place of the workspace (no chunk pass)
            args = (*start, net.halves(self.batch_size, self.optimizer.state.shape[0]), *training, 0)
            epoch = halves_epoch_for(*kind)
            if self._halves:
                return (epoch, args, *epoch_threads(2), None)
            threads, pool = epoch_threads(2)
            if threads == 2:
                key = _type_key((-1, threads, sync, *args))
                if ready(epoch, (-1, threads, sync, *args), key):
                    return epoch, args, threads, pool and ready(_pool_epoch, (0, threads, sync, *args), key), key
                self._halves_wanted = True  # compiled in the background once this call's epochs are done
        ws = net.workspace(self.batch_size)
        args = (*start, ws, *training, self._chunk_pass_address(ws))
        return (epoch_for(*kind, self._parts > 1), args, *epoch_threads(self._parts), None)

    def _chunk_pass_address(self, ws):
        """The native entry point of this network's chunk pass as the epochs call it (0 without the JIT)."""
        net = self.network
        return chunk_pass_address(net.kernels.chunk_pass, self.batch, net.layout, ws, net.params)

    def _native_address(self, epoch, n_workers, sync, args, type_key=None):
        """The native entry point of ``epoch`` for ``(worker, n_workers, sync, *args)`` (:func:`native_address`).

        Remembered for the arrays of this trainer's last epoch: the same ``rows`` and ``order`` objects
        with the same flags have the same types (everything else is the trainer's own).  ``type_key``: as
        :meth:`_schedule` returns it.
        """
        rows, order = args[1], args[2]
        key = (epoch, rows, order, *(a.flags.writeable for a in (rows.X, rows.Y, rows.sw, order)),
               order.flags.c_contiguous)
        if self._address is None or any(a is not b for a, b in zip(key, self._address[0])):
            self._address = key, native_address(epoch, (-1, n_workers, sync, *args), type_key)
        return self._address[1]


def run_epochs(state, trainer, X, Y, sample_weight, *, settings, max_iter, incremental, validate=None,
               callbacks=(), report=None):
    """The epoch loop of scikit-learn's stochastic solvers, on a :class:`fastbp._fitted.FittedState`.

    ``state`` carries scikit-learn's bookkeeping (``n_iter_``, ``t_``, ``loss_``,
    ``loss_curve_``, ``best_loss_``, ``validation_scores_``,
    ``validation_loss_curve_``, ``best_validation_score_``,
    ``_no_improvement_count``, ``_best_params``) and the generator ``_rng``
    that shuffles; ``settings`` (the estimator) the parameters ``tol``,
    ``n_iter_no_change``, ``early_stopping``, ``shuffle``, ``verbose``.
    ``validate()`` returns ``(score, loss)`` on the held-out split when early
    stopping.  Each callback gets an :class:`EpochInfo` and stops training by
    returning True.  Returns whether training stopped before ``max_iter`` epochs
    (converged, plateaued or stopped by a callback).

    With no callbacks, no output, no early stopping and a constant learning rate, runs of epochs go in one
    call of about :data:`CALL_SECONDS` (:meth:`Trainer.epochs`): the compiled epochs shuffle as the
    generator's ``shuffle`` would and apply the stopping rule below, so the weights, the curves and the
    generator's state are bitwise those of one call per epoch, without tens of microseconds of Python and
    dispatch per epoch (a tenth of a small epoch).  A Ctrl-C waits for the call to return; the epochs
    that call completed are then counted, in the curves and checked against the stopping rule before the
    ``KeyboardInterrupt`` is raised, so an interrupted fit's counts match its weights.
    """
    order = np.arange(X.shape[0], dtype=np.int64)
    verbose = bool(settings.verbose) and report is not None
    tol, early_stopping = settings.tol, settings.early_stopping
    draws = None  # the generator's C interface, when whole runs of epochs go in one call (see _several_epochs)
    if not (callbacks or verbose or early_stopping or incremental) and _several_epochs(trainer):
        draws = _draws(state._rng) if settings.shuffle else (0, 0, 0)
    per_call, done = 1, 0
    while done < max_iter:
        started = time.perf_counter()
        if draws is None:
            if settings.shuffle:
                state._rng.shuffle(order)
            losses, error = trainer.epochs(X, Y, sample_weight, order, ONE_EPOCH)
        else:
            plan = Plan(min(per_call, max_iter - done), *draws, tol, settings.n_iter_no_change,
                        state.best_loss_, state._no_improvement_count)
            with state._rng.bit_generator.lock:  # as numpy's own shuffle holds it
                losses, error = trainer.epochs(X, Y, sample_weight, order, plan)
        seconds = (time.perf_counter() - started) / max(len(losses), 1)
        if draws is not None and losses:  # calls of about CALL_SECONDS: Ctrl-C waits at most that long
            per_call = max(1, int(CALL_SECONDS / max(seconds, 1e-9)))
        stops = False
        for loss in losses:
            done += 1
            stops = _epoch_ends(state, trainer, X.shape[0], loss, seconds, settings, validate, callbacks, verbose,
                                report)
            if stops or incremental:
                break
        if error is not None:
            raise error  # a divergence, or a Ctrl-C: either after the bookkeeping of the epochs before it
        if stops or incremental:
            return stops
    return False


CALL_SECONDS = 0.05  # how long one call of several epochs may run (run_epochs)


def _several_epochs(trainer) -> bool:
    """Whether runs of epochs may go in one call: the compiled epoch applies only the stopping rule of a constant
    learning rate (SGD's ``invscaling`` and ``adaptive`` change it between epochs)."""
    return getattr(trainer.optimizer, "lr_schedule", "constant") == "constant"


def _draws(rng):
    """``rng``'s bit generator as the compiled shuffle draws from it (:class:`fastbp.step.Plan`'s ``next32``,
    ``next64``, ``draws``), or None without
    the JIT or for a bit generator with no C interface (then run_epochs shuffles and calls once per epoch)."""
    if numba.config.DISABLE_JIT:
        return None
    try:
        interface = rng.bit_generator.ctypes
        pointers = [ctypes.cast(f, ctypes.c_void_p).value for f in (interface.next_uint32, interface.next_uint64)]
        state = int(interface.state_address)
    except (AttributeError, TypeError, ValueError):
        return None
    return (*pointers, state) if all(pointers) and state else None


def _epoch_ends(state, trainer, n_rows, loss, seconds, settings, validate, callbacks, verbose, report) -> bool:
    """scikit-learn's bookkeeping after an epoch of loss ``loss``; returns whether training stops here."""
    net, opt = trainer.network, trainer.optimizer
    tol, early_stopping = settings.tol, settings.early_stopping
    state.loss_ = loss
    state.n_iter_ += 1
    state.t_ += n_rows
    state.loss_curve_.append(state.loss_)
    if verbose:
        report("Iteration %d, loss = %.8f" % (state.n_iter_, state.loss_))
    score = val_loss = None
    if early_stopping:
        score, val_loss = validate()
        state.validation_scores_.append(score)
        state.validation_loss_curve_.append(val_loss)
        if verbose:
            report("Validation score: %f" % score)
        if score < state.best_validation_score_ + tol:
            state._no_improvement_count += 1
        else:
            state._no_improvement_count = 0
        if score > state.best_validation_score_:
            state.best_validation_score_ = score
            np.copyto(state._best_params, net.params)
    else:  # (the compiled epochs apply the same rule: fastbp.step._train_epoch)
        if state.loss_ > state.best_loss_ - tol:
            state._no_improvement_count += 1
        else:
            state._no_improvement_count = 0
        state.best_loss_ = min(state.best_loss_, state.loss_)
    opt.iteration_ends(state.t_)
    info = EpochInfo(state.n_iter_, state.loss_, opt.learning_rate, seconds, score, val_loss)
    stop = any([bool(callback(info)) for callback in callbacks])  # every callback sees every epoch
    if state._no_improvement_count > settings.n_iter_no_change:
        what = "Validation score" if early_stopping else "Training loss"
        msg = f"{what} did not improve more than tol={tol:f} for {settings.n_iter_no_change} consecutive epochs."
        if opt.trigger_stopping(msg, verbose, report or print):
            return True
        state._no_improvement_count = 0
    return stop


def _rows(X, Y, sample_weight, dtype) -> Rows:
    """The training set as the epoch kernel reads it: dense ``X``, or a placeholder and the CSR arrays."""
    no_index = np.empty(0, np.int64)
    if hasattr(X, "indptr"):
        return Rows(np.empty((1, 1), dtype), X.data, X.indices.astype(np.int64, copy=False),
                    X.indptr.astype(np.int64, copy=False), Y, sample_weight)
    return Rows(X, np.empty(0, dtype), no_index, no_index, Y, sample_weight)


def _check_epoch_inputs(net, X, Y, sample_weight, order):
    """What the epoch kernel indexes without checks: shapes, dtypes and row indices against the network."""
    n_rows = X.shape[0]
    n_in, n_out = net.layer_units[0], net.layer_units[-1]
    if X.ndim != 2 or X.shape[1] != n_in or X.dtype != net.dtype:
        raise ValueError(f"X is {X.dtype} of shape {X.shape}: expected {net.dtype} with {n_in} columns")
    if Y.shape != (n_rows, n_out) or Y.dtype != net.dtype or not Y.flags.c_contiguous:
        raise ValueError(f"Y is {Y.dtype} of shape {Y.shape}: expected a C-contiguous {net.dtype} array of shape "
                         f"{(n_rows, n_out)}")
    if sample_weight.shape != (n_rows,) or sample_weight.dtype != net.dtype:
        raise ValueError(f"sample_weight is {sample_weight.dtype} of shape {sample_weight.shape}: expected "
                         f"{net.dtype} of shape {(n_rows,)}")
    if not hasattr(X, "indptr") and not X.flags.c_contiguous:
        raise ValueError("X must be C-contiguous")
    if order.ndim != 1 or order.size == 0 or order.dtype != np.int64:  # the bounds are checked in the kernel
        raise ValueError(f"order must be a non-empty 1-D int64 array of row indices in [0, {n_rows})")

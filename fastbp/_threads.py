"""Who runs a batch's parts: worker threads side by side, or the calling thread alone.

Small layers (digits at batch 200 and width 100) leave most of a core idle: their
products are too small for OpenBLAS to split them well over threads.  So a batch
is cut into parts that threads run side by side, each calling BLAS on one
thread: row chunks (:meth:`fastbp.network.Network.chunk_count`) or, for wide
layers, unit halves (:mod:`fastbp.halves`).  An epoch runs on workers, each
running the whole compiled epoch for its share and meeting the others at
barriers (:func:`fastbp._intrinsics.meet`), so a step costs a barrier, not a
launch of a thread pool.  A chunked epoch's workers are the iterations of one
``prange`` loop on Numba's thread pool where that pool runs them side by side
(:func:`epoch_threads`): one call per epoch, whose arguments are unboxed once,
and pool threads that are still spinning from the last epoch.  Otherwise, and
for halves, the workers are the calling thread and persistent helper threads
(:func:`run_workers`): each unboxes the arguments in turn, under the GIL, and
wakes from a queue, about 70 us per epoch on two cores.  A full-batch
gradient's chunks run on Numba's pool too (one ``prange`` loop per call).  The
rules that keep this safe:

* **BLAS single-threaded meanwhile.**  Two threads each calling a threaded BLAS
  would oversubscribe the cores, so the BLAS libraries are set to one thread for
  the epoch and set back after it, under one process-wide lock (also held by an
  estimator's ``n_threads`` limit).  The lock also means one epoch at a time uses
  the helpers, and fastbp never launches two parallel regions at once, which
  Numba's ``workqueue`` layer cannot do.
* **After a fork, Numba's pool on one thread.**  GNU OpenMP (Numba's ``omp``
  layer) aborts a forked child that uses it after the parent did, so such a child
  runs a full-batch gradient's chunks one after another; and the child gets a
  fresh lock, since a thread of the parent may have held it at the fork, and new
  helpers, since threads do not survive a fork.
* **Idle BLAS threads stopped for a parallel fit.**  After a threaded product,
  OpenBLAS's worker threads spin for about 0.1 s waiting for more work, and a
  spinning thread takes a core from the workers: the defaults fit on digits ran
  at half speed right after a scikit-learn fit.  Setting the thread count does
  not stop them, so :func:`fit_scope` puts every BLAS library on one thread for
  the whole fit and then shuts each OpenBLAS thread pool down (OpenBLAS starts it
  again at its next threaded call, as after a fork).  Only when no other
  Python thread runs (fastbp's own helpers aside): one could be inside such a
  call.  fastbp's own later changes of a count (``n_threads``, a fit's end)
  leave a stopped pool stopped (:func:`_leaving_a_stopped_pool_stopped`).
* **Results do not depend on threads.**  Only the shapes decide the parts, so the
  same fit gives bitwise the same weights on any number of threads; threads only
  decide how fast.
* **No JIT, no threads.**  Under ``NUMBA_DISABLE_JIT`` the barriers are no-ops,
  so everything runs on the calling thread.
"""

import ctypes
import os
import queue
import threading
from contextlib import contextmanager

import numba
import numpy as np
from numba.np.ufunc import parallel as _numba_parallel
from threadpoolctl import ThreadpoolController

LOCK = threading.RLock()
_local = threading.local()  # .cap: the n_threads of the estimator fitting in this thread
_process_cap = None  # set by limit_process (fastbp.distributed.configure_worker)
_forked_after_pool = False
_pool_unusable = False  # set by pool_failed
_side_by_side = None  # see _layer_runs_side_by_side
_blas = None
_blas_pools = None
_helpers = []  # the persistent threads that run workers 1, 2, ... of an epoch (run_workers)


def _after_fork_in_child():
    # The child has only the forking thread: a LOCK held by another thread at the fork would never be released.
    global _forked_after_pool, LOCK, _helpers
    LOCK = threading.RLock()
    _helpers = []
    _forked_after_pool = _forked_after_pool or bool(getattr(_numba_parallel, "_is_initialized", True))


os.register_at_fork(after_in_child=_after_fork_in_child)


def limit_process(n_threads) -> None:
    """At most ``n_threads`` threads per fit in this process from now on (None: no limit)."""
    global _process_cap
    _process_cap = n_threads


@contextmanager
def limit(n_threads):
    """At most ``n_threads`` threads for the block in this thread: BLAS and chunk threads (None: no limit).

    The BLAS limit is process-wide, so a block that sets one holds :data:`LOCK`:
    two fits with ``n_threads`` in two threads run one after the other, each at
    its own count, and the count in force before is restored after the last.
    The BLAS libraries are those found at the first call (:func:`_blas_libraries`):
    ``threadpool_limits`` would inspect every loaded library again, milliseconds
    per call, more than a small ``fit`` or ``predict`` takes.
    """
    if n_threads is None:
        yield
        return
    before = getattr(_local, "cap", None)
    with LOCK:
        counts = _set_blas(n_threads)
        _local.cap = n_threads
        try:
            yield
        finally:
            _local.cap = before
            _restore_blas(counts, n_threads)


def chunk_threads(n_chunks: int, pool: bool = False) -> int:
    """How many threads may run ``n_chunks`` row chunks in this thread now.

    ``pool``: on Numba's thread pool (a ``prange`` loop), which a forked child of a
    parent that started it may not use; else on :func:`run_workers`' threads.
    """
    if n_chunks <= 1 or numba.config.DISABLE_JIT or (pool and _forked_after_pool):
        return 1
    caps = [c for c in (getattr(_local, "cap", None), _process_cap) if c is not None]
    return max(1, min([n_chunks, _numba_threads(), *caps]))


def _numba_threads() -> int:
    """``numba.get_num_threads()``: once the pool has started, without the two start-up locks that make it cost
    microseconds (it is asked twice per epoch)."""
    if getattr(_numba_parallel, "_is_initialized", False):
        count = getattr(_numba_parallel, "_get_num_threads", None)  # the layer's own C function
        threads = count() if count is not None else 0
        if threads > 0:
            return threads
    return numba.get_num_threads()


def epoch_threads(n_chunks: int) -> tuple:
    """``(threads, on_pool)``: how many workers run an epoch of ``n_chunks`` row chunks in this thread now, and
    whether as one ``prange`` over them on Numba's pool (else on :func:`run_workers`' threads).

    The workers meet at barriers, so the pool must run them all at once: the
    OpenMP and workqueue layers give each of its threads one iteration of a loop
    of as many iterations as threads; TBB may run two on one thread, so under it,
    in a forked child that may not use the pool, and after a roll call found the
    pool's threads not side by side (:func:`pool_failed`), the workers run on
    :func:`run_workers`' threads instead.  Called once per epoch: one count of
    the threads, and the layer looked up once per process.
    """
    threads = chunk_threads(n_chunks)
    return threads, threads > 1 and not (_pool_unusable or _forked_after_pool) and _layer_runs_side_by_side()


def _layer_runs_side_by_side() -> bool:
    """Whether Numba's threading layer (fixed once its pool has started, as chunk_threads does) is omp or workqueue."""
    global _side_by_side
    if _side_by_side is None:
        try:
            _side_by_side = numba.threading_layer() in ("omp", "workqueue")
        except ValueError:  # no pool started: nothing to run on
            return False
    return _side_by_side


def pool_failed() -> None:
    """A pool's epoch could not start all its workers at once: run them on :func:`run_workers`' threads from now on."""
    global _pool_unusable
    _pool_unusable = True


def _blas_libraries():
    """``(get_num_threads, set_num_threads)`` of each loaded BLAS library, found once: inspecting costs milliseconds.

    For a pthreads OpenBLAS these are its own C functions, resolved once through
    threadpoolctl (which knows the symbol prefixes of each build): they are called
    around every epoch, and threadpoolctl's wrappers look the symbols up again on
    each call and, for OpenBLAS, let only one Python thread change the count
    (fastbp serialises its changes under :data:`LOCK` instead).
    """
    global _blas
    if _blas is None:
        import scipy.linalg.cython_blas  # noqa: F401  (the BLAS behind fastbp._intrinsics.gemm: loaded)

        _blas = []
        for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
            get = put = None
            if lib.internal_api == "openblas" and getattr(lib, "threading_layer", None) == "pthreads":
                try:
                    get, put = lib._get_symbol("openblas_get_num_threads"), lib._get_symbol("openblas_set_num_threads")
                except AttributeError:  # another threadpoolctl: its public methods below
                    pass
            if get is None or put is None:
                get, put = lib.get_num_threads, lib.set_num_threads
            else:
                put = _leaving_a_stopped_pool_stopped(lib, put)
            _blas.append((get, put))
    return _blas


def _leaving_a_stopped_pool_stopped(lib, put):
    """``put`` (a pthreads OpenBLAS's ``openblas_set_num_threads``), but one that does not start a stopped pool.

    ``openblas_set_num_threads`` first starts the pool again if it was shut down (:func:`fit_scope` shuts
    it down), and new pool threads spin for about 0.1 s: each fit that set a count then ran beside them,
    and so did whatever the process ran after a fit restored one (a one-thread fit right after a parallel
    one took twice its time).  While the pool is stopped (``blas_server_avail`` is 0) the count is only
    the variable that function would set, ``blas_cpu_number``, so this sets that, and OpenBLAS starts the
    pool at its next threaded call, as after a fork.  Where the library does not export both variables,
    ``put`` itself.
    """
    try:
        running = ctypes.c_int.in_dll(lib.dynlib, "blas_server_avail")
        count = ctypes.c_int.in_dll(lib.dynlib, "blas_cpu_number")
    except (AttributeError, ValueError):
        return put

    def put_quietly(n):
        if running.value:
            put(n)
        else:
            count.value = n

    return put_quietly


def _blas_pool_shutdowns():
    """The thread-pool shutdown function of each pthreads OpenBLAS in the process (found once)."""
    global _blas_pools
    if _blas_pools is None:
        _blas_libraries()  # loads scipy's BLAS
        _blas_pools = []
        for lib in ThreadpoolController().select(internal_api="openblas").lib_controllers:
            shutdown = getattr(getattr(lib, "dynlib", None), "blas_thread_shutdown_", None)
            if getattr(lib, "threading_layer", None) == "pthreads" and shutdown is not None:
                _blas_pools.append(shutdown)
    return _blas_pools


def _set_blas(n_threads):
    """Every BLAS library (:func:`_blas_libraries`) at ``n_threads``; returns their counts before, for _restore_blas.

    Only counts that differ are changed: setting one, even to its own value, restarts a stopped OpenBLAS pool.
    The caller holds :data:`LOCK`.
    """
    libraries = _blas_libraries()
    counts = [get() for get, _ in libraries]
    for (_, put), n in zip(libraries, counts):
        if n is not None and n != n_threads:
            put(n_threads)
    return counts


def _restore_blas(counts, n_threads):
    """Undo :func:`_set_blas` (``counts`` is what it returned, for the same ``n_threads``)."""
    for (_, put), n in zip(_blas_libraries(), counts):
        if n is not None and n != n_threads:
            put(n)


@contextmanager
def fit_scope(n_chunks: int):
    """A fit whose batches run in ``n_chunks`` row chunks: BLAS on one thread and its idle pools stopped throughout.

    Only when the chunks will run on threads and no other Python thread runs (see
    the module's notes); otherwise each chunked epoch sets BLAS on its own.
    """
    if chunk_threads(n_chunks) <= 1 or threading.active_count() - len(_helpers) > 1:
        yield
        return
    with LOCK:
        before = _set_blas(1)
        for shutdown in _blas_pool_shutdowns():
            shutdown()  # after the thread counts: changing one starts the pool again
        _local.blas_single = True
    try:
        yield
    finally:
        with LOCK:
            _local.blas_single = False
            _restore_blas(before, 1)


def chunked(n_chunks: int, pool: bool = False):
    """``with chunked(n_chunks, pool) as threads``: :class:`workers` for :func:`chunk_threads` threads."""
    return workers(chunk_threads(n_chunks, pool), pool)


class workers:
    """``with workers(threads, pool) as threads``: the block runs row chunks on ``threads`` threads.

    When more than one, every BLAS library is on one thread for the block, under
    :data:`LOCK`, and Numba's pool (``pool``) runs at most that many in this thread.
    Entered once per epoch, so it touches only what it must (a class, not a
    generator: a few microseconds less).
    """

    __slots__ = ("threads", "pool", "_available", "_before")

    def __init__(self, threads: int, pool: bool = False):
        self.threads, self.pool = threads, pool

    def __enter__(self) -> int:
        if self.threads > 1:
            LOCK.acquire()
            try:
                self._before = None if getattr(_local, "blas_single", False) else _set_blas(1)  # else fit_scope did
                self._available = _numba_threads() if self.pool else 0
                if self.threads < self._available:
                    numba.set_num_threads(self.threads)
            except BaseException:
                LOCK.release()
                raise
        return self.threads

    def __exit__(self, *exc_info):
        if self.threads > 1:
            try:
                if self.threads < self._available:
                    numba.set_num_threads(self._available)
                if self._before is not None:
                    _restore_blas(self._before, 1)
            finally:
                LOCK.release()


class _Helper:
    """A daemon thread that runs the jobs it is given, one at a time, each a worker of an epoch."""

    def __init__(self):
        self.jobs, self.done = queue.SimpleQueue(), queue.SimpleQueue()
        threading.Thread(target=self._serve, name="fastbp-worker", daemon=True).start()

    def _serve(self):
        while True:
            kernel, sync, args = self.jobs.get()
            try:
                kernel(*args)
                self.done.put(None)
            except BaseException as exc:  # noqa: BLE001  (re-raised in the thread that gave the job)
                sync[1] = 1  # the other workers' barriers give up instead of waiting for this one
                self.done.put(exc)


def run_workers(kernel, n_workers: int, args: tuple, sync=None):
    """``kernel(worker, n_workers, sync, *args)`` on ``n_workers`` threads at once; returns worker 0's result.

    Worker 0 runs in this thread, the others on persistent helper threads, so an
    epoch costs two thread hand-offs, not a thread start per worker.  ``sync`` is an
    int64 array of zeros (by default a fresh one of two): ``kernel``'s barriers count
    in ``sync[0]``, and ``sync[1]`` set tells them to give up (a worker that raised
    before reaching its first barrier would otherwise leave the others waiting).  An exception of any
    worker, or one that interrupts this thread (Ctrl-C), is raised here only after
    every helper has returned, so no helper is left waiting at a barrier or
    holding a result for the next call.  With more than one worker, the caller holds
    :data:`LOCK` (:func:`chunked`): one epoch at a time uses the helpers.
    """
    sync = np.zeros(2, np.int64) if sync is None else sync
    if n_workers <= 1 or numba.config.DISABLE_JIT:  # without the JIT, barriers do not wait (chunk_threads)
        return kernel(0, 1, sync, *args)
    while len(_helpers) < n_workers - 1:
        _helpers.append(_Helper())
    helpers, given = _helpers[:n_workers - 1], []
    try:
        for worker, helper in enumerate(helpers, 1):
            helper.jobs.put((kernel, sync, (worker, n_workers, sync, *args)))
            given.append(helper)
        result = kernel(0, n_workers, sync, *args)
    except BaseException:
        sync[1] = 1
        raise
    finally:
        outcomes = [_collect(helper) for helper in given]
    for error, interrupted in outcomes:
        if error is not None or interrupted is not None:
            raise interrupted if interrupted is not None else error
    return result


def _collect(helper):
    """``(error, interrupt)``: the outcome of ``helper``'s job (None or its exception), waited for to the end,
    and what interrupted the wait (a Ctrl-C), if anything, for the caller to raise once every helper is done."""
    interrupted = None
    while True:
        try:
            return helper.done.get(), interrupted
        except BaseException as exc:  # noqa: BLE001
            interrupted = exc

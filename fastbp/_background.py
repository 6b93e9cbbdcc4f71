"""Unit halves' epoch compiled in another process, so that later fits train on two cores and no fit waits for it.

A network that unit halves compute bitwise as one chunk does
(``Network.halves_exact``) trains in them only once their code is ready
(:func:`fastbp.step.ready`), because compiling them takes about as long again
as a first fit (:mod:`fastbp.halves`).  So the first fit that could have used
them starts :func:`compile_later`: one low-priority process that compiles them
into Numba's on-disk cache through ``fastbp.warmup`` and exits.  Fits in this
process look for that code again once it has finished (:func:`generation`), and
later processes find it in the cache.  Nothing waits for it, and nothing it does
changes a result: one chunk and two halves compute alike.

At most one such process per kind of network runs on a machine at a time (a lock
file beside the cache; a lock older than ``LOCK_SECONDS`` is taken to be left by
a process that died).  ``FASTBP_BACKGROUND_COMPILE=0`` turns it off; without a
writable cache folder it would compile for nothing, so it does not start.
"""

import os
import subprocess
import sys
import time

from . import _cache

SWITCH = "FASTBP_BACKGROUND_COMPILE"
LOCK_SECONDS = 600
_PACKAGE_PARENT = os.path.dirname(_cache.PACKAGE_DIR)
_started = {}  # (dtype, activation, task, solver) -> the running process, or None once done (or not started)
_finished = 0


def enabled() -> bool:
    """Whether :func:`compile_later` may start a process (``FASTBP_BACKGROUND_COMPILE`` is not ``0``)."""
    return os.environ.get(SWITCH, "1").strip() != "0"


def compile_later(dtype: str, activation: str, task: str, solver: str) -> bool:
    """Start compiling the halves' epoch of one kind of network in another process, once per process and kind;
    whether one was started.  The names are :func:`fastbp.warmup.warmup`'s."""
    key = (dtype, activation, task, solver)
    if key in _started or not enabled():
        return False
    _started[key] = None
    folder = _cache.active_dir()
    lock = os.path.join(folder, f"fastbp-compiling-{'-'.join(key)}.lock")
    try:
        os.makedirs(folder, exist_ok=True)
        if time.time() - os.path.getmtime(lock) > LOCK_SECONDS:
            os.unlink(lock)
    except OSError:
        pass  # no lock (the usual case), or one that another process has just removed
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except OSError:  # another process compiles it now, or the folder is read-only: Numba could not save it
        return False
    path = os.pathsep.join(p for p in (_PACKAGE_PARENT, os.environ.get("PYTHONPATH")) if p)
    try:
        code = f"from fastbp._background import _main; _main(*{[lock, *key]!r})"
        _started[key] = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         env={**os.environ, "PYTHONPATH": path, SWITCH: "0"},
                                         start_new_session=True)  # not interrupted by the parent's Ctrl-C
    except OSError:
        _remove(lock)
        return False
    return True


def generation() -> int:
    """How many of this process's background compiles have finished: :func:`fastbp.step.ready` looks for code
    on disk again when it changes."""
    global _finished
    for key, process in _started.items():
        if process is not None and process.poll() is not None:
            _started[key] = None
            _finished += 1
    return _finished


def wait(timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for this process's background compiles; whether none is still running."""
    deadline = time.monotonic() + timeout
    for process in list(_started.values()):
        if process is not None:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return False
    generation()
    return True


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _main(lock, dtype, activation, task, solver):
    try:
        if hasattr(os, "nice"):
            os.nice(10)  # below the process that asked for it, which is training
        from .warmup import warmup

        warmup(dtypes=dtype, solvers=solver, tasks=task, chunked=False, activations=activation, halves=True)
    finally:
        _remove(lock)

"""Numba options and dtype policy, in one place.

Every kernel module imports ``jit`` from here so that the compilation flags are
decided once.  ``fastmath`` is given as an explicit set that leaves out ``nnan``
and ``ninf``: with those two LLVM may assume values are finite and silently
delete the ``isfinite`` checks that divergence detection relies on.
"""

import types

import numpy as np
from numba import njit

from . import _cache

# Before any fastbp function compiles or loads from Numba's cache: drop cached code that an edit of
# kernels.py, step.py or this file made stale (Numba keys each function on its own file only).
_cache.refresh()

FASTMATH_FLAGS = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

# nogil: two Python threads may train at once, and an epoch's workers run side by side
# (fastbp._threads.run_workers).  cache: a second process loads the compiled kernels from
# disk instead of recompiling them.  Only a full-batch gradient's loop over row chunks is
# a ``prange`` loop (:func:`jit_parallel`); fastbp._threads decides how many threads run
# a batch's parts and keeps BLAS single-threaded meanwhile.
JIT_OPTIONS = {"nogil": True, "cache": True, "fastmath": set(FASTMATH_FLAGS), "error_model": "numpy"}

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Activations as the integer codes the kernels branch on (hyper-parameters
# enter kernels as arguments, never as compile-time globals).  The first four
# may be used in hidden layers; softmax and exp only as output activations,
# where their derivative is folded into ``delta = output - target``.
ALL_ACTIVATIONS = ("identity", "relu", "logistic", "tanh", "softmax", "exp")
ACTIVATIONS = ALL_ACTIVATIONS[:4]
OUT_ACTIVATIONS = ("identity", "logistic", "softmax", "exp")
IDENTITY, RELU, LOGISTIC, TANH, SOFTMAX, EXP = range(6)

# Rows of a training batch's smallest row chunk (fastbp.network.Network.chunk_count): a batch of
# 2 * CHUNK_ROWS rows or more runs in chunks on several threads, each calling BLAS on one thread.
# Measured on digits (64-128-10): unchunked at batch 128, OpenBLAS threads its products and each
# call pays for waking its threads, 3x slower than two chunks; an MNIST-sized epoch at batch 128 is
# 7% faster in two chunks than in one; at batch 64 one chunk is as fast as two.
CHUNK_ROWS = 64

SGD, ADAM = 0, 1  # the solver codes (the global _SOLVER of each compiled copy in fastbp.step)
EPOCH_DONE, EPOCH_DIVERGED, EPOCH_BAD_ORDER, EPOCH_ABORTED = 0, 1, 2, 3  # the status an epoch kernel returns


def jit(func, nrt=True):
    """Compile ``func`` with the project's Numba options, callable from Python (no C entry point: none is used).

    ``nrt=False`` compiles it without Numba's reference counting (see :data:`NO_NRT`).
    """
    return njit(no_cfunc_wrapper=True, **_options(nrt))(func)


def jit_inner(func, nrt=True):
    """Compile ``func``, called only from nopython code: no Python or C entry point to build (~0.1 s each)."""
    return njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, **_options(nrt))(func)


def jit_inline(func):
    """A small helper, inlined into each nopython caller (it has no call layer or compilation of its own)."""
    return njit(inline="always", **JIT_OPTIONS)(func)


def jit_parallel(func, nrt=True):
    """Compile ``func`` with the project's options plus ``parallel``, for its ``prange`` loops."""
    return njit(parallel=True, no_cfunc_wrapper=True, **_options(nrt))(func)


# Code that never allocates an array (every array it touches is an argument or a view of one, and
# it keeps none past the call) needs none of the NRT's reference counting: compiled without it
# (Numba's "_nrt" option), it spares Numba the incref/decref code of every array it names, and LLVM
# the passes that prune it (about 7% of a first fit's compile time).  Allocating in such code fails
# at compile time ("NRT required but not enabled"), never at run time.
NO_NRT = {"_nrt": False}


def _options(nrt):
    return JIT_OPTIONS if nrt else {**JIT_OPTIONS, **NO_NRT}


def specialize(func, suffix: str, **names):
    """A copy of the plain function ``func`` named ``func.__name__ + suffix``, its globals ``names`` replaced.

    Numba reads a function's globals once, when it compiles it, and prunes the
    branches they decide: a copy per network shape compiles only the kernels that
    shape uses.  Each copy has a name of its own because Numba keys its on-disk
    cache by name, not by globals or options: two copies must not share entries.
    """
    copy = types.FunctionType(func.__code__, {**func.__globals__, **names}, func.__name__ + suffix,
                              func.__defaults__, func.__closure__)
    copy.__qualname__ = func.__qualname__ + suffix
    copy.__doc__ = func.__doc__
    return copy


def activation_code(name: str, allowed: tuple = ACTIVATIONS, what: str = "activation") -> int:
    """The kernel code of activation ``name``; ValueError unless it is in ``allowed``."""
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, got {name!r}")
    return ALL_ACTIVATIONS.index(name)

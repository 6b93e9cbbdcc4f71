"""Operations of the nopython core written straight as LLVM IR: the matrix product, the block view, the barrier,
calls through a pointer (a compiled epoch, a bit generator's draw).

:func:`gemm` is one direct call of BLAS ``sgemm`` / ``dgemm``, or of :mod:`fastbp._small_gemm`'s kernel for
the small products where BLAS's packing of its operands would cost as much as the product.

``np.dot(A, B, out)`` in nopython compiles an implementation of its own per
combination of layouts (about 0.4 s of a first fit) and checks shapes and
contiguity at every call.  The whole-network code only ever multiplies
C-contiguous blocks it has sized itself, so :func:`gemm` is a bare call into the
BLAS that scipy ships (the one Numba's ``np.dot`` uses too), emitted straight as
LLVM IR.  The symbol is registered with LLVM by name, so code cached on disk
finds it again in a new process.

A row-major ``C = op(A) @ op(B)`` is the column-major ``C^T = op(B)^T @ op(A)^T``:
each C-order array read column-major is its own transpose, so the call swaps the
operands and passes each one's row length as its leading dimension.
"""

import ctypes
import sys

import numpy as np
from llvmlite import binding, ir
from numba import config, types
from numba.core import cgutils
from numba.core.extending import get_cython_function_address, intrinsic
from numba.core.imputils import impl_ret_borrowed
from numba.np.arrayobj import populate_array

from . import _small_gemm

_SYMBOLS = {types.float32: "fastbp_sgemm", types.float64: "fastbp_dgemm"}
for _dtype, _symbol in _SYMBOLS.items():
    binding.add_symbol(_symbol, get_cython_function_address("scipy.linalg.cython_blas", _symbol[-5:]))


def _python_gemm(A, B, C, trans_a, trans_b):
    np.dot(A.T if trans_a else A, B.T if trans_b else B, C)


@intrinsic
def _gemm(typingctx, A, B, C, trans_a, trans_b):
    """``C = op(A) @ op(B)``, ``op(X)`` being ``X.T`` where ``trans_x`` is true.

    For 2-D C-contiguous arrays of one float dtype (``C`` writable) whose shapes
    agree, which the caller guarantees: nothing is checked here.
    """
    arrays = (A, B, C)
    if not (all(isinstance(x, types.Array) and x.ndim == 2 and x.dtype == C.dtype for x in arrays)
            and A.layout in "CA" and B.layout == C.layout == "C" and C.dtype in _SYMBOLS and C.mutable):
        return None  # A and B may be read-only
    sig = types.void(A, B, C, trans_a, trans_b)

    def codegen(context, builder, signature, args):
        a, b, c = (context.make_array(ty)(context, builder, value) for ty, value in zip(arrays, args))
        int32, int64 = ir.IntType(32), ir.IntType(64)
        scalar = context.get_value_type(A.dtype)
        char = ir.IntType(8)

        def dims(array):
            rows, cols = cgutils.unpack_tuple(builder, array.shape, 2)
            return builder.trunc(rows, int32), builder.trunc(cols, int32)

        def pointer_to(value):
            slot = cgutils.alloca_once(builder, value.type)
            builder.store(value, slot)
            return slot

        def leading(cols):  # BLAS requires a leading dimension of at least 1, even for empty blocks
            return builder.select(builder.icmp_signed(">", cols, int32(1)), cols, int32(1))

        def flag(transposed):
            return builder.select(transposed, char(ord("T")), char(ord("N")))

        (a_rows, a_cols), (_, b_cols), (m, n) = dims(a), dims(b), dims(c)
        a_lead = a_cols  # A's row stride in elements: longer for a view of some of a block's columns
        if A.layout == "A":
            row_bytes = cgutils.unpack_tuple(builder, a.strides, 2)[0]
            itemsize = context.get_constant(types.intp, context.get_abi_sizeof(scalar))
            a_lead = builder.trunc(builder.sdiv(row_bytes, itemsize), int32)
        t_a = builder.icmp_unsigned("!=", args[3], context.get_constant(trans_a, 0))
        t_b = builder.icmp_unsigned("!=", args[4], context.get_constant(trans_b, 0))
        k = builder.select(t_a, a_rows, a_cols)
        fnty = ir.FunctionType(ir.VoidType(), [char.as_pointer()] * 2 + [int32.as_pointer()] * 3 + [
            scalar.as_pointer(), scalar.as_pointer(), int32.as_pointer(), scalar.as_pointer(), int32.as_pointer(),
            scalar.as_pointer(), scalar.as_pointer(), int32.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _SYMBOLS[A.dtype])
        wide = [builder.sext(x, int64) for x in (m, n, k, a_lead, b_cols)]
        small = _small_gemm.use_small(builder, *wide[:3], t_a, t_b, A.dtype == types.float32)
        with builder.if_else(small) as (by_kernel, by_blas):
            with by_kernel:
                m64, n64, k64, a_cols64, b_cols64 = wide
                one = int64(1)  # op(A)[i, kk] is A[i * a_row + kk * a_col]
                a_row, a_col = builder.select(t_a, one, a_cols64), builder.select(t_a, a_cols64, one)
                builder.call(_small_gemm.define(builder.module, scalar),
                             [a.data, a_row, a_col, b.data, b_cols64, t_b, c.data, n64, m64, n64, k64])
            with by_blas:
                builder.call(fn, [pointer_to(flag(t_b)), pointer_to(flag(t_a)), pointer_to(n), pointer_to(m),
                                  pointer_to(k), pointer_to(scalar(1)), b.data, pointer_to(leading(b_cols)), a.data,
                                  pointer_to(leading(a_lead)), pointer_to(scalar(0)), c.data, pointer_to(leading(n))])
        return context.get_dummy_value()

    return sig, codegen


gemm = _python_gemm if config.DISABLE_JIT else _gemm


def _python_block(buf, offset, rows, cols):
    return buf[offset:offset + rows * cols].reshape((rows, cols))


@intrinsic
def _block(typingctx, buf, offset, rows, cols):
    """The (rows, cols) C-contiguous view of the 1-D C-contiguous ``buf`` from element ``offset`` on.

    What ``buf[offset:offset + rows * cols].reshape((rows, cols))`` gives, without
    the reshape's run-time shape check and its error path (a C helper call at each
    of the many views a step takes, and compile time at each call site): the
    caller's offsets come from the network's own layout, within ``buf``.
    """
    if not (isinstance(buf, types.Array) and buf.ndim == 1 and buf.layout == "C"
            and all(isinstance(n, types.Integer) for n in (offset, rows, cols))):
        return None
    view = buf.copy(ndim=2)

    def codegen(context, builder, signature, args):
        source = context.make_array(buf)(context, builder, args[0])
        offset_, rows_, cols_ = (context.cast(builder, value, ty, types.intp)
                                 for value, ty in zip(args[1:], signature.args[1:]))
        result = context.make_array(view)(context, builder)
        itemsize = source.itemsize
        populate_array(result, data=builder.gep(source.data, [offset_]), shape=[rows_, cols_],
                       strides=[builder.mul(cols_, itemsize), itemsize], itemsize=itemsize,
                       meminfo=source.meminfo, parent=source.parent)
        return impl_ret_borrowed(context, builder, view, result._getvalue())  # a view: it holds a reference

    return view(buf, offset, rows, cols), codegen


block = _python_block if config.DISABLE_JIT else _block


# What a waiting worker calls when its partner is late (not merely busy for a few microseconds): most
# likely the partner lost its core to another process, which this thread should give it back.
_YIELD = "fastbp_yield"
binding.add_symbol(_YIELD, ctypes.cast(ctypes.windll.kernel32.SwitchToThread if sys.platform == "win32"
                                       else ctypes.CDLL(None).sched_yield, ctypes.c_void_p).value)
_SPINS_BEFORE_YIELD = 4096
ROLL_CALL_PATIENCE = 1 << 14  # yields (each after _SPINS_BEFORE_YIELD spins) before a roll call gives up: ~0.1-0.5 s


def _python_meet(sync, n_workers, arrivals):
    return True  # without the JIT, workers do not run side by side (fastbp._threads.run_workers)


def _python_roll_call(sync, n_workers):
    return True


def _barrier_codegen(builder, sync_data, counter, target, patience):
    """Arrive at ``sync[counter]`` and wait until it reaches ``target`` or ``sync[1]`` is set; the i1 "passed".

    With ``patience`` (a Python int), give up after that many yields: set ``sync[1]``, so that every
    other worker gives up too, at this barrier or its next one, and return false.
    """
    int64 = ir.IntType(64)
    arrived, abort = builder.gep(sync_data, [int64(counter)]), builder.gep(sync_data, [int64(1)])
    builder.atomic_rmw("add", arrived, int64(1), "seq_cst")
    yield_fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), _YIELD)
    spins = cgutils.alloca_once_value(builder, int64(0))
    yields = cgutils.alloca_once_value(builder, int64(0))
    wait, spin, done = (builder.append_basic_block(name) for name in ("meet.wait", "meet.spin", "meet.done"))
    builder.branch(wait)
    builder.position_at_end(wait)
    passed = builder.icmp_signed(">=", builder.load_atomic(arrived, "acquire", 8), target)
    aborted = builder.icmp_signed("!=", builder.load_atomic(abort, "acquire", 8), int64(0))
    builder.cbranch(builder.or_(passed, aborted), done, spin)
    builder.position_at_end(spin)
    n = builder.add(builder.load(spins), int64(1))
    builder.store(n, spins)
    with builder.if_then(builder.icmp_signed(">=", n, int64(_SPINS_BEFORE_YIELD))):
        builder.call(yield_fn, [])
        builder.store(int64(0), spins)
        if patience is not None:
            waited = builder.add(builder.load(yields), int64(1))
            builder.store(waited, yields)
            with builder.if_then(builder.icmp_signed(">", waited, int64(patience))):
                builder.store_atomic(int64(1), abort, "seq_cst", 8)
    builder.branch(wait)
    builder.position_at_end(done)
    return builder.not_(aborted)


def _barrier_arguments_ok(sync, counts):
    return (isinstance(sync, types.Array) and sync.ndim == 1 and sync.layout == "C" and sync.dtype == types.int64
            and sync.mutable and all(isinstance(c, types.Integer) for c in counts))


@intrinsic
def _meet(typingctx, sync, n_workers, arrivals):
    """A barrier of ``n_workers`` threads, this worker's ``arrivals``-th; False if ``sync[1]`` says give up.

    ``sync`` is an int64 array, zero before the first barrier: ``sync[0]`` counts
    arrivals, atomically, so barrier ``a`` is passed when it reaches ``n_workers *
    a``.  The arrival is sequentially consistent and the wait reads with acquire
    ordering, so everything a worker wrote before its arrival is seen by every
    worker after the barrier.  A waiter spins on an atomic load (which the
    compiler may not hoist out of the loop) and yields its core every few
    thousand spins.
    """
    if not _barrier_arguments_ok(sync, (n_workers, arrivals)):
        return None
    sig = types.boolean(sync, n_workers, arrivals)

    def codegen(context, builder, signature, args):
        workers, count = (context.cast(builder, v, t, types.int64) for v, t in zip(args[1:], signature.args[1:]))
        data = context.make_array(sync)(context, builder, args[0]).data
        return _barrier_codegen(builder, data, 0, builder.mul(workers, count), None)

    return sig, codegen


@intrinsic
def _roll_call(typingctx, sync, n_workers):
    """Whether all ``n_workers`` workers run side by side: a first barrier, counted in ``sync[2]``, that gives up.

    For workers started as the iterations of a ``prange`` loop: a thread pool that
    ran them one after another (fewer threads than asked) would leave the first
    one waiting at its first barrier for ever.  So this barrier waits for
    :data:`ROLL_CALL_PATIENCE` yields at most (a fraction of a second), then sets
    ``sync[1]``, as a failed worker does: every worker gives up, here or at its
    next :func:`meet`.  Its own count keeps :func:`meet`'s in ``sync[0]`` from zero.
    """
    if not _barrier_arguments_ok(sync, (n_workers,)):
        return None
    sig = types.boolean(sync, n_workers)

    def codegen(context, builder, signature, args):
        workers = context.cast(builder, args[1], signature.args[1], types.int64)
        data = context.make_array(sync)(context, builder, args[0]).data
        return _barrier_codegen(builder, data, 2, workers, ROLL_CALL_PATIENCE)

    return sig, codegen

@intrinsic
def _call_native(typingctx, address, *args):
    """Call the compiled nopython function at ``address`` (an int64) with ``args``; it returns nothing.

    ``address`` must be the native entry point of a function compiled for exactly these argument types
    and no result (``cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)``), that raises no
    exception: the call uses Numba's own calling convention through the pointer, as Numba calls a
    first-class function, and ignores the status.  The callee's code is not linked into the caller.
    """
    if not isinstance(address, types.Integer):
        return None
    sig = types.none(address, types.StarArgTuple(args))

    def codegen(context, builder, signature, llargs):
        fnty = context.call_conv.get_function_type(types.none, args)
        callee = builder.inttoptr(llargs[0], fnty.as_pointer())
        values = cgutils.unpack_tuple(builder, llargs[1], len(args))
        context.call_conv.call_function(builder, callee, types.none, args, values)
        return context.get_dummy_value()

    return sig, codegen


def _bit_generator_draw(width):
    """The codegen of a call of a numpy bit generator's ``next_uint<width>`` (a C function of its state pointer),
    its result as uint64."""
    def codegen(context, builder, signature, llargs):
        byte_pointer = ir.IntType(8).as_pointer()
        draw = builder.inttoptr(llargs[0], ir.FunctionType(ir.IntType(width), [byte_pointer]).as_pointer())
        value = builder.call(draw, [builder.inttoptr(llargs[1], byte_pointer)])
        return builder.zext(value, ir.IntType(64)) if width < 64 else value

    return codegen


@intrinsic
def next_uint32(typingctx, address, state):
    """``next_uint32(state)`` of a numpy bit generator, as uint64: ``address`` and ``state`` are the function's
    address and ``state_address`` from its ``ctypes`` interface, as int64."""
    if isinstance(address, types.Integer) and isinstance(state, types.Integer):
        return types.uint64(address, state), _bit_generator_draw(32)
    return None


@intrinsic
def next_uint64(typingctx, address, state):
    """As :func:`next_uint32`, for the bit generator's ``next_uint64``."""
    if isinstance(address, types.Integer) and isinstance(state, types.Integer):
        return types.uint64(address, state), _bit_generator_draw(64)
    return None


def _python_call_native(address, *args):
    raise RuntimeError("call_native needs the JIT")  # never called: without the JIT no epoch runs on the pool


meet = _python_meet if config.DISABLE_JIT else _meet
roll_call = _python_roll_call if config.DISABLE_JIT else _roll_call
call_native = _python_call_native if config.DISABLE_JIT else _call_native


def _python_wide_vectors():
    pass


@intrinsic
def _wide_vectors(typingctx):
    """Tells LLVM to vectorize the calling function's loops in AVX-512 vectors where the kernel has them.

    LLVM tunes for 256-bit vectors on Intel CPUs that have 512-bit ones (``prefer-vector-width``):
    the calling function's own loops (the optimizer's update, the gather, the activations) then ran
    in half-width vectors while its products ran in full ones (fastbp._small_gemm).  Emits nothing.
    """
    def codegen(context, builder, signature, args):
        _small_gemm.allow_wide_vectors(builder.function, _small_gemm.vector_bits(), prefer=True)
        return context.get_dummy_value()

    return types.void(), codegen


wide_vectors = _python_wide_vectors if config.DISABLE_JIT else _wide_vectors

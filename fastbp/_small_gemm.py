"""A register-blocked matrix product for the small blocks of a training step, emitted as LLVM IR.

For products like a digits step's (a 32-row batch through 64-128-10), OpenBLAS spends about as long
copying its operands into packed panels as multiplying them: measured on a 2-core AMD EPYC (Zen 3,
OpenBLAS's Haswell kernels), ``sgemm_itcopy`` / ``otcopy`` took 40% of OpenBLAS's time in a digits
epoch.  This kernel reads both operands where they lie.  ``C = op(A) @ op(B)`` (``op(X)`` being ``X``
or ``X.T``, all three row-major; a transposed ``B`` is first copied into its plain layout) is computed
in blocks of :data:`ROWS` rows by two vectors of columns: the block's ``2 * ROWS`` accumulators and
the two ``B`` vectors stay in registers across the whole ``k`` loop, each step one broadcast of an
``op(A)`` element per row and one fused multiply-add per accumulator.  Columns left over after the
last whole vector (the 10 outputs of a classifier are one vector and 2 columns) are copied once into
a zero-padded buffer on the stack, so the loop reads whole vectors everywhere and only the stores of
those columns are masked.

:func:`use_small` says when it beats OpenBLAS; ``fastbp._intrinsics.gemm`` asks it at every call.
"""

from llvmlite import ir
from llvmlite.ir import values
from numba.core import cgutils

ROWS = 4  # rows per block: 2 * ROWS accumulators hide the multiply-add latency and leave registers spare
# (the rows left after the last block are done as blocks of 2 and 1, which covers ROWS = 4)
I64 = ir.IntType(64)
I32 = ir.IntType(32)
# Products with at most this many multiply-adds may take this kernel (see use_small).
MAX_PRODUCT = 1 << 20
MAX_ROWS_NOT_TRANSPOSED = 64
NARROW = 16
# Zero-padded columns on the stack: k rows of one vector, so k is bounded to keep the stack small.
MAX_DEPTH = 1024
# An op(B) = B.T is copied transposed onto the stack: at most this many elements (a classifier's D @ W.T).
MAX_TRANSPOSED = 8192


def use_small(builder, m, n, k, trans_a, trans_b, is_float32):
    """An i1: whether ``C (m, n) = op(A) (m, k) @ B (k, n)`` should take this kernel rather than BLAS.

    Measured against OpenBLAS 0.3.31 on one core of a Zen 3 EPYC (per call, both in a loop in nopython
    code): in float32 this kernel took 0.6-0.86x BLAS's time from 82k to 3.2M multiply-adds whenever
    ``op(A)`` had at most 64 rows or was transposed (a weight gradient), and 1.0-1.4x at 100-200
    rows not transposed; in float64 it won only with few columns (0.6-0.86x at 10), and lost up to
    1.7x with 128.  ``D @ W.T`` with 10 outputs (32 x 10 -> 128, float32) took 0.5-0.6x BLAS's time
    with its transposed copy of ``W``.  Only products up to :data:`MAX_PRODUCT` take it: larger ones
    leave BLAS's packing a small part of their time.
    """
    size = builder.mul(builder.mul(m, n), k)
    small = builder.and_(builder.icmp_signed("<=", size, I64(MAX_PRODUCT)),
                         builder.icmp_signed("<=", k, I64(MAX_DEPTH)))
    narrow = builder.icmp_signed("<=", n, I64(NARROW))
    few_rows = builder.or_(trans_a, builder.icmp_signed("<=", m, I64(MAX_ROWS_NOT_TRANSPOSED)))
    shape_wins = builder.or_(narrow, builder.and_(ir.Constant(ir.IntType(1), int(is_float32)), few_rows))
    copy_fits = builder.or_(builder.not_(trans_b), builder.icmp_signed("<=", builder.mul(k, n), I64(MAX_TRANSPOSED)))
    return builder.and_(builder.and_(small, shape_wins), copy_fits)


def _no_unroll(module):
    """Loop metadata that stops LLVM unrolling a loop (unrolled, the k loop spills its accumulators)."""
    disable = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
    loop_id = values.MDValue(module, [], name=str(len(module.metadata)))
    loop_id.operands = (loop_id, disable)  # a loop ID's first operand is itself
    return loop_id


def define(module, scalar):
    """The kernel for ``scalar`` (float or double) in ``module``, defined on first use.

    ``void f(A, a_row, a_col, B, ldb, trans_b, C, ldc, m, n, k)``: ``C[i, j] = sum over kk of A[i * a_row +
    kk * a_col] * op(B)[kk, j]`` for ``i < m``, ``j < n``, ``C[i, j]`` at ``C[i * ldc + j]``; ``op(B)[kk,
    j]`` is ``B[kk * ldb + j]``, or ``B[j * ldb + kk]`` with ``trans_b``.  ``C`` is only
    written, as BLAS with ``beta = 0``.  Internal linkage: each module has its own copy.
    """
    bits = 32 if isinstance(scalar, ir.FloatType) else 64
    name = f"fastbp_small_gemm_f{bits}"
    if name in module.globals:
        return module.globals[name]
    width = 256 // bits  # one AVX2 vector (AVX-512 machines run it as is)
    ptr, vec = scalar.as_pointer(), ir.VectorType(scalar, width)
    vptr, lane_ints = vec.as_pointer(), ir.VectorType(I64, width)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, I64, I64, ptr, I64, ir.IntType(1), ptr, I64, I64, I64,
                                                              I64]), name)
    fn.linkage = "internal"
    A, a_row, a_col, B, ldb, trans_b, C, ldc, m, n, k = fn.args
    suffix = f"v{width}f{bits}"
    mask_type = ir.VectorType(ir.IntType(1), width)
    masked_load = cgutils.get_or_insert_function(
        module, ir.FunctionType(vec, [vptr, I32, mask_type, vec]), f"llvm.masked.load.{suffix}.p0")
    masked_store = cgutils.get_or_insert_function(
        module, ir.FunctionType(ir.VoidType(), [vec, vptr, I32, mask_type]), f"llvm.masked.store.{suffix}.p0")
    fma = cgutils.get_or_insert_function(module, ir.FunctionType(vec, [vec] * 3), f"llvm.fmuladd.{suffix}")
    no_unroll = _no_unroll(module)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    align = bits // 8
    zero = ir.Constant(vec, [0.0] * width)

    def splat(value, vector_type):
        one = b.insert_element(ir.Constant(vector_type, ir.Undefined), value, I32(0))
        lane_zero = ir.Constant(ir.VectorType(I32, width), [0] * width)
        return b.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined), lane_zero)

    def vector_at(base, index):
        return b.bitcast(b.gep(base, [index]), vptr)

    # op(B) = B.T (B stored (n, k)): copied transposed into a (k, n) buffer first, which the limits keep small.
    dense = b.alloca(scalar, size=b.select(trans_b, b.mul(k, n), I64(0)))
    with b.if_then(trans_b):
        with cgutils.for_range(b, n) as col:
            with cgutils.for_range(b, k) as kk:
                value = b.load(b.gep(B, [b.add(b.mul(col.index, ldb), kk.index)]))
                b.store(value, b.gep(dense, [b.add(b.mul(kk.index, n), col.index)]))
    B = b.select(trans_b, dense, B)
    ldb = b.select(trans_b, n, ldb)

    # The columns after the last whole vector, copied once into a zero-padded (k, width) buffer.
    tail = b.srem(n, I64(width))
    tail_start = b.sub(n, tail)
    has_tail = b.icmp_signed(">", tail, I64(0))
    tail_mask = b.icmp_signed("<", ir.Constant(lane_ints, list(range(width))), splat(tail, lane_ints))
    padded = b.alloca(scalar, size=b.mul(k, I64(width)))
    with b.if_then(has_tail):
        with cgutils.for_range(b, k) as loop:
            source = vector_at(B, b.add(b.mul(loop.index, ldb), tail_start))
            row = b.call(masked_load, [source, I32(align), tail_mask, zero])
            b.store(row, vector_at(padded, b.mul(loop.index, I64(width))), align=align)

    def block(i0, rows, vectors):
        """``C[i0:i0 + rows, columns]`` for ``vectors``: (source, its row length, column there, column in C, mask)."""
        before = b.block
        loop, done = b.append_basic_block("k.loop"), b.append_basic_block("k.done")
        b.cbranch(b.icmp_signed(">", k, I64(0)), loop, done)
        b.position_at_end(loop)
        kk = b.phi(I64)
        kk.add_incoming(I64(0), before)
        sums = [[b.phi(vec) for _ in vectors] for _ in range(rows)]
        for row in sums:
            for acc in row:
                acc.add_incoming(zero, before)
        columns = [b.load(vector_at(src, b.add(b.mul(kk, ld), col)), align=align) for src, ld, col, _, _ in vectors]
        updated = []
        for r in range(rows):
            a = splat(b.load(b.gep(A, [b.add(b.mul(b.add(i0, I64(r)), a_row), b.mul(kk, a_col))])), vec)
            updated.append([b.call(fma, [a, column, acc]) for column, acc in zip(columns, sums[r])])
        next_kk = b.add(kk, I64(1))
        latch = b.block
        kk.add_incoming(next_kk, latch)
        for row, new in zip(sums, updated):
            for acc, value in zip(row, new):
                acc.add_incoming(value, latch)
        b.cbranch(b.icmp_signed("<", next_kk, k), loop, done).set_metadata("llvm.loop", no_unroll)
        b.position_at_end(done)
        results = []
        for new in updated:
            results.append([])
            for value in new:
                result = b.phi(vec)
                result.add_incoming(zero, before)
                result.add_incoming(value, latch)
                results[-1].append(result)
        for r in range(rows):
            c_row = b.mul(b.add(i0, I64(r)), ldc)
            for result, (_, _, _, c_col, mask) in zip(results[r], vectors):
                target = vector_at(C, b.add(c_row, c_col))
                if mask is None:
                    b.store(result, target, align=align)
                else:
                    b.call(masked_store, [result, target, I32(align), mask])

    def row_block(i0, rows):
        """Rows ``i0:i0 + rows`` of C: pairs of whole vectors, then a whole vector and the tail, or one of them."""
        whole = b.sdiv(n, I64(width))
        pairs = b.sdiv(whole, I64(2))
        with cgutils.for_range(b, pairs) as loop:
            j = b.mul(loop.index, I64(2 * width))
            j2 = b.add(j, I64(width))
            block(i0, rows, [(B, ldb, j, j, None), (B, ldb, j2, j2, None)])
        j = b.mul(pairs, I64(2 * width))
        last_whole = (B, ldb, j, j, None)
        tail_vector = (padded, I64(width), I64(0), tail_start, tail_mask)
        with b.if_else(b.icmp_signed("!=", b.and_(whole, I64(1)), I64(0))) as (odd, even):
            with odd:
                with b.if_else(has_tail) as (with_tail, without):
                    with with_tail:
                        block(i0, rows, [last_whole, tail_vector])
                    with without:
                        block(i0, rows, [last_whole])
            with even:
                with b.if_then(has_tail):
                    block(i0, rows, [tail_vector])

    blocks = b.sdiv(m, I64(ROWS))
    with cgutils.for_range(b, blocks) as loop:
        row_block(b.mul(loop.index, I64(ROWS)), ROWS)
    done_rows = b.mul(blocks, I64(ROWS))
    left = b.sub(m, done_rows)  # 0 to ROWS - 1 = 3 rows: a block of 2, then one of 1
    with b.if_then(b.icmp_signed(">=", left, I64(2))):
        row_block(done_rows, 2)
    with b.if_then(b.icmp_signed("!=", b.and_(left, I64(1)), I64(0))):
        row_block(b.add(done_rows, b.and_(left, I64(2))), 1)
    b.ret_void()
    return fn

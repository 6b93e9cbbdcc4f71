"""A register-blocked matrix product for the small blocks of a training step, emitted as LLVM IR.

For products like a digits step's (a 32-row batch through 64-128-10), OpenBLAS spends about as long
copying its operands into packed panels as multiplying them: measured on a 2-core AMD EPYC (Zen 3,
OpenBLAS's Haswell kernels), ``sgemm_itcopy`` / ``otcopy`` took 40% of OpenBLAS's time in a digits
epoch.  This kernel reads both operands where they lie.  ``C = op(A) @ op(B)`` (``op(X)`` being ``X``
or ``X.T``, all three row-major; a transposed ``B`` is first copied into its plain layout) is computed
in blocks of :data:`ROWS` rows by two vectors of columns (AVX-512's where Numba compiles for a host
that has it, else AVX2's): the block's ``2 * rows`` accumulators and the two ``B`` vectors stay in
registers across the whole ``k`` loop, each step one broadcast of an ``op(A)`` element per row and one
fused multiply-add per accumulator.  Columns after the last whole pair of vectors (a classifier's 10
outputs are all there) take one vector where they fit in one, and are read through masked loads
(AVX-512) or from a copy in a zero-padded buffer on the stack (AVX2); a last block of fewer rows reads
the last row again, so every load is in bounds; only the stores are masked or skipped.

:func:`use_small` says when it beats OpenBLAS; ``fastbp._intrinsics.gemm`` asks it at every call.
"""

import functools

from llvmlite import binding, ir
from llvmlite.ir import values
from numba.core import cgutils, config

# Rows per block by vector width: 2 * rows accumulators hide the multiply-add latency and, with the block's two
# vectors of B and a broadcast, fit in the registers (16 with AVX2; 32 with AVX-512, where 8 rows measured
# 0.8x the time of 4 in a digits epoch).
ROWS = {256: 4, 512: 8}
I64 = ir.IntType(64)
I32 = ir.IntType(32)
# Products with at most this many multiply-adds may take this kernel (see use_small).
MAX_PRODUCT = 1 << 20
MAX_ROWS_NOT_TRANSPOSED = 64
NARROW = 16
MIN_COLUMNS_FLOAT32 = 5
# The zero-padded columns (AVX2) lie on the stack, k rows of two vectors: k is bounded to keep it small (32 KB).
MAX_DEPTH = 512
# An op(B) = B.T is copied transposed onto the stack: at most this many elements (a classifier's D @ W.T
# from 10 outputs to up to 409 units).
MAX_TRANSPOSED = 4096


def use_small(builder, m, n, k, trans_a, trans_b, is_float32):
    """An i1: whether ``C (m, n) = op(A) (m, k) @ op(B) (k, n)`` should take this kernel rather than BLAS.

    With AVX2 vectors, measured against OpenBLAS 0.3.31 on one core of a Zen 3 EPYC (per call, both in a
    loop in nopython code, alternating; AVX-512's choices: :func:`_shape_wins_avx512`):

    * float32: 0.6-0.86x BLAS's time from 82k to 3.2M multiply-adds whenever ``op(A)`` had at most 64
      rows or was transposed (a weight gradient); 1.0-1.1x at 100-200 rows not transposed; 1.3-1.6x
      with 1 to 4 columns (a block's 16 columns are then mostly padding), 0.9 from 6;
    * float64: 0.6-0.8x with 1 to 10 columns, up to 1.7x with 128;
    * ``D @ W.T`` from 10 outputs to 128 units: 0.5-0.8x, with its transposed copy of ``W``.

    Only products up to :data:`MAX_PRODUCT` take it: larger ones leave BLAS's packing a small part of
    their time.
    """
    size = builder.mul(builder.mul(m, n), k)
    small = builder.and_(builder.icmp_signed("<=", size, I64(MAX_PRODUCT)),
                         builder.icmp_signed("<=", k, I64(MAX_DEPTH)))
    narrow = builder.icmp_signed("<=", n, I64(NARROW))
    if is_float32:
        small = builder.and_(small, builder.icmp_signed(">=", n, I64(MIN_COLUMNS_FLOAT32)))
    if vector_bits() == 512:
        shape_wins = _shape_wins_avx512(builder, m, n, trans_a, trans_b, is_float32, narrow)
    else:
        few_rows = builder.or_(trans_a, builder.icmp_signed("<=", m, I64(MAX_ROWS_NOT_TRANSPOSED)))
        shape_wins = builder.or_(narrow, builder.and_(ir.Constant(ir.IntType(1), int(is_float32)), few_rows))
    copy_fits = builder.or_(builder.not_(trans_b), builder.icmp_signed("<=", builder.mul(k, n), I64(MAX_TRANSPOSED)))
    return builder.and_(builder.and_(small, shape_wins), copy_fits)


def _shape_wins_avx512(builder, m, n, trans_a, trans_b, is_float32, narrow):
    """An i1: whether the product's shape favours the kernel in AVX-512 vectors (:func:`use_small`).

    Measured against OpenBLAS 0.3.30's SkylakeX kernels on one core of a 2-core Xeon with AVX-512 (as in
    :func:`use_small`):

    * ``op(A)`` transposed (a weight gradient): float32 0.93-1.02x BLAS's time where the columns fill whole
      pairs of vectors (32, 128), 1.2-1.4x otherwise (10, 16, 100 columns); float64 1.04-1.5x always;
    * ``op(B)`` transposed (``D @ W.T`` from 10 outputs): 0.6-0.8x in both dtypes;
    * neither: float32 0.65-0.8x at up to 64 rows or with whole pairs (128 columns, up to 200 rows),
      0.8-0.95x with 10 columns, 1.1x for 100 x 64 @ 64 x 100; float64 0.7-0.8x with whole pairs, 1.0-1.1x
      otherwise.
    """
    whole_pairs = builder.icmp_signed("==", builder.srem(n, I64(2 * 512 // (32 if is_float32 else 64))), I64(0))
    if is_float32:
        transposed_a_wins = whole_pairs
        plain_wins = builder.or_(builder.or_(whole_pairs, narrow),
                                 builder.icmp_signed("<=", m, I64(MAX_ROWS_NOT_TRANSPOSED)))
    else:
        transposed_a_wins, plain_wins = ir.Constant(ir.IntType(1), 0), whole_pairs
    return builder.select(trans_a, transposed_a_wins, builder.or_(trans_b, plain_wins))


def _no_unroll(module):
    """Loop metadata that stops LLVM unrolling a loop (unrolled, the k loop spills its accumulators)."""
    disable = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
    loop_id = values.MDValue(module, [], name=str(len(module.metadata)))
    loop_id.operands = (loop_id, disable)  # a loop ID's first operand is itself
    return loop_id


def _k_loop(b, k, rows, vectors, a_at, b_at, zero, fma, splat, vec, no_unroll):
    """Emits ``sums[r][v] = sum over kk < k of a_at(kk, r) * b_at(kk, v)`` (rows x ``vectors``) and returns them.

    The accumulators are phi nodes of the loop, kept in registers; LLVM is told not to unroll it.
    """
    before = b.block
    loop, done = b.append_basic_block("k.loop"), b.append_basic_block("k.done")
    b.cbranch(b.icmp_signed(">", k, I64(0)), loop, done)
    b.position_at_end(loop)
    kk = b.phi(I64)
    kk.add_incoming(I64(0), before)
    sums = [[b.phi(vec) for _ in range(vectors)] for _ in range(rows)]
    for row in sums:
        for acc in row:
            acc.add_incoming(zero, before)
    columns = [b_at(kk, v) for v in range(vectors)]
    updated = []
    for r in range(rows):
        a = splat(a_at(kk, r), vec)
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
    return results


@functools.cache
def vector_bits() -> int:
    """512 where Numba compiles for AVX-512F (the host's features, or ``NUMBA_CPU_FEATURES``), else 256 (AVX2)."""
    if config.CPU_FEATURES is not None:
        return 512 if "+avx512f" in config.CPU_FEATURES.split(",") else 256
    if config.CPU_NAME not in (None, "host"):  # a named CPU without its features: Numba assumes none of them
        return 256
    return 512 if binding.get_host_cpu_features().get("avx512f", False) else 256


def allow_wide_vectors(function, bits, prefer=False):
    """Lets LLVM keep ``bits``-wide vectors whole in the LLVM ``function`` and, with ``prefer``, vectorize its
    loops at that width: on CPUs it tunes for 256-bit vectors (Intel's), it otherwise splits 512-bit ones
    and vectorizes in 256 bits.  Nothing for 256 bits.  (llvmlite knows no string attributes: added as set
    items, printed as they are.)
    """
    if bits > 256:
        names = ("min-legal-vector-width", "prefer-vector-width") if prefer else ("min-legal-vector-width",)
        for name in names:
            set.add(function.attributes, f'"{name}"="{bits}"')


def define(module, scalar):
    """The kernel for ``scalar`` (float or double) in ``module``, defined on first use.

    ``void f(A, a_row, a_col, B, ldb, trans_b, C, ldc, m, n, k)``: ``C[i, j] = sum over kk of A[i * a_row +
    kk * a_col] * op(B)[kk, j]`` for ``i < m``, ``j < n``, ``C[i, j]`` at ``C[i * ldc + j]``; ``op(B)[kk,
    j]`` is ``B[kk * ldb + j]``, or ``B[j * ldb + kk]`` with ``trans_b``.  ``C`` is only
    written, as BLAS with ``beta = 0``.  Internal linkage: each module has its own copy.
    """
    bits = 32 if isinstance(scalar, ir.FloatType) else 64
    vector = vector_bits()
    name = f"fastbp_small_gemm_f{bits}_v{vector}"
    if name in module.globals:
        return module.globals[name]
    width, rows = vector // bits, ROWS[vector]
    ptr, vec = scalar.as_pointer(), ir.VectorType(scalar, width)
    vptr, lane_ints = vec.as_pointer(), ir.VectorType(I64, width)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, I64, I64, ptr, I64, ir.IntType(1), ptr, I64, I64, I64,
                                                              I64]), name)
    fn.linkage = "internal"
    allow_wide_vectors(fn, vector)
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

    # The columns after the last whole pair of vectors (a classifier's 10 outputs are all there): with AVX2
    # copied once into a zero-padded (k, 2 * width) buffer, so the k loop reads whole vectors everywhere;
    # with AVX-512, where a masked load costs what a load does, read in place through the masks.
    direct = vector == 512
    pair = 2 * width
    tail = b.srem(n, I64(pair))
    tail_start = b.sub(n, tail)
    has_tail = b.icmp_signed(">", tail, I64(0))
    lanes = ir.Constant(lane_ints, list(range(width)))
    masks = [b.icmp_signed("<", lanes, splat(b.sub(tail, I64(v * width)), lane_ints)) for v in range(2)]
    if not direct:
        padded = b.alloca(scalar, size=b.mul(k, I64(pair)))
        with b.if_then(has_tail):
            with cgutils.for_range(b, k) as loop:
                for v, mask in enumerate(masks):
                    source = vector_at(B, b.add(b.mul(loop.index, ldb), b.add(tail_start, I64(v * width))))
                    row = b.call(masked_load, [source, I32(align), mask, zero])
                    b.store(row, vector_at(padded, b.add(b.mul(loop.index, I64(pair)), I64(v * width))),
                            align=align)

    last_row = b.sub(m, I64(1))

    with cgutils.for_range(b, b.sdiv(b.add(m, I64(rows - 1)), I64(rows))) as row_loop:
        i0 = b.mul(row_loop.index, I64(rows))
        # A block past the last row reads the last row again (so every load is in bounds) and stores nothing.
        a_rows = [b.mul(b.select(b.icmp_signed("<", row, m), row, last_row), a_row)
                  for row in (b.add(i0, I64(r)) for r in range(rows))]
        with cgutils.for_range(b, b.sdiv(b.add(n, I64(pair - 1)), I64(pair))) as column_loop:
            j = b.mul(column_loop.index, I64(pair))
            partial = b.icmp_signed(">", b.add(j, I64(pair)), n)  # the tail
            if direct:  # B itself, the tail's lanes masked
                source, ld, column = B, ldb, j
                all_lanes = ir.Constant(mask_type, [1] * width)
                load_masks = [b.select(partial, mask, all_lanes) for mask in masks]
            else:  # the tail from its padded copy
                source = b.select(partial, padded, B)
                ld = b.select(partial, I64(pair), ldb)
                column = b.select(partial, I64(0), j)

            def b_at(kk, v):
                at = vector_at(source, b.add(b.add(b.mul(kk, ld), column), I64(v * width)))
                return b.call(masked_load, [at, I32(align), load_masks[v], zero]) if direct else b.load(at, align=align)

            def block(vectors):  # the k loop and the stores of a block of `vectors` vectors of columns
                sums = _k_loop(b, k, rows, vectors,
                               lambda kk, r: b.load(b.gep(A, [b.add(a_rows[r], b.mul(kk, a_col))])), b_at,
                               zero, fma, splat, vec, no_unroll)
                for r in range(rows):
                    row = b.add(i0, I64(r))
                    with b.if_then(b.icmp_signed("<", row, m)):
                        for v in range(vectors):
                            target = vector_at(C, b.add(b.add(b.mul(row, ldc), j), I64(v * width)))
                            with b.if_else(partial) as (masked, whole):
                                with masked:
                                    b.call(masked_store, [sums[r][v], target, I32(align), masks[v]])
                                with whole:
                                    b.store(sums[r][v], target, align=align)

            # A tail of at most one vector (a classifier's 10 outputs in 16 lanes) runs one vector, not two.
            with b.if_else(b.and_(partial, b.icmp_signed("<=", tail, I64(width)))) as (narrow, wide):
                with narrow:
                    block(1)
                with wide:
                    block(2)
    b.ret_void()
    return fn

"""fastbp._intrinsics.gemm, by both of its paths (fastbp._small_gemm's kernel and BLAS), against numpy in float64.

The kernel takes the small products (fastbp._small_gemm.use_small, whose choices are tested below
too), BLAS the rest: the shapes cover both sides of each of its limits, every number of columns left
after the last whole pair of vectors (a pair is 16 float32 or 8 float64 columns with AVX2, twice that
with AVX-512), every number of rows left after the last block (of 4 rows, or 8), and empty operands.
On a host with AVX-512 the kernel is also compiled and tested as AVX2 machines run it.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llvmlite import ir
from numba import njit, types
from numba.core.extending import intrinsic

from fastbp import _small_gemm
from fastbp._intrinsics import gemm, wide_vectors

# The kernel's vector widths this host runs: AVX2's, and AVX-512's where it has it.
WIDTHS = sorted({256, _small_gemm.vector_bits()})

DTYPES = [np.float32, np.float64]
EPS = {np.dtype(np.float32): 2.0 ** -23, np.dtype(np.float64): 2.0 ** -52}


@njit
def _product(A, B, C, trans_a, trans_b):
    gemm(A, B, C, trans_a, trans_b)


_AT_WIDTH = {}  # a dispatcher per function and vector width, each compiled only while vector_bits says that width


def _at_width(function, bits):
    compiled = _AT_WIDTH.setdefault((function, bits), njit(function.py_func))

    def call(*args):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_small_gemm, "vector_bits", lambda: bits)
            return compiled(*args)
    return call


def check(m, k, n, trans_a, trans_b, dtype, seed=0, bits=None):
    rng = np.random.default_rng(seed)
    A = rng.uniform(-1, 1, (k, m) if trans_a else (m, k)).astype(dtype)
    B = rng.uniform(-1, 1, (n, k) if trans_b else (k, n)).astype(dtype)
    C = np.full((m, n), np.nan, dtype)  # beta = 0: C is only written
    (_product if bits is None else _at_width(_product, bits))(A, B, C, trans_a, trans_b)
    exact = (A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B).astype(np.float64)
    # Each element sums k products of magnitude <= 1, rounded in some order: k * eps bounds the error.
    np.testing.assert_allclose(C, exact, rtol=0, atol=max(k, 1) * 4 * EPS[np.dtype(dtype)])


EDGE_SHAPES = [
    (1, 1, 1), (0, 3, 4), (3, 0, 4), (3, 4, 0), (0, 0, 0),
    (32, 64, 128), (32, 128, 10), (128, 32, 10),  # a digits step's products
    (64, 16, 128), (65, 16, 128),  # rows not transposed: the kernel up to 64
    (7, 512, 9), (7, 513, 9),  # the padded columns' depth bound
    (64, 256, 64), (64, 257, 64),  # the size bound, 2**20 multiply-adds
    (200, 100, 10), (100, 64, 100),  # a default fit's chunks
    (4, 16, 256), (4, 17, 256),  # with op(B) = B.T: the bound on its transposed copy
]


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("m,k,n", EDGE_SHAPES)
def test_gemm_edge_shapes(m, k, n, trans_a, trans_b, dtype, bits):
    check(m, k, n, trans_a, trans_b, dtype, bits=bits)


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17])
@pytest.mark.parametrize("columns", range(1, 66))
def test_every_row_and_column_remainder(rows, columns, dtype, bits):
    # Columns up to two pairs of AVX-512 float32 vectors and one more; rows past two blocks of 8.
    for flags, (trans_a, trans_b) in enumerate([(0, 0), (1, 0), (0, 1)]):
        check(rows, 5, columns, trans_a, trans_b, dtype, seed=rows * 100 + columns * 3 + flags, bits=bits)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 70), k=st.integers(1, 70), n=st.integers(1, 70), trans_a=st.integers(0, 1),
       trans_b=st.integers(0, 1), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_gemm_matches_numpy(m, k, n, trans_a, trans_b, dtype, seed):
    check(m, k, n, trans_a, trans_b, dtype, seed)


def test_nan_and_inf_propagate_through_the_kernel():
    # Divergence checks read the products' NaN and inf: the kernel must not lose them.
    A = np.ones((32, 64), np.float32)
    B = np.ones((64, 10), np.float32)
    A[3, 5], B[7, 9] = np.nan, np.inf
    C = np.zeros((32, 10), np.float32)
    _product(A, B, C, 0, 0)
    assert np.isnan(C[3]).all()
    assert np.isinf(C[np.arange(32) != 3, 9]).all()
    assert np.isfinite(np.delete(np.delete(C, 3, 0), 9, 1)).all()


@intrinsic
def _takes_kernel(typingctx, m, n, k, trans_a, trans_b, like):
    """Whether gemm would give ``op(A) (m, k) @ op(B) (k, n)`` of ``like``'s dtype to the kernel (use_small)."""
    def codegen(context, builder, signature, args):
        i64, flag = ir.IntType(64), (lambda value: builder.icmp_unsigned("!=", value, value.type(0)))
        return _small_gemm.use_small(builder, *(builder.sext(x, i64) if x.type.width < 64 else x for x in args[:3]),
                                     flag(args[3]), flag(args[4]), like.dtype == types.float32)
    return types.boolean(m, n, k, trans_a, trans_b, like), codegen


@njit
def _kernel_would_take(m, n, k, trans_a, trans_b, like):
    return _takes_kernel(m, n, k, trans_a, trans_b, like)


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("m,n,k,trans_a,trans_b,dtype,kernel", [  # kernel: (with AVX2, with AVX-512)
    # a digits step (batch 32, 64-128-10): all five products
    (32, 128, 64, 0, 0, np.float32, (True, True)), (64, 128, 32, 1, 0, np.float32, (True, True)),
    (32, 10, 128, 0, 0, np.float32, (True, True)), (128, 10, 32, 1, 0, np.float32, (True, False)),
    (32, 128, 10, 0, 1, np.float32, (True, True)),
    (32, 10, 128, 0, 0, np.float64, (True, False)), (32, 128, 64, 0, 0, np.float64, (False, True)),
    # a default fit's chunk (100 rows, 64-100-10)
    (100, 100, 64, 0, 0, np.float32, (False, False)), (64, 100, 100, 1, 0, np.float32, (True, False)),
    (100, 100, 10, 0, 1, np.float32, (False, True)), (100, 100, 10, 0, 1, np.float64, (False, True)),
    (32, 4, 128, 0, 0, np.float32, (False, False)), (32, 5, 128, 0, 0, np.float32, (True, True)),  # few columns
    (32, 1, 128, 0, 0, np.float64, (True, False)),
    (128, 256, 784, 0, 0, np.float32, (False, False)),  # an MNIST-sized forward
    (7, 9, 512, 0, 0, np.float32, (True, True)), (7, 9, 513, 0, 0, np.float32, (False, False)),  # depth bound
    # the transposed copy's bound
    (4, 256, 16, 0, 1, np.float32, (True, True)), (4, 256, 17, 0, 1, np.float32, (False, False)),
])
def test_which_products_take_the_kernel(m, n, k, trans_a, trans_b, dtype, kernel, bits):
    would_take = _at_width(_kernel_would_take, bits)
    assert would_take(m, n, k, trans_a, trans_b, np.empty((1, 1), dtype)) is kernel[bits == 512]


def test_a_thread_with_a_small_stack_multiplies_at_the_limits():
    # The kernel's buffers lie on the stack, at most 64 KB: the padded columns at the depth bound and
    # the transposed copy at its bound, both here (7 x 512 @ (8 x 512).T).  A thread of 256 KB, as some
    # thread pools give, must still run it, in both dtypes.
    import threading

    errors = []

    def run():
        try:
            for dtype in DTYPES:
                check(7, 512, 8, 0, 1, dtype)
        except Exception as error:  # reported in the main thread
            errors.append(error)

    old = threading.stack_size(256 * 1024)
    try:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    finally:
        threading.stack_size(old)
    assert not errors


def _scaled(a, out):
    wide_vectors()
    for k in range(a.size):
        out[k] = a[k] * a.dtype.type(2)


def _scaled_untagged(a, out):
    for k in range(a.size):
        out[k] = a[k] * a.dtype.type(2)


@pytest.mark.parametrize("bits", WIDTHS)
def test_wide_vectors_tags_the_function_at_the_kernels_width(bits):
    # The whole-network functions call wide_vectors() so that LLVM vectorizes their own loops at the width
    # of the products: with AVX-512, 512-bit vectors (zmm registers); with AVX2, nothing changes: the code is
    # LLVM's default for the CPU (256-bit vectors on Intel; on AMD's AVX-512 cores LLVM's default is 512).
    compiled = _AT_WIDTH.setdefault((_scaled, bits), njit(_scaled))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_small_gemm, "vector_bits", lambda: bits)
        a, out = np.arange(1000, dtype=np.float32), np.zeros(1000, np.float32)
        compiled(a, out)
        np.testing.assert_array_equal(out, a * 2)
    llvm, asm = (next(iter(d.values())) for d in (compiled.inspect_llvm(), compiled.inspect_asm()))
    assert ('"prefer-vector-width"="512"' in llvm) is (bits == 512)
    if bits == 512:
        assert "zmm" in asm
    else:
        untagged = njit(_scaled_untagged)
        untagged(a, out)
        assert ("zmm" in asm) is ("zmm" in next(iter(untagged.inspect_asm().values())))

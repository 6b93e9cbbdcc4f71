"""The public Numba kernels of fastbp.kernels against their plain-numpy twins in fastbp.reference.

Property tests (hypothesis) draw the shapes; the values come from a numpy
generator seeded by hypothesis, which is much faster than drawing arrays
element by element and shrinks just as well on the shapes.
"""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastbp import kernels as K
from fastbp import reference as R

DTYPES = [np.float32, np.float64]
ALL_ACTS = ["identity", "relu", "logistic", "tanh", "softmax", "exp"]
HIDDEN_ACTS = ["identity", "relu", "logistic", "tanh"]
OUT_ACTS = ["identity", "logistic", "softmax", "exp"]

# Tolerances, in one place.  Kernel and twin do the same arithmetic in a
# different order (BLAS blocking vs numpy's dot, a fused bias pass) and the
# kernels are compiled with fastmath "afn" (approximate exp/tanh), so they agree
# to a few ulps times the length of the longest sum (<= 17 terms here):
#   float32: eps = 1.2e-7, 17 * eps ~ 2e-6  -> rtol 1e-4, atol 1e-5 (values are O(1)..O(1e7)).
#   float64: eps = 2.2e-16, 17 * eps ~ 4e-15 -> rtol 1e-10, atol 1e-12.
TOL = {
    np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
    np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12),
}


def tol(dtype):
    return TOL[np.dtype(dtype)]


def assert_close(actual, expected, dtype):
    np.testing.assert_allclose(actual, expected, **tol(dtype))


SIZES = st.integers(min_value=1, max_value=17)
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
PROPERTY = settings(max_examples=30, deadline=None)


def shape_examples(f):
    """Explicit batch-1 / width-1 / largest cases on top of what hypothesis draws."""
    for n, n_in, n_out in [(1, 1, 1), (1, 17, 3), (17, 1, 1), (5, 3, 1), (1, 1, 17), (17, 17, 17)]:
        f = example(n=n, n_in=n_in, n_out=n_out, seed=n * 1000 + n_in * 10 + n_out)(f)
    return f


def rand(rng, shape, dtype, low=-1.0, high=1.0):
    return rng.uniform(low, high, shape).astype(dtype)


def layer(rng, n, n_in, n_out, dtype):
    return rand(rng, (n, n_in), dtype), rand(rng, (n_in, n_out), dtype), rand(rng, (n_out,), dtype)


def softmax(Z):
    e = np.exp(Z - Z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def outputs_and_targets(rng, n, m, out_activation, dtype):
    """A realistic output-layer output and a valid target for ``out_activation``."""
    Z = rng.uniform(-3, 3, (n, m))
    if out_activation == "softmax":
        out = softmax(Z)
        Y = np.eye(m)[rng.integers(0, m, n)]
    elif out_activation == "logistic":
        out = 1 / (1 + np.exp(-Z))
        Y = rng.integers(0, 2, (n, m)).astype(float)
    elif out_activation == "exp":
        out = np.exp(Z)
        Y = rng.poisson(out).astype(float)  # >= 0, zeros included
    else:
        out = Z
        Y = rng.normal(size=(n, m))
    return out.astype(dtype), Y.astype(dtype)


def snapshot(*arrays):
    return [a.copy() for a in arrays]


def assert_unchanged(before, *arrays):
    for b, a in zip(before, arrays):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- property tests vs twins


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ALL_ACTS)
@PROPERTY
@given(n=SIZES, n_in=SIZES, n_out=SIZES, seed=SEEDS)
@shape_examples
def test_affine_forward_matches_reference(activation, dtype, n, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    X, W, b = layer(rng, n, n_in, n_out, dtype)
    before = snapshot(X, W, b)
    got = K.affine_forward(X, W, b, activation)
    want = R.affine_forward(X, W, b, activation)
    assert got.shape == (n, n_out) and got.dtype == np.dtype(dtype) and got.flags.c_contiguous
    assert_close(got, want, dtype)
    assert_unchanged(before, X, W, b)
    # And the twin against the definition, so the pair cannot agree on a wrong answer.
    Z = X.astype(np.float64) @ W.astype(np.float64) + b
    definition = {"identity": Z, "relu": np.maximum(Z, 0), "logistic": 1 / (1 + np.exp(-Z)), "tanh": np.tanh(Z),
                  "softmax": softmax(Z), "exp": np.exp(Z)}[activation]
    assert_close(got, definition, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", HIDDEN_ACTS)
@PROPERTY
@given(n=SIZES, n_in=SIZES, n_out=SIZES, seed=SEEDS)
@shape_examples
def test_activation_backward_matches_reference(activation, dtype, n, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    pre = rng.uniform(-3, 3, (n, n_out))
    Z = {"identity": pre, "relu": np.maximum(pre, 0), "logistic": 1 / (1 + np.exp(-pre)),
         "tanh": np.tanh(pre)}[activation].astype(dtype)
    dZ = rand(rng, (n, n_out), dtype)
    dZ_ref = dZ.copy()
    dZ0 = dZ.astype(np.float64)
    Z_before = Z.copy()
    got = K.activation_backward(Z, dZ, activation)
    want = R.activation_backward(Z, dZ_ref, activation)
    assert got is dZ
    assert_close(got, want, dtype)
    assert_unchanged([Z_before], Z)
    # The derivative, taken from the output, against the pre-activation formula.
    z = pre
    deriv = {"identity": np.ones_like(z), "relu": (z > 0).astype(float),
             "logistic": np.exp(-z) / (1 + np.exp(-z)) ** 2, "tanh": 1 / np.cosh(z) ** 2}[activation]
    # float32 Z carries its own rounding into act'(Z): allow a little more there.
    np.testing.assert_allclose(got, dZ0 * deriv, rtol=tol(dtype)["rtol"] * 10, atol=tol(dtype)["atol"] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_dx", [True, False])
@PROPERTY
@given(n=SIZES, n_in=SIZES, n_out=SIZES, seed=SEEDS)
@shape_examples
def test_affine_backward_matches_reference(with_dx, dtype, n, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    X, W, _ = layer(rng, n, n_in, n_out, dtype)
    dY = rand(rng, (n, n_out), dtype)
    before = snapshot(X, W, dY)
    bufs = [np.full((n, n_in), np.nan, dtype) if with_dx else None,
            np.full((n_in, n_out), np.nan, dtype), np.full(n_out, np.nan, dtype)]
    refs = [None if b is None else b.copy() for b in bufs]
    dX, dW, db = K.affine_backward(X, W, dY, *bufs)
    rX, rW, rb = R.affine_backward(X, W, dY, *refs)
    assert dW is bufs[1] and db is bufs[2]
    if with_dx:
        assert dX is bufs[0]
        assert_close(dX, rX, dtype)
        assert_close(dX, dY.astype(np.float64) @ W.T.astype(np.float64), dtype)
    else:
        assert dX is None and rX is None
    assert_close(dW, rW, dtype)
    assert_close(db, rb, dtype)
    assert_close(dW, X.T.astype(np.float64) @ dY.astype(np.float64), dtype)
    assert_close(db, dY.astype(np.float64).sum(axis=0), dtype)
    assert_unchanged(before, X, W, dY)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out_activation", OUT_ACTS)
@PROPERTY
@given(n=SIZES, n_in=SIZES, n_out=SIZES, seed=SEEDS)
@shape_examples
def test_output_activation_matches_reference(out_activation, dtype, n, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    Z = rng.uniform(-5, 5, (n, n_out)).astype(dtype)
    Z_ref = Z.copy()
    pre = Z.astype(np.float64)
    got = K.output_activation(Z, out_activation)
    want = R.output_activation(Z_ref, out_activation)
    assert got is Z  # in place
    assert_close(got, want, dtype)
    definition = {"identity": pre, "logistic": 1 / (1 + np.exp(-pre)), "softmax": softmax(pre),
                  "exp": np.exp(pre)}[out_activation]
    assert_close(got, definition, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("out_activation", OUT_ACTS)
@PROPERTY
@given(n=SIZES, n_in=SIZES, n_out=SIZES, seed=SEEDS)
@shape_examples
def test_output_loss_matches_reference(out_activation, weighted, dtype, n, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    out, Y = outputs_and_targets(rng, n, n_out, out_activation, dtype)
    sw = rng.uniform(0.1, 3.0, n).astype(dtype) if weighted else None
    before = snapshot(out, Y) + ([sw.copy()] if weighted else [])
    got = K.output_loss(out, Y, out_activation, sample_weight=sw)
    want = R.output_loss(out, Y, out_activation, sample_weight=sw)
    assert np.ndim(got) == 0 and np.isfinite(got)
    assert_close(got, want, dtype)
    # Against the documented definition, computed here in float64.
    p, y = out.astype(np.float64), Y.astype(np.float64)
    w = np.ones(n) if sw is None else sw.astype(np.float64)
    if out_activation == "softmax":
        rows = -(y * np.log(p)).sum(axis=1)
    elif out_activation == "logistic":
        rows = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(axis=1)
    elif out_activation == "exp":
        ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / p), 0.0)
        rows = (ylogy - y + p).sum(axis=1)
    else:
        rows = 0.5 * ((y - p) ** 2).sum(axis=1)
    assert_close(got, (w * rows).sum() / w.sum(), dtype)
    assert_unchanged(before, out, Y, *([sw] if weighted else []))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("given_buffer", [False, True])
@PROPERTY
@given(n=SIZES, n_in=SIZES, n_out=SIZES, seed=SEEDS)
@shape_examples
def test_output_delta_matches_reference(given_buffer, weighted, dtype, n, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    out, Y = outputs_and_targets(rng, n, n_out, "identity", dtype)
    sw = rng.uniform(0.1, 3.0, n).astype(dtype) if weighted else None
    buf = np.full((n, n_out), np.nan, dtype) if given_buffer else None
    before = snapshot(out, Y)
    got = K.output_delta(out, Y, buf, sample_weight=sw)
    want = R.output_delta(out, Y, None, sample_weight=sw)
    if given_buffer:
        assert got is buf
    assert got.shape == (n, n_out) and got.dtype == np.dtype(dtype)
    assert_close(got, want, dtype)
    w = np.ones(n) if sw is None else sw.astype(np.float64)
    assert_close(got, (out.astype(np.float64) - Y) * w[:, None], dtype)
    assert_unchanged(before, out, Y)


# ----------------------------------------------------------------------------- hand-picked cases


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_derivative_at_zero_is_zero(dtype):
    Z = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 0.5]], dtype)
    dZ = np.full(Z.shape, 3.0, dtype)
    got = K.activation_backward(Z, dZ, "relu")
    np.testing.assert_array_equal(got, [[0, 3, 0], [3, 0, 3]])
    assert got.dtype == np.dtype(dtype)
    # -0.0 is also "0": its derivative is 0 too.
    dZ = np.ones((1, 1), dtype)
    assert K.activation_backward(np.array([[-0.0]], dtype), dZ, "relu")[0, 0] == 0
    # A pre-activation of exactly 0 gives output 0 in the forward pass (not -0 or NaN).
    X = np.array([[1.0, -1.0]], dtype)
    W = np.array([[1.0], [1.0]], dtype)
    out = K.affine_forward(X, W, np.zeros(1, dtype), "relu")
    assert out[0, 0] == 0 and not np.signbit(out[0, 0])
    # The pair forward + backward: a unit whose pre-activation is exactly 0 passes no gradient.
    assert K.activation_backward(out, np.ones_like(out), "relu")[0, 0] == 0
    # Negative pre-activations give +0 like np.maximum, never -0.
    out = K.affine_forward(np.array([[-1.0], [-2.5], [0.0], [3.0]], dtype), np.ones((1, 2), dtype),
                           np.array([0.0, -1.0], dtype), "relu")
    np.testing.assert_array_equal(out, [[0, 0], [0, 0], [0, 0], [3, 2]])
    assert not np.signbit(out).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_and_exp_are_stable_for_large_logits(dtype):
    # Shifted by the row maximum *after* the bias: a large X @ W cancelled by a large negative bias must not
    # underflow every exponential to 0 (which would give 0 / 0).
    X = np.array([[1.0], [-1.0]], dtype)
    W = np.array([[80.0, 80.0 + np.log(3.0)]], dtype)
    b = np.array([-80.0, -80.0], dtype)
    got = K.affine_forward(X, W, b, "softmax")
    assert np.isfinite(got).all()
    assert_close(got[0], [0.25, 0.75], dtype)
    assert_close(got, R.affine_forward(X, W, b, "softmax"), dtype)
    big = 1e4 if dtype == np.float64 else 80.0
    Z = np.array([[big, big - 1.0, -big]], dtype)
    p = K.output_activation(Z.copy(), "softmax")
    e = np.exp([0.0, -1.0])
    assert_close(p, [[e[0] / e.sum(), e[1] / e.sum(), 0.0]], dtype)
    X = np.array([[1.0]], dtype)
    W = np.array([[1000.0, 80.0]], dtype)
    b = np.array([-1000.0, -80.0], dtype)
    assert_close(K.affine_forward(X, W, b, "softmax"), [[0.5, 0.5]], dtype)
    # logistic saturates to exactly 0 / 1 without NaN
    assert_close(K.affine_forward(np.array([[-200.0, 200.0]], dtype), np.eye(2, dtype=dtype), np.zeros(2, dtype),
                                  "logistic"), [[0.0, 1.0]], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_write_into_the_callers_buffers(dtype):
    rng = np.random.default_rng(0)
    X, W, b = layer(rng, 4, 3, 2, dtype)
    out = np.full((4, 2), np.nan, dtype)
    assert K.affine_forward(X, W, b, "tanh", out=out) is out
    assert_close(out, R.affine_forward(X, W, b, "tanh"), dtype)

    dZ = np.ones((4, 2), dtype)
    assert K.activation_backward(out, dZ, "tanh") is dZ
    assert_close(dZ, 1 - out.astype(np.float64) ** 2, dtype)

    dX, dW, db = np.empty((4, 3), dtype), np.empty((3, 2), dtype), np.empty(2, dtype)
    res = K.affine_backward(X, W, dZ, dX, dW, db)
    assert res[0] is dX and res[1] is dW and res[2] is db

    Z = rng.normal(size=(4, 2)).astype(dtype)
    assert K.output_activation(Z, "softmax") is Z
    np.testing.assert_allclose(Z.sum(axis=1), 1, **tol(dtype))

    delta = np.empty((4, 2), dtype)
    assert K.output_delta(Z, np.eye(2, dtype=dtype)[[0, 1, 1, 0]], delta) is delta


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs_give_the_contiguous_result(dtype):
    rng = np.random.default_rng(1)
    X_full = rand(rng, (7, 10), dtype)
    X = X_full[:, ::2]  # strided, (7, 5)
    W = np.asfortranarray(rand(rng, (5, 4), dtype))
    b = rand(rng, (8,), dtype)[::2]
    assert not X.flags.c_contiguous and not W.flags.c_contiguous and not b.flags.c_contiguous
    Xc, Wc, bc = (np.ascontiguousarray(a) for a in (X, W, b))
    for act in ALL_ACTS:
        assert_close(K.affine_forward(X, W, b, act), K.affine_forward(Xc, Wc, bc, act), dtype)
        assert_close(K.affine_forward(X, W, b, act), R.affine_forward(Xc, Wc, bc, act), dtype)

    dY = np.asfortranarray(rand(rng, (7, 4), dtype))
    got = K.affine_backward(X, W, dY, np.empty((7, 5), dtype), np.empty((5, 4), dtype), np.empty(4, dtype))
    want = R.affine_backward(Xc, Wc, np.ascontiguousarray(dY), np.empty((7, 5), dtype), np.empty((5, 4), dtype),
                             np.empty(4, dtype))
    for g, w in zip(got, want):
        assert_close(g, w, dtype)

    Z = np.asfortranarray(rand(rng, (7, 4), dtype, 0.0, 1.0))
    dZ = rand(rng, (7, 4), dtype)
    want = R.activation_backward(np.ascontiguousarray(Z), dZ.copy(), "logistic")
    assert_close(K.activation_backward(Z, dZ, "logistic"), want, dtype)

    out, Y = outputs_and_targets(rng, 7, 4, "softmax", dtype)
    out_f, Y_f = np.asfortranarray(out), np.asfortranarray(Y)
    sw = rand(rng, (14,), dtype, 0.5, 2.0)[::2]
    assert_close(K.output_loss(out_f, Y_f, "softmax", sw), R.output_loss(out, Y, "softmax", sw.copy()), dtype)
    assert_close(K.output_delta(out_f, Y_f, None, sw), R.output_delta(out, Y, None, sw.copy()), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_read_only_inputs_are_handled(dtype):
    rng = np.random.default_rng(2)
    X, W, b = layer(rng, 6, 3, 4, dtype)
    dY = rand(rng, (6, 4), dtype)
    want_fwd = K.affine_forward(X, W, b, "logistic")
    want_bwd = K.affine_backward(X, W, dY, np.empty((6, 3), dtype), np.empty((3, 4), dtype), np.empty(4, dtype))
    for a in (X, W, b, dY):
        a.flags.writeable = False
    assert_close(K.affine_forward(X, W, b, "logistic"), want_fwd, dtype)
    got_bwd = K.affine_backward(X, W, dY, np.empty((6, 3), dtype), np.empty((3, 4), dtype), np.empty(4, dtype))
    for g, w in zip(got_bwd, want_bwd):
        assert_close(g, w, dtype)

    Z = want_fwd.copy()
    Z.flags.writeable = False
    dZ = dY.copy()
    assert_close(K.activation_backward(Z, dZ, "logistic"), R.activation_backward(Z, dY.copy(), "logistic"), dtype)

    out, Y = outputs_and_targets(rng, 6, 4, "logistic", dtype)
    sw = rand(rng, (6,), dtype, 0.5, 2.0)
    want_loss = R.output_loss(out, Y, "logistic", sw)
    want_delta = R.output_delta(out, Y, None, sw)
    for a in (out, Y, sw):
        a.flags.writeable = False
    assert_close(K.output_loss(out, Y, "logistic", sw), want_loss, dtype)
    assert_close(K.output_delta(out, Y, None, sw), want_delta, dtype)


def test_mixed_dtypes_are_cast_to_the_dtype_of_X():
    rng = np.random.default_rng(3)
    X32 = rand(rng, (5, 3), np.float32)
    W64, b64 = rand(rng, (3, 2), np.float64), rand(rng, (2,), np.float64)
    got = K.affine_forward(X32, W64, b64, "tanh")
    assert got.dtype == np.float32
    assert_close(got, K.affine_forward(X32, W64.astype(np.float32), b64.astype(np.float32), "tanh"), np.float32)
    assert_close(got, R.affine_forward(X32, W64, b64, "tanh"), np.float32)
    # The other way round: float32 weights promoted to X's float64.
    X64 = X32.astype(np.float64)
    got64 = K.affine_forward(X64, W64.astype(np.float32), b64.astype(np.float32), "tanh")
    assert got64.dtype == np.float64
    assert_close(got64, np.tanh(X64 @ W64.astype(np.float32) + b64.astype(np.float32)), np.float64)

    dY64 = rand(rng, (5, 2), np.float64)
    dX, dW, db = K.affine_backward(X32, W64, dY64, np.empty((5, 3), np.float32), np.empty((3, 2), np.float32),
                                   np.empty(2, np.float32))
    assert_close(dW, X32.T.astype(np.float64) @ dY64.astype(np.float32), np.float32)
    assert_close(dX, dY64.astype(np.float32) @ W64.astype(np.float32).T, np.float32)
    assert_close(db, dY64.astype(np.float32).sum(axis=0), np.float32)

    out, Y = outputs_and_targets(rng, 5, 2, "softmax", np.float32)
    Y_int = Y.astype(np.int64)
    assert_close(K.output_loss(out, Y_int, "softmax", np.ones(5, np.float64)), R.output_loss(out, Y, "softmax"),
                 np.float32)
    assert K.output_delta(out, Y.astype(np.float64)).dtype == np.float32


def test_integer_inputs_are_handled_as_float64():
    X = np.arange(12, dtype=np.int64).reshape(4, 3) - 5
    W = np.array([[1, 0], [0, -1], [2, 1]], dtype=np.int32)
    b = np.array([1, -2], dtype=np.int16)
    got = K.affine_forward(X, W, b, "identity")
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, X @ W + b)
    np.testing.assert_array_equal(K.affine_forward(X, W, b, "relu"), np.maximum(X @ W + b, 0))
    dY = np.ones((4, 2), dtype=np.int64)
    dX, dW, db = K.affine_backward(X, W, dY, np.empty((4, 3)), np.empty((3, 2)), np.empty(2))
    np.testing.assert_array_equal(dW, X.T @ dY)
    np.testing.assert_array_equal(db, [4, 4])
    np.testing.assert_array_equal(dX, dY @ W.T)
    Z = np.array([[0, 2], [-1, 3]])
    dZ = np.ones((2, 2))
    np.testing.assert_array_equal(K.activation_backward(Z, dZ, "relu"), [[0, 1], [0, 1]])
    # Lists are array-likes of numbers too.
    np.testing.assert_array_equal(K.affine_forward([[1, 2]], [[1], [1]], [0.5]), [[3.5]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_loss_clips_probabilities_like_scikit_learn(dtype):
    eps = np.finfo(dtype).eps
    # A confident wrong answer gives a large but finite loss, -log(eps).
    out = np.array([[0.0, 1.0]], dtype)
    Y = np.array([[1.0, 0.0]], dtype)
    for act, factor in (("softmax", 1), ("logistic", 2)):
        got = K.output_loss(out, Y, act)
        assert np.isfinite(got)
        assert_close(got, factor * -np.log(eps), dtype)
        assert_close(got, R.output_loss(out, Y, act), dtype)
    # A confident right answer gives about 0.
    assert K.output_loss(out, Y[:, ::-1].copy(), "logistic") < 10 * eps
    # exp with y = 0: y log(y / p) is taken as 0, so the loss is p.
    assert_close(K.output_loss(np.array([[2.5]], dtype), np.zeros((1, 1), dtype), "exp"), 2.5, dtype)
    # The weighted mean divides by the weight total, not the row count.
    out = np.array([[1.0], [3.0]], dtype)
    Y = np.zeros((2, 1), dtype)
    assert_close(K.output_loss(out, Y, "identity", np.array([1.0, 3.0])), (0.5 * 1 + 3 * 4.5) / 4, dtype)


# ----------------------------------------------------------------------------- bad input

# Every case is run against the kernel and against its twin: the same checks guard both.
MODULES = pytest.mark.parametrize("mod", [K, R], ids=["kernels", "reference"])


def _args():
    """Valid float64 arguments to build the bad cases from."""
    rng = np.random.default_rng(4)
    X, W, b = layer(rng, 5, 3, 2, np.float64)
    dY = rand(rng, (5, 2), np.float64)
    return X, W, b, dY


def _with(a, index, value):
    a = a.copy()
    a[index] = value
    return a


def _read_only(shape):
    a = np.empty(shape)
    a.flags.writeable = False
    return a


X0, W0, b0, dY0 = _args()
BUF = lambda: (np.empty((5, 3)), np.empty((3, 2)), np.empty(2))  # noqa: E731

FORWARD_BAD = [
    ("unknown-activation", dict(activation="softplus"), ValueError,
     r"activation must be one of \('identity', 'relu', 'logistic', 'tanh', 'softmax', 'exp'\), got 'softplus'"),
    ("activation-not-str", dict(activation=None), ValueError, r"activation must be one of .*got None"),
    ("W-rows", dict(W=np.ones((4, 2))), ValueError, r"W has shape \(4, 2\): expected 3 rows to match X\.shape\[1\]"),
    ("b-length", dict(b=np.ones(3)), ValueError, r"b has shape \(3,\): expected \(2,\) to match W\.shape\[1\]"),
    ("b-2d", dict(b=np.ones((1, 2))), ValueError, r"b must be 1-D, got an array of shape \(1, 2\)"),
    ("out-shape", dict(out=np.empty((5, 3))), ValueError, r"out has shape \(5, 3\): expected \(5, 2\)"),
    ("out-dtype", dict(out=np.empty((5, 2), np.float32)), ValueError, r"out has dtype float32: expected float64"),
    ("out-non-contiguous", dict(out=np.empty((2, 5)).T), ValueError, r"out must be C-contiguous"),
    ("out-strided", dict(out=np.empty((5, 4))[:, ::2]), ValueError, r"out must be C-contiguous"),
    ("out-read-only", dict(out=_read_only((5, 2))), ValueError, r"out is read-only"),
    ("out-list", dict(out=[[0.0] * 2] * 5), TypeError, r"out must be a numpy array, got list"),
    ("X-1d", dict(X=np.ones(3)), ValueError, r"X must be 2-D, got an array of shape \(3,\)"),
    ("X-3d", dict(X=np.ones((5, 3, 1))), ValueError, r"X must be 2-D, got an array of shape \(5, 3, 1\)"),
    ("X-zero-rows", dict(X=np.ones((0, 3))), ValueError,
     r"X has shape \(0, 3\): expected at least one element along every axis"),
    ("X-object", dict(X=X0.astype(object)), TypeError, r"X must be a numeric array, got dtype object"),
    ("X-string", dict(X=np.full((5, 3), "1.0")), TypeError, r"X must be a numeric array, got dtype <U3"),
    ("X-complex", dict(X=X0 + 0j), TypeError, r"X must be a numeric array, got dtype complex128"),
    ("X-ragged", dict(X=[[1.0, 2.0, 3.0], [1.0]]), TypeError, r"X must be array-like of numbers"),
    ("W-object", dict(W=W0.astype(object)), TypeError, r"W must be a numeric array, got dtype object"),
    ("W-string", dict(W=np.full((3, 2), "a")), TypeError, r"W must be a numeric array"),
    ("X-nan", dict(X=_with(X0, (2, 1), np.nan)), ValueError, r"X, W or b contains NaN or infinity"),
    ("X-inf", dict(X=_with(X0, (0, 0), -np.inf)), ValueError, r"X, W or b contains NaN or infinity"),
    ("W-nan", dict(W=_with(W0, (1, 1), np.nan)), ValueError, r"X, W or b contains NaN or infinity"),
    ("W-inf", dict(W=_with(W0, (2, 0), np.inf)), ValueError, r"X, W or b contains NaN or infinity"),
    ("b-nan", dict(b=_with(b0, 1, np.nan)), ValueError, r"X, W or b contains NaN or infinity"),
    ("b-inf", dict(b=_with(b0, 0, np.inf)), ValueError, r"X, W or b contains NaN or infinity"),
    ("overflow", dict(X=np.full((5, 3), 1e200), W=np.full((3, 2), 1e200)), ValueError, r"overflowed"),
]


@MODULES
@pytest.mark.filterwarnings("ignore:.*encountered in dot:RuntimeWarning")
@pytest.mark.parametrize("activation", ["identity", "relu"])
@pytest.mark.parametrize("kwargs, exc, match", [c[1:] for c in FORWARD_BAD], ids=[c[0] for c in FORWARD_BAD])
def test_affine_forward_rejects_bad_input(mod, activation, kwargs, exc, match):
    args = dict(X=X0, W=W0, b=b0, activation=activation, out=None)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        mod.affine_forward(**args)


@MODULES
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("activation", ALL_ACTS)
def test_affine_forward_nan_is_caught_whatever_the_activation(mod, activation):
    # ReLU would turn a NaN pre-activation into 0 and softmax would spread it: checked before the activation.
    with pytest.raises(ValueError, match="NaN"):
        mod.affine_forward(_with(X0, (4, 2), np.nan), W0, b0, activation)
    with pytest.raises(ValueError, match="NaN"):
        mod.affine_forward(X0, W0, _with(b0, 0, -np.inf), activation)
    # float32 overflow of X @ W
    with pytest.raises(ValueError, match="NaN"):
        mod.affine_forward(np.full((2, 2), 1e30, np.float32), np.full((2, 2), 1e30, np.float32),
                           np.zeros(2, np.float32), activation)


BACKWARD_ACT_BAD = [
    ("softmax", dict(activation="softmax"), ValueError,
     r"activation must be one of \('identity', 'relu', 'logistic', 'tanh'\), got 'softmax'"),
    ("exp", dict(activation="exp"), ValueError, r"activation must be one of .*got 'exp'"),
    ("unknown", dict(activation="ReLU"), ValueError, r"activation must be one of .*got 'ReLU'"),
    ("dZ-shape", dict(dZ=np.ones((5, 3))), ValueError, r"dZ has shape \(5, 3\): expected \(5, 2\)"),
    ("dZ-dtype", dict(dZ=np.ones((5, 2), np.float32)), ValueError, r"dZ has dtype float32: expected float64"),
    ("dZ-non-contiguous", dict(dZ=np.ones((2, 5)).T), ValueError, r"dZ must be C-contiguous"),
    ("dZ-read-only", dict(dZ=_read_only((5, 2))), ValueError, r"dZ is read-only"),
    ("dZ-None", dict(dZ=None), TypeError, r"dZ must be a numpy array, got NoneType"),
    ("Z-1d", dict(Z=np.ones(2)), ValueError, r"Z must be 2-D"),
    ("Z-zero-rows", dict(Z=np.ones((0, 2)), dZ=np.ones((0, 2))), ValueError, r"Z has shape \(0, 2\)"),
    ("Z-object", dict(Z=dY0.astype(object)), TypeError, r"Z must be a numeric array, got dtype object"),
    ("Z-nan", dict(Z=_with(dY0, (1, 1), np.nan)), ValueError, r"Z or dZ contains NaN or infinity"),
    ("dZ-nan", dict(dZ=_with(dY0, (3, 0), np.nan)), ValueError, r"Z or dZ contains NaN or infinity"),
    ("dZ-inf", dict(dZ=_with(dY0, (0, 1), np.inf)), ValueError, r"Z or dZ contains NaN or infinity"),
]


@MODULES
@pytest.mark.parametrize("kwargs, exc, match", [c[1:] for c in BACKWARD_ACT_BAD], ids=[c[0] for c in BACKWARD_ACT_BAD])
def test_activation_backward_rejects_bad_input(mod, kwargs, exc, match):
    args = dict(Z=np.abs(dY0), dZ=dY0.copy(), activation="relu")
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        mod.activation_backward(**args)


AFFINE_BACKWARD_BAD = [
    ("dY-rows", dict(dY=np.ones((4, 2))), ValueError, r"dY has shape \(4, 2\): expected 5 rows to match X\.shape\[0\]"),
    ("dY-columns", dict(dY=np.ones((5, 3))), ValueError,
     r"dY has 3 columns but W has 2: expected dY of shape \(5, 2\)"),
    ("dY-1d", dict(dY=np.ones(5)), ValueError, r"dY must be 2-D"),
    ("W-rows", dict(W=np.ones((2, 2))), ValueError, r"W has shape \(2, 2\): expected 3 rows to match X\.shape\[1\]"),
    ("X-3d", dict(X=np.ones((5, 3, 1))), ValueError, r"X must be 2-D"),
    ("X-zero-rows", dict(X=np.ones((0, 3))), ValueError, r"X has shape \(0, 3\)"),
    ("X-string", dict(X=np.full((5, 3), "x")), TypeError, r"X must be a numeric array"),
    ("dY-object", dict(dY=dY0.astype(object)), TypeError, r"dY must be a numeric array, got dtype object"),
    ("dX-shape", dict(dX=np.empty((5, 2))), ValueError, r"dX has shape \(5, 2\): expected \(5, 3\)"),
    ("dW-shape", dict(dW=np.empty((2, 3))), ValueError, r"dW has shape \(2, 3\): expected \(3, 2\)"),
    ("db-shape", dict(db=np.empty(3)), ValueError, r"db has shape \(3,\): expected \(2,\)"),
    ("dW-dtype", dict(dW=np.empty((3, 2), np.float32)), ValueError, r"dW has dtype float32: expected float64"),
    ("dX-dtype", dict(dX=np.empty((5, 3), np.float32)), ValueError, r"dX has dtype float32: expected float64"),
    ("dW-non-contiguous", dict(dW=np.empty((2, 3)).T), ValueError, r"dW must be C-contiguous"),
    ("dX-read-only", dict(dX=_read_only((5, 3))), ValueError, r"dX is read-only"),
    ("db-None", dict(db=None), TypeError, r"db must be a numpy array, got NoneType"),
    ("X-nan", dict(X=_with(X0, (1, 2), np.nan)), ValueError, r"contains NaN or infinity"),
    ("X-inf", dict(X=_with(X0, (4, 0), np.inf)), ValueError, r"contains NaN or infinity"),
    ("W-nan", dict(W=_with(W0, (0, 1), np.nan)), ValueError, r"contains NaN or infinity"),
    ("dY-nan", dict(dY=_with(dY0, (2, 0), np.nan)), ValueError, r"contains NaN or infinity"),
    ("dY-inf", dict(dY=_with(dY0, (3, 1), -np.inf)), ValueError, r"contains NaN or infinity"),
]


@MODULES
@pytest.mark.filterwarnings("ignore:.*encountered in dot:RuntimeWarning")
@pytest.mark.parametrize("kwargs, exc, match", [c[1:] for c in AFFINE_BACKWARD_BAD],
                         ids=[c[0] for c in AFFINE_BACKWARD_BAD])
def test_affine_backward_rejects_bad_input(mod, kwargs, exc, match):
    dX, dW, db = BUF()
    args = dict(X=X0, W=W0, dY=dY0, dX=dX, dW=dW, db=db)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        mod.affine_backward(**args)


@MODULES
@pytest.mark.filterwarnings("ignore:.*encountered in dot:RuntimeWarning")
def test_affine_backward_without_dx_still_catches_nan_in_x_and_dy(mod):
    for kwargs in (dict(X=_with(X0, (0, 0), np.nan)), dict(dY=_with(dY0, (4, 1), np.inf))):
        args = dict(X=X0, W=W0, dY=dY0, dX=None, dW=np.empty((3, 2)), db=np.empty(2))
        args.update(kwargs)
        with pytest.raises(ValueError, match="NaN"):
            mod.affine_backward(**args)


OUTPUT_BAD = [
    ("activation", "output_activation", dict(out_activation="relu"), ValueError,
     r"out_activation must be one of \('identity', 'logistic', 'softmax', 'exp'\), got 'relu'"),
    ("Z-int", "output_activation", dict(Z=np.ones((2, 2), np.int64)), ValueError,
     r"Z has dtype int64: expected float32 or float64"),
    ("Z-1d", "output_activation", dict(Z=np.ones(3)), ValueError,
     r"Z must be 2-D with at least one row and column, got shape \(3,\)"),
    ("Z-non-contiguous", "output_activation", dict(Z=np.ones((3, 2)).T), ValueError, r"Z must be C-contiguous"),
    ("Z-read-only", "output_activation", dict(Z=_read_only((2, 2))), ValueError, r"Z is read-only"),
    ("Z-list", "output_activation", dict(Z=[[1.0]]), TypeError, r"Z must be a numpy array, got list"),
    ("loss-activation", "output_loss", dict(out_activation="tanh"), ValueError,
     r"out_activation must be one of .*got 'tanh'"),
    ("loss-Y-shape", "output_loss", dict(Y=np.ones((5, 3))), ValueError,
     r"Y has shape \(5, 3\) but out has shape \(5, 2\): expected the same shape"),
    ("loss-out-1d", "output_loss", dict(out=np.ones(5)), ValueError, r"out must be 2-D"),
    ("loss-out-object", "output_loss", dict(out=np.full((5, 2), 0.5, object)), TypeError,
     r"out must be a numeric array, got dtype object"),
    ("loss-Y-string", "output_loss", dict(Y=np.full((5, 2), "1")), TypeError, r"Y must be a numeric array"),
    ("loss-out-nan", "output_loss", dict(out=_with(np.full((5, 2), 0.5), (1, 1), np.nan)), ValueError,
     r"out or Y contains NaN or infinity"),
    ("loss-Y-inf", "output_loss", dict(Y=_with(np.zeros((5, 2)), (0, 0), np.inf)), ValueError,
     r"out or Y contains NaN or infinity"),
    ("loss-sw-length", "output_loss", dict(sample_weight=np.ones(4)), ValueError,
     r"sample_weight has shape \(4,\): expected \(5,\) to match out\.shape\[0\]"),
    ("loss-sw-2d", "output_loss", dict(sample_weight=np.ones((5, 1))), ValueError, r"sample_weight must be 1-D"),
    ("delta-Y-shape", "output_delta", dict(Y=np.ones((4, 2))), ValueError,
     r"Y has shape \(4, 2\) but out has shape \(5, 2\): expected the same shape"),
    ("delta-out-nan", "output_delta", dict(out=_with(np.full((5, 2), 0.5), (4, 0), np.nan)), ValueError,
     r"out or Y contains NaN or infinity"),
    ("delta-buffer-shape", "output_delta", dict(delta=np.empty((2, 5))), ValueError,
     r"delta has shape \(2, 5\): expected \(5, 2\)"),
    ("delta-buffer-dtype", "output_delta", dict(delta=np.empty((5, 2), np.float32)), ValueError,
     r"delta has dtype float32: expected float64"),
    ("delta-buffer-read-only", "output_delta", dict(delta=_read_only((5, 2))), ValueError, r"delta is read-only"),
    ("delta-sw-length", "output_delta", dict(sample_weight=np.ones(6)), ValueError,
     r"sample_weight has shape \(6,\): expected \(5,\)"),
    ("Z-no-columns", "output_activation", dict(Z=np.empty((3, 0))), ValueError,
     r"Z must be 2-D with at least one row and column, got shape \(3, 0\)"),
    ("Z-nan", "output_activation", dict(Z=_with(np.zeros((2, 2)), (0, 1), np.nan)), ValueError,
     r"Z contains NaN or infinity"),
    ("loss-sw-nan", "output_loss", dict(sample_weight=[1, np.nan, 1, 1, 1]), ValueError,
     r"sample_weight contains NaN or infinity"),
    ("loss-sw-zero-sum", "output_loss", dict(sample_weight=np.zeros(5)), ValueError,
     r"sample_weight must be non-negative with a positive sum"),
    ("loss-sw-negative", "output_loss", dict(sample_weight=[1, -1, 0, 1, 1]), ValueError,
     r"sample_weight must be non-negative"),
    ("delta-sw-inf", "output_delta", dict(sample_weight=[1, np.inf, 1, 1, 1]), ValueError,
     r"sample_weight contains NaN or infinity"),
]


@MODULES
@pytest.mark.parametrize("func, kwargs, exc, match", [c[1:] for c in OUTPUT_BAD], ids=[c[0] for c in OUTPUT_BAD])
def test_output_functions_reject_bad_input(mod, func, kwargs, exc, match):
    base = {
        "output_activation": dict(Z=np.zeros((2, 2)), out_activation="softmax"),
        "output_loss": dict(out=np.full((5, 2), 0.5), Y=np.eye(2)[[0, 1, 0, 1, 1]], out_activation="softmax"),
        "output_delta": dict(out=np.full((5, 2), 0.5), Y=np.eye(2)[[0, 1, 0, 1, 1]]),
    }[func]
    args = dict(base, **kwargs)
    with pytest.raises(exc, match=match):
        getattr(mod, func)(**args)


@pytest.mark.parametrize("dtype", DTYPES)
def test_failed_calls_leave_the_inputs_alone(dtype):
    X = _with(X0, (1, 1), np.nan).astype(dtype)
    W, b = W0.astype(dtype), b0.astype(dtype)
    before = snapshot(X, W, b)
    with pytest.raises(ValueError, match="NaN"):
        K.affine_forward(X, W, b, "relu")
    assert_unchanged(before, X, W, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_loss_returns_a_python_float_like_its_twin(dtype):
    out = np.full((3, 2), 0.5, dtype)
    Y = np.eye(2, dtype=dtype)[[0, 1, 0]]
    fast = K.output_loss(out, Y, "softmax")
    slow = R.output_loss(out, Y, "softmax")
    assert type(fast) is float and type(slow) is float
    assert fast == pytest.approx(np.log(2), rel=1e-12 if dtype == np.float64 else 1e-6)


def test_float32_softmax_exp_is_accurate_and_safe():
    """The vectorizable exp behind the float32 softmax: relative error < 1e-6 on [-87, 0], tiny below, no
    out-of-table read for any input."""
    from fastbp.kernels import _exp_nonpositive

    grid = np.linspace(-87, 0, 20001).astype(np.float32)
    got = np.array([_exp_nonpositive(x) for x in grid], dtype=np.float64)
    want = np.exp(grid.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 1e-6
    assert 0 <= _exp_nonpositive(np.float32(-1e4)) < 2e-38
    for odd in (np.nan, -np.inf, np.inf):
        _exp_nonpositive(np.float32(odd))  # must return (any value), never read outside its table


@MODULES
@pytest.mark.parametrize("dtype", DTYPES)
def test_output_buffers_may_not_overlap_inputs(mod, dtype):
    """BLAS reads its operands while writing the product: an aliased buffer would give a wrong result silently."""
    X = np.ones((4, 4), dtype)
    W = np.ones((4, 4), dtype)
    b = np.zeros(4, dtype)
    with pytest.raises(ValueError, match="out overlaps X"):
        mod.affine_forward(X, W, b, "relu", out=X)
    dY, dW, db = np.ones((4, 4), dtype), np.empty((4, 4), dtype), np.empty(4, dtype)
    with pytest.raises(ValueError, match="dX overlaps dY"):
        mod.affine_backward(X, W, dY, dY, dW, db)
    with pytest.raises(ValueError, match="dW overlaps X"):
        mod.affine_backward(X, W, dY, None, X, db)


@MODULES
def test_exp_output_overflow_is_an_error(mod):
    X = np.full((2, 2), 60.0, np.float32)
    with pytest.raises(ValueError, match="overflowed"):
        mod.affine_forward(X, np.ones((2, 2), np.float32), np.zeros(2, np.float32), "exp")

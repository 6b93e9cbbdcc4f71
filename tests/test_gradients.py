"""fastbp.gradients against central finite differences and an independent numpy forward pass."""

import numpy as np
import pytest

from fastbp import gradients

HIDDEN = ["identity", "relu", "logistic", "tanh"]
OUTPUTS = ["softmax", "logistic", "identity", "exp"]

H = 1e-6  # central-difference step; truncation O(H^2) ~ 1e-12, rounding ~ 1e-16 / H ~ 1e-10
FD_RTOL = 1e-6  # ||numeric - analytic|| / max(||numeric||, TINY) per parameter array
TINY = 1e-12
LOSS_RTOL = 1e-10  # library vs numpy loss in float64: same formula, different summation order
# float32 vs float64 gradients: a few layers of float32 rounding (eps = 1.2e-7) on O(1) values.
F32 = dict(rtol=1e-4, atol=1e-5)
KINK = 1e-4  # no ReLU pre-activation this close to 0 (H moves them by at most ~1e-5)

N_FEATURES, N_SAMPLES = 3, 6
N_OUT = {"softmax": 3, "logistic": 3, "identity": 2, "exp": 3}


# ----------------------------------------------------------------------------- independent numpy model


def act(name, Z):
    if name == "relu":
        return np.maximum(Z, 0)
    if name == "logistic":
        return 1 / (1 + np.exp(-Z))
    if name == "tanh":
        return np.tanh(Z)
    if name == "exp":
        return np.exp(Z)
    if name == "softmax":
        e = np.exp(Z - Z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    assert name == "identity"
    return Z


def numpy_forward(coefs, intercepts, X, activation, out_activation):
    """(output, list of hidden pre-activations)."""
    A, pre = X, []
    for i, (W, b) in enumerate(zip(coefs, intercepts)):
        Z = A @ W + b
        if i < len(coefs) - 1:
            pre.append(Z)
            A = act(activation, Z)
        else:
            A = act(out_activation, Z)
    return A, pre


def numpy_loss(coefs, intercepts, X, Y, activation, out_activation, alpha=0.0, sample_weight=None):
    """The documented loss, written out from its definition."""
    P, _ = numpy_forward(coefs, intercepts, X, activation, out_activation)
    if out_activation == "softmax":
        per_row = -(Y * np.log(P)).sum(axis=1)
    elif out_activation == "logistic":
        per_row = -(Y * np.log(P) + (1 - Y) * np.log(1 - P)).sum(axis=1)
    elif out_activation == "identity":
        per_row = 0.5 * ((Y - P) ** 2).sum(axis=1)
    else:  # exp: y log(y / p) - y + p, with y log(y / p) = 0 where y = 0
        safe_y = np.where(Y > 0, Y, 1.0)
        per_row = (np.where(Y > 0, Y * np.log(safe_y / P), 0.0) - Y + P).sum(axis=1)
    w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, float)
    penalty = 0.5 * alpha * sum((W ** 2).sum() for W in coefs)
    # Without weights w.sum() is n_samples; with them the L2 term is divided by the weight total too
    # (as scikit-learn's MLP does with sample_weight).
    return (w @ per_row + penalty) / w.sum()


# ----------------------------------------------------------------------------- problems


def targets(rng, out_activation, n, m):
    if out_activation == "softmax":
        return np.eye(m)[rng.integers(0, m, n)]
    if out_activation == "logistic":
        return rng.integers(0, 2, (n, m)).astype(float)
    if out_activation == "exp":
        return rng.poisson(1.5, (n, m)).astype(float)  # Poisson-like counts, zeros included
    return rng.normal(size=(n, m))


def problem(activation, out_activation, n_hidden_layers, weighted, seed=0):
    """Random weights, data and targets; for ReLU the seed is advanced until no pre-activation is near a kink."""
    widths = [N_FEATURES] + [4, 3, 4][:n_hidden_layers] + [N_OUT[out_activation]]
    for s in range(seed, seed + 200):
        rng = np.random.default_rng(s)
        coefs = [rng.uniform(-1, 1, (a, b)) for a, b in zip(widths[:-1], widths[1:])]
        intercepts = [rng.uniform(-0.5, 0.5, b) for b in widths[1:]]
        X = rng.normal(size=(N_SAMPLES, N_FEATURES))
        Y = targets(rng, out_activation, N_SAMPLES, widths[-1])
        sw = rng.uniform(0.2, 2.0, N_SAMPLES) if weighted else None
        _, pre = numpy_forward(coefs, intercepts, X, activation, out_activation)
        if activation != "relu" or min(np.abs(Z).min() for Z in pre) > KINK:
            break
    _, pre = numpy_forward(coefs, intercepts, X, activation, out_activation)
    if activation == "relu":
        assert min(np.abs(Z).min() for Z in pre) > KINK, "no kink-free seed found"
        # and not all dead: every hidden layer passes gradient for some sample
        assert all((Z > 0).any() for Z in pre)
    return coefs, intercepts, X, Y, sw


def numerical(coefs, intercepts, X, Y, activation, out_activation, alpha, sw):
    """Central differences of the loss fastbp reports, per parameter array."""
    params = [c.copy() for c in coefs] + [b.copy() for b in intercepts]
    n = len(coefs)

    def loss():
        return gradients(params[:n], params[n:], X, Y, activation, out_activation, alpha, sw)[0]

    grads = []
    for p in params:
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            orig = p[idx]
            p[idx] = orig + H
            up = loss()
            p[idx] = orig - H
            down = loss()
            p[idx] = orig
            g[idx] = (up - down) / (2 * H)
        grads.append(g)
    return grads[:n], grads[n:]


def rel_err(num, ana):
    return np.linalg.norm(num - ana) / max(np.linalg.norm(num), TINY)


# ----------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
@pytest.mark.parametrize("n_hidden_layers", [1, 3])
@pytest.mark.parametrize("out_activation", OUTPUTS)
@pytest.mark.parametrize("activation", HIDDEN)
def test_gradients_match_finite_differences(activation, out_activation, n_hidden_layers, alpha, weighted):
    coefs, intercepts, X, Y, sw = problem(activation, out_activation, n_hidden_layers, weighted)
    before = [a.copy() for a in coefs + intercepts + [X, Y]]
    loss, coef_grads, intercept_grads = gradients(coefs, intercepts, X, Y, activation, out_activation, alpha, sw)
    for a, b in zip(coefs + intercepts + [X, Y], before):
        np.testing.assert_array_equal(a, b)  # inputs left alone

    assert isinstance(loss, float)
    want = numpy_loss(coefs, intercepts, X, Y, activation, out_activation, alpha, sw)
    np.testing.assert_allclose(loss, want, rtol=LOSS_RTOL, atol=0)

    assert len(coef_grads) == len(coefs) and len(intercept_grads) == len(intercepts)
    num_c, num_i = numerical(coefs, intercepts, X, Y, activation, out_activation, alpha, sw)
    for name, num, ana, ref in ([(f"coefs[{i}]", n, a, c) for i, (n, a, c) in enumerate(zip(num_c, coef_grads, coefs))]
                                + [(f"intercepts[{i}]", n, a, b)
                                   for i, (n, a, b) in enumerate(zip(num_i, intercept_grads, intercepts))]):
        assert ana.shape == ref.shape and ana.dtype == np.float64, name
        assert np.linalg.norm(num) > 1e-4, f"{name}: degenerate problem, gradient ~ 0"
        err = rel_err(num, ana)
        assert err < FD_RTOL, f"{name}: relative error {err:.2e}"


# ----------------------------------------------------------------------------- float32, weights, loss


@pytest.mark.parametrize("out_activation", OUTPUTS)
@pytest.mark.parametrize("activation", HIDDEN)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_float32_gradients_agree_with_float64(activation, out_activation, weighted):
    coefs, intercepts, X, Y, sw = problem(activation, out_activation, 3, weighted, seed=10)
    # Round the problem to float32 first, so both runs see exactly the same numbers.
    c32 = [c.astype(np.float32) for c in coefs]
    i32 = [b.astype(np.float32) for b in intercepts]
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    sw32 = None if sw is None else sw.astype(np.float32)
    loss32, gc32, gi32 = gradients(c32, i32, X32, Y32, activation, out_activation, 0.1, sw32)
    loss64, gc64, gi64 = gradients([c.astype(np.float64) for c in c32], [b.astype(np.float64) for b in i32],
                                   X32.astype(np.float64), Y32.astype(np.float64), activation, out_activation, 0.1,
                                   None if sw32 is None else sw32.astype(np.float64))
    np.testing.assert_allclose(loss32, loss64, rtol=F32["rtol"])
    for g32, g64 in zip(gc32 + gi32, gc64 + gi64):
        assert g32.dtype == np.float32 and g64.dtype == np.float64
        np.testing.assert_allclose(g32, g64, **F32)


@pytest.mark.parametrize("alpha", [0.0, 0.3])
@pytest.mark.parametrize("out_activation", OUTPUTS)
def test_integer_sample_weights_equal_repeated_rows(out_activation, alpha):
    coefs, intercepts, X, Y, _ = problem("tanh", out_activation, 1, False, seed=3)
    counts = np.array([1, 3, 2, 1, 4, 2])
    weighted = gradients(coefs, intercepts, X, Y, "tanh", out_activation, alpha, counts)
    repeated = gradients(coefs, intercepts, np.repeat(X, counts, axis=0), np.repeat(Y, counts, axis=0), "tanh",
                         out_activation, alpha)
    np.testing.assert_allclose(weighted[0], repeated[0], rtol=1e-12)
    for a, b in zip(weighted[1] + weighted[2], repeated[1] + repeated[2]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    # and unit weights are no weights
    ones = gradients(coefs, intercepts, X, Y, "tanh", out_activation, alpha, np.ones(N_SAMPLES))
    plain = gradients(coefs, intercepts, X, Y, "tanh", out_activation, alpha)
    np.testing.assert_allclose(ones[0], plain[0], rtol=1e-14)
    for a, b in zip(ones[1] + ones[2], plain[1] + plain[2]):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def test_loss_by_hand():
    # One layer, identity output: out = X @ W + b.
    X = np.array([[1.0, 2.0], [0.0, -1.0]])
    W = np.array([[0.5], [1.0]])
    b = np.array([0.25])
    Y = np.array([[3.0], [0.0]])
    # residuals: 2.75 - 3 = -0.25, -0.75 - 0 = -0.75
    loss, (gW,), (gb,) = gradients([W], [b], X, Y, "relu", "identity", alpha=0.0)
    assert loss == pytest.approx(0.5 * (0.25 ** 2 + 0.75 ** 2) / 2, rel=1e-15)
    np.testing.assert_allclose(gW, (X.T @ np.array([[-0.25], [-0.75]])) / 2, rtol=1e-15)
    np.testing.assert_allclose(gb, [(-0.25 - 0.75) / 2], rtol=1e-15)
    # L2: + 0.5 * alpha * ||W||^2 / n on the loss, alpha * W / n on the coefficient gradient only.
    loss2, (gW2,), (gb2,) = gradients([W], [b], X, Y, "relu", "identity", alpha=2.0)
    assert loss2 == pytest.approx(loss + 0.5 * 2.0 * 1.25 / 2, rel=1e-15)
    np.testing.assert_allclose(gW2, gW + 2.0 * W / 2, rtol=1e-15)
    np.testing.assert_allclose(gb2, gb, rtol=1e-15)


# ----------------------------------------------------------------------------- bad input


def _valid():
    rng = np.random.default_rng(7)
    coefs = [rng.normal(size=(3, 5)), rng.normal(size=(5, 2))]
    intercepts = [rng.normal(size=5), rng.normal(size=2)]
    X = rng.normal(size=(6, 3))
    Y = np.eye(2)[rng.integers(0, 2, 6)]
    return coefs, intercepts, X, Y


def _nan_at(a, idx):
    a = a.copy()
    a[idx] = np.nan
    return a


C, ICPT, X_, Y_ = _valid()
BAD = [
    ("chain", dict(coefs=[C[0], np.ones((4, 2))]), ValueError,
     r"coefs\[1\] has shape \(4, 2\): expected 5 rows to chain with coefs\[0\] of shape \(3, 5\)"),
    ("intercept-length", dict(intercepts=[np.ones(4), ICPT[1]]), ValueError,
     r"intercepts\[0\] has shape \(4,\): expected \(5,\) to match coefs\[0\]\.shape\[1\]"),
    ("intercept-2d", dict(intercepts=[ICPT[0], np.ones((1, 2))]), ValueError, r"intercepts\[1\] must be 1-D"),
    ("X-columns", dict(X=np.ones((6, 4))), ValueError,
     r"X has shape \(6, 4\): expected 3 columns to match coefs\[0\] of shape \(3, 5\)"),
    ("X-1d", dict(X=np.ones(3)), ValueError, r"X must be 2-D"),
    ("Y-rows", dict(Y=np.ones((5, 2))), ValueError, r"Y has shape \(5, 2\): expected 6 rows to match X\.shape\[0\]"),
    ("Y-columns", dict(Y=np.ones((6, 3))), ValueError,
     r"Y has shape \(6, 3\): expected 2 columns to match coefs\[-1\] of shape \(5, 2\)"),
    ("Y-1d", dict(Y=np.ones(6)), ValueError, r"Y must be 2-D"),
    ("count-mismatch", dict(intercepts=[ICPT[0]]), ValueError,
     r"got 2 coefs but 1 intercepts: expected one of each per layer"),
    ("X-nan", dict(X=_nan_at(X_, (2, 1))), ValueError, r"X contains NaN or infinity"),
    ("X-inf", dict(X=np.full((6, 3), np.inf)), ValueError, r"X contains NaN or infinity"),
    ("Y-nan", dict(Y=_nan_at(Y_, (0, 0))), ValueError, r"Y contains NaN or infinity"),
    ("coef-nan", dict(coefs=[C[0], _nan_at(C[1], (4, 1))]), ValueError, r"coefs/intercepts contains NaN or infinity"),
    ("intercept-nan", dict(intercepts=[_nan_at(ICPT[0], 0), ICPT[1]]), ValueError,
     r"coefs/intercepts contains NaN or infinity"),
    ("sw-nan", dict(sample_weight=_nan_at(np.ones(6), 3)), ValueError, r"sample_weight contains NaN or infinity"),
    ("sw-length", dict(sample_weight=np.ones(5)), ValueError,
     r"sample_weight has shape \(5,\): expected \(6,\) to match X\.shape\[0\]"),
    ("alpha-negative", dict(alpha=-0.1), ValueError, r"alpha must be >= 0, got -0\.1"),
    ("alpha-nan", dict(alpha=float("nan")), ValueError, r"alpha must be >= 0, got nan"),
    ("coefs-array", dict(coefs=np.ones((2, 3, 3))), TypeError,
     r"coefs and intercepts must be non-empty lists of arrays \(one per layer\)"),
    ("coefs-single-array", dict(coefs=C[0], intercepts=ICPT[0]), TypeError,
     r"coefs and intercepts must be non-empty lists"),
    ("intercepts-dict", dict(intercepts={0: ICPT[0], 1: ICPT[1]}), TypeError,
     r"coefs and intercepts must be non-empty lists"),
    ("empty", dict(coefs=[], intercepts=[]), TypeError, r"coefs and intercepts must be non-empty lists"),
    ("coef-string", dict(coefs=[np.full((3, 5), "a"), C[1]]), TypeError, r"coefs\[0\] must be a numeric array"),
    ("X-object", dict(X=X_.astype(object)), TypeError, r"X must be a numeric array, got dtype object"),
    ("X-zero-rows", dict(X=np.ones((0, 3)), Y=np.ones((0, 2))), ValueError, r"X has shape \(0, 3\)"),
    ("activation", dict(activation="softmax"), ValueError,
     r"activation must be one of \('identity', 'relu', 'logistic', 'tanh'\), got 'softmax'"),
    ("out-activation", dict(out_activation="relu"), ValueError,
     r"out_activation must be one of \('identity', 'logistic', 'softmax', 'exp'\), got 'relu'"),
]


@pytest.mark.parametrize("kwargs, exc, match", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_gradients_rejects_bad_input(kwargs, exc, match):
    coefs, intercepts, X, Y = _valid()
    args = dict(coefs=coefs, intercepts=intercepts, X=X, Y=Y, activation="tanh", out_activation="softmax", alpha=0.1)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        gradients(**args)


def test_valid_base_case_is_accepted():
    """The bad cases above differ from this call in one argument only."""
    coefs, intercepts, X, Y = _valid()
    loss, gc, gi = gradients(coefs, intercepts, X, Y, "tanh", "softmax", 0.1)
    assert np.isfinite(loss) and [g.shape for g in gc] == [(3, 5), (5, 2)] and [g.shape for g in gi] == [(5,), (2,)]

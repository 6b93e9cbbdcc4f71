"""Reliability of the estimators: divergence, threads, reproducibility, bad and awkward inputs."""

import threading
import time
import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError

from fastbp import MLPClassifier, MLPRegressor, TrainingDivergedWarning

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

X, Y = make_classification(200, n_features=10, n_informative=5, n_classes=3, random_state=0)
Y_REG = X[:, 0] - 2 * X[:, 1] + 0.5 * X[:, 2] ** 2


def _weights(model):
    return [np.array(a) for a in list(model.coefs_) + list(model.intercepts_)]


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    return len(wa) == len(wb) and all(u.dtype == v.dtype and np.array_equal(u, v) for u, v in zip(wa, wb))


def _all_finite(model):
    return all(np.isfinite(w).all() for w in _weights(model))


# ----------------------------------------------------------------------------- divergence

# (estimator, solver, dtype of the data, learning rate): each diverges on data scaled by 1e3 within a few
# epochs.  Adam's steps are bounded by its learning rate, so it needs a far larger one to overflow.
# The float32 regressor rows diverge in the last batch of an epoch: the end-of-epoch check must catch them.
DIVERGING = [
    ("classifier", "sgd", np.float64, 1e6),
    ("classifier", "sgd", np.float64, 1e10),
    ("classifier", "adam", np.float32, 1e30),
    ("regressor", "sgd", np.float64, 1e6),
    ("regressor", "adam", np.float64, 1e100),
    ("regressor", "sgd", np.float32, 1e6),
    ("regressor", "adam", np.float32, 1e6),
]


def _diverging_model(kind, solver, lr, **kwargs):
    cls = MLPClassifier if kind == "classifier" else MLPRegressor
    return cls(hidden_layer_sizes=(8,), solver=solver, learning_rate_init=lr, max_iter=50, tol=0.0,
               n_iter_no_change=1000, random_state=0, **kwargs)


@pytest.mark.parametrize("kind, solver, dtype, lr", DIVERGING)
def test_divergence_warns_and_restores_finite_weights(kind, solver, dtype, lr):
    model = _diverging_model(kind, solver, lr)
    Xs = (X * 1e3).astype(dtype)
    y = Y if kind == "classifier" else Y_REG
    message = rf"diverged.*learning_rate_init \(now {lr:g}\)".replace("+", r"\+")
    with pytest.warns(TrainingDivergedWarning, match=message):
        model.fit(Xs, y)
    assert _all_finite(model)
    assert all(np.isfinite(model.loss_curve_))
    assert len(model.loss_curve_) == model.n_iter_ >= 1


def test_divergence_in_partial_fit_restores_finite_weights():
    model = _diverging_model("classifier", "sgd", 1e10)
    Xs = X * 1e3
    with pytest.warns(TrainingDivergedWarning, match="learning_rate_init"):
        for _ in range(50):
            model.partial_fit(Xs, Y, classes=np.unique(Y))
    assert _all_finite(model)
    assert all(np.isfinite(model.loss_curve_))


# ----------------------------------------------------------------------------- threads

RNG = np.random.default_rng(0)
X_BIG = RNG.standard_normal((4000, 64))
Y_BIG = (X_BIG[:, :3].sum(axis=1) > 0).astype(int) + (X_BIG[:, 3] > 1)


def _run_in_threads(*jobs):
    """Run the callables at the same moment in threads; ``(results, [(start, end), ...])``."""
    barrier = threading.Barrier(len(jobs))
    results, spans, errors = [None] * len(jobs), [None] * len(jobs), []

    def run(i, job):
        try:
            barrier.wait()
            start = time.perf_counter()
            results[i] = job()
            spans[i] = (start, time.perf_counter())
        except BaseException as exc:  # surfaced below: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results, spans


def _overlap(spans):
    return max(s for s, _ in spans) < min(e for _, e in spans)


THREAD_MODELS = [
    lambda: MLPClassifier((64,), solver="sgd", max_iter=5, batch_size=32, random_state=0, tol=0.0),
    lambda: MLPClassifier((64,), solver="adam", max_iter=5, batch_size=32, random_state=1, tol=0.0),
    lambda: MLPRegressor(hidden_layer_sizes=(64,), solver="adam", max_iter=5, batch_size=32, random_state=2, tol=0.0),
    # row chunks on Numba's threads in both fits at once
    lambda: MLPClassifier((64,), solver="adam", max_iter=5, batch_size=400, random_state=3, tol=0.0),
]


def _target(model):
    return Y_BIG if isinstance(model, MLPClassifier) else X_BIG[:, 0] * X_BIG[:, 1]


@pytest.mark.parametrize("pair", [(0, 1), (1, 2), (0, 0), (3, 3), (0, 3)],
                         ids=["sgd+adam", "clf+reg", "same-config", "chunked", "chunked+plain"])
def test_concurrent_fits_match_sequential_fits(pair):
    sequential = [THREAD_MODELS[i]() for i in pair]
    for model in sequential:
        model.fit(X_BIG, _target(model))
    concurrent = [THREAD_MODELS[i]() for i in pair]
    overlapped = False
    for _ in range(3):  # a fit is tens of milliseconds: retry until the two really ran at once
        _, spans = _run_in_threads(*[lambda m=m: m.fit(X_BIG, _target(m)) for m in concurrent])
        for model, reference in zip(concurrent, sequential):
            assert _same_weights(model, reference)
            assert model.loss_curve_ == reference.loss_curve_
        overlapped = overlapped or _overlap(spans)
        if overlapped:
            break
    assert overlapped, "the two fits never overlapped in time"


def test_concurrent_predicts_of_two_models_match_sequential():
    models = [THREAD_MODELS[0]().fit(X_BIG, Y_BIG), THREAD_MODELS[2]().fit(X_BIG, _target(THREAD_MODELS[2]()))]
    A = RNG.standard_normal((20000, 64))
    B = 3 * RNG.standard_normal((20000, 64))
    expected = [models[0].predict_proba(A), models[1].predict(B)]
    for _ in range(5):
        (pa, pb), _ = _run_in_threads(lambda: models[0].predict_proba(A), lambda: models[1].predict(B))
        assert np.array_equal(pa, expected[0]) and np.array_equal(pb, expected[1])


def test_concurrent_predicts_on_one_model_match_sequential():
    model = THREAD_MODELS[0]().fit(X_BIG, Y_BIG)
    A = RNG.standard_normal((20000, 64))
    B = 3 * RNG.standard_normal((20000, 64))
    expected_a, expected_b = model.predict_proba(A), model.predict_proba(B)
    for _ in range(10):
        (pa, pb), _ = _run_in_threads(lambda: model.predict_proba(A), lambda: model.predict_proba(B))
        assert np.array_equal(pa, expected_a) and np.array_equal(pb, expected_b)


# ----------------------------------------------------------------------------- reproducibility

@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_same_random_state_same_weights(solver, kind):
    cls, y = (MLPClassifier, Y) if kind == "classifier" else (MLPRegressor, Y_REG)

    def make(seed):
        return cls(hidden_layer_sizes=(8,), solver=solver, max_iter=5, random_state=seed)

    a, b, c = make(0).fit(X, y), make(0).fit(X, y), make(1).fit(X, y)
    assert _same_weights(a, b)
    assert np.array_equal(a.predict(X), b.predict(X))
    assert not any(np.array_equal(u, v) for u, v in zip(_weights(a), _weights(c)))
    d, e = make(np.random.RandomState(3)).fit(X, y), make(np.random.RandomState(3)).fit(X, y)
    assert _same_weights(d, e)


def test_refit_is_reproducible():
    model = MLPClassifier((8,), solver="sgd", max_iter=5, random_state=0)
    first = _weights(model.fit(X, Y))
    assert _same_weights(model.fit(X, Y), MLPClassifier((8,), solver="sgd", max_iter=5, random_state=0).fit(X, Y))
    assert all(np.array_equal(u, v) for u, v in zip(first, _weights(model)))


def test_early_stopping_split_is_reproducible():
    def make():
        return MLPClassifier((8,), early_stopping=True, max_iter=8, random_state=0)

    a, b = make().fit(X, Y), make().fit(X, Y)
    assert _same_weights(a, b) and a.validation_scores_ == b.validation_scores_


# ----------------------------------------------------------------------------- refused inputs

def _clf(**kwargs):
    return MLPClassifier(**{"hidden_layer_sizes": (8,), "max_iter": 2, "random_state": 0, **kwargs})


def _reg(**kwargs):
    return MLPRegressor(**{"hidden_layer_sizes": (8,), "max_iter": 2, "random_state": 0, **kwargs})


def _with(value, where=(3, 2), a=X):
    a = a.copy()
    a[where] = value
    return a


BAD_FIT = {
    "nan-X": (lambda: _clf().fit(_with(np.nan), Y), ValueError, "Input X contains NaN"),
    "inf-X": (lambda: _clf().fit(_with(np.inf), Y), ValueError, "Input X contains infinity"),
    "-inf-X-regressor": (lambda: _reg().fit(_with(-np.inf), Y_REG), ValueError, "Input X contains infinity"),
    "nan-y-regressor": (lambda: _reg().fit(X, _with(np.nan, 5, Y_REG)), ValueError, "Input y contains NaN"),
    "inf-y-regressor": (lambda: _reg().fit(X, _with(np.inf, 5, Y_REG)), ValueError, "Input y contains infinity"),
    "1d-X": (lambda: _clf().fit(X[:, 0], Y), ValueError, "Expected 2D array, got 1D array"),
    "3d-X": (lambda: _clf().fit(X.reshape(200, 5, 2), Y), ValueError, "Found array with dim 3"),
    "lengths": (lambda: _clf().fit(X, Y[:-1]), ValueError, r"inconsistent numbers of samples: \[200, 199\]"),
    "lengths-regressor": (lambda: _reg().fit(X[:-3], Y_REG), ValueError, "inconsistent numbers of samples"),
    "zero-samples": (lambda: _clf().fit(X[:0], Y[:0]), ValueError, r"0 sample\(s\)"),
    "zero-features": (lambda: _clf().fit(X[:, :0], Y), ValueError, r"0 feature\(s\)"),
    "object-X": (lambda: _clf().fit(np.array([["a", 1.0]] * 200, dtype=object), Y), ValueError,
                 "could not convert string to float"),
    "string-X": (lambda: _reg().fit(np.array([["a", "b"]] * 200), Y_REG), ValueError,
                 "could not convert string to float"),
    "complex-X": (lambda: _clf().fit(X + 1j, Y), ValueError, "Complex data not supported"),
    "negative-y-poisson": (lambda: _reg(loss="poisson").fit(X, Y_REG), ValueError, "non-negative y"),
    "partial-fit-no-classes": (lambda: _clf(solver="sgd").partial_fit(X, Y), ValueError,
                               "classes must be passed on the first call"),
    "partial-fit-outside-classes": (lambda: _clf(solver="sgd").partial_fit(X, Y + 5, classes=[0, 1, 2]), ValueError,
                                    r"`y` has classes not in `self.classes_`"),
    "partial-fit-later-outside-classes": (
        lambda: _clf(solver="adam").partial_fit(X, Y, classes=[0, 1, 2]).partial_fit(X, Y + 1), ValueError,
        r"`y` has classes not in `self.classes_`"),
    "partial-fit-changed-classes": (
        lambda: _clf(solver="adam").partial_fit(X, Y, classes=[0, 1, 2]).partial_fit(X, Y, classes=[0, 1, 2, 3]),
        ValueError, "is not the same as on the first call"),
    "partial-fit-lbfgs": (lambda: _clf(solver="lbfgs").partial_fit(X, Y, classes=[0, 1, 2]), AttributeError,
                          "partial_fit"),
    "partial-fit-early-stopping": (lambda: _clf(solver="sgd", early_stopping=True).partial_fit(X, Y, classes=[0, 1, 2]),
                                   ValueError, "early_stopping"),
    "warm-start-new-class": (lambda: _clf(warm_start=True).fit(X, Y).fit(X, Y + 1), ValueError, "warm_start"),
    "negative-sample-weight": (lambda: _clf().fit(X, Y, sample_weight=-np.ones(200)), ValueError, "sample_weight"),
}


@pytest.mark.parametrize("case", sorted(BAD_FIT))
def test_bad_fit_input_is_refused(case):
    call, exc, message = BAD_FIT[case]
    with pytest.raises(exc, match=message):
        call()


BAD_PARAMS = {
    "hidden-0": (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes"),
    "hidden-negative": (dict(hidden_layer_sizes=(8, -1)), "hidden_layer_sizes"),
    "hidden-int-0": (dict(hidden_layer_sizes=0), "hidden_layer_sizes"),
    "hidden-float": (dict(hidden_layer_sizes=(8.5,)), "hidden_layer_sizes"),
    "lr-0": (dict(learning_rate_init=0.0), "learning_rate_init"),
    "lr-negative": (dict(learning_rate_init=-0.1), "learning_rate_init"),
    "lr-nan": (dict(learning_rate_init=np.nan), "learning_rate_init"),
    "batch-size-0": (dict(batch_size=0), "batch_size"),
    "batch-size-negative": (dict(batch_size=-4), "batch_size"),
    "n-threads-huge": (dict(n_threads=2 ** 70), "n_threads"),  # threadpoolctl would overflow a C int
    "activation": (dict(activation="softplus"), "activation"),
    "solver": (dict(solver="rmsprop"), "solver"),
    "momentum": (dict(momentum=1.5), "momentum"),
    "max-iter-0": (dict(max_iter=0), "max_iter"),
    "alpha-negative": (dict(alpha=-1.0), "alpha"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_bad_hyper_parameters_are_refused(case, kind):
    params, name = BAD_PARAMS[case]
    model = _clf(**params) if kind == "classifier" else _reg(**params)
    y = Y if kind == "classifier" else Y_REG
    with pytest.raises(ValueError, match=name):
        model.fit(X, y)
    assert not hasattr(model, "coefs_")


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="'loss' parameter"):
        _reg(loss="absolute_error").fit(X, Y_REG)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba", "score"])
def test_predict_before_fit(method):
    args = (X, Y) if method == "score" else (X,)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(_clf(), method)(*args)
    if hasattr(_reg(), method):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            getattr(_reg(), method)(*((X, Y_REG) if method == "score" else (X,)))


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_bad_predict_input_is_refused(kind):
    model = _clf().fit(X, Y) if kind == "classifier" else _reg().fit(X, Y_REG)
    name = type(model).__name__
    with pytest.raises(ValueError, match=f"X has 5 features, but {name} is expecting 10 features"):
        model.predict(X[:, :5])
    with pytest.raises(ValueError, match="X has 11 features"):
        model.predict(np.c_[X, X[:, :1]])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        model.predict(_with(np.nan))
    with pytest.raises(ValueError, match="Expected 2D array"):
        model.predict(X[0])
    with pytest.raises(ValueError, match=r"0 sample\(s\)"):
        model.predict(X[:0])


# ----------------------------------------------------------------------------- handled inputs

def _variants(base):
    sliced = np.repeat(base, 2, axis=1)[:, ::2]
    readonly = base.copy()
    readonly.flags.writeable = False
    assert not sliced.flags.c_contiguous and not sliced.flags.f_contiguous and np.array_equal(sliced, base)
    return {"fortran": np.asfortranarray(base), "sliced": sliced, "readonly": readonly}


@pytest.mark.parametrize("variant", ["fortran", "sliced", "readonly"])
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_non_contiguous_and_read_only_X_match_contiguous(variant, solver, kind):
    cls, y = (MLPClassifier, Y) if kind == "classifier" else (MLPRegressor, Y_REG)

    def make():
        return cls(hidden_layer_sizes=(8,), solver=solver, max_iter=3, random_state=0)

    X_variant = _variants(X)[variant]
    reference, model = make().fit(X, y), make().fit(X_variant, y)
    assert np.array_equal(reference.predict(X_variant), reference.predict(X))
    if variant == "readonly":
        assert not X_variant.flags.writeable  # not modified or unlocked
    assert _same_weights(model, reference)


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_integer_X_matches_float64(solver, kind):
    cls, y = (MLPClassifier, Y) if kind == "classifier" else (MLPRegressor, Y_REG)
    X_int = np.round(X * 10).astype(np.int32)

    def make():
        return cls(hidden_layer_sizes=(8,), solver=solver, max_iter=3, random_state=0)

    a, b = make().fit(X_int, y), make().fit(X_int.astype(np.float64), y)
    assert a.coefs_[0].dtype == np.float64
    assert _same_weights(a, b)
    assert np.array_equal(a.predict(X_int), b.predict(X_int.astype(np.float64)))


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_float32_X_with_float64_y_matches_float32_y(solver):
    X32 = X.astype(np.float32)

    def make():
        return MLPRegressor(hidden_layer_sizes=(8,), solver=solver, max_iter=3, random_state=0)

    a, b = make().fit(X32, Y_REG), make().fit(X32, Y_REG.astype(np.float32))
    assert a.coefs_[0].dtype == np.float32
    assert _same_weights(a, b)
    assert a.predict(X32).dtype == np.float32
    assert np.array_equal(a.predict(X32), b.predict(X32))
    # A float32 model predicts on float64 input by converting it.
    assert np.array_equal(a.predict(X), a.predict(X32))


def test_list_input_matches_array():
    a = _clf(solver="sgd").fit(X.tolist(), Y.tolist())
    b = _clf(solver="sgd").fit(X, Y)
    assert _same_weights(a, b)
    assert np.array_equal(a.predict(X.tolist()), b.predict(X))


def test_inputs_are_not_modified():
    X_copy, Y_copy = X.copy(), Y_REG.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _reg(solver="sgd").fit(X, Y_REG).predict(X)
    assert np.array_equal(X, X_copy) and np.array_equal(Y_REG, Y_copy)


# ----------------------------------------------------------------------------- review follow-ups

def _iris():
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)


def test_malformed_sparse_input_is_refused_not_indexed():
    import scipy.sparse as sp

    X, y = _iris()
    S = sp.csr_matrix(X)
    S.indices = S.indices.copy()
    S.indices[3] = 7  # a column past the 4 features: the gather kernel must never see it
    with pytest.raises(ValueError, match="malformed sparse matrix"):
        MLPClassifier(hidden_layer_sizes=(4,), solver="sgd", max_iter=1).fit(S, y)


def test_sparse_duplicate_entries_train_like_their_sum():
    import scipy.sparse as sp

    X, y = _iris()
    data, indices, indptr = [], [], [0]
    for row in X:  # every stored value split into two entries of the same column: legal, not canonical
        cols = np.flatnonzero(row)
        indices += [*cols, *cols]
        data += [*(row[cols] / 2), *(row[cols] / 2)]
        indptr.append(len(indices))
    twice = sp.csr_matrix((np.array(data), np.array(indices), np.array(indptr)), shape=X.shape)
    assert not twice.has_canonical_format
    make = lambda: MLPClassifier(hidden_layer_sizes=(4,), solver="sgd", max_iter=3, random_state=0)  # noqa: E731
    np.testing.assert_allclose(make().fit(twice, y).coefs_[0], make().fit(X, y).coefs_[0], rtol=1e-12)


def test_divergence_leaves_the_step_count_of_the_epoch_start():
    X, y = _iris()
    X = X.astype(np.float32)
    # batches of 16: the failing epoch takes steps before its loss overflows, and those must not count
    model = MLPClassifier(hidden_layer_sizes=(8,), solver="sgd", batch_size=16, max_iter=1, random_state=0)
    model.partial_fit(X, y, classes=[0, 1, 2])
    model._optimizer.learning_rate = 1e6  # the next epochs overflow float32
    for _ in range(20):
        steps = model._optimizer.t
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.partial_fit(X * 1e3, y)
        if any(issubclass(w.category, TrainingDivergedWarning) for w in caught):
            break
    else:
        pytest.fail("the learning rate of 1e6 never made training diverge")
    assert model._optimizer.t == steps


def test_n_threads_in_two_threads_restores_the_thread_count():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return sorted(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")

    before = blas_threads()
    X, y = _iris()
    models = [MLPClassifier(hidden_layer_sizes=(16,), max_iter=30, n_threads=n, random_state=0) for n in (1, 2)]
    _run_in_threads(lambda: models[0].fit(X, y), lambda: models[1].fit(X, y))
    assert blas_threads() == before


@pytest.mark.parametrize("bad", [[0, 1, 200], [-1, 0], []], ids=["past-the-end", "negative", "empty"])
def test_epoch_with_out_of_range_order_is_refused_before_training(bad):
    from fastbp.network import Network
    from fastbp.optim import SGDOptimizer
    from fastbp.trainer import Trainer

    net = Network([10, 4, 3], "relu", "softmax", np.float64)
    net.initialize(np.random.default_rng(0))
    before = net.params.copy()
    trainer = Trainer(net, SGDOptimizer(net.n_params, np.float64), batch_size=8, alpha=0.0)
    Y_onehot = np.eye(3)[Y]
    with pytest.raises(ValueError, match="row indices"):
        trainer.epoch(X, Y_onehot, np.ones(len(X)), np.array(bad, dtype=np.int64))
    assert np.array_equal(net.params, before)


def test_predict_of_a_wide_network_keeps_its_scratch_memory_bounded(monkeypatch):
    """A wide (legal) model predicts in fewer rows per chunk: scratch memory stays below PREDICT_BYTES, same output."""
    import tracemalloc

    import fastbp.network as network_module

    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 5)).astype(np.float32)
    model = MLPClassifier((3000,), max_iter=1, random_state=0).fit(X[:50], np.arange(50) % 3)
    expected = model.predict_proba(X)
    monkeypatch.setattr(network_module, "PREDICT_BYTES", 1 << 16)  # 5 rows of 3000 + 3 float32 outputs a chunk
    model.predict_proba(X[:5])  # compiled for this shape of call before measuring
    tracemalloc.start()
    got = model.predict_proba(X)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)  # BLAS may round other row counts apart
    assert peak < 2 * expected.nbytes + (1 << 17), peak  # the outputs (and predict_proba's copy), one chunk's buffer

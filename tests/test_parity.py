"""Parity of fastbp's estimators with scikit-learn's on small data.

Three levels:

* **Same trajectory.**  Started from scikit-learn's weights, with
  ``shuffle=False`` (so both see the same minibatches), fastbp follows
  scikit-learn's training to rounding error (``TRAJECTORY_ATOL``) for every
  solver and output: softmax, logistic (binary and multilabel), identity
  (single and multi-output) and exp (Poisson); with sample weights, sparse
  input, the learning-rate schedules and ``partial_fit`` as well.  The one
  deliberate difference (README): for multi-output squared error, L-BFGS
  minimises the loss that matches its gradient.
* **Same quality.**  From its own random initialisation, fastbp's test score,
  averaged over three seeds, is within ``SCORE_TOL`` of scikit-learn's.
* **Same API.**  Signatures, fitted attributes, ``partial_fit``, ``warm_start``,
  early stopping, sample weights, sparse input, dtypes, cloning and pickling,
  and fastbp's additions: ``callbacks``, ``validation_loss_curve_``, ``n_threads``.
"""

import copy
import functools
import inspect
import pickle
import warnings
from numbers import Integral, Real

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import neural_network as sknn
from sklearn.base import clone
from sklearn.datasets import load_iris, make_classification, make_multilabel_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import d2_tweedie_score, hamming_loss
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info, threadpool_limits

import fastbp
import fastbp._base
from fastbp import EpochInfo, MLPClassifier, MLPRegressor, TrainingDivergedWarning

CLASSIFICATION = ("multiclass", "binary", "multilabel")
TASKS = CLASSIFICATION + ("regression", "multioutput", "poisson")
SOLVERS = ("sgd", "adam", "lbfgs")

TRAJECTORY_ATOL = 1e-10  # float64, 10 epochs / iterations: the two agree to about 1e-14

# Largest |mean fastbp score - mean scikit-learn score| over three seeds: test
# accuracy (per label for multilabel) out of 45-180 rows, R^2, or D^2 for Poisson.
# The gaps seen are below half of these.
SCORE_TOL = {"multiclass": 0.06, "binary": 0.06, "multilabel": 0.05, "regression": 0.03, "multioutput": 0.03,
             "poisson": 0.05}
SOLVER_PARAMS = {"sgd": dict(learning_rate_init=0.05, max_iter=200),
                 "adam": dict(learning_rate_init=0.01, max_iter=200), "lbfgs": dict(max_iter=60)}

ATTRIBUTES = ("coefs_", "intercepts_", "n_iter_", "t_", "loss_", "loss_curve_", "best_loss_", "classes_",
              "n_features_in_", "n_layers_", "n_outputs_", "out_activation_", "validation_scores_",
              "best_validation_score_")


@pytest.fixture(autouse=True)
def _quiet_single_blas_thread():
    # Small problems: BLAS threads only add overhead (L-BFGS-B runs many times
    # slower with them on a busy machine).  The n_threads test sets its own limits.
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@functools.cache
def _data(task):
    """(X_train, X_test, y_train, y_test) for ``task``, standardised; treat as read-only."""
    if task == "multiclass":
        X, y = load_iris(return_X_y=True)
    elif task == "binary":
        X, y = make_classification(200, n_features=10, n_informative=5, random_state=0)
        y = np.array(["neg", "pos"])[y]
    elif task == "multilabel":
        X, y = make_multilabel_classification(300, n_features=10, n_classes=3, n_labels=1, random_state=0)
    elif task == "regression":
        X, y = make_regression(200, n_features=8, noise=10, random_state=0)
        y = y / y.std()
    elif task == "multioutput":
        X, y = make_regression(200, n_features=8, n_targets=3, noise=10, random_state=0)
        y = y / y.std(axis=0)
    else:
        rng = np.random.RandomState(0)
        X = rng.randn(600, 4)
        y = rng.poisson(np.exp(1 + 0.5 * X[:, 0] - 0.5 * X[:, 1])).astype(float)
    X = StandardScaler().fit_transform(X)
    stratify = y if task in ("multiclass", "binary") else None
    return tuple(train_test_split(X, y, test_size=0.3, random_state=0, stratify=stratify))


def _classes(task):
    """(fastbp class, scikit-learn class, prediction method compared) for ``task``."""
    if task in CLASSIFICATION:
        return MLPClassifier, sknn.MLPClassifier, "predict_proba"
    return MLPRegressor, sknn.MLPRegressor, "predict"


def _params(task, **params):
    return {"loss": "poisson", **params} if task == "poisson" else params


def _score(model, task, X, y):
    if task == "poisson":
        return d2_tweedie_score(y, model.predict(X), power=1)
    if task == "multilabel":
        return 1 - hamming_loss(y, model.predict(X))
    return model.score(X, y)


def _copy_weights(src, dst):
    dst.coefs_ = [c.copy() for c in src.coefs_]
    dst.intercepts_ = [b.copy() for b in src.intercepts_]


# --------------------------------------------------------------------------- same trajectory


def _twins(task, solver, epochs=10, weighted=False, sparse=None, partial=False, **params):
    """A scikit-learn and a fastbp model trained for ``epochs`` from the same weights on the same batches."""
    X, _, y, _ = _data(task)
    if sparse is not None:
        X = sparse(np.where(np.abs(X) > 0.7, X, 0.0))  # about half the entries zero
    sw = np.random.RandomState(1).uniform(0.5, 2.0, X.shape[0]) if weighted else None
    fb_cls, sk_cls, _ = _classes(task)
    params = _params(task, **{**dict(hidden_layer_sizes=(7, 5), solver=solver, random_state=0, warm_start=True,
                                     shuffle=False, batch_size=32, max_iter=1, tol=0.0, n_iter_no_change=np.inf,
                                     learning_rate_init=0.01), **params})
    sk, fb = sk_cls(**params), fb_cls(**params)
    first = {}
    if partial and task in CLASSIFICATION:
        first["classes"] = [0, 1, 2] if task == "multilabel" else np.unique(y)
    for model in (sk, fb):  # one epoch, so that both have every fitted attribute
        if partial:
            model.partial_fit(X, y, **first)
        else:
            model.fit(X, y, sample_weight=sw)
    _copy_weights(sk, fb)  # ... then the same starting point
    for model in (sk, fb):
        if partial:
            for _ in range(epochs):
                model.partial_fit(X, y, sample_weight=sw)
        else:
            model.set_params(max_iter=epochs).fit(X, y, sample_weight=sw)
    return sk, fb


def _assert_same_model(sk, fb, task, atol=TRAJECTORY_ATOL):
    for a, b in zip(sk.coefs_ + sk.intercepts_, fb.coefs_ + fb.intercepts_):
        assert_allclose(b, a, rtol=0, atol=atol)
    method = _classes(task)[2]
    X_test = _data(task)[1]
    assert_allclose(getattr(fb, method)(X_test), getattr(sk, method)(X_test), rtol=0, atol=atol)
    assert fb.loss_ == pytest.approx(sk.loss_, rel=1e-10)
    assert fb.n_iter_ == sk.n_iter_
    assert fb.t_ == sk.t_
    if hasattr(sk, "loss_curve_"):
        assert_allclose(fb.loss_curve_[1:], sk.loss_curve_[1:], rtol=1e-10)  # the first epochs started apart


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("task", TASKS)
def test_trajectory_matches_sklearn_from_the_same_weights(task, solver):
    sk, fb = _twins(task, solver)
    if task == "multioutput" and solver == "lbfgs":
        # README: L-BFGS minimises the summed squared error that its gradient belongs to
        # (scikit-learn reports the mean over outputs but follows the sum's gradient).
        X, _, y, _ = _data(task)
        loss, _, _ = fastbp.gradients(fb.coefs_, fb.intercepts_, X, y, "relu", "identity", alpha=fb.alpha)
        assert fb.loss_ == pytest.approx(loss, rel=1e-10)
        return
    _assert_same_model(sk, fb, task)


@pytest.mark.parametrize("task, solver, options", [
    ("multiclass", "sgd", dict(learning_rate="invscaling", learning_rate_init=0.5)),
    ("binary", "sgd", dict(learning_rate="adaptive", tol=10.0, n_iter_no_change=2)),  # lr / 5 every third epoch
    ("regression", "sgd", dict(nesterovs_momentum=False, momentum=0.5)),
    ("multiclass", "adam", dict(weighted=True)),
    ("regression", "lbfgs", dict(weighted=True)),
    ("binary", "lbfgs", dict(sparse=sp.csr_matrix)),
    ("multilabel", "adam", dict(sparse=sp.csc_matrix)),
    ("poisson", "sgd", dict(sparse=sp.csr_matrix, weighted=True)),
    ("multiclass", "sgd", dict(partial=True, momentum=0.0)),  # momentum 0: the optimizers' states do not matter
    ("multilabel", "sgd", dict(partial=True, momentum=0.0)),
    ("multioutput", "sgd", dict(partial=True, momentum=0.0, weighted=True)),
    ("multiclass", "sgd", dict(alpha=0.0)),  # no L2 term: the update runs as whole spans (loops.update_runs)
    ("regression", "adam", dict(alpha=0.0, weighted=True)),
])
def test_trajectory_matches_sklearn_with_options(task, solver, options):
    sk, fb = _twins(task, solver, **options)
    _assert_same_model(sk, fb, task)


@pytest.mark.parametrize("task", TASKS)
def test_assigned_weights_predict_like_sklearn(task):
    X, X_test, y, _ = _data(task)
    fb_cls, sk_cls, method = _classes(task)
    sk = sk_cls(**_params(task, hidden_layer_sizes=(6, 4), max_iter=5, random_state=0)).fit(X, y)
    fb = fb_cls(**_params(task, hidden_layer_sizes=(6, 4), max_iter=5, random_state=1)).fit(X, y)
    _copy_weights(sk, fb)  # new lists
    assert_allclose(getattr(fb, method)(X_test), getattr(sk, method)(X_test), rtol=0, atol=1e-12)
    sk.coefs_[0] = sk.coefs_[0] * 2  # one array of the list replaced
    fb.coefs_[0] = fb.coefs_[0] * 2
    assert_allclose(getattr(fb, method)(X_test), getattr(sk, method)(X_test), rtol=0, atol=1e-12)
    fb.coefs_[1][...] = 0  # in place: a view of the flat vector
    sk.coefs_[1][...] = 0
    assert_allclose(getattr(fb, method)(X_test), getattr(sk, method)(X_test), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="coefs_ and intercepts_ have shapes"):
        fb.coefs_[0] = np.zeros((3, 3))
        fb.predict(X_test)


# --------------------------------------------------------------------------- same quality


@functools.cache
def _fitted_pair(task, solver, seed, early_stopping=False):
    """(scikit-learn model, fastbp model), each fitted from its own initialisation; treat as read-only."""
    X, _, y, _ = _data(task)
    fb_cls, sk_cls, _ = _classes(task)
    params = _params(task, hidden_layer_sizes=(10,), solver=solver, alpha=1e-3, random_state=seed,
                     early_stopping=early_stopping, **SOLVER_PARAMS[solver])
    return sk_cls(**params).fit(X, y), fb_cls(**params).fit(X, y)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("task", TASKS)
def test_score_close_to_sklearn(task, solver):
    _, X_test, _, y_test = _data(task)
    pairs = [_fitted_pair(task, solver, seed) for seed in range(3)]
    sk_score = np.mean([_score(sk, task, X_test, y_test) for sk, _ in pairs])
    fb_score = np.mean([_score(fb, task, X_test, y_test) for _, fb in pairs])
    assert abs(fb_score - sk_score) <= SCORE_TOL[task], (fb_score, sk_score)


def _kind(value):
    for kind in (type(None), str, bool, Integral, Real, list, np.ndarray):
        if isinstance(value, kind):
            return kind
    return type(value)


def _assert_same_attributes(sk, fb):
    for name in ATTRIBUTES:
        assert hasattr(fb, name) == hasattr(sk, name), name
        if not hasattr(sk, name):
            continue
        a, b = getattr(sk, name), getattr(fb, name)
        assert _kind(b) is _kind(a), (name, a, b)
        if name in ("coefs_", "intercepts_"):
            assert [(x.shape, x.dtype) for x in b] == [(x.shape, x.dtype) for x in a], name
        elif name == "classes_":
            assert_array_equal(b, a)
            assert b.dtype == a.dtype
        elif isinstance(a, list):
            assert len(b) == fb.n_iter_ and all(isinstance(v, Real) for v in b), name
        elif name in ("n_features_in_", "n_layers_", "n_outputs_", "out_activation_"):
            assert b == a, name


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("task", TASKS)
def test_fitted_attributes_like_sklearn(task, solver):
    _assert_same_attributes(*_fitted_pair(task, solver, 0))


@pytest.mark.parametrize("task", ["multiclass", "multilabel", "multioutput"])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_fitted_attributes_like_sklearn_with_early_stopping(task, solver):
    sk, fb = _fitted_pair(task, solver, 0, early_stopping=True)
    _assert_same_attributes(sk, fb)
    assert fb.best_loss_ is None and len(fb.validation_scores_) == fb.n_iter_


@pytest.mark.parametrize("fb_cls, sk_cls", [(MLPClassifier, sknn.MLPClassifier), (MLPRegressor, sknn.MLPRegressor)])
def test_constructor_parameters_like_sklearn(fb_cls, sk_cls):
    ours = inspect.signature(fb_cls).parameters
    theirs = inspect.signature(sk_cls).parameters
    for name, param in theirs.items():
        assert name in ours, name
        assert ours[name].default == param.default, name
        assert ours[name].kind == param.kind, name
    assert set(ours) - set(theirs) == {"callbacks", "n_threads"}
    assert list(ours)[:len(theirs)] == list(theirs)  # positional order too


# --------------------------------------------------------------------------- partial_fit and warm_start


@pytest.mark.parametrize("cls", [MLPClassifier, sknn.MLPClassifier])
def test_partial_fit_classes(cls):
    X, _, y, _ = _data("multiclass")
    model = cls(hidden_layer_sizes=(5,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        model.partial_fit(X, y)
    with pytest.raises(ValueError, match="classes not in"):
        cls(random_state=0).partial_fit(X, y, classes=[0, 1])
    head = y < 2
    model.partial_fit(X[head], y[head], classes=[0, 1, 2])  # y need not hold every class
    assert_array_equal(model.classes_, [0, 1, 2])
    assert model.predict_proba(X).shape == (len(X), 3)
    model.partial_fit(X, y)
    with pytest.raises(ValueError, match="classes not in"):
        model.partial_fit(X, np.where(y == 2, 5, y))
    with pytest.raises(ValueError, match="classes not in"):
        model.partial_fit(X, np.where(y == 2, -1, y))
    with pytest.raises(ValueError, match="is not the same as"):
        model.partial_fit(X, y, classes=[0, 1, 2, 3])
    model.partial_fit(X, y, classes=[2, 0, 1])  # the same classes in another order
    model.partial_fit(X, y, classes=model.classes_.copy())  # the very classes_ again
    model.partial_fit(X, y, classes=np.array([0.0, 1.0, 2.0]))  # the same values in another dtype
    with pytest.raises(ValueError, match="is not the same as"):
        model.partial_fit(X, y, classes=np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="Unknown label type"):
        model.partial_fit(X, y, classes=np.array([0.5, 1.0, 2.0]))
    assert model.n_iter_ == 1  # as in scikit-learn: the epochs of the last call
    assert model.t_ == head.sum() + 4 * len(X)  # the calls that raised trained nothing
    with pytest.raises(ValueError, match="early_stopping"):
        cls(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])


def test_partial_fit_only_for_stochastic_solvers():
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")
    assert not hasattr(MLPRegressor(solver="lbfgs"), "partial_fit")
    assert hasattr(MLPClassifier(solver="sgd"), "partial_fit") and hasattr(MLPRegressor(), "partial_fit")
    with pytest.raises(AttributeError, match="partial_fit"):
        MLPClassifier(solver="lbfgs").partial_fit  # noqa: B018 (the attribute access is the test)


def test_partial_fit_multilabel_like_sklearn():
    X, _, Y, _ = _data("multilabel")
    sk = sknn.MLPClassifier(random_state=0).partial_fit(X, Y, classes=[0, 1, 2])
    fb = MLPClassifier(random_state=0).partial_fit(X, Y, classes=[0, 1, 2])
    assert fb.out_activation_ == sk.out_activation_ == "logistic"
    assert_array_equal(fb.classes_, sk.classes_)
    assert fb.predict(X).shape == Y.shape


def test_partial_fit_learns_like_sklearn():
    X, X_test, y, y_test = _data("multiclass")
    scores = []
    for cls in (sknn.MLPClassifier, MLPClassifier):
        model = cls(hidden_layer_sizes=(10,), learning_rate_init=0.01, random_state=0)
        for _ in range(100):
            model.partial_fit(X, y, classes=[0, 1, 2])
        scores.append(model.score(X_test, y_test))
    assert scores[1] >= 0.9 and abs(scores[1] - scores[0]) <= 0.07


@pytest.mark.parametrize("cls", [MLPRegressor, sknn.MLPRegressor])
def test_warm_start_continues_and_refit_restarts(cls):
    X, _, y, _ = _data("regression")
    model = cls(hidden_layer_sizes=(8,), solver="sgd", max_iter=5, tol=0, n_iter_no_change=np.inf, random_state=0,
                warm_start=True).fit(X, y)
    first = model.loss_curve_[:]
    model.fit(X, y)
    assert model.loss_curve_[:5] == first and len(model.loss_curve_) == 10
    assert model.n_iter_ == 5 and model.t_ == 10 * len(X)
    assert model.loss_curve_[5] < first[0]  # went on from the trained weights
    fresh = clone(model).set_params(warm_start=False).fit(X, y)
    again = fresh.set_params(warm_start=False).fit(X, y)
    assert len(again.loss_curve_) == 5 and again.t_ == 5 * len(X)
    if cls is MLPRegressor:  # a refit restarts from random_state: the same weights
        assert_array_equal(again.coefs_[0], clone(again).fit(X, y).coefs_[0])


@pytest.mark.parametrize("cls", [MLPClassifier, sknn.MLPClassifier])
def test_warm_start_needs_the_same_classes(cls):
    X, _, y, _ = _data("multiclass")
    model = cls(hidden_layer_sizes=(5,), max_iter=5, warm_start=True, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="warm_start can only be used where `y` has the same classes"):
        model.fit(X[y < 2], y[y < 2])


def test_warm_start_applies_changed_settings():
    X, _, y, _ = _data("multiclass")
    model = MLPClassifier(hidden_layer_sizes=(5,), solver="sgd", max_iter=5, warm_start=True, random_state=0).fit(X, y)
    model.set_params(solver="adam", early_stopping=True).fit(X, y)  # a fresh optimizer and stopping rule
    assert type(model._optimizer).__name__ == "AdamOptimizer"
    assert len(model.validation_scores_) == model.n_iter_ and model.best_loss_ is None
    model.set_params(early_stopping=False).fit(X, y)
    assert model.validation_scores_ is None and np.isfinite(model.best_loss_)
    with pytest.raises(ValueError, match="layer sizes"):
        model.set_params(hidden_layer_sizes=(6,)).fit(X, y)


# --------------------------------------------------------------------------- early stopping


@pytest.mark.parametrize("task", ["multiclass", "binary", "regression"])
def test_early_stopping(task, monkeypatch):
    splits = []

    def recording_split(*arrays, **kwargs):
        parts = train_test_split(*arrays, **kwargs)
        splits.append((kwargs["stratify"], parts[1], parts[3]))
        return parts

    monkeypatch.setattr(fastbp._base, "train_test_split", recording_split)
    X, _, y, _ = _data(task)
    fb_cls = _classes(task)[0]
    model = fb_cls(hidden_layer_sizes=(10,), solver="adam", learning_rate_init=0.01, early_stopping=True,
                   validation_fraction=0.2, n_iter_no_change=5, max_iter=500, random_state=0).fit(X, y)
    assert model.n_iter_ < 500  # stopped on the plateau
    assert len(model.validation_scores_) == len(model.validation_loss_curve_) == model.n_iter_
    assert model.best_validation_score_ == max(model.validation_scores_)
    assert model.best_loss_ is None
    (stratify, X_val, Y_val), = splits
    # The best epoch's weights are restored: they score best_validation_score_ on the held-out rows.
    y_val = model._label_binarizer.inverse_transform(Y_val) if task in CLASSIFICATION else Y_val.ravel()
    assert model.score(X_val, y_val) == pytest.approx(model.best_validation_score_)
    if task in CLASSIFICATION:  # stratified: the held-out part has the classes' proportions
        assert stratify is not None
        expected = np.unique(y, return_counts=True)[1] * len(y_val) / len(y)
        assert np.all(np.abs(np.unique(y_val, return_counts=True)[1] - expected) <= 1)


# --------------------------------------------------------------------------- sample weights


@pytest.mark.parametrize("solver", SOLVERS)
def test_zero_sample_weight_drops_rows(solver):
    X, X_test, y, _ = _data("multiclass")
    sw = np.ones(len(y))
    sw[::3] = 0
    params = dict(hidden_layer_sizes=(8,), solver=solver, batch_size=16, max_iter=30, random_state=0)
    weighted = MLPClassifier(**params).fit(X, y, sample_weight=sw)
    dropped = MLPClassifier(**params).fit(X[sw > 0], y[sw > 0])
    assert_allclose(weighted.predict_proba(X_test), dropped.predict_proba(X_test), rtol=0, atol=1e-10)


@pytest.mark.parametrize("solver, atol", [("lbfgs", 1e-5), ("sgd", 1e-10), ("adam", 1e-10)])
def test_integer_sample_weight_repeats_rows(solver, atol):
    # Full batches, so both see the same sums; L-BFGS's path can amplify their rounding a little.
    X, X_test, y, _ = _data("regression")
    sw = np.random.RandomState(0).randint(1, 4, len(y))
    params = dict(hidden_layer_sizes=(8,), solver=solver, max_iter=30, random_state=0, shuffle=False)
    weighted = MLPRegressor(batch_size=len(y), **params).fit(X, y, sample_weight=sw)
    repeated = MLPRegressor(batch_size=sw.sum(), **params).fit(np.repeat(X, sw, axis=0), np.repeat(y, sw))
    assert_allclose(weighted.predict(X_test), repeated.predict(X_test), rtol=0, atol=atol)


def test_integer_sample_weight_repeats_rows_approximately_in_minibatches():
    X, X_test, y, y_test = _data("multiclass")
    sw = np.random.RandomState(0).randint(1, 4, len(y))
    params = dict(hidden_layer_sizes=(10,), learning_rate_init=0.01, batch_size=16, max_iter=100, random_state=0)
    weighted = MLPClassifier(**params).fit(X, y, sample_weight=sw)
    repeated = MLPClassifier(**params).fit(np.repeat(X, sw, axis=0), np.repeat(y, sw))
    assert abs(weighted.score(X_test, y_test) - repeated.score(X_test, y_test)) <= 0.05


def test_sample_weight_refused_when_invalid():
    X, _, y, _ = _data("multiclass")
    for sw in (-np.ones(len(y)), np.zeros(len(y)), np.ones(len(y) + 1)):
        with pytest.raises(ValueError):
            MLPClassifier(max_iter=2).fit(X, y, sample_weight=sw)


# --------------------------------------------------------------------------- input types


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_sparse_input_gives_the_dense_predictions(task, solver):
    X, X_test, y, _ = _data(task)
    X = np.where(np.abs(X) > 0.5, X, 0.0)
    fb_cls, _, method = _classes(task)
    params = dict(hidden_layer_sizes=(8,), solver=solver, batch_size=32, max_iter=20, random_state=0)
    dense = getattr(fb_cls(**params).fit(X, y), method)(X_test)
    for container in (sp.csr_matrix, sp.csc_matrix, sp.csr_array):
        model = fb_cls(**params).fit(container(X), y)
        assert_allclose(getattr(model, method)(X_test), dense, rtol=0, atol=1e-12)
        assert_allclose(getattr(model, method)(container(X_test)), dense, rtol=0, atol=1e-12)


def test_sparse_input_is_left_unchanged():
    X, _, y, _ = _data("multiclass")
    X = sp.csr_matrix(X)
    indices, indptr = X.indices.copy(), X.indptr.copy()
    MLPClassifier(max_iter=2).fit(X, y)
    assert X.indices.dtype == indices.dtype and X.indptr.dtype == indptr.dtype
    assert_array_equal(X.indices, indices)


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
def test_predict_log_proba(task):
    X, X_test, y, _ = _data(task)
    sk, fb = (cls(hidden_layer_sizes=(5,), max_iter=20, random_state=0).fit(X, y)
              for cls in (sknn.MLPClassifier, MLPClassifier))
    assert fb.predict_log_proba(X_test).shape == sk.predict_log_proba(X_test).shape
    assert_allclose(fb.predict_log_proba(X_test), np.log(fb.predict_proba(X_test)), rtol=1e-12)
    if task == "binary":
        assert fb.predict_proba(X_test).shape == (len(X_test), 2)
        assert_allclose(fb.predict_proba(X_test).sum(axis=1), 1.0)


def test_feature_names_in_with_a_dataframe():
    pd = pytest.importorskip("pandas")
    X, X_test, y, _ = _data("multiclass")
    columns = ["sepal length", "sepal width", "petal length", "petal width"]
    model = MLPClassifier(max_iter=5, random_state=0).fit(pd.DataFrame(X, columns=columns), y)
    assert_array_equal(model.feature_names_in_, columns)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        from_array = model.predict(X_test)
    assert_array_equal(model.predict(pd.DataFrame(X_test, columns=columns)), from_array)
    with pytest.raises(ValueError, match="feature names should match"):
        model.predict(pd.DataFrame(X_test, columns=[c.upper() for c in columns]))


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_float32_trains_in_float32(task, solver):
    X, X_test, y, y_test = _data(task)
    fb_cls, sk_cls, method = _classes(task)
    params = dict(hidden_layer_sizes=(8,), solver=solver, max_iter=30, random_state=0)
    for dtype in (np.float32, np.float64):
        fb = fb_cls(**params).fit(X.astype(dtype), y)
        sk = sk_cls(**params).fit(X.astype(dtype), y)
        assert all(a.dtype == dtype for a in fb.coefs_ + fb.intercepts_)
        assert getattr(fb, method)(X_test.astype(dtype)).dtype == dtype
        if solver != "lbfgs":  # scikit-learn's L-BFGS hands back float64 weights even for float32 data
            assert getattr(sk, method)(X_test.astype(dtype)).dtype == dtype
            assert all(a.dtype == dtype for a in sk.coefs_ + sk.intercepts_)
    fb64 = fb_cls(**params).fit(X, y)
    fb32 = fb_cls(**params).fit(X.astype(np.float32), y)
    assert abs(fb32.score(X_test, y_test) - fb64.score(X_test, y_test)) <= 0.05


# --------------------------------------------------------------------------- estimator protocol


def test_params_clone_and_pickle_roundtrip():
    X, X_test, y, _ = _data("binary")
    model = MLPClassifier(hidden_layer_sizes=(6, 3), solver="sgd", alpha=0.01, max_iter=10, random_state=0)
    assert model.get_params()["hidden_layer_sizes"] == (6, 3)
    assert model.set_params(alpha=0.02) is model and model.alpha == 0.02
    with pytest.raises(ValueError, match="Invalid parameter"):
        model.set_params(no_such_parameter=1)
    model.fit(X, y)
    twin = clone(model)
    assert twin.get_params() == model.get_params() and not hasattr(twin, "coefs_")
    assert_array_equal(twin.fit(X, y).predict_proba(X_test), model.predict_proba(X_test))
    for restored in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert_array_equal(restored.predict_proba(X_test), model.predict_proba(X_test))
        assert_array_equal(restored.predict(X_test), model.predict(X_test))
        assert all(np.shares_memory(c, restored._network.params) for c in restored.coefs_)
    assert hasattr(model, "coefs_")  # pickling leaves the original whole
    restored = pickle.loads(pickle.dumps(model))
    for m in (model, restored):  # the optimizer and the random generator travel too
        m.partial_fit(X, y)
    assert_array_equal(restored.predict_proba(X_test), model.predict_proba(X_test))


# --------------------------------------------------------------------------- fastbp's additions


def test_callbacks_once_per_epoch():
    X, _, y, _ = _data("multiclass")
    seen = []
    model = MLPClassifier(hidden_layer_sizes=(5,), max_iter=15, random_state=0, callbacks=seen.append).fit(X, y)
    assert [info.epoch for info in seen] == list(range(1, model.n_iter_ + 1)) and model.n_iter_ == 15
    assert all(isinstance(info, EpochInfo) for info in seen)
    assert [info.loss for info in seen] == model.loss_curve_
    assert all(info.learning_rate == 0.001 and info.seconds >= 0 and info.validation_score is None for info in seen)
    seen.clear()
    model.partial_fit(X, y)
    assert len(seen) == 1


def test_callbacks_stop_training():
    X, _, y, _ = _data("multiclass")
    calls = {"stopper": 0, "counter": 0}

    def stopper(info):
        calls["stopper"] += 1
        return info.epoch == 3

    def counter(info):
        calls["counter"] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # stopping on request is no failure to converge
        model = MLPClassifier(max_iter=50, random_state=0, callbacks=[stopper, counter]).fit(X, y)
    assert model.n_iter_ == len(model.loss_curve_) == 3
    assert calls == {"stopper": 3, "counter": 3}
    with pytest.raises(TypeError, match="callbacks"):
        MLPClassifier(callbacks=[stopper, "not callable"]).fit(X, y)


def test_callbacks_see_the_validation_curves():
    X, _, y, _ = _data("regression")
    seen = []
    model = MLPRegressor(max_iter=30, early_stopping=True, random_state=0, callbacks=(seen.append,)).fit(X, y)
    assert [info.validation_score for info in seen] == model.validation_scores_
    assert [info.validation_loss for info in seen] == model.validation_loss_curve_
    assert len(model.validation_loss_curve_) == len(model.validation_scores_) == model.n_iter_
    assert all(loss > 0 for loss in model.validation_loss_curve_)


def _blas_threads():
    return [(lib["filepath"], lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_n_threads_limits_blas_during_fit_and_restores_it():
    if not _blas_threads():
        pytest.skip("threadpoolctl finds no BLAS library")
    X, X_test, y, _ = _data("multiclass")
    during = []

    def spy(info):
        during.append({n for _, n in _blas_threads()})

    def fail(info):
        raise RuntimeError("stop here")

    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        model = MLPClassifier(max_iter=3, n_threads=1, random_state=0, callbacks=spy).fit(X, y)
        assert during == [{1}] * 3
        assert _blas_threads() == before
        model.predict(X_test)
        assert _blas_threads() == before
        MLPClassifier(solver="lbfgs", max_iter=5, n_threads=1).fit(X, y)
        assert _blas_threads() == before
        with pytest.raises(RuntimeError, match="stop here"):
            MLPClassifier(n_threads=1, callbacks=fail).fit(X, y)
        assert _blas_threads() == before
        with pytest.warns(TrainingDivergedWarning):
            MLPRegressor(solver="sgd", learning_rate_init=10.0, n_threads=1, random_state=0).fit(X * 1e3, y * 1e3)
        assert _blas_threads() == before

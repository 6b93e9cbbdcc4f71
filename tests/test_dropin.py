"""fastbp as a drop-in for scikit-learn's MLPs: the behaviours of issue 12, each beside scikit-learn's own.

Small shapes throughout; trajectories are compared from the same weights with
``shuffle=False`` and plain SGD (momentum 0, so no optimizer state differs).
"""

import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn import neural_network as sknn
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import LabelBinarizer

import fastbp
import fastbp._base
import fastbp._validation
import fastbp.estimator
from fastbp import MLPClassifier, MLPRegressor, TrainingDivergedError, TrainingDivergedWarning
from fastbp._fitted import FIELDS, expected_arrays
from fastbp._validation import check_network_size

RNG = np.random.RandomState(0)
X = RNG.randn(60, 4)
Y_CLASS = np.array(["a", "b", "c"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0)]
Y_REG = X @ np.array([1.0, -2.0, 0.5, 0.0])
PLAIN_SGD = dict(solver="sgd", momentum=0.0, shuffle=False, learning_rate_init=0.1, tol=0.0, n_iter_no_change=np.inf,
                 random_state=0)


@pytest.fixture(autouse=True)
def _no_convergence_noise():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("error", TrainingDivergedWarning)  # a test that expects one says so
        yield


def _same_weights(a, b, atol=1e-10):
    for x, y in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert_allclose(x, y, rtol=0, atol=atol)


def _seed(model, source, sklearn_needs=False):
    """Assign ``source``'s weights to an unfitted ``model`` (and what scikit-learn also needs to start from them)."""
    model.coefs_ = [c.copy() for c in source.coefs_]
    model.intercepts_ = [b.copy() for b in source.intercepts_]
    if sklearn_needs:
        for name in ("n_layers_", "out_activation_", "t_", "loss_curve_", "best_loss_", "_no_improvement_count"):
            setattr(model, name, getattr(source, name) if name != "loss_curve_" else [])
        model.t_, model.best_loss_ = 0, np.inf


# ----------------------------------------------------------------------------- 1. classes seen later


def test_partial_fit_learns_classes_first_seen_in_a_later_call():
    classes = ["a", "b", "c", "d"]
    X4, y4 = np.array([[1.0], [2.0], [3.0], [4.0]]), np.array(classes)
    sk = sknn.MLPClassifier(hidden_layer_sizes=(6,), **PLAIN_SGD).partial_fit(X4[:3], y4[:3], classes=classes)
    fb = MLPClassifier(hidden_layer_sizes=(6,), **PLAIN_SGD).partial_fit(X4[:3], y4[:3], classes=classes)
    fb.coefs_, fb.intercepts_ = [c.copy() for c in sk.coefs_], [b.copy() for b in sk.intercepts_]
    before = fb.predict_proba(X4[3:])[0, 3]
    for model in (sk, fb):
        for _ in range(40):
            model.partial_fit(X4[3:], y4[3:])  # only the class the first call never saw
    _same_weights(sk, fb)
    assert fb.predict_proba(X4[3:])[0, 3] > before
    assert fb.predict(X4[3:]) == ["d"] == sk.predict(X4[3:])


@pytest.mark.parametrize("classes,y", [
    (np.arange(10), np.arange(20) % 10),  # integer classes take fastbp's own binarizer
    (np.array([3, 7]), np.array([3, 7, 7, 3])),
    (np.array([5]), np.array([5, 5])),
    (np.array([0, 1, 2], np.uint8), np.array([2, 0, 1], np.uint8)),
    ([0, 1, 2], [2, 0, 1]),  # not an array: scikit-learn's checks
    (np.array(["a", "b", "c"]), np.array(["c", "a", "b"])),
    (np.array([0.0, 1.0]), np.array([1.0, 0.0])),
])
def test_a_first_partial_fit_learns_the_classes_as_scikit_learn_does(classes, y):
    X = np.linspace(0, 1, 2 * len(y)).reshape(len(y), 2)
    fb = MLPClassifier(hidden_layer_sizes=(3,), max_iter=1).partial_fit(X, y, classes=classes)
    sk = sknn.MLPClassifier(hidden_layer_sizes=(3,), max_iter=1).partial_fit(X, y, classes=classes)
    expected = LabelBinarizer().fit(classes)
    assert fb._label_binarizer.y_type_ == expected.y_type_ == sk._label_binarizer.y_type_
    assert fb.classes_.dtype == sk.classes_.dtype
    np.testing.assert_array_equal(fb.classes_, sk.classes_)
    np.testing.assert_array_equal(fb._label_binarizer.transform(y), expected.transform(y))


def test_a_first_partial_fit_refuses_continuous_classes_as_scikit_learn_does():
    X, y, classes = np.array([[0.0], [1.0]]), np.array([1.5, 0.0]), np.array([0.0, 1.5])
    for cls in (MLPClassifier, sknn.MLPClassifier):
        with pytest.raises(ValueError, match="Unknown label type"):
            cls(hidden_layer_sizes=(3,)).partial_fit(X, y, classes=classes)


# ----------------------------------------------------------------------------- 2. L-BFGS and max_fun


@pytest.mark.parametrize("cls", [MLPClassifier, sknn.MLPClassifier])
def test_lbfgs_stopped_by_max_fun_warns(cls):
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        model = cls(hidden_layer_sizes=(5,), solver="lbfgs", max_fun=3, max_iter=1000, random_state=0).fit(X, Y_CLASS)
    assert model.n_iter_ <= 3


# ----------------------------------------------------------------------------- 3. weights set before training


@pytest.mark.parametrize("how", ["partial_fit", "warm_start"])
@pytest.mark.parametrize("fb_cls, sk_cls, y", [(MLPClassifier, sknn.MLPClassifier, Y_CLASS),
                                               (MLPRegressor, sknn.MLPRegressor, Y_REG)])
def test_assigned_weights_seed_training_as_in_sklearn(fb_cls, sk_cls, y, how):
    source = sk_cls(hidden_layer_sizes=(5,), max_iter=3, random_state=1).fit(X, y)
    params = dict(hidden_layer_sizes=(5,), max_iter=4, warm_start=how == "warm_start", **PLAIN_SGD)
    sk, fb = sk_cls(**params), fb_cls(**params)
    _seed(sk, source, sklearn_needs=True)
    _seed(fb, source)
    for model in (sk, fb):
        if how == "partial_fit":
            model.partial_fit(X, y, **({"classes": ["a", "b", "c"]} if fb_cls is MLPClassifier else {}))
        else:
            model.fit(X, y)
    _same_weights(sk, fb)
    assert fb.n_iter_ == sk.n_iter_ and fb.t_ == sk.t_


def test_assigned_weights_are_checked_and_are_not_a_fitted_model():
    source = MLPRegressor(hidden_layer_sizes=(5,), max_iter=3, random_state=1).fit(X, Y_REG)
    model = MLPRegressor(hidden_layer_sizes=(5,))
    _seed(model, source)
    with pytest.raises(NotFittedError):
        model.predict(X)  # the network is built by the first training call
    plain = MLPRegressor(hidden_layer_sizes=(6,), max_iter=2, random_state=0)
    _seed(plain, source)
    fresh = MLPRegressor(hidden_layer_sizes=(6,), max_iter=2, random_state=0).fit(X, Y_REG)
    _same_weights(plain.fit(X, Y_REG), fresh, atol=0)  # a plain fit starts from random_state, as in scikit-learn
    wrong = MLPRegressor(hidden_layer_sizes=(6,))
    _seed(wrong, source)
    with pytest.raises(ValueError, match=r"coefs_ and intercepts_ have shapes .* expected"):
        wrong.partial_fit(X, Y_REG)
    odd = MLPRegressor(hidden_layer_sizes=(5,))
    odd.coefs_ = source.coefs_[0]
    with pytest.raises(ValueError, match="lists of arrays"):
        odd.partial_fit(X, Y_REG)


# ----------------------------------------------------------------------------- 4. divergence


def _diverging(cls=MLPClassifier, **params):
    return cls(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=1e6, max_iter=50, tol=0.0,
               n_iter_no_change=1000, random_state=0, **params)


@pytest.mark.parametrize("cls, y", [(MLPClassifier, Y_CLASS), (MLPRegressor, Y_REG)])
def test_divergence_warns_names_the_cure_and_keeps_finite_weights(cls, y):
    model = _diverging(cls)
    with pytest.warns(TrainingDivergedWarning, match=r"learning_rate_init \(now 1e\+06\) or scale the inputs"):
        model.fit(X * 1e3, y)
    assert all(np.isfinite(w).all() for w in model.coefs_ + model.intercepts_)
    assert model.n_iter_ < 50 and len(model.loss_curve_) == model.n_iter_ and np.isfinite(model.loss_curve_).all()
    assert issubclass(TrainingDivergedWarning, ConvergenceWarning)
    assert issubclass(TrainingDivergedError, ValueError)  # still importable, for the command line and old code


def test_divergence_with_early_stopping_records_a_nan_validation_score():
    model = _diverging(early_stopping=True)
    with pytest.warns(TrainingDivergedWarning):
        model.fit(X * 1e3, Y_CLASS)
    assert np.isnan(model.validation_scores_[-1]) and np.isnan(model.validation_loss_curve_[-1])
    assert len(model.validation_scores_) == model.n_iter_ + 1  # the diverged epoch itself is undone
    assert np.isfinite(model.best_validation_score_)
    assert all(np.isfinite(w).all() for w in model.coefs_)


def test_divergence_does_not_stop_a_search_over_learning_rates():
    with warnings.catch_warnings():
        # The diverged model's huge (finite) weights overflow at predict: scored as error_score, with a warning.
        warnings.simplefilter("ignore")
        search = GridSearchCV(_diverging().set_params(max_iter=5), {"learning_rate_init": [1e6, 0.01]}, cv=2)
        search.fit(X * 1e3, Y_CLASS)
    assert search.best_params_ == {"learning_rate_init": 0.01}


def test_divergence_in_partial_fit_warns_and_can_be_made_an_error():
    model = _diverging()
    with pytest.warns(TrainingDivergedWarning):
        for _ in range(20):
            model.partial_fit(X * 1e3, Y_CLASS, classes=["a", "b", "c"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingDivergedWarning)
        with pytest.raises(TrainingDivergedWarning):
            model.partial_fit(X * 1e3, Y_CLASS)
    assert all(np.isfinite(w).all() for w in model.coefs_)


# ----------------------------------------------------------------------------- 5. messages users match on


def test_non_finite_weights_message_is_sklearns(monkeypatch):
    message = ("Solver produced non-finite parameter weights. The input data may contain large values and need to "
               "be preprocessed.")
    monkeypatch.setattr(MLPRegressor, "_fit_lbfgs", lambda self, X, Y, sw: self._network.params.fill(np.nan))
    with pytest.raises(ValueError, match=re.escape(message)):
        MLPRegressor(solver="lbfgs").fit(X, Y_REG)


@pytest.mark.parametrize("y, named", [
    (np.array([True] * 29 + [False]), "['False']"),
    (np.array(["a"] * 15 + ["b"] * 14 + ["c"]), "['c']"),
    (np.array([10] * 15 + [2] * 14 + [7]), "['7']"),
])
def test_stratified_split_names_rare_classes_as_given(y, named):
    pattern = "The least populated class.* too few.*" + re.escape(named)
    with pytest.raises(ValueError, match=pattern):
        MLPClassifier(early_stopping=True, max_iter=2).fit(X[:30], y)
    if y.dtype == bool:  # scikit-learn stratifies single-output targets like this one: the same message
        with pytest.raises(ValueError, match=pattern):
            sknn.MLPClassifier(early_stopping=True, max_iter=2).fit(X[:30], y)


@pytest.mark.parametrize("cls, y, fraction", [(MLPClassifier, Y_CLASS[:5], 0.1), (MLPClassifier, Y_CLASS, 0.01),
                                              (MLPRegressor, Y_REG[:5], 0.1), (MLPRegressor, Y_REG, 0.0)])
def test_too_small_validation_split_names_validation_fraction(cls, y, fraction):
    with pytest.raises(ValueError, match="The validation set is too small. Increase 'validation_fraction'") as info:
        cls(early_stopping=True, validation_fraction=fraction, max_iter=2).fit(X[:len(y)], y)
    assert "test_size" not in str(info.value) and f"validation_fraction={fraction}" in str(info.value)


# ----------------------------------------------------------------------------- 6. sizes


@pytest.mark.parametrize("fb_cls, sk_cls, y", [(MLPClassifier, sknn.MLPClassifier, Y_CLASS),
                                               (MLPRegressor, sknn.MLPRegressor, Y_REG)])
def test_no_hidden_layer_is_a_linear_model_like_sklearns(fb_cls, sk_cls, y):
    params = dict(hidden_layer_sizes=(), max_iter=1, warm_start=True, **PLAIN_SGD)
    sk, fb = sk_cls(**params).fit(X, y), fb_cls(**params).fit(X, y)
    assert fb.n_layers_ == sk.n_layers_ == 2 and [c.shape for c in fb.coefs_] == [c.shape for c in sk.coefs_]
    fb.coefs_, fb.intercepts_ = [c.copy() for c in sk.coefs_], [b.copy() for b in sk.intercepts_]
    for model in (sk, fb):
        model.set_params(max_iter=5).fit(X, y)
    _same_weights(sk, fb)
    lbfgs = fb_cls(hidden_layer_sizes=(), solver="lbfgs", max_iter=50).fit(X, y)
    assert lbfgs.score(X, y) > 0.8


def test_absurd_layer_sizes_are_a_value_error_naming_the_bytes():
    with pytest.raises(ValueError, match=r"needs about \d+ bytes"):
        MLPClassifier(hidden_layer_sizes=(10**20,)).fit(X, Y_CLASS)
    with pytest.raises(ValueError, match="positive integers"):
        MLPClassifier(hidden_layer_sizes=(4, 0)).fit(X, Y_CLASS)


def test_network_size_is_checked_against_physical_memory(monkeypatch):
    small = check_network_size([4, 5, 3], 32, np.float32)
    params = 4 * 5 + 5 + 5 * 3 + 3
    assert small == 4 * (8 * params + 2 * 32 * 8 + 32 * 7)
    page, pages = 4096, 1000  # a 4 MB machine
    monkeypatch.setattr(fastbp._validation.os, "sysconf",
                        lambda name: {"SC_PAGE_SIZE": page, "SC_PHYS_PAGES": pages}[name])
    with pytest.raises(ValueError, match=rf"this machine has {page * pages} bytes"):
        MLPRegressor(hidden_layer_sizes=(1000, 1000)).fit(X, Y_REG)
    MLPRegressor(hidden_layer_sizes=(10,), max_iter=2).fit(X, Y_REG)  # a small one still fits


# ----------------------------------------------------------------------------- 7. fastbp.save / fastbp.load


def test_save_and_load_at_the_top_level(tmp_path):
    model = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, Y_CLASS)
    fastbp.save(model, tmp_path / "m.npz")
    assert_allclose(fastbp.load(tmp_path / "m.npz").predict_proba(X), model.predict_proba(X), rtol=0, atol=0)
    assert fastbp.save is fastbp.io.save and "save" in fastbp.__all__
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        fastbp.nothing  # noqa: B018 (the attribute access is the test)


def test_import_fastbp_does_not_import_io():
    code = "import sys, fastbp; assert 'fastbp.io' not in sys.modules; fastbp.load; assert 'fastbp.io' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=fastbp.__path__[0] + "/..")


# ----------------------------------------------------------------------------- 9. documentation


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_help_documents_every_parameter_and_attribute(cls):
    doc = cls.__doc__
    parameters, attributes = doc.split("Parameters\n")[1].split("Attributes\n")
    documented = set(re.findall(r"^    (\w+)(?:, (\w+))? :", parameters, re.MULTILINE))
    names = {name for pair in documented for name in pair if name}
    assert names == set(cls().get_params())
    model = cls(hidden_layer_sizes=(3,), max_iter=2, early_stopping=True).fit(X, Y_CLASS if cls is MLPClassifier
                                                                               else Y_REG)
    fitted = {name for name in [*FIELDS, "coefs_", "intercepts_"] if not name.startswith("_") and hasattr(model, name)}
    assert fitted - {"best_loss_"} <= set(re.findall(r"^    (\w+) :", attributes, re.MULTILINE))
    for addition in ("callbacks", "n_threads", "validation_loss_curve_"):
        assert f"    {addition} :" in doc


def test_readme_refers_to_no_file_outside_the_repository():
    readme = open(fastbp.__path__[0] + "/../README.md").read()
    assert "../" not in readme and "DESIGN.md" not in readme


# ----------------------------------------------------------------------------- per-call overhead (issue 11)


def _count_validate_data(monkeypatch):
    calls = []
    real = fastbp._base.validate_data
    monkeypatch.setattr(fastbp._base, "validate_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_ready_input_skips_validate_data_but_no_check(monkeypatch):
    model = MLPClassifier(hidden_layer_sizes=(5,), solver="sgd", random_state=0)
    model.partial_fit(X, Y_CLASS, classes=["a", "b", "c"])
    calls = _count_validate_data(monkeypatch)
    model.partial_fit(X, Y_CLASS)
    proba = model.predict_proba(X)
    assert calls == []  # the fast paths ran
    assert_allclose(model.predict_proba(np.asfortranarray(X)), proba, rtol=0, atol=0)  # the long way, same result
    assert len(calls) == 1
    for bad, match in ((np.where(X > 1.5, np.nan, X), "Input X contains NaN"),
                       (np.where(X > 1.5, np.inf, X), "Input X contains infinity"),
                       (X[:, :3].copy(), "X has 3 features, but MLPClassifier is expecting 4")):
        with pytest.raises(ValueError, match=match):
            model.partial_fit(bad, Y_CLASS)
        with pytest.raises(ValueError, match=match):
            model.predict(bad)
    with pytest.raises(ValueError, match="classes not in"):
        model.partial_fit(X, np.where(Y_CLASS == "c", "d", Y_CLASS))
    numeric = MLPClassifier(hidden_layer_sizes=(5,), solver="sgd").partial_fit(X, Y_CLASS == "a", classes=[0, 1])
    with pytest.raises(ValueError, match="classes not in"):
        numeric.partial_fit(X, (Y_CLASS == "a") * 2)
    with pytest.raises(ValueError, match="Input y contains NaN"):
        MLPRegressor(hidden_layer_sizes=(3,)).partial_fit(X, Y_REG).partial_fit(X, np.where(X[:, 0] > 1, np.nan, Y_REG))


@pytest.mark.parametrize("y", [[3, 1, 3], [5, 5], [0, 1, 2, 2, 9], [-1, 7], np.arange(10, dtype=np.uint16),
                               np.array([2, 0], np.int8), [True, False], [0.0, 1.0, 2.0], ["b", "a"]])
def test_labels_are_binarized_as_label_binarizer_does(monkeypatch, y):
    y = np.asarray(y)
    fast = fastbp.estimator._binarizer_of(y)
    slow = LabelBinarizer().fit(y)
    assert (fast.y_type_, fast.sparse_input_) == (slow.y_type_, slow.sparse_input_)
    assert fast.classes_.dtype == slow.classes_.dtype and np.array_equal(fast.classes_, slow.classes_)
    assert np.array_equal(fast.transform(y), slow.transform(y))
    assert np.array_equal(fast.inverse_transform(slow.transform(y)), y)
    # integer labels take the fast path (no target-type checks), the rest scikit-learn's
    calls = []
    monkeypatch.setattr(fastbp.estimator, "LabelBinarizer", lambda: calls.append(1) or LabelBinarizer())
    fastbp.estimator._binarizer_of(y)
    assert calls == ([] if y.dtype.kind in "iu" else [1])


def test_parameters_changed_between_partial_fit_calls_are_validated():
    model = MLPRegressor(hidden_layer_sizes=[5], solver="sgd").partial_fit(X, Y_REG)
    model.partial_fit(X, Y_REG)
    model.set_params(alpha=-1.0)
    with pytest.raises(ValueError, match="'alpha' parameter"):
        model.partial_fit(X, Y_REG)
    model.set_params(alpha=0.0)
    model.hidden_layer_sizes.append(2)  # edited in place: the same list object
    with pytest.raises(ValueError, match="layer sizes"):
        model.partial_fit(X, Y_REG)
    model.hidden_layer_sizes[1] = "two"
    with pytest.raises(ValueError, match="positive integers"):
        model.partial_fit(X, Y_REG)


# ----------------------------------------------------------------------------- the fitted state (issue 14)


@pytest.mark.parametrize("cls, y, params", [
    (MLPClassifier, Y_CLASS, dict(solver="sgd", learning_rate="invscaling")),
    (MLPClassifier, Y_CLASS == "a", dict(solver="adam", early_stopping=True, max_iter=3)),
    (MLPRegressor, Y_REG, dict(solver="adam", random_state=np.random.Generator(np.random.MT19937(3)))),
])
def test_fitted_state_export_restores_training_exactly(cls, y, params):
    import json

    model = cls(**{**dict(hidden_layer_sizes=(5,), batch_size=16, random_state=0, warm_start=True), **params})
    for _ in range(2):
        model.fit(X, y)
    meta, arrays = model._export_fitted()
    assert all(isinstance(a, np.ndarray) and a.ndim == 1 for a in arrays.values())
    assert set(meta) == {name for name in FIELDS if hasattr(model, name)} - {"classes_"}  # every field travels
    assert {k: (v.dtype, v.shape) for k, v in arrays.items()} == expected_arrays(meta)
    twin = cls(**model.get_params())
    twin._import_fitted(json.loads(json.dumps(meta, allow_nan=False)), {k: v.copy() for k, v in arrays.items()})
    for m in (model, twin):
        m.fit(X, y)
    _same_weights(model, twin, atol=0)
    assert twin.loss_curve_ == model.loss_curve_ and twin.t_ == model.t_
    if model.early_stopping:
        assert twin.validation_scores_ == model.validation_scores_


def test_fitted_state_restore_refuses_inconsistent_input():
    model = MLPClassifier(hidden_layer_sizes=(5,), solver="sgd", max_iter=2).fit(X, Y_CLASS)
    meta, arrays = model._export_fitted()
    cases = [({**meta, "surprise_": 1}, arrays, "unknown fitted attributes"),
             (meta, {**arrays, "params": arrays["params"][:-1]}, "fitted array 'params'"),
             (meta, {**arrays, "optimizer_velocity": arrays["params"][:3]}, "fitted array 'optimizer_velocity'"),
             (meta, {**arrays, "extra": arrays["params"]}, "fitted array 'extra'"),
             ({**meta, "_network": {**meta["_network"], "layer_units": [4, -1]}}, arrays, "layer_units"),
             ({**meta, "n_outputs_": 7}, arrays, "do not match"),
             ({**meta, "t_": "many"}, arrays, "expected an integer"),
             ({**meta, "_rng": {"bit_generator": "Mystery"}}, arrays, "bit generator")]
    for bad_meta, bad_arrays, match in cases:
        with pytest.raises(ValueError, match=match):
            MLPClassifier()._import_fitted(bad_meta, bad_arrays)
    assert not hasattr(MLPClassifier(), "n_iter_")  # unset fields are missing attributes, as in scikit-learn


def test_refit_on_a_plain_array_forgets_feature_names_and_width():
    # A fresh fit of a ready float array skips validate_data: it must record what validate_data would.
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3)).astype(np.float32)
    y = np.arange(40) % 2
    model = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2).fit(pd.DataFrame(X, columns=["a", "b", "c"]), y)
    assert list(model.feature_names_in_) == ["a", "b", "c"]
    model.fit(np.hstack([X, X]), y)
    assert not hasattr(model, "feature_names_in_") and model.n_features_in_ == 6
    with pytest.raises(ValueError, match="NaN"):
        model.fit(np.where(X > 1, np.nan, X), y)


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_parameter_check_agrees_with_scikit_learns(cls):
    # fastbp checks against constraint objects made once per class; scikit-learn's own check must agree
    # on every parameter: each of its invalid values is refused with its message, a valid one passes.
    from sklearn.utils._param_validation import InvalidParameterError, generate_invalid_param_val, make_constraint

    for name, constraints in cls._parameter_constraints.items():
        for constraint in constraints:
            try:
                bad = generate_invalid_param_val(make_constraint(constraint))
            except NotImplementedError:  # a constraint scikit-learn generates no invalid value for
                continue
            model = cls(**{name: bad})
            if any(make_constraint(c).is_satisfied_by(bad) for c in constraints):
                model._validate_params()  # another of the parameter's constraints admits it
                continue
            with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of {cls.__name__}"):
                model._validate_params()
    cls(n_iter_no_change=np.inf, batch_size="auto", hidden_layer_sizes=np.array([3, 2]), random_state=np.int64(2),
        validation_fraction=0.5)._validate_params()

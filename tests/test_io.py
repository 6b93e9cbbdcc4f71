"""fastbp.io: exact round trips, exact resume, a strict loader, atomic writes.

The loader's contract is tested from four sides:

* round trips: every estimator flavour (labels, outputs, losses, solvers, a
  Pipeline) predicts identically after ``save`` / ``load`` and training
  resumes bit for bit;
* refusals: each kind of foreign or broken file gives ``ValueError`` with a
  message that says what is wrong;
* atomicity: a save that fails, or a writer process SIGKILLed mid-save, never
  leaves a half-written target;
* fuzzing (hypothesis): several thousand malformed files derived from valid
  ones either load a model that predicts, or raise ``ValueError``; nothing
  else, and nothing is ever unpickled.
"""

import io as _bytesio
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
from _modelfiles import _members, _meta, _npy, _with_meta, _zip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

import fastbp.io
from fastbp import MLPClassifier, MLPRegressor
from fastbp.io import load, save

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    # numpy parses .npy headers with ast.literal_eval: fuzzed headers make Python warn about their syntax.
    pytest.mark.filterwarnings("ignore::SyntaxWarning"),
    pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning"),
]

X_IRIS, Y_IRIS = load_iris(return_X_y=True)
X_CLF, Y_CLF = make_classification(200, n_features=10, n_informative=5, n_classes=3, random_state=0)
SOLVERS = ["sgd", "adam", "lbfgs"]


# ----------------------------------------------------------------------------- helpers

def _weights(model):
    return [np.array(a) for a in list(model.coefs_) + list(model.intercepts_)]


def _assert_same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert len(wa) == len(wb)
    for u, v in zip(wa, wb):
        assert u.dtype == v.dtype and u.shape == v.shape
        assert np.array_equal(u, v)


def _assert_same_model(a, b):
    """Same class, parameters, fitted attributes, weights and private training state."""
    assert type(a) is type(b)
    pa, pb = a.get_params(), b.get_params()
    pa.pop("callbacks"), pb.pop("callbacks")
    assert pa == pb
    _assert_same_weights(a, b)
    public = {k for k in vars(a) if k.endswith("_") and not k.startswith("_")}
    assert public - {"coefs_", "intercepts_"} <= set(vars(b))
    for key in public - {"coefs_", "intercepts_"}:
        va, vb = getattr(a, key), getattr(b, key)
        if isinstance(va, np.ndarray):
            assert va.dtype == vb.dtype and np.array_equal(va, vb), key
        else:
            assert va == vb and type(va) is type(vb) or (va is None and vb is None), key
    assert np.array_equal(a._network.params, b._network.params)
    assert a._network.layer_units == b._network.layer_units
    if hasattr(a, "_label_binarizer"):
        assert a._label_binarizer.y_type_ == b._label_binarizer.y_type_
        assert np.array_equal(a._label_binarizer.classes_, b._label_binarizer.classes_)
    opt_a, opt_b = getattr(a, "_optimizer", None), getattr(b, "_optimizer", None)
    assert type(opt_a) is type(opt_b)
    if opt_a is not None:
        assert (opt_a.t, opt_a.learning_rate) == (opt_b.t, opt_b.learning_rate)
        for key, arr in opt_a.arrays().items():
            assert np.array_equal(arr, opt_b.arrays()[key]), key
    assert a._rng.bit_generator.state == b._rng.bit_generator.state


def _roundtrip(model, tmp_path, name="model.npz"):
    path = tmp_path / name
    save(model, path)
    return load(path)


def _fit_quiet(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(*args, **kwargs)


# ----------------------------------------------------------------------------- round trips

CLASSIFIER_TARGETS = {
    "int": Y_IRIS,
    "string": np.array(["setosa", "versicolor", "virginica"])[Y_IRIS],
    "object-string": np.array(["setosa", "versicolor", "virginica"], dtype=object)[Y_IRIS],
    "binary": (Y_IRIS == 1).astype(np.int64),
    "binary-bool": Y_IRIS == 2,
    "float-labels": Y_IRIS.astype(np.float64) * 2.0 - 1.0,
    "multilabel": np.c_[Y_IRIS == 1, Y_IRIS == 2, Y_IRIS != 0].astype(np.int64),
}


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("target", sorted(CLASSIFIER_TARGETS))
def test_classifier_roundtrip(tmp_path, solver, target):
    y = CLASSIFIER_TARGETS[target]
    model = _fit_quiet(MLPClassifier((8,), solver=solver, max_iter=5, random_state=0), X_IRIS, y)
    loaded = _roundtrip(model, tmp_path)
    _assert_same_model(model, loaded)
    assert np.array_equal(model.predict(X_IRIS), loaded.predict(X_IRIS))
    assert model.predict(X_IRIS).dtype == loaded.predict(X_IRIS).dtype
    assert np.array_equal(model.predict_proba(X_IRIS), loaded.predict_proba(X_IRIS))
    assert model.score(X_IRIS, y) == loaded.score(X_IRIS, y)


REGRESSOR_CASES = {
    "single": ("squared_error", X_IRIS[:, 0]),
    "multi": ("squared_error", X_IRIS[:, :3]),
    "poisson": ("poisson", np.round(X_IRIS[:, 2])),
}


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("case", sorted(REGRESSOR_CASES))
def test_regressor_roundtrip(tmp_path, solver, case):
    loss, y = REGRESSOR_CASES[case]
    model = _fit_quiet(MLPRegressor(loss=loss, hidden_layer_sizes=(8,), solver=solver, max_iter=5, random_state=0),
                       X_IRIS[:, 1:], y)
    loaded = _roundtrip(model, tmp_path)
    _assert_same_model(model, loaded)
    assert np.array_equal(model.predict(X_IRIS[:, 1:]), loaded.predict(X_IRIS[:, 1:]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roundtrip_keeps_dtype_and_training_extras(tmp_path, dtype):
    """float32 stays float32; early stopping's best parameters and invscaling's learning rate survive."""
    model = _fit_quiet(MLPClassifier((8, 4), solver="sgd", learning_rate="invscaling", early_stopping=True,
                                     max_iter=6, random_state=0), X_CLF.astype(dtype), Y_CLF)
    loaded = _roundtrip(model, tmp_path)
    _assert_same_model(model, loaded)
    assert loaded.coefs_[0].dtype == dtype
    assert np.array_equal(model._best_params, loaded._best_params)
    assert loaded.validation_scores_ == model.validation_scores_
    assert np.array_equal(model.predict_proba(X_CLF.astype(dtype)), loaded.predict_proba(X_CLF.astype(dtype)))


def test_loaded_coefs_are_views_of_the_parameter_vector(tmp_path):
    loaded = _roundtrip(_fit_quiet(MLPClassifier((8,), max_iter=2, random_state=0), X_IRIS, Y_IRIS), tmp_path)
    assert all(np.shares_memory(a, loaded._network.params) for a in loaded.coefs_ + loaded.intercepts_)


def test_save_overwrites_and_accepts_str_path(tmp_path):
    first = _fit_quiet(MLPClassifier((8,), max_iter=2, random_state=0), X_IRIS, Y_IRIS)
    second = _fit_quiet(MLPClassifier((8,), max_iter=2, random_state=1), X_IRIS, Y_IRIS)
    path = str(tmp_path / "m.npz")
    save(first, path)
    save(second, path)
    _assert_same_model(second, load(path))
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


# ----------------------------------------------------------------------------- exact resume

RESUME_CASES = {
    "sgd-momentum": dict(solver="sgd", momentum=0.9, nesterovs_momentum=False),
    "sgd-nesterov": dict(solver="sgd", momentum=0.9, nesterovs_momentum=True),
    "sgd-invscaling": dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.05),
    "adam": dict(solver="adam"),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
@pytest.mark.parametrize("estimator", ["classifier", "regressor"])
def test_partial_fit_resumes_bit_for_bit(tmp_path, case, estimator):
    kwargs = dict(hidden_layer_sizes=(8,), batch_size=32, random_state=0, **RESUME_CASES[case])
    kwargs.setdefault("learning_rate_init", 0.01)
    if estimator == "classifier":
        make, y, extra = (lambda: MLPClassifier(**kwargs)), Y_CLF, {"classes": np.unique(Y_CLF)}
    else:
        make, y, extra = (lambda: MLPRegressor(**kwargs)), X_CLF[:, 0] + X_CLF[:, 1] ** 2, {}
    X = X_CLF[:, 2:]
    straight = make()
    for _ in range(10):
        straight.partial_fit(X, y, **extra)
    resumed = make()
    for _ in range(5):
        resumed.partial_fit(X, y, **extra)
    resumed = _roundtrip(resumed, tmp_path)
    for _ in range(5):
        resumed.partial_fit(X, y)
    _assert_same_weights(straight, resumed)
    _assert_same_model(straight, resumed)
    assert resumed.loss_curve_ == straight.loss_curve_


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_warm_start_fit_resumes_bit_for_bit(tmp_path, case):
    kwargs = dict(hidden_layer_sizes=(8,), batch_size=32, random_state=0, warm_start=True, max_iter=3,
                  learning_rate_init=0.01)
    kwargs.update(RESUME_CASES[case])
    straight = MLPClassifier(**kwargs)
    for _ in range(3):
        _fit_quiet(straight, X_CLF, Y_CLF)
    resumed = _fit_quiet(MLPClassifier(**kwargs), X_CLF, Y_CLF)
    for i in range(2):
        resumed = _fit_quiet(_roundtrip(resumed, tmp_path, f"m{i}.npz"), X_CLF, Y_CLF)
    assert resumed.n_iter_ == straight.n_iter_ and resumed.t_ == straight.t_ == 3 * 3 * len(X_CLF)
    _assert_same_weights(straight, resumed)
    _assert_same_model(straight, resumed)


# ----------------------------------------------------------------------------- pipelines

@pytest.mark.parametrize("estimator", ["classifier", "regressor"])
def test_pipeline_roundtrip_predicts_on_raw_features(tmp_path, estimator):
    X_raw = X_IRIS * [100.0, 0.01, 10.0, 1.0] + [1e3, -5.0, 0.0, 7.0]
    if estimator == "classifier":
        est, y = MLPClassifier((8,), max_iter=5, random_state=0), Y_IRIS
    else:
        est, y = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0), X_IRIS[:, 0]
    pipe = _fit_quiet(make_pipeline(StandardScaler(), est), X_raw, y)
    loaded = _roundtrip(pipe, tmp_path)
    assert isinstance(loaded, Pipeline) and isinstance(loaded.steps[0][1], StandardScaler)
    assert np.array_equal(pipe.predict(X_raw), loaded.predict(X_raw))
    assert np.array_equal(pipe[0].transform(X_raw), loaded[0].transform(X_raw))
    _assert_same_model(pipe[-1], loaded[-1])


@pytest.mark.parametrize("scaler_kwargs", [dict(with_mean=False), dict(with_std=False),
                                           dict(with_mean=False, with_std=False)])
def test_pipeline_roundtrip_with_partial_standardisation(tmp_path, scaler_kwargs):
    """A StandardScaler that does not centre (or does not scale) must reload as one that does not either."""
    X_raw = X_IRIS * 10.0 + 50.0
    pipe = _fit_quiet(make_pipeline(StandardScaler(**scaler_kwargs), MLPClassifier((8,), max_iter=5, random_state=0)),
                      X_raw, Y_IRIS)
    loaded = _roundtrip(pipe, tmp_path)
    assert np.array_equal(pipe[0].transform(X_raw), loaded[0].transform(X_raw))
    assert np.array_equal(pipe.predict_proba(X_raw), loaded.predict_proba(X_raw))


# ----------------------------------------------------------------------------- refusals

@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    """A small fitted Adam classifier with array-stored classes, as saved bytes."""
    path = tmp_path_factory.mktemp("valid") / "m.npz"
    save(_fit_quiet(MLPClassifier((8,), solver="adam", max_iter=3, random_state=0), X_IRIS, Y_IRIS), path)
    return path.read_bytes()


def _write(tmp_path, data, name="bad.npz"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        load(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError):
        load(tmp_path)  # a folder is not a model file


def test_load_text_file(tmp_path):
    with pytest.raises(ValueError, match="not a readable fastbp model file"):
        load(_write(tmp_path, b"hidden_layer_sizes = (8,)\nthis is not a model\n", "m.txt"))


def test_load_empty_file(tmp_path):
    with pytest.raises(ValueError, match="not a readable fastbp model file"):
        load(_write(tmp_path, b""))


def test_load_every_tenth_truncation(tmp_path, model_bytes):
    path = tmp_path / "cut.npz"
    for n in range(0, len(model_bytes), 10):
        path.write_bytes(model_bytes[:n])
        with pytest.raises(ValueError, match=r"(?i)fastbp model|truncated|EOF|member|metadata") as info:
            load(path)
        assert str(info.value)
    path.write_bytes(model_bytes)
    assert load(path).predict(X_IRIS).shape == (150,)


def test_load_plain_savez_with_foreign_members(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, weights=np.ones((3, 3)), labels=np.arange(3))
    with pytest.raises(ValueError, match="no metadata member"):
        load(path)


def test_load_foreign_metadata(tmp_path, model_bytes):
    meta = _meta(model_bytes)
    network = meta["fitted"]["_network"]
    for key, value, message in [("format", "other-format", "not a fastbp model file"),
                                ("version", 99, "format version 99: this fastbp reads version 2$"),
                                ("version", 1, r"format version 1: this fastbp reads version 2 \(written by an "
                                               r"older fastbp: fit and save the model again\)"),
                                ("estimator", "Pipeline", "names estimator")]:
        with pytest.raises(ValueError, match=message):
            load(_write(tmp_path, _with_meta(model_bytes, {**meta, key: value})))
    for key, value, message in [("dtype", "float16", "fitted._network.dtype is 'float16'"),
                                ("layer_units", [4, 0, 3], "fitted._network.layer_units")]:
        fitted = {**meta["fitted"], "_network": {**network, key: value}}
        with pytest.raises(ValueError, match=message):
            load(_write(tmp_path, _with_meta(model_bytes, {**meta, "fitted": fitted})))
    members = _members(model_bytes)
    members["__meta__.npy"] = _npy(np.frombuffer(b"{not json", dtype=np.uint8))
    with pytest.raises(ValueError, match="corrupt metadata"):
        load(_write(tmp_path, _zip(members)))


@pytest.fixture(scope="module")
def string_pipeline_bytes(tmp_path_factory):
    """A Pipeline of a StandardScaler and a classifier of string labels (stored in the JSON metadata)."""
    path = tmp_path_factory.mktemp("strings") / "m.npz"
    y = np.array(["setosa", "versicolor", "virginica"])[Y_IRIS]
    save(_fit_quiet(make_pipeline(StandardScaler(), MLPClassifier((8,), max_iter=2, random_state=0)), X_IRIS, y), path)
    return path.read_bytes()


def _fitted_with(meta, y_type=..., out_activation=...):
    """``meta`` with the target type and / or both copies of the output activation replaced."""
    fitted = dict(meta["fitted"])
    if y_type is not ...:
        fitted["_label_binarizer"] = {**fitted["_label_binarizer"], "y_type": y_type}
    if out_activation is not ...:
        fitted["out_activation_"] = out_activation
        fitted["_network"] = {**fitted["_network"], "out_activation": out_activation}
    return {**meta, "fitted": fitted}


def test_load_refuses_metadata_that_would_break_predict(tmp_path, model_bytes, string_pipeline_bytes):
    """Found by the fuzzing below: each of these loaded, and predict then failed."""
    meta = _meta(model_bytes)
    cases = [
        (model_bytes, _fitted_with(meta, None), "target type None"),
        (model_bytes, _fitted_with(meta, "binary"), "target type 'binary' with 3 classes does not match 3 outputs"),
        (model_bytes, _fitted_with(meta, "multilabel-indicator", "logistic"), None),  # consistent
        (model_bytes, _fitted_with(meta, "multilabel-indicator"), "expected 'logistic' for target type"),
        (model_bytes, {**meta, "params": {**meta["params"], "n_threads": [None]}}, "n_threads"),
        (model_bytes, {**meta, "params": {**meta["params"], "activation": "softplus"}}, "activation"),
        (model_bytes, {**meta, "params": {**meta["params"], "hidden_layer_sizes": "eight"}}, "hidden_layer_sizes"),
    ]
    pipe_meta = _meta(string_pipeline_bytes)
    no_classes = {**pipe_meta, "fitted": {k: v for k, v in pipe_meta["fitted"].items() if k != "_label_binarizer"}}
    cases += [
        (string_pipeline_bytes, no_classes, "none in that of an MLPClassifier"),
        (string_pipeline_bytes, {**pipe_meta, "estimator": "MLPRegressor"}, "class labels in the metadata"),
        (string_pipeline_bytes, {**pipe_meta, "scaler": {"with_mean": 1}}, "malformed scaler metadata"),
        (string_pipeline_bytes, {**pipe_meta, "scaler": {"centre": True}}, "malformed scaler metadata"),
        (string_pipeline_bytes, {**pipe_meta, "scaler": True}, "malformed scaler metadata"),  # version 1's
    ]
    for data, bad_meta, message in cases:
        path = _write(tmp_path, _with_meta(data, bad_meta))
        if message is None:
            model = load(path)
            assert model.predict(X_IRIS).shape[0] == 150
        else:
            with pytest.raises(ValueError, match=re.escape(message)):
                load(path)


def test_load_extra_member(tmp_path, model_bytes):
    members = _members(model_bytes)
    members["extra.npy"] = _npy(np.zeros(3))
    with pytest.raises(ValueError, match=r"has members .*extra\.npy"):
        load(_write(tmp_path, _zip(members)))


def test_load_missing_member(tmp_path, model_bytes):
    members = _members(model_bytes)
    del members["optimizer_m2.npy"]
    with pytest.raises(ValueError, match="has members"):
        load(_write(tmp_path, _zip(members)))


@pytest.mark.parametrize("replacement, message", [
    (np.zeros(67, np.float32), r"member 'params' is float32 of shape \(67,\): expected float64 of shape \(67,\)"),
    (np.zeros(66), r"member 'params' is float64 of shape \(66,\): expected float64"),
    (np.zeros((67, 1)), r"member 'params' is float64 of shape \(67, 1\)"),
    (np.asfortranarray(np.zeros((67, 2))), r"member 'params'"),
    (np.zeros(67, np.int64), r"member 'params' is int64"),
    (np.float64(0.0), r"member 'params' is float64 of shape \(\)"),
])
def test_load_member_with_wrong_dtype_or_shape(tmp_path, model_bytes, replacement, message):
    assert _meta(model_bytes)["fitted"]["_network"]["layer_units"] == [4, 8, 3]  # 4*8+8+8*3+3 = 67 parameters
    members = _members(model_bytes)
    members["params.npy"] = _npy(replacement)
    with pytest.raises(ValueError, match=message):
        load(_write(tmp_path, _zip(members)))


def test_load_non_finite_member(tmp_path, model_bytes):
    members = _members(model_bytes)
    params = np.load(_bytesio.BytesIO(members["params.npy"]))
    params[3] = np.nan
    members["params.npy"] = _npy(params)
    with pytest.raises(ValueError, match="NaN or infinity"):
        load(_write(tmp_path, _zip(members)))


class _Unpickled(BaseException):
    """Raised by the pickle guard; a BaseException so that no ``except Exception`` can hide it."""


@pytest.fixture
def no_pickle(monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise _Unpickled("fastbp.io.load tried to unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    yield calls
    assert not calls


@pytest.mark.parametrize("member", ["params.npy", "__meta__.npy", "classes.npy", "optimizer_m1.npy"])
def test_load_object_member_is_refused_without_unpickling(tmp_path, model_bytes, no_pickle, member):
    members = _members(model_bytes)
    members[member] = _npy(np.array([{"evil": 1}, None, "x"], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"is object of shape \(3,\)"):
        load(_write(tmp_path, _zip(members)))


def test_load_huge_member_claim_is_refused_cheaply(tmp_path, model_bytes):
    """A header that claims far more data than the file holds is refused, quickly."""
    meta = _meta(model_bytes)
    units = [46340, 46340]
    n = units[0] * units[1] + units[1]
    meta["fitted"].update(_network={**meta["fitted"]["_network"], "layer_units": units}, n_features_in_=units[0],
                          n_outputs_=units[1], n_layers_=2)
    members = _members(_with_meta(model_bytes, meta))
    header = _bytesio.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
    for name in ("params.npy", "optimizer_m1.npy", "optimizer_m2.npy"):
        members[name] = header.getvalue() + b"\0" * 64
    started = time.perf_counter()
    with pytest.raises(ValueError):
        load(_write(tmp_path, _zip(members)))
    assert time.perf_counter() - started < 5


def test_save_unfitted_estimator(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        save(MLPClassifier(), tmp_path / "m.npz")
    with pytest.raises(ValueError, match="not fitted"):
        save(make_pipeline(StandardScaler().fit(X_IRIS), MLPRegressor()), tmp_path / "m.npz")
    fitted = _fit_quiet(MLPClassifier((8,), max_iter=2, random_state=0), X_IRIS, Y_IRIS)
    with pytest.raises(ValueError, match="not fitted"):
        save(make_pipeline(StandardScaler(), fitted), tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("obj", [
    SkMLPClassifier(), "a string", None, {"coefs_": []},
    make_pipeline(MinMaxScaler(), MLPClassifier()),
    make_pipeline(StandardScaler(), StandardScaler(), MLPClassifier()),
    make_pipeline(StandardScaler(), SkMLPClassifier()),
], ids=["sklearn-mlp", "str", "none", "dict", "minmax-pipeline", "three-steps", "sklearn-pipeline"])
def test_save_non_fastbp_object(tmp_path, obj):
    with pytest.raises(TypeError, match="save takes"):
        save(obj, tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------- atomicity

def _temp_files(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith(".fastbp-"))


@pytest.mark.parametrize("exc", [OSError("No space left on device"), KeyboardInterrupt()],
                         ids=["OSError", "KeyboardInterrupt"])
def test_failing_save_keeps_previous_file(tmp_path, monkeypatch, exc):
    old = _fit_quiet(MLPClassifier((8,), max_iter=2, random_state=0), X_IRIS, Y_IRIS)
    new = _fit_quiet(MLPClassifier((8,), max_iter=2, random_state=1), X_IRIS, Y_IRIS)
    path = tmp_path / "m.npz"
    save(old, path)
    before = path.read_bytes()
    real_savez = np.savez

    def savez_then_fail(f, **arrays):
        real_savez(f, **{k: arrays[k] for k in list(arrays)[:2]})  # part of the archive reaches the disk
        f.write(b"\0" * 1000)
        raise exc

    monkeypatch.setattr(fastbp.io.np, "savez", savez_then_fail)
    with pytest.raises(type(exc)):
        save(new, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    _assert_same_model(old, load(path))
    assert _temp_files(tmp_path) == []
    assert os.listdir(tmp_path) == ["m.npz"]


def test_failing_rename_keeps_previous_file(tmp_path, monkeypatch):
    old = _fit_quiet(MLPClassifier((8,), max_iter=2, random_state=0), X_IRIS, Y_IRIS)
    path = tmp_path / "m.npz"
    save(old, path)

    def refuse(src, dst):
        raise PermissionError(f"cannot replace {dst}")

    monkeypatch.setattr(fastbp.io.os, "replace", refuse)
    with pytest.raises(PermissionError):
        save(_fit_quiet(MLPClassifier((8,), max_iter=2, random_state=1), X_IRIS, Y_IRIS), path)
    monkeypatch.undo()
    _assert_same_model(old, load(path))
    assert os.listdir(tmp_path) == ["m.npz"]


def test_save_into_missing_folder_names_the_target(tmp_path):
    model = _fit_quiet(MLPClassifier((8,), max_iter=2, random_state=0), X_IRIS, Y_IRIS)
    target = tmp_path / "no" / "such" / "m.npz"
    with pytest.raises(FileNotFoundError, match="m.npz"):
        save(model, target)


_WRITER = textwrap.dedent("""
    import os, sys, warnings
    import numpy as np
    from fastbp import MLPClassifier
    from fastbp.io import save

    path = sys.argv[1]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 64))
    y = np.arange(64) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MLPClassifier((512, 512), solver="adam", max_iter=1, batch_size=64, random_state=0).fit(X, y)
    save(model, path)
    print("ready", flush=True)
    for line in sys.stdin:          # one writer per line; the test SIGKILLs each one
        pid = os.fork()
        if pid == 0:
            try:
                while True:
                    save(model, path)
            finally:
                os._exit(0)
        print(pid, flush=True)
        os.waitpid(pid, 0)
        print("reaped", flush=True)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the writer forks one process per kill")
def test_sigkill_during_save_never_leaves_a_broken_target(tmp_path):
    """A writer saving a ~7 MB model in a loop is SIGKILLed at random moments; the target always loads.

    A zygote process imports fastbp and fits the model once, then forks one
    writer per kill (saving starts at once), so that eight kills do not cost
    eight interpreter start-ups.
    """
    path = tmp_path / "big.npz"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    zygote = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert zygote.stdout.readline().strip() == "ready"
        reference = load(path)
        X = np.random.default_rng(0).standard_normal((64, 64))
        expected = reference.predict_proba(X)
        size = path.stat().st_size
        assert size > 5e6
        rng = random.Random(12345)
        mid_write = 0
        for _ in range(8):
            temps_before = len(_temp_files(tmp_path))
            zygote.stdin.write("go\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            time.sleep(rng.uniform(0.0, 0.3))
            os.kill(pid, signal.SIGKILL)
            assert zygote.stdout.readline().strip() == "reaped"
            mid_write += len(_temp_files(tmp_path)) > temps_before
            assert path.stat().st_size == size
            survivor = load(path)
            assert np.array_equal(survivor.predict_proba(X), expected)
        # Killed writers leave their temporary files behind (nothing can clean up after SIGKILL), but
        # never in place of the target; most kills land mid-write.
        assert mid_write >= 1
        assert all(name.endswith(".tmp") for name in _temp_files(tmp_path))
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=30)


# ----------------------------------------------------------------------------- fuzzing

def _base_models():
    """Small saved models covering every kind of member and metadata the format has."""
    X = X_IRIS
    strings = np.array(["setosa", "versicolor", "virginica"])[Y_IRIS]
    models = {
        "adam-int": MLPClassifier((3,), solver="adam", max_iter=2, random_state=0).fit(X, Y_IRIS),
        "sgd-strings-early-stopping": MLPClassifier((3,), solver="sgd", early_stopping=True, max_iter=3,
                                                    random_state=0).fit(X, strings),
        "multilabel-pipeline": make_pipeline(StandardScaler(), MLPClassifier((3,), max_iter=2, random_state=0)).fit(
            X, np.c_[Y_IRIS == 1, Y_IRIS == 2].astype(int)),
        "lbfgs-regressor-f32": MLPRegressor(hidden_layer_sizes=(3,), solver="lbfgs", max_iter=3,
                                            random_state=0).fit(X.astype(np.float32), X[:, 0]),
        "poisson-sgd": MLPRegressor(loss="poisson", hidden_layer_sizes=(3,), solver="sgd", max_iter=2,
                                    random_state=0).fit(X, np.round(X[:, 2])),
    }
    return models


@pytest.fixture(scope="module")
def fuzz_bases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = _base_models()
    bases = {}
    for name, model in models.items():
        path = folder / f"{name}.npz"
        save(model, path)
        bases[name] = path.read_bytes()
    return folder, bases


FUZZ_COUNTS = {}


def _check_malformed(folder, data):
    """Load ``data``: either a model that predicts on iris, or ValueError; never anything else, never pickle."""
    path = folder / "case.npz"
    path.write_bytes(data)
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise _Unpickled("fastbp.io.load tried to unpickle")

    with pytest.MonkeyPatch.context() as mp:
        for name in ("load", "loads", "Unpickler"):
            mp.setattr(pickle, name, refuse)
        try:
            model = load(path)
        except ValueError as exc:
            assert str(exc)
            model = None
    assert not calls, "the loader unpickled"
    if model is None:
        return "refused"
    X = X_IRIS if model.n_features_in_ == 4 else None
    assert X is not None, f"loaded a model for {model.n_features_in_} features from a 4-feature model's bytes"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            prediction = model.predict(X)
        except ValueError as exc:
            # A flipped exponent bit gives a well-formed file with a finite but enormous weight; predict
            # then refuses the overflowing output, which is the documented behaviour, not a loader failure.
            assert "network output is not finite" in str(exc)
            return "loaded"
        assert len(prediction) == len(X)
        if hasattr(model, "predict_proba"):
            assert model.predict_proba(X).shape[0] == len(X)
    return "loaded"


def _fuzz(name, strategy, build, n):
    """Run ``n`` hypothesis examples of ``build(bases, drawn) -> bytes`` through :func:`_check_malformed`."""
    outcomes = {"refused": 0, "loaded": 0}

    def run(folder, bases):
        @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(strategy)
        def case(drawn):
            outcomes[_check_malformed(folder, build(bases, drawn))] += 1

        case()
        FUZZ_COUNTS[name] = dict(outcomes)
        print(f"fuzz {name}: {outcomes}")  # shown with -s
        # Hypothesis runs exactly n examples unless the strategy is exhausted (never the case here).
        assert sum(outcomes.values()) >= n
        return outcomes

    return run


BASE_NAMES = ["adam-int", "sgd-strings-early-stopping", "multilabel-pipeline", "lbfgs-regressor-f32", "poisson-sgd"]
_base = st.sampled_from(BASE_NAMES)


def test_fuzz_truncations(fuzz_bases):
    _fuzz("truncations", st.tuples(_base, st.floats(0, 1, exclude_max=True)),
          lambda bases, d: bases[d[0]][:int(d[1] * len(bases[d[0]]))], 300)(*fuzz_bases)


def _flip(data, flips):
    out = bytearray(data)
    for position, mask in flips:
        out[position % len(out)] ^= mask
    return bytes(out)


_flips = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), min_size=1, max_size=20)


def test_fuzz_raw_byte_flips(fuzz_bases):
    """Flips anywhere in the file: zip structures, CRCs, headers, payloads."""
    _fuzz("raw flips", st.tuples(_base, _flips), lambda bases, d: _flip(bases[d[0]], d[1]), 400)(*fuzz_bases)


def _flip_member(bases, drawn):
    base, which, flips = drawn
    members = _members(bases[base])
    name = sorted(members)[which % len(members)]
    members[name] = _flip(members[name], flips)
    return _zip(members)  # fresh CRCs: the loader's own checks must catch it


def test_fuzz_member_payload_flips(fuzz_bases):
    """Flips inside one member with the zip rebuilt around it, so that CRCs do not give it away."""
    _fuzz("member flips", st.tuples(_base, st.integers(0, 16), _flips), _flip_member, 500)(*fuzz_bases)


def _flip_header(bases, drawn):
    """Flips confined to a member's .npy header (magic, dict with descr / fortran_order / shape)."""
    base, which, flips = drawn
    members = _members(bases[base])
    name = sorted(members)[which % len(members)]
    data = bytearray(members[name])
    header_len = 10 + int.from_bytes(data[8:10], "little")
    for position, mask in flips:
        data[position % header_len] ^= mask
    members[name] = bytes(data)
    return _zip(members)


def test_fuzz_npy_header_flips(fuzz_bases):
    flips = st.lists(st.tuples(st.integers(0, 200), st.integers(1, 255)), min_size=1, max_size=4)
    _fuzz("header flips", st.tuples(_base, st.integers(0, 16), flips), _flip_header, 250)(*fuzz_bases)


_PICKLABLE = st.recursive(st.none() | st.integers() | st.text(max_size=5) | st.floats(allow_nan=False),
                          lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=2),
                          max_leaves=4)


def _object_member(bases, drawn):
    base, which, values, keep_shape = drawn
    members = _members(bases[base])
    name = sorted(members)[which % len(members)]
    original = np.load(_bytesio.BytesIO(members[name]), allow_pickle=False)
    array = np.empty(original.shape if keep_shape else len(values) + 1, dtype=object)
    flat = array.reshape(-1)
    for i in range(flat.size):
        flat[i] = values[i % len(values)] if values else None
    members[name] = _npy(array, allow_pickle=True)
    return _zip(members)


def test_fuzz_object_members(fuzz_bases):
    """A member replaced by an object array saved with allow_pickle=True: refused, never unpickled."""
    _fuzz("object members", st.tuples(_base, st.integers(0, 16), st.lists(_PICKLABLE, max_size=4), st.booleans()),
          _object_member, 250)(*fuzz_bases)


def _random_file(bases, drawn):
    kind, payload, base = drawn
    if kind == "bytes":
        return payload
    if kind == "zip-magic":
        return b"PK\x03\x04" + payload
    if kind == "npy-in-zip":  # a valid zip whose members hold random bytes behind a valid .npy magic
        members = {name: b"\x93NUMPY\x01\x00" + payload for name in _members(bases[base])}
        return _zip(members)
    members = _members(bases[base])  # valid members, random metadata bytes
    members["__meta__.npy"] = _npy(np.frombuffer(payload, dtype=np.uint8))
    return _zip(members)


def test_fuzz_random_bytes(fuzz_bases):
    _fuzz("random bytes", st.tuples(st.sampled_from(["bytes", "zip-magic", "npy-in-zip", "meta-bytes"]),
                                    st.binary(max_size=600), _base), _random_file, 250)(*fuzz_bases)


_PLAUSIBLE = st.sampled_from([
    "softmax", "logistic", "identity", "exp", "relu", "tanh", "multiclass", "binary", "multilabel-indicator",
    "continuous", "float32", "float64", "int64", "bool", "array", "json", "SGDOptimizer", "AdamOptimizer",
    "MLPClassifier", "MLPRegressor", "fastbp-model", "<i8", "|b1", "<U1", "<f8", "|O", "constant", "adam",
    "sgd", "lbfgs", "poisson", "squared_error", "PCG64", "MT19937", "n_iter_", "coefs_", "__class__",
])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 12) | st.integers(-2 ** 64, 2 ** 64) | st.floats()
    | st.text(max_size=8) | _PLAUSIBLE,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6) | _PLAUSIBLE, c, max_size=3),
    max_leaves=6)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _paths(value, prefix + (i,))


def _mutate_meta(bases, drawn):
    base, choices = drawn
    meta = _meta(bases[base])
    for pick, op, value, key in choices:
        paths = list(_paths(meta))[1:]
        path = paths[pick % len(paths)]
        parent = meta
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if op == "replace":
            parent[last] = value
        elif op == "delete":
            if isinstance(parent, dict):
                del parent[last]
            else:
                parent.pop(last)
        elif op == "insert":
            if isinstance(parent, dict):
                parent[key] = value
            else:
                parent.insert(last, value)
        else:  # swap the value with another path's (the same structure, wrong place)
            other = paths[(pick * 7 + 3) % len(paths)]
            holder = meta
            for step in other[:-1]:
                holder = holder[step]
            if other[:len(path)] != path and path[:len(other)] != other:
                parent[last], holder[other[-1]] = holder[other[-1]], parent[last]
    return _with_meta(bases[base], meta)


def test_fuzz_metadata_mutations(fuzz_bases):
    """Structured mutations of the JSON metadata (values replaced, deleted, inserted, moved), CRCs intact."""
    choice = st.tuples(st.integers(0, 10 ** 6), st.sampled_from(["replace", "replace", "delete", "insert", "swap"]),
                       _JSON, st.text(max_size=6) | _PLAUSIBLE)
    _fuzz("metadata mutations", st.tuples(_base, st.lists(choice, min_size=1, max_size=3)), _mutate_meta, 700)(
        *fuzz_bases)


def test_fuzz_swapped_members_exhaustive(fuzz_bases):
    """Every pair of members of every base model, data swapped; and every member renamed to another's name."""
    folder, bases = fuzz_bases
    outcomes = {"refused": 0, "loaded": 0}
    for data in bases.values():
        members = _members(data)
        names = sorted(members)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                swapped = dict(members)
                swapped[a], swapped[b] = members[b], members[a]
                outcomes[_check_malformed(folder, _zip(swapped))] += 1
            for b in names:
                if b != a:
                    renamed = {n: d for n, d in members.items() if n != a}
                    renamed[b] = members[a]
                    outcomes[_check_malformed(folder, _zip(renamed))] += 1
    FUZZ_COUNTS["swapped/renamed members"] = outcomes
    print(f"fuzz swapped/renamed members: {outcomes}")
    assert outcomes["refused"] > 0


def test_fuzz_bases_are_valid(fuzz_bases):
    folder, bases = fuzz_bases
    for data in bases.values():
        assert _check_malformed(folder, data) == "loaded"


def test_assigned_coefs_are_saved(tmp_path):
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    model = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y)
    model.coefs_[0] = np.zeros_like(model.coefs_[0])
    save(model, tmp_path / "m.npz")
    assert not load(tmp_path / "m.npz").coefs_[0].any()


@pytest.mark.parametrize("bit_generator", [np.random.MT19937, np.random.Philox, np.random.SFC64])
def test_any_numpy_bit_generator_resumes_exactly(tmp_path, bit_generator):
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)

    def make():
        return MLPClassifier(hidden_layer_sizes=(np.int64(4),), solver="sgd", random_state=np.random.Generator(
            bit_generator(0)))

    a, b = make(), make()
    for m in (a, b):
        m.partial_fit(X, y, classes=[0, 1, 2])
    save(a, tmp_path / "m.npz")
    c = load(tmp_path / "m.npz")
    b.partial_fit(X, y)
    c.partial_fit(X, y)
    assert np.array_equal(b._network.params, c._network.params)


def test_non_finite_curves_and_scores_roundtrip(tmp_path):
    """A diverged epoch's NaN validation score and the stopping rule's inf travel as the strings "nan" / "inf"."""
    model = _fit_quiet(MLPClassifier((4,), solver="sgd", early_stopping=True, max_iter=3, random_state=0),
                       X_IRIS, Y_IRIS)
    model.validation_scores_[1] = np.nan
    model.best_loss_ = np.inf
    loaded = _roundtrip(model, tmp_path)
    assert np.isnan(loaded.validation_scores_[1]) and loaded.validation_scores_[::2] == model.validation_scores_[::2]
    assert loaded.best_loss_ == np.inf
    assert _meta((tmp_path / "model.npz").read_bytes())["fitted"]["validation_scores_"][1] == "nan"


@pytest.mark.parametrize("kind, value", [("int", 7), ("float", 0.25), ("str", "note"), ("floats", [1.0, 2.0])])
def test_a_new_fitted_field_is_one_entry_of_fields(tmp_path, monkeypatch, kind, value):
    """io and pickling carry a field that only fastbp._fitted.FIELDS names, checked by its kind."""
    import fastbp._fitted

    monkeypatch.setitem(fastbp._fitted.FIELDS, "extra_", kind)
    model = _fit_quiet(MLPClassifier((4,), max_iter=2, random_state=0), X_IRIS, Y_IRIS)
    model._fitted.extra_ = value
    assert _roundtrip(model, tmp_path)._fitted.extra_ == value
    assert pickle.loads(pickle.dumps(model))._fitted.extra_ == value
    meta = _meta((tmp_path / "model.npz").read_bytes())
    meta["fitted"]["extra_"] = {"unexpected": 1}
    with pytest.raises(ValueError, match="metadata fitted.extra_ is"):
        load(_write(tmp_path, _with_meta((tmp_path / "model.npz").read_bytes(), meta)))

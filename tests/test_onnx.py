"""ONNX export: onnxruntime's labels equal fastbp's predict, its probabilities and values within 1e-4."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_classification, make_multilabel_classification, make_regression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

pytest.importorskip("skl2onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from fastbp import MLPClassifier, MLPRegressor  # noqa: E402
from fastbp.onnx import to_onnx  # noqa: E402

TOL = 1e-4


def _run(proto, X):
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})


def _classification(kind):
    if kind == "multilabel":
        X, y = make_multilabel_classification(80, n_features=6, n_classes=3, random_state=0)
        return X, y
    X, y = make_classification(80, n_features=6, n_informative=4, n_classes=2 if kind == "binary" else 3,
                               random_state=0)
    return X, np.array(["no", "yes", "maybe"])[y] if kind == "strings" else y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["binary", "multiclass", "strings", "multilabel"])
def test_classifier_predicts_as_fastbp(kind, dtype):
    X, y = _classification(kind)
    X = X.astype(dtype)
    model = MLPClassifier(hidden_layer_sizes=(8, 5), activation="tanh", max_iter=50, random_state=0).fit(X, y)
    labels, proba = _run(to_onnx(model, X), X)
    assert_array_equal(labels, model.predict(X))
    assert_allclose(proba, model.predict_proba(X), rtol=0, atol=TOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_targets", [1, 2])
def test_regressor_predicts_as_fastbp(n_targets, dtype):
    X, y = make_regression(80, n_features=5, n_targets=n_targets, random_state=0)
    X, y = X.astype(dtype), y / y.std()
    model = MLPRegressor(hidden_layer_sizes=(7,), solver="lbfgs", max_iter=50, random_state=0).fit(X, y)
    (values,) = _run(to_onnx(model, X), X)
    assert_allclose(values, model.predict(X).reshape(len(X), -1), rtol=0, atol=TOL)


def test_saved_pipeline_predicts_on_raw_features(tmp_path):
    import fastbp
    from fastbp.cli import main

    assert main(["train", "iris", "--epochs", "3", "--quiet", "--save", str(tmp_path / "m.npz")]) == 0
    pipeline = fastbp.load(tmp_path / "m.npz")
    assert isinstance(pipeline, Pipeline) and isinstance(pipeline.steps[0][1], StandardScaler)
    X = np.random.default_rng(0).uniform(0, 8, (30, 4)).astype(np.float32)
    labels, proba = _run(to_onnx(pipeline, X), X)
    assert_array_equal(labels, pipeline.predict(X))
    assert_allclose(proba, pipeline.predict_proba(X), rtol=0, atol=TOL)


def test_refuses_what_it_cannot_export():
    X, y = make_regression(40, n_features=3, random_state=0)
    with pytest.raises(ValueError, match="not fitted"):
        to_onnx(MLPRegressor(), X)
    poisson = MLPRegressor(loss="poisson", hidden_layer_sizes=(3,), max_iter=5).fit(X, np.abs(y))
    with pytest.raises(ValueError, match="poisson"):
        to_onnx(poisson, X)
    with pytest.raises(ValueError, match="2-D"):
        to_onnx(poisson, X[0])


def test_readme_serving_example_runs():
    readme = open(__file__.rsplit("/tests/", 1)[0] + "/README.md").read()
    section = readme.split("## Serving", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md (Serving)", "exec"), {})

"""Tests for fastbp.datasets."""
import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from fastbp.datasets import DATASETS, Dataset, load_dataset, load_raw

CLASSIFICATION = {"digits", "iris", "wine", "breast_cancer", "moons", "circles", "blobs",
                  "classification"}
REGRESSION = {"diabetes", "regression", "friedman1"}


def test_registry():
    assert set(DATASETS) == CLASSIFICATION | REGRESSION
    assert all(DATASETS[n] == "classification" for n in CLASSIFICATION)
    assert all(DATASETS[n] == "regression" for n in REGRESSION)


@pytest.mark.parametrize("name", sorted(DATASETS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_every_dataset(name, dtype):
    ds = load_dataset(name, dtype=dtype)
    assert isinstance(ds, Dataset) and ds.name == name and ds.task == DATASETS[name]
    X, y, task = load_raw(name)
    assert task == ds.task
    n_tr, n_te = len(ds.X_train), len(ds.X_test)
    assert n_tr + n_te == len(X) and n_te == int(np.ceil(0.25 * len(X)))
    assert ds.X_train.shape[1] == ds.X_test.shape[1] == X.shape[1]
    assert ds.y_train.shape == (n_tr,) and ds.y_test.shape == (n_te,)
    assert ds.mean.shape == ds.scale.shape == (X.shape[1],)
    for a in (ds.X_train, ds.X_test):
        assert a.dtype == dtype and a.flags.c_contiguous
    assert np.all(ds.scale > 0)
    if ds.task == "classification":
        assert ds.y_train.dtype == ds.y_test.dtype == np.int64
    else:
        assert ds.y_train.dtype == ds.y_test.dtype == dtype
        assert (ds.y_mean, ds.y_scale) == (0.0, 1.0)
    # Train split standardised: ~zero mean, unit std on non-constant columns.
    tol = 1e-4 if dtype == np.float32 else 1e-10
    Xt = ds.X_train.astype(np.float64)
    varying = Xt.std(axis=0) > 0  # digits has pixels constant in the train split
    assert varying.sum() >= X.shape[1] // 2
    np.testing.assert_allclose(Xt.mean(axis=0), 0.0, atol=tol)
    np.testing.assert_allclose(Xt.std(axis=0)[varying], 1.0, atol=10 * tol)


def test_constant_feature_gets_unit_scale():
    ds = load_dataset("digits")
    const = ds.X_train.std(axis=0) == 0
    assert const.any()
    assert np.all(ds.scale[const] == 1.0)
    assert np.all(ds.X_train[:, const] == 0.0)


@pytest.mark.parametrize("name", ["wine", "moons", "diabetes"])
def test_transform_reproduces_split(name):
    rs = 3
    ds = load_dataset(name, random_state=rs, dtype=np.float64)
    X, y, task = load_raw(name, random_state=rs)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=0.25, random_state=rs,
        stratify=y if task == "classification" else None)
    np.testing.assert_array_equal(ds.transform(X_tr), ds.X_train)
    np.testing.assert_array_equal(ds.transform(X_te), ds.X_test)
    np.testing.assert_array_equal(ds.y_train, y_tr)
    np.testing.assert_array_equal(ds.y_test, y_te)
    np.testing.assert_allclose(ds.mean, X_tr.mean(axis=0))
    ds32 = load_dataset(name, random_state=rs)
    out = ds32.transform(X_tr)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, ds32.X_train)


def test_reproducible_and_seed_dependent():
    a, b = load_dataset("moons", random_state=1), load_dataset("moons", random_state=1)
    for f in ("X_train", "X_test", "y_train", "y_test", "mean", "scale"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    c = load_dataset("moons", random_state=2)
    assert not np.array_equal(a.X_train, c.X_train)
    assert not np.array_equal(load_raw("regression", random_state=0)[0],
                              load_raw("regression", random_state=1)[0])


@pytest.mark.parametrize("name", ["iris", "digits", "classification"])
def test_stratified(name):
    ds = load_dataset(name, test_size=0.3)
    _, y, _ = load_raw(name)
    k = y.max() + 1
    full = np.bincount(y, minlength=k) / len(y)
    for part in (ds.y_train, ds.y_test):
        np.testing.assert_allclose(np.bincount(part, minlength=k) / len(part), full, atol=0.02)


def test_scale_target():
    ds = load_dataset("diabetes", scale_target=True, dtype=np.float64)
    assert ds.y_scale > 1.0 and ds.y_mean > 1.0
    assert abs(ds.y_train.mean()) < 1e-10 and abs(ds.y_train.std() - 1.0) < 1e-10
    raw = load_dataset("diabetes", dtype=np.float64)
    np.testing.assert_allclose(ds.y_test * ds.y_scale + ds.y_mean, raw.y_test)
    np.testing.assert_allclose(raw.y_train.mean(), ds.y_mean)
    assert load_dataset("diabetes", scale_target=True).y_train.dtype == np.float32
    # Ignored for classification.
    cls = load_dataset("iris", scale_target=True)
    assert cls.y_train.dtype == np.int64 and (cls.y_mean, cls.y_scale) == (0.0, 1.0)


def test_unknown_name():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'.*known names.*iris"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="known names"):
        load_raw("mnist")


@pytest.mark.parametrize("dtype", [np.int64, np.float16, "complex128", "not-a-dtype", None])
def test_bad_dtype(dtype):
    with pytest.raises(ValueError, match="float32, float64"):
        load_dataset("iris", dtype=dtype)


@pytest.mark.parametrize("test_size", [0.0, 1.0, -0.1, 1.5])
def test_bad_test_size(test_size):
    with pytest.raises(ValueError, match=r"test_size must be in the open interval \(0, 1\)"):
        load_dataset("iris", test_size=test_size)


def test_frozen():
    ds = load_dataset("iris")
    with pytest.raises(AttributeError):
        ds.name = "x"

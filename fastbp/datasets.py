"""Named scikit-learn toy datasets, split and standardised reproducibly.

Only datasets bundled with scikit-learn (``load_*``) or generated on the fly
(``make_*``) are used, so nothing is downloaded. :func:`load_dataset` returns a
:class:`Dataset` with a train/test split (stratified for classification) whose
features are standardised with statistics fitted on the train split only.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

_N = 1000
# Each loader takes sklearn.datasets and the seed.  That package is imported only when a dataset is
# loaded: with the loaders of its downloadable sets it costs a command that loads none (``fastbp warmup``,
# ``fastbp train --help``, a bad option) about 0.1 s.
_LOADERS: dict[str, tuple[str, Callable[[Any, int], tuple[np.ndarray, np.ndarray]]]] = {
    "digits": ("classification", lambda skd, rs: skd.load_digits(return_X_y=True)),
    "iris": ("classification", lambda skd, rs: skd.load_iris(return_X_y=True)),
    "wine": ("classification", lambda skd, rs: skd.load_wine(return_X_y=True)),
    "breast_cancer": ("classification", lambda skd, rs: skd.load_breast_cancer(return_X_y=True)),
    "moons": ("classification", lambda skd, rs: skd.make_moons(_N, noise=0.2, random_state=rs)),
    "circles": ("classification",
                lambda skd, rs: skd.make_circles(_N, noise=0.1, factor=0.5, random_state=rs)),
    "blobs": ("classification", lambda skd, rs: skd.make_blobs(_N, centers=3, random_state=rs)),
    "classification": ("classification", lambda skd, rs: skd.make_classification(
        _N, n_features=20, n_informative=5, n_classes=3, random_state=rs)),
    "diabetes": ("regression", lambda skd, rs: skd.load_diabetes(return_X_y=True)),
    "regression": ("regression",
                   lambda skd, rs: skd.make_regression(_N, n_features=10, noise=10.0, random_state=rs)),
    "friedman1": ("regression", lambda skd, rs: skd.make_friedman1(_N, noise=1.0, random_state=rs)),
}

#: Dataset name -> task (``"classification"`` or ``"regression"``).
DATASETS: dict[str, str] = {name: task for name, (task, _) in _LOADERS.items()}

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class Dataset:
    """A train/test split with features standardised on the train split.

    Attributes
    ----------
    name, task : str
        Dataset name and task (``"classification"`` or ``"regression"``).
    X_train, X_test : np.ndarray
        Standardised, C-contiguous features in the requested float dtype.
    y_train, y_test : np.ndarray
        ``int64`` labels (classification) or float targets (regression).
    mean, scale : np.ndarray
        Per-feature train mean and std (constant features get scale 1).
    y_mean, y_scale : float
        Target standardisation (``0.0`` and ``1.0`` unless ``scale_target``).
    """

    name: str
    task: str
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    y_mean: float = 0.0
    y_scale: float = 1.0

    def transform(self, X: Any) -> np.ndarray:
        """Standardise raw features ``X`` as ``(X - mean) / scale``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Raw (unscaled) features.

        Returns
        -------
        np.ndarray
            C-contiguous array in the dataset's dtype.
        """
        return _standardise(X, self.mean, self.scale)


def _standardise(X: Any, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((np.asarray(X, dtype=mean.dtype) - mean) / scale)


def _check_name(name: str) -> str:
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known names: {sorted(_LOADERS)}")
    return DATASETS[name]


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = None if dtype is None else np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in _DTYPES:
        raise ValueError(f"dtype must be one of float32, float64; got {dtype!r}")
    return dt


def load_raw(name: str, *, random_state: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Return raw ``(X, y, task)`` before splitting and scaling.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    random_state : int, default 0
        Seed for generated (``make_*``) datasets; ignored for bundled ones.

    Returns
    -------
    X : np.ndarray of float64, y : np.ndarray, task : str
    """
    from sklearn import datasets

    task = _check_name(name)
    X, y = _LOADERS[name][1](datasets, random_state)
    y = np.asarray(y, dtype=np.int64 if task == "classification" else np.float64)
    return np.asarray(X, dtype=np.float64), y, task


def load_dataset(name: str, *, test_size: float = 0.25, random_state: int = 0,
                 dtype: Any = np.float32, scale_target: bool = False) -> Dataset:
    """Load, split and standardise a named dataset.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    test_size : float, default 0.25
        Fraction of samples in the test split, strictly between 0 and 1.
    random_state : int, default 0
        Seed for data generation and for the split.
    dtype : {np.float32, np.float64}, default np.float32
        Float dtype of the features (and of regression targets).
    scale_target : bool, default False
        For regression, also standardise ``y`` by the train mean/std.

    Returns
    -------
    Dataset
        Raises ``ValueError`` for an unknown name, bad ``test_size`` or dtype.
    """
    from sklearn.model_selection import train_test_split

    task = _check_name(name)
    if not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be in the open interval (0, 1), got {test_size!r}")
    dt = _check_dtype(dtype)
    X, y, _ = load_raw(name, random_state=random_state)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, random_state=random_state,
        stratify=y if task == "classification" else None)
    std = X_tr.std(axis=0)
    mean = X_tr.mean(axis=0).astype(dt)
    scale = np.where(std > 0, std, 1.0).astype(dt)
    y_mean, y_scale = 0.0, 1.0
    if task == "regression":  # scale_target is ignored for classification
        if scale_target:
            y_mean, y_scale = float(y_tr.mean()), float(y_tr.std()) or 1.0
            y_tr, y_te = (y_tr - y_mean) / y_scale, (y_te - y_mean) / y_scale
        y_tr, y_te = y_tr.astype(dt), y_te.astype(dt)
    return Dataset(name, task, _standardise(X_tr, mean, scale), _standardise(X_te, mean, scale),
                   np.ascontiguousarray(y_tr), np.ascontiguousarray(y_te),
                   mean, scale, y_mean, y_scale)

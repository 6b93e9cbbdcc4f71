"""``MLPClassifier`` and ``MLPRegressor``: scikit-learn's API on fastbp's kernels.

Constructor parameters, defaults, fitted attributes and their meanings follow
:mod:`sklearn.neural_network`; the differences are listed in README.  The
machinery both share (fit, solvers, predict, pickling) is in :mod:`fastbp._base`;
here is what differs: class labels and their encoding, output activations, scores.
"""

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import column_or_1d

from ._base import _BaseMLP, _check_solver, _store_arguments
from ._docs import ATTRIBUTES, PARAMETERS, estimator_doc
from ._fitted import fitted_binarizer


def _plain_labels(y, classes):
    """Whether ``y`` is 1-D and it and ``classes`` are both plain numbers or both strings (the fast label paths apply).

    Both then sort alike, so the sorted ``classes`` can be binary-searched for ``y``.
    """
    if y.ndim != 1:
        return False
    kinds = y.dtype.kind + classes.dtype.kind
    return all(k in "biuf" for k in kinds) or kinds == "UU"


def _binarizer_of(y):
    """``LabelBinarizer().fit(y)``; for 1-D integer labels built from ``np.unique`` (15x faster on digits).

    scikit-learn's target-type checks take most of a millisecond, a twentieth of a small fit; for such
    labels they decide only "binary" (at most two classes) or "multiclass", as here.
    """
    if y.ndim == 1 and y.dtype.kind in "iu" and y.size > 0:
        classes = np.unique(y)
        return fitted_binarizer(classes, "binary" if classes.size <= 2 else "multiclass")
    return LabelBinarizer().fit(y)


def _known_labels(y, classes, plain):
    """Whether every label of ``y`` is in the sorted ``classes``, and for plain labels their positions there.

    Plain labels are found by :func:`_label_index` (no sort of y), which also gives their encoding its
    positions; others by unique_labels.
    """
    if not plain:
        return not len(np.setdiff1d(unique_labels(y), classes)), None
    index = _label_index(y, classes)
    return index is not None, index


def _label_index(y, classes):
    """Each plain label's position in the sorted ``classes``, or None where one is not among them.

    Integer classes from 0 to n - 1 (sorted and unique: exactly those n) are their own positions, so a
    range check of y does what a binary search and a comparison of every label would; other classes are
    binary-searched.
    """
    n = classes.shape[0]
    if y.dtype.kind in "iu" and classes.dtype.kind in "iu" and classes[0] == 0 and classes[-1] == n - 1:
        return y if 0 <= y.min() and y.max() < n else None
    index = np.minimum(np.searchsorted(classes, y), n - 1)
    return index if np.array_equal(classes[index], y) else None


def _same_classes(classes, known):
    """Whether ``unique_labels(classes)`` equals ``known``, the sorted ``classes_`` (partial_fit's later calls).

    Plain labels of ``known``'s dtype equal to it element by element are a copy of it, which unique_labels
    gives back unchanged, as it gave ``known``: that costs a comparison, not unique_labels' target-type
    checks (more than a tenth of an epoch on digits).  Anything else goes through unique_labels, its
    errors included.
    """
    if (type(classes) is np.ndarray and classes.dtype == known.dtype and classes.dtype.kind in "biufU"
            and np.array_equal(classes, known)):
        return True
    return np.array_equal(unique_labels(classes), known)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    __doc__ = estimator_doc(
        """Multi-layer perceptron classifier, a drop-in for :class:`sklearn.neural_network.MLPClassifier`.

    Trains with fastbp's fused Numba kernels; float32 input trains in float32.
    Softmax output for multiclass targets, logistic for binary and multilabel.""",
        PARAMETERS,
        """classes_ : ndarray of shape (n_classes,)
    The class labels, sorted (for multilabel targets, the column indices).
""" + ATTRIBUTES)

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000, callbacks=None, n_threads=None):
        _store_arguments(self, locals())

    @available_if(_check_solver)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y); ``n_iter_`` is then 1, as in scikit-learn, and ``t_`` counts every call's rows.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array-like of shape (n_classes,), default=None
            Every class of all calls: required on the first call (y need not
            hold them all), then optional.

        Returns
        -------
        self : object
        """
        self._validate_params()
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            # Multilabel targets name their labels by column, so the binarizer learns them from y.  A 1-D
            # array is never multilabel: it skips type_of_target, as integer classes skip LabelBinarizer's
            # checks (_binarizer_of), which made a first partial_fit cost most of a millisecond more than an epoch.
            multilabel = not (type(y) is np.ndarray and y.ndim == 1) and type_of_target(y).startswith("multilabel")
            integers = type(classes) is np.ndarray and classes.ndim == 1 and classes.dtype.kind in "iu"
            self._label_binarizer = (LabelBinarizer().fit(y) if multilabel
                                     else _binarizer_of(classes) if integers else LabelBinarizer().fit(classes))
            self.classes_ = self._label_binarizer.classes_
        elif classes is not None and not _same_classes(classes, self.classes_):
            raise ValueError(f"`classes={classes!r}` is not the same as on the first call to partial_fit: "
                             f"expected {self.classes_!r}")
        return self._fit(X, y, sample_weight, incremental=True)

    def _out_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _validate_input(self, X, y, incremental, reset):
        X, y = self._common_validation(X, y, reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        index = None  # the labels' positions in classes_, where checking them found those
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = _binarizer_of(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            plain = _plain_labels(y, self.classes_)
            if self.warm_start and not incremental:
                classes = np.unique(y) if plain else unique_labels(y)
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in the previous "
                                     f"call to fit. Previously got {self.classes_}, `y` has {classes}")
            else:
                known, index = _known_labels(y, self.classes_, plain)
                if not known:
                    classes = np.unique(y) if plain else unique_labels(y)
                    raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                     f"{self.classes_}. 'y' has {classes}.")
        return X, self._encode_labels(y, X.dtype, index)

    def _encode_labels(self, y, dtype, index=None):
        """Targets for the network: one-hot, one 0/1 column (binary) or the label matrix (multilabel).

        For plain 1-D labels (numbers, strings) this indexes directly instead of calling
        ``LabelBinarizer.transform``, whose target-type checks cost more than an
        epoch of training on a small dataset (partial_fit pays them every call);
        ``index``: the labels' positions in ``classes_``, where the caller has them.
        """
        binarizer = self._label_binarizer
        if binarizer.y_type_ not in ("binary", "multiclass") or not _plain_labels(y, self.classes_):
            return binarizer.transform(y).astype(dtype)
        if index is None:
            index = np.searchsorted(self.classes_, y)  # classes_ is sorted (np.unique)
        if binarizer.y_type_ == "binary":
            return (index == 1).astype(dtype).reshape(-1, 1)
        Y = np.zeros((y.shape[0], self.classes_.shape[0]), dtype)
        Y[np.arange(y.shape[0]), index] = 1
        return Y

    def _score_output(self, out, Y, sw):
        # Accuracy as accuracy_score defines it (exact match of every label of a row), computed directly:
        # it runs after every epoch when early stopping, and the metric's input checks cost more than the epoch.
        hits = self._labels(out) == self._labels(Y)
        return float(np.average(hits if hits.ndim == 1 else hits.all(axis=1), weights=sw))

    def _labels(self, out):
        """Labels from network outputs, as ``LabelBinarizer.inverse_transform`` (argmax, or threshold 0.5)."""
        y_type = self._label_binarizer.y_type_
        if y_type == "multiclass":
            return self.classes_.take(out.argmax(axis=1))
        if y_type == "binary":
            if self.classes_.shape[0] == 1:  # a single class seen: it is every prediction
                return np.repeat(self.classes_, out.shape[0])
            return self.classes_.take((out.ravel() > 0.5).astype(np.intp))
        return self._label_binarizer.inverse_transform(out)

    def predict(self, X):
        """Predicted class labels."""
        return self._labels(self._forward_checked(X))

    def predict_proba(self, X):
        """Class probabilities, columns ordered as ``classes_``."""
        out = self._forward_checked(X)
        if self.n_outputs_ == 1:
            return np.hstack([1 - out, out])
        return out

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(proba, out=proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    __doc__ = estimator_doc(
        """Multi-layer perceptron regressor, a drop-in for :class:`sklearn.neural_network.MLPRegressor`.

    Trains with fastbp's fused Numba kernels; float32 input trains in float32.""",
        """loss : {'squared_error', 'poisson'}, default='squared_error'
    Squared error (identity output) or half the Poisson deviance (exp output,
    ``y >= 0``).
""" + PARAMETERS, ATTRIBUTES)

    _parameter_constraints: dict = {**_BaseMLP._parameter_constraints,
                                    "loss": [StrOptions({"squared_error", "poisson"})]}

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, callbacks=None, n_threads=None):
        _store_arguments(self, locals())

    @available_if(_check_solver)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y); ``n_iter_`` is then 1, as in scikit-learn, and ``t_`` counts every call's rows.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : object
        """
        self._validate_params()
        return self._fit(X, y, sample_weight, incremental=True)

    def _out_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _validate_input(self, X, y, incremental, reset):
        X, y = self._common_validation(X, y, reset, y_numeric=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("loss='poisson' requires non-negative y")
        Y = np.ascontiguousarray(y.reshape(len(y), -1), dtype=X.dtype)
        return X, Y

    def _score_output(self, out, Y, sw):
        return r2_score(Y, out, sample_weight=sw)

    def predict(self, X):
        """Predicted targets, of shape (n_samples,) or (n_samples, n_outputs)."""
        out = self._forward_checked(X)
        return out.ravel() if self.n_outputs_ == 1 else out

"""The estimators' shared base: scikit-learn's fit, partial_fit and predict machinery on fastbp's network.

:class:`_BaseMLP` validates, builds or resumes the :class:`~fastbp.network.Network`,
runs a solver (the epoch loop of :func:`fastbp.trainer.run_epochs`, or L-BFGS
through scipy) and pickles the model; :mod:`fastbp.estimator` adds what differs
between the classifier and the regressor (targets, output activation, score).
"""

import warnings
from functools import cache, partial
from numbers import Integral, Real

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, Options, StrOptions, make_constraint
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ._config import FLOAT_DTYPES
from ._fitted import STOPPING_FIELDS, FittedState, fitted_fields
from ._threads import fit_scope
from ._threads import limit as limit_threads
from ._validation import check_network_size
from .network import PREDICT_CHUNK, Network
from .optim import AdamOptimizer, SGDOptimizer
from .trainer import Trainer, TrainingDivergedError, run_epochs

_STOCHASTIC_SOLVERS = ("sgd", "adam")
_OPTIMIZERS = {"SGDOptimizer": "sgd", "AdamOptimizer": "adam"}


class TrainingDivergedWarning(ConvergenceWarning):
    """``fit`` / ``partial_fit`` stopped because the loss became NaN or infinite; the last finite weights are kept.

    A :class:`~sklearn.exceptions.ConvergenceWarning`, as scikit-learn users
    filter those; ``warnings.simplefilter("error", TrainingDivergedWarning)``
    turns it into an exception.
    """


@cache
def _constraints_of(cls):
    """Per entry of ``cls._parameter_constraints``, in its order: scikit-learn's constraint objects for it
    (``make_constraint``), or a constraint anything satisfies for ``"no_validation"``."""
    return tuple((_Anything(),) if constraints == "no_validation" else tuple(make_constraint(c) for c in constraints)
                 for constraints in cls._parameter_constraints.values())


class _Anything:
    def is_satisfied_by(self, value):
        return True


def _check_solver(estimator):
    """``partial_fit`` exists only for the stochastic solvers (``hasattr`` is False for lbfgs, as in scikit-learn)."""
    if estimator.solver not in _STOCHASTIC_SOLVERS:
        raise AttributeError(f"partial_fit is only available for stochastic optimizers. {estimator.solver} is not "
                             "stochastic.")
    return True


@fitted_fields  # n_iter_, loss_curve_, _network, ...: attributes of self._fitted, the one owner (fastbp._fitted)
class _BaseMLP(BaseEstimator):
    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state", np.random.Generator],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "callbacks": [list, tuple, callable, None],
        "n_threads": [Interval(Integral, 1, 1 << 16, closed="both"), None],  # threadpoolctl takes a C int
    }

    # ------------------------------------------------------------------ fit

    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data; float32 trains in float32, anything else in float64.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values (class labels in classification, real numbers in regression).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative per-sample weights with a positive sum.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._validate_params()
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental):
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        if any(not isinstance(s, Integral) or isinstance(s, bool) or s <= 0 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers (or () for a linear model), got "
                             f"{self.hidden_layer_sizes!r}")
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        callbacks = self._callbacks()
        fresh = not self.warm_start and not incremental
        first_pass = fresh or not hasattr(self, "_network")
        # coefs_ / intercepts_ a user assigned before any training seed a warm start or partial_fit, as in
        # scikit-learn; a plain fit starts from random_state, as there.
        seed = None if fresh or hasattr(self, "_network") else self._assigned_weights()
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=X.dtype)
            if np.any(sample_weight < 0) or not sample_weight.sum() > 0:
                raise ValueError("sample_weight must be non-negative with a positive sum")
            if not sample_weight.all():
                # A zero-weight row contributes nothing, so it is dropped: a minibatch
                # of only such rows would otherwise divide its gradient by a zero total.
                keep = np.flatnonzero(sample_weight)
                X, Y, sample_weight = X[keep], Y[keep], sample_weight[keep]
        layer_units = [X.shape[1], *sizes, Y.shape[1]]
        if first_pass:
            check_network_size(layer_units, self._batch_rows(X.shape[0]), X.dtype)
            self._initialize(layer_units, X.dtype, seed)
        else:
            self._check_resumable(layer_units, X.dtype)
        with limit_threads(self.n_threads), fit_scope(self._network.side_by_side(self._batch_rows(X.shape[0]))):
            if self.solver == "lbfgs":
                self._fit_lbfgs(X, Y, sample_weight)
            else:
                self._fit_stochastic(X, Y, sample_weight, incremental, callbacks)
        if not np.isfinite(self._network.params).all():
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large "
                             "values and need to be preprocessed.")
        return self

    def _assigned_weights(self):
        """``coefs_ + intercepts_`` assigned on an unfitted estimator, or None."""
        coefs, intercepts = getattr(self, "coefs_", None), getattr(self, "intercepts_", None)
        if coefs is None and intercepts is None:
            return None
        if not isinstance(coefs, (list, tuple)) or not isinstance(intercepts, (list, tuple)):
            raise ValueError("coefs_ and intercepts_ assigned before training must both be lists of arrays, one per "
                             f"layer: got {type(coefs).__name__} and {type(intercepts).__name__}")
        return list(coefs) + list(intercepts)

    def __sklearn_is_fitted__(self):
        # Assigned coefs_ alone do not make a model: predict needs the network that training builds from them.
        return hasattr(self, "_network")

    def _batch_rows(self, n_samples):
        """Rows per gradient: the whole set for lbfgs, else the minibatch (scikit-learn's "auto" is 200)."""
        if self.solver == "lbfgs":
            return n_samples
        return min(200 if self.batch_size == "auto" else self.batch_size, n_samples)

    def _callbacks(self):
        callbacks = self.callbacks
        if callbacks is None:
            return []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        if not all(callable(c) for c in callbacks):
            raise TypeError(f"callbacks must be a callable or a list of callables, got {self.callbacks!r}")
        return callbacks

    def _initialize(self, layer_units, dtype, seed_weights=None):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = layer_units[-1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._out_activation()
        seed = self.random_state
        if isinstance(seed, np.random.RandomState):
            seed = seed.randint(np.iinfo(np.int32).max)
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        network = Network(layer_units, self.activation, self.out_activation_, dtype)
        network.initialize(self._rng)
        if seed_weights is not None:
            _copy_into(network, seed_weights)
        self._set_network(network)
        self._optimizer = None
        self._fitted.discard(STOPPING_FIELDS)

    def _set_network(self, network):
        self._network = network
        # Lists of their own, so that replacing one of their arrays (``coefs_[0] = W``)
        # is detected by _sync_network.
        self.coefs_ = list(network.coefs)
        self.intercepts_ = list(network.intercepts)

    def _sync_network(self, dtype=None):
        """Copy ``coefs_`` / ``intercepts_`` into a fresh flat vector if arrays were assigned to them.

        Training and predict read the flat vector, while scikit-learn reads
        ``coefs_``; so assigned arrays are packed into it here (in-place edits of
        the views need nothing).  ``dtype`` repacks for training in another dtype.
        """
        net = self._network
        dtype = net.dtype if dtype is None else np.dtype(dtype)
        arrays = list(self.coefs_) + list(self.intercepts_)
        views = net.coefs + net.intercepts
        if dtype == net.dtype and len(arrays) == len(views) and all(a is v for a, v in zip(arrays, views)):
            return
        fresh = Network(net.layer_units, net.activation, net.out_activation, dtype)
        _copy_into(fresh, arrays)
        self._set_network(fresh)
        if dtype != net.dtype:
            self._optimizer = None  # its state vectors have the old dtype

    def _check_resumable(self, layer_units, dtype):
        net = self._network
        if tuple(layer_units) != net.layer_units or self.activation != net.activation:
            raise ValueError(f"the model was fitted with layer sizes {net.layer_units} and activation "
                             f"{net.activation!r}; warm_start and partial_fit need the same, got {tuple(layer_units)} "
                             f"and {self.activation!r}")
        self._sync_network(dtype)

    def _fit_stochastic(self, X, Y, sample_weight, incremental, callbacks):
        net = self._network
        # As in scikit-learn: fit() starts a fresh optimizer (so changed hyper-parameters
        # apply to a warm start), partial_fit continues the last one.
        if self._optimizer is None or not incremental:
            self._optimizer = self._make_optimizer(self.solver, net.n_params, net.dtype)
        self._fitted.prepare_stopping(self.early_stopping)
        self.n_iter_ = 0  # scikit-learn's n_iter_ counts the epochs of this call; t_ counts all samples seen
        validate = None
        sw = sample_weight
        if self.early_stopping:
            X, Y, sw, validate = self._validation_split(X, Y, sw)
        n_samples = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
            batch_size = min(max(int(self.batch_size), 1), n_samples)  # np.clip's, without its array round trip
        if not sp.issparse(X):
            X = np.ascontiguousarray(X)  # rows are gathered one by one: C order makes each a contiguous copy
        trainer = Trainer(net, self._optimizer, batch_size, self.alpha, self._loss_scale())
        sw = np.ones(n_samples, net.dtype) if sw is None else np.ascontiguousarray(sw, dtype=net.dtype)
        try:
            stopped = run_epochs(self._fitted, trainer, X, Y, sw, settings=self, max_iter=self.max_iter,
                                 incremental=incremental, validate=validate, callbacks=callbacks, report=print)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
            stopped = True
        except TrainingDivergedError as exc:
            # As a drop-in, a diverging fit warns and stops instead of raising (a search over learning
            # rates must go on); the trainer has restored the last finite weights, where scikit-learn
            # would go on with NaN ones.  scikit-learn records the epoch's NaN validation score.
            warnings.warn(f"{exc}; training stopped after {self.n_iter_} epoch(s) of this call",
                          TrainingDivergedWarning)
            if self.early_stopping:
                self.validation_scores_.append(np.nan)
                self.validation_loss_curve_.append(np.nan)
            stopped = True
        if not stopped and not incremental and self.n_iter_ == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the optimization "
                          "hasn't converged yet.", ConvergenceWarning)
        if self.early_stopping:
            np.copyto(net.params, self._best_params)

    def _make_optimizer(self, solver, n_params, dtype):
        """A fresh optimizer of this estimator's settings; ``solver`` is "sgd" / "adam" or the class name."""
        if _OPTIMIZERS.get(solver, solver) == "sgd":
            return SGDOptimizer(n_params, dtype, self.learning_rate_init, self.learning_rate, self.momentum,
                                self.nesterovs_momentum, self.power_t)
        if _OPTIMIZERS.get(solver, solver) == "adam":
            return AdamOptimizer(n_params, dtype, self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon)
        raise ValueError(f"unknown optimizer {solver!r}: expected one of {sorted(_OPTIMIZERS)}")

    def _validation_split(self, X, Y, sw):
        """``(X, Y, sw)`` of the training part and the scoring function of the held-out part."""
        stratify = None
        if self._is_classifier() and self._label_binarizer.y_type_ in ("binary", "multiclass"):
            # Stratified by the labels as the user gave them (multiclass too; multilabel rows are split at
            # random), as a column: train_test_split then names too-rare classes as scikit-learn does (['True']).
            stratify = self._labels(Y).reshape(-1, 1)
        arrays = [X, Y] if sw is None else [X, Y, sw]
        try:
            parts = train_test_split(*arrays, random_state=self._split_seed(), test_size=self.validation_fraction,
                                     stratify=stratify)
        except ValueError as exc:
            if not any(word in str(exc) for word in ("test_size", "train_size", "resulting train set")):
                raise  # e.g. a class too rare to stratify: scikit-learn's own message
            parts = None
        if parts is None or parts[1].shape[0] < 2:
            n_val = int(np.ceil(self.validation_fraction * X.shape[0]))
            classes = "" if stratify is None else f" for {len(self.classes_)} classes"
            raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of your "
                             f"dataset: validation_fraction={self.validation_fraction} of {X.shape[0]} rows holds "
                             f"{n_val}{classes}.")
        X, X_val, Y, Y_val = parts[:4]
        sw, sw_val = (parts[4], parts[5]) if sw is not None else (None, None)
        return X, Y, sw, partial(self._validation_score_and_loss, X_val, Y_val, sw_val)

    def _split_seed(self):
        return int(self._rng.integers(np.iinfo(np.int32).max))

    def _fit_lbfgs(self, X, Y, sample_weight):
        net = self._network
        # C order whatever the caller's layout: the products, hence the weights, are then bitwise
        # the same for a Fortran-ordered or strided X.
        X = np.ascontiguousarray(X.toarray() if sp.issparse(X) else X)
        sw = np.ones(X.shape[0], net.dtype) if sample_weight is None else sample_weight
        grad = np.empty(net.n_params, net.dtype)

        # loss_scale 1: L-BFGS needs the loss whose gradient it follows (README: for
        # multi-output squared error scikit-learn reports the mean over outputs instead).
        def loss_and_grad(flat):
            net.params[...] = flat
            loss = net.loss_gradient(X, Y, sw, self.alpha, grad, 1.0)
            if not np.isfinite(loss):
                return np.inf, np.zeros(flat.shape)
            return loss, grad.astype(np.float64)

        result = scipy.optimize.minimize(
            loss_and_grad, net.params.astype(np.float64), method="L-BFGS-B", jac=True,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol})
        if result.status != 0:
            warnings.warn(f"lbfgs failed to converge after {result.nit} iteration(s) (status={result.status}): "
                          f"{result.message}. Increase the number of iterations (max_iter) or scale the data.",
                          ConvergenceWarning)
        self.n_iter_ = min(result.nit, self.max_iter)
        self.loss_ = float(result.fun)
        net.params[...] = result.x

    def _validation_score_and_loss(self, X, Y, sw):
        try:
            out = self._forward(X)
        except ValueError:  # the output overflowed on the held-out rows: scikit-learn scores that NaN
            return np.nan, np.nan
        sw = np.ones(len(Y), out.dtype) if sw is None else sw
        return self._score_output(out, Y, sw), self._network.loss(out, Y, sw, self.alpha, self._loss_scale())

    def _loss_scale(self):
        # scikit-learn's squared error is also averaged over outputs.
        return 1.0 / self.n_outputs_ if self.out_activation_ == "identity" else 1.0

    # ------------------------------------------------------------------ predict

    def _forward(self, X):
        """Network output for validated ``X`` (dense or sparse), chunk by chunk, under the caller's thread limit."""
        net = self._network
        if not sp.issparse(X):
            return net.forward(np.ascontiguousarray(X, dtype=net.dtype))
        parts = [net.forward(X[s:s + PREDICT_CHUNK].toarray().astype(net.dtype, copy=False))
                 for s in range(0, X.shape[0], PREDICT_CHUNK)]
        return np.concatenate(parts)

    def _forward_checked(self, X):
        check_is_fitted(self)
        ready = self._ready_input(X)
        if not ready:
            X = self._validated_X(X)
        self._sync_network()
        with limit_threads(self.n_threads):
            try:
                return self._forward(X)
            except ValueError:
                # Input that needed none of validate_data's conversions skipped it, its finiteness left to
                # the forward kernel (NaN or infinity in X makes a first-layer sum non-finite): now
                # validate_data says what is wrong in scikit-learn's words, if X is what is wrong.
                if ready:
                    self._validated_X(X)
                raise

    def _validated_X(self, X):
        return _checked_csr(validate_data(self, X, accept_sparse=["csr", "csc"], dtype=(np.float64, np.float32),
                                          reset=False))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------------ pickling

    def __getstate__(self):
        # A copy: on Python 3.11+ the base class hands back the live __dict__.
        state = dict(super().__getstate__())
        state.pop("_valid_params", None)  # a cache of the parameters' identities, meaningless in another process
        if "_fitted" in state:
            state["_fitted"] = self._export_fitted()
            if "_network" in state["_fitted"][0]:  # coefs_ / intercepts_ are views of its vector, rebuilt on load
                del state["coefs_"], state["intercepts_"]
        return state

    def __setstate__(self, state):
        state = dict(state)
        fitted = state.pop("_fitted", None)
        super().__setstate__(state)
        if fitted is not None:
            self._import_fitted(*fitted)

    def _export_fitted(self):
        """``(meta, arrays)`` of every fitted attribute, arrays assigned to ``coefs_`` included: for pickling and io."""
        if hasattr(self, "_network"):
            self._sync_network()
        return self._fitted.export()

    def _import_fitted(self, meta, arrays):
        """Restore what :meth:`_export_fitted` gave; ``ValueError`` for an inconsistent state."""
        self._fitted = FittedState.restore(meta, arrays, self._make_optimizer)
        if hasattr(self, "_network"):
            self._set_network(self._network)

    def _common_validation(self, X, y, reset, **kwargs):
        if (self._ready_input(X, reset) and _plain_targets(y, X.shape[0], kwargs.get("y_numeric", False))
                and _finite(X) and (y.dtype.kind != "f" or np.isfinite(y.sum()))):
            # What validate_data would return unchanged, every one of its checks passed: shapes, dtype, feature
            # count, finiteness (where _finite is unsure, the long way, whose errors are scikit-learn's).
            # partial_fit pays validate_data on every call, a small fit about two epochs.
            if reset:  # what validate_data records of an array without feature names
                self.n_features_in_ = X.shape[1]
                self._fitted.discard(["feature_names_in_"])
            return X, y
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset, **kwargs)
        return _checked_csr(X), y

    def _ready_input(self, X, reset=False):
        """Whether ``X`` is what validate_data would make of it: a C-contiguous array of the model's dtype and width.

        With ``reset`` (a fresh fit), any float32 or float64 array with rows and columns.  Feature names
        are checked the long way (an array given to a model fitted on a DataFrame gets scikit-learn's
        warning); whether there are any is read in the fitted state (through the descriptor, a miss
        raises and catches an AttributeError: microseconds on every partial_fit and predict).
        """
        if type(X) is not np.ndarray or X.ndim != 2 or not X.flags.c_contiguous or X.shape[0] == 0:
            return False
        if reset:
            return X.dtype in FLOAT_DTYPES and X.shape[1] > 0
        net = getattr(self, "_network", None)
        return (net is not None and X.dtype == net.dtype and X.shape[1] == self.n_features_in_
                and "feature_names_in_" not in vars(self._fitted))

    def _validate_params(self):
        # partial_fit validates on every call.  The constraints' verdict depends on the values only, so
        # values that are the very objects last validated need no second look (in-place edits of a list
        # are caught where it is used: layer sizes by _fit and _check_resumable, callbacks by _callbacks).
        values = [getattr(self, name) for name in self._parameter_constraints]
        last = vars(self).get("_valid_params")
        if last is not None and len(last) == len(values) and all(a is b for a, b in zip(values, last)):
            return
        # scikit-learn's own check, with the constraint objects made once per class: it rebuilds them, and
        # reads the parameter names from __init__'s signature, at every call (about half a millisecond, a
        # tenth of a small fit).  Where a value satisfies none of its constraints, scikit-learn's check
        # runs and raises its InvalidParameterError.
        for value, constraints in zip(values, _constraints_of(type(self))):
            if not any(constraint.is_satisfied_by(value) for constraint in constraints):
                super()._validate_params()
        self._valid_params = values

    def _is_classifier(self):
        return isinstance(self, ClassifierMixin)


def _finite(X) -> bool:
    """Whether every element of the float array ``X`` is finite, or else False (then validate_data decides).

    ``np.isfinite(X).all()`` took half the time of testing ``X.sum()`` (a finite sum has finite terms) on
    digits-sized arrays, 10 against 19 µs of every partial_fit call; it allocates a byte per element, so
    large arrays take the sum.
    """
    return bool(np.isfinite(X).all()) if X.size <= 1 << 20 else bool(np.isfinite(X.sum()))


def _plain_targets(y, n_rows, numeric=False):
    """Whether ``y`` is an array of numbers (or strings, unless ``numeric``), ``n_rows`` rows, 1-D or 2-D, that
    validate_data leaves as it is.

    Not object arrays: validate_data looks for NaN among their elements.
    """
    return (type(y) is np.ndarray and y.ndim in (1, 2) and y.shape[0] == n_rows
            and y.dtype.kind in ("biuf" if numeric else "biufUS") and (y.ndim == 1 or y.shape[1] > 0))


def _copy_into(network, arrays):
    """Copy per-layer ``coefs + intercepts`` arrays into ``network``'s views, their shapes checked."""
    targets = network.coefs + network.intercepts
    if len(arrays) != len(targets) or any(np.shape(a) != t.shape for a, t in zip(arrays, targets)):
        raise ValueError(f"coefs_ and intercepts_ have shapes {[np.shape(a) for a in arrays]}: expected "
                         f"{[t.shape for t in targets]} for the layer sizes {network.layer_units}")
    for target, array in zip(targets, arrays):
        target[...] = array


def _checked_csr(X):
    """A sparse ``X`` as canonical CSR, its index arrays verified: the gather kernel indexes with them unchecked."""
    if not sp.issparse(X):
        return X
    X = X.tocsr()
    try:
        X.check_format(full_check=True)
    except ValueError as exc:
        raise ValueError(f"X is a malformed sparse matrix: {exc}") from None
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()  # scipy sums duplicate entries (toarray does); the gather must see the same values
    return X


def _store_arguments(estimator, arguments):
    """What scikit-learn asks of ``__init__``: keep every argument, unchanged, as an attribute of that name."""
    for name, value in arguments.items():
        if name != "self":
            setattr(estimator, name, value)

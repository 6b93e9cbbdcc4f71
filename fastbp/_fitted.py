"""One owner for what training leaves on an estimator: counters, curves, stopping rule, network, optimizer, rng.

:class:`FittedState` holds every fitted attribute as a plain attribute of its
own; :data:`FIELDS` lists them, once, with the way each one travels.  The
estimator reaches them under scikit-learn's names (``est.n_iter_`` is
``est._fitted.n_iter_``, through the descriptors :func:`fitted_fields`
installs), :func:`fastbp.trainer.run_epochs` updates the state directly, and
pickling and saving (:mod:`fastbp.io`) go through one pair:
:meth:`FittedState.export` gives a JSON-able dict and a dict of arrays,
:meth:`FittedState.restore` takes them back, after :mod:`fastbp._schema` has
checked every value by its kind.  A new fitted attribute is one line of FIELDS
(a new kind is a check in the schema, an export and a restore here).
"""

import numpy as np
from sklearn.preprocessing import LabelBinarizer

from ._schema import check_fitted
from .network import Network

# name: how it travels.  "int", "float", "str": a JSON scalar; "floats": a list of floats or None;
# "names": feature names; "array": a flat vector like the parameters; "network", "optimizer", "rng",
# "labels": see export; "classes_" travels inside "labels" (it is the binarizer's classes_).
FIELDS = {
    "n_iter_": "int", "t_": "int", "_no_improvement_count": "int",
    "n_features_in_": "int", "n_outputs_": "int", "n_layers_": "int",
    "loss_": "float", "best_loss_": "float", "best_validation_score_": "float",
    "out_activation_": "str",
    "loss_curve_": "floats", "validation_scores_": "floats", "validation_loss_curve_": "floats",
    "feature_names_in_": "names",
    "_best_params": "array",
    "_network": "network", "_optimizer": "optimizer", "_rng": "rng", "_label_binarizer": "labels",
    "classes_": "with labels",
}

# The stochastic solvers' stopping rule: created by their first fit, dropped when a fit starts from
# scratch (so an lbfgs refit carries none).
STOPPING_FIELDS = ("loss_curve_", "validation_loss_curve_", "validation_scores_", "best_validation_score_",
                   "best_loss_", "_no_improvement_count", "_best_params")


class FittedState:
    """The fitted attributes of one estimator, under scikit-learn's names (see :data:`FIELDS`)."""

    def discard(self, names) -> None:
        for name in names:
            vars(self).pop(name, None)

    def prepare_stopping(self, early_stopping: bool) -> None:
        """Create or adapt the stopping rule's bookkeeping before an epoch loop.

        It is created lazily because an lbfgs fit has none, and adapted because a
        warm start may switch ``early_stopping`` (scikit-learn then fails).
        """
        if getattr(self, "loss_curve_", None) is None:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            self.best_loss_ = self.validation_scores_ = self.validation_loss_curve_ = None
            self.best_validation_score_ = None
        if early_stopping and self.validation_scores_ is None:
            self.validation_scores_, self.validation_loss_curve_ = [], []
            self.best_validation_score_, self.best_loss_ = -np.inf, None
            self._best_params = self._network.params.copy()
        elif not early_stopping and self.best_loss_ is None:
            self.best_loss_ = np.inf
            self.validation_scores_ = self.validation_loss_curve_ = self.best_validation_score_ = None

    # ------------------------------------------------------------------ export / restore

    def export(self):
        """``(meta, arrays)``: every field, as a JSON-able dict and a dict of 1-D numpy arrays.

        The arrays are the live ones, not copies (the caller writes or pickles
        them).  Non-finite floats (``best_loss_`` starts at inf, a diverged
        epoch's validation score is NaN) are written as the strings "inf" / "nan".
        """
        meta, arrays = {}, {}
        for name, kind in FIELDS.items():
            if name not in vars(self) or kind == "with labels":
                continue
            value = vars(self)[name]
            if kind in _TO_JSON:
                meta[name] = _TO_JSON[kind](value)
            elif kind == "array":
                arrays[name] = value
                meta[name] = "array"  # so that expected_arrays(meta) names every member
            else:
                meta[name] = _EXPORT[kind](value, arrays)
        return meta, arrays

    @classmethod
    def restore(cls, meta, arrays, make_optimizer):
        """The state :meth:`export` gave ``(meta, arrays)`` for; ``ValueError`` for anything inconsistent.

        Every value is checked (:func:`fastbp._schema.check_fitted`) before any
        object is built from it.  ``make_optimizer(kind, n_params, dtype)`` builds a
        fresh optimizer of the estimator's settings, whose state vectors and step
        count are then restored.
        """
        if not isinstance(arrays, dict):
            raise ValueError(f"fitted arrays must be a dict, got {type(arrays).__name__}")
        expected = expected_arrays(meta)
        for name, array in arrays.items():
            dtype, shape = expected.get(name, (None, None))
            if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != shape:
                raise ValueError(f"fitted array {name!r} is {getattr(array, 'dtype', type(array))} of shape "
                                 f"{getattr(array, 'shape', None)}: expected {dtype} of shape {shape}")
        if set(arrays) != set(expected):
            raise ValueError(f"fitted arrays {sorted(arrays)}: expected {sorted(expected)}")
        state = cls()
        try:
            if "_network" in meta:  # first: the optimizer is built for its size
                state._network = _restore_network(meta["_network"], arrays)
            for name, value in meta.items():
                kind = FIELDS[name]
                if kind in _FROM_JSON:
                    setattr(state, name, _FROM_JSON[kind](value))
                elif kind == "array":
                    setattr(state, name, _writeable(arrays[name]))
                elif kind == "optimizer":
                    state._optimizer = _restore_optimizer(value, arrays, vars(state).get("_network"), make_optimizer)
                elif kind == "rng":
                    state._rng = _restore_rng(value)
                elif kind == "labels":
                    state._label_binarizer = _restore_labels(value, arrays)
                    state.classes_ = state._label_binarizer.classes_
        except (TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
            raise ValueError(f"inconsistent fitted state: {type(exc).__name__}: {exc}") from None
        return state


def expected_arrays(meta) -> dict:
    """``{name: (dtype, shape)}`` of every array that :meth:`FittedState.export` wrote with ``meta``.

    For a loader that checks each member before reading it; ``ValueError`` for
    metadata that fails the schema (:func:`fastbp._schema.check_fitted`).
    """
    return check_fitted(meta, FIELDS)


class _Field:
    """``estimator.<name>`` as ``estimator._fitted.<name>``: AttributeError while unset, as scikit-learn's."""

    def __init__(self, name):
        self.name = name

    def __get__(self, estimator, owner=None):
        if estimator is None:
            return self
        state = vars(estimator).get("_fitted")
        try:
            return vars(state)[self.name]
        except (KeyError, TypeError):
            raise AttributeError(f"{type(estimator).__name__!r} object has no attribute {self.name!r}") from None

    def __set__(self, estimator, value):
        fitted_state(estimator).__dict__[self.name] = value

    def __delete__(self, estimator):
        if self.name not in vars(fitted_state(estimator)):
            raise AttributeError(self.name)
        del fitted_state(estimator).__dict__[self.name]


def fitted_state(estimator) -> FittedState:
    """``estimator``'s state, created empty on first use (validate_data sets ``n_features_in_`` before fit does)."""
    state = vars(estimator).get("_fitted")
    if state is None:
        state = estimator.__dict__["_fitted"] = FittedState()
    return state


def fitted_fields(cls):
    """Class decorator: every name of :data:`FIELDS` read and written through the estimator's state."""
    for name in FIELDS:
        setattr(cls, name, _Field(name))
    return cls


def _json_float(value):
    value = float(value)
    return value if np.isfinite(value) else str(value)  # "nan", "inf", "-inf": float() reads them back


def _writeable(array):
    # joblib memory-maps arrays read-only; training writes in place
    return array if array.flags.writeable else array.copy()


# kind -> its JSON value (plain ints and strings: numpy's scalars are not JSON), and back from a checked one.
_TO_JSON = {
    "int": int, "str": str,
    "float": lambda value: None if value is None else _json_float(value),
    "floats": lambda values: None if values is None else [_json_float(v) for v in values],
    "names": lambda names: [str(v) for v in names],
}
_FROM_JSON = {
    "int": int, "str": str,
    "float": lambda value: None if value is None else float(value),
    "floats": lambda values: None if values is None else [float(v) for v in values],
    "names": lambda names: np.asarray(names, dtype=object),
}


def _export_network(net, arrays):
    arrays["params"] = net.params
    return {"layer_units": list(net.layer_units), "activation": net.activation, "out_activation": net.out_activation,
            "dtype": net.dtype.name}


def _restore_network(meta, arrays):
    return Network(meta["layer_units"], meta["activation"], meta["out_activation"], meta["dtype"],
                   _writeable(arrays["params"]))


def _export_optimizer(opt, arrays):
    if opt is None:
        return None
    state = opt.arrays()
    arrays.update({f"optimizer_{k}": v for k, v in state.items()})
    return {"kind": type(opt).__name__, "learning_rate": float(opt.learning_rate), "t": int(opt.t),
            "arrays": sorted(state)}


def _restore_optimizer(meta, arrays, net, make_optimizer):
    if meta is None:
        return None
    opt = make_optimizer(meta["kind"], net.n_params, net.dtype)
    for name, state in opt.arrays().items():  # names, shapes and dtypes checked by restore
        np.copyto(state, arrays[f"optimizer_{name}"])
    opt.learning_rate, opt.t = float(meta["learning_rate"]), int(meta["t"])
    return opt


def _export_rng(rng, arrays):
    return json_tree(rng.bit_generator.state)  # names its bit generator: PCG64, MT19937, ...


def _restore_rng(meta):
    bit_generator = getattr(np.random, meta["bit_generator"])()  # one of the schema's BIT_GENERATORS
    bit_generator.state = meta  # numpy takes the lists JSON gives back
    return np.random.Generator(bit_generator)


def _export_labels(binarizer, arrays):
    classes = binarizer.classes_
    meta = {"y_type": binarizer.y_type_}
    if classes.dtype.kind in "biuf":
        # Stored as its kind's widest dtype, the original recorded in native byte order: a loader then
        # accepts a dtype string only from the schema's short list (CLASS_DTYPES).
        kind = {"b": "bool", "i": "int64", "u": "int64", "f": "float64"}[classes.dtype.kind]
        arrays["classes"] = classes.astype(kind, copy=False)
        meta["classes"] = {"stored": "array", "dtype": kind, "size": int(classes.size),
                           "original": classes.dtype.newbyteorder("=").str}
    else:
        meta["classes"] = {"stored": "json", "values": [str(c) for c in classes], "object": classes.dtype == object}
    return meta


def _restore_labels(meta, arrays):
    info = meta["classes"]
    if info["stored"] == "array":
        classes = arrays["classes"].astype(np.dtype(info["original"]), copy=False)
    else:
        classes = np.asarray(info["values"], dtype=object if info["object"] else None)
    return fitted_binarizer(classes, meta["y_type"])


def fitted_binarizer(classes, y_type):
    """The ``LabelBinarizer`` that ``fit`` on dense labels of ``classes`` (sorted, unique) of type ``y_type`` gives."""
    binarizer = LabelBinarizer()
    binarizer.classes_, binarizer.y_type_, binarizer.sparse_input_ = classes, y_type, False
    return binarizer


def json_tree(value):
    """``value`` with numpy scalars and arrays turned into JSON's numbers and lists, recursively."""
    if isinstance(value, dict):
        return {k: json_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_tree(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


_EXPORT = {"network": _export_network, "optimizer": _export_optimizer, "rng": _export_rng, "labels": _export_labels}

"""One owner for what training leaves on an estimator: counters, curves, stopping rule, network, optimizer, rng.

:class:`FittedState` holds every fitted attribute as a plain attribute of its
own; :data:`FIELDS` lists them, once, with the way each one travels.  The
estimator reaches them under scikit-learn's names (``est.n_iter_`` is
``est._fitted.n_iter_``, through the descriptors :func:`fitted_fields`
installs), :func:`fastbp.trainer.run_epochs` updates the state directly, and
pickling and saving go through one pair: :meth:`FittedState.export` gives a
JSON-able dict and a dict of arrays, :meth:`FittedState.restore` takes them
back, checking what it reads.  A new fitted attribute is one line of FIELDS.
"""

import numpy as np
from sklearn.preprocessing import LabelBinarizer

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

BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


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
            if kind in _SCALARS:
                meta[name] = _json_float(value) if kind == "float" and value is not None else value
            elif kind == "floats":
                meta[name] = None if value is None else [_json_float(v) for v in value]
            elif kind == "names":
                meta[name] = [str(v) for v in value]
            elif kind == "array":
                arrays[name] = value
                meta[name] = "array"  # so that expected_arrays(meta) names every member
            else:
                meta[name] = _EXPORT[kind](value, arrays)
        return meta, arrays

    @classmethod
    def restore(cls, meta, arrays, make_optimizer):
        """The state :meth:`export` gave ``(meta, arrays)`` for; ``ValueError`` for anything inconsistent.

        ``make_optimizer(kind, n_params, dtype)`` builds a fresh optimizer of the
        estimator's settings, whose state vectors and step count are then restored.
        """
        if not isinstance(meta, dict) or not isinstance(arrays, dict):
            raise ValueError("fitted state must be a dict of metadata and a dict of arrays")
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
            if "_network" in meta:  # first: the other arrays are checked against its layout
                state._network = _restore_network(meta["_network"], arrays)
            for name, value in meta.items():
                kind = FIELDS[name]
                if kind == "array":
                    continue  # restored from arrays below
                if kind in _SCALARS:
                    setattr(state, name, _restore_scalar(name, kind, value))
                elif kind == "floats":
                    setattr(state, name, None if value is None else [float(v) for v in value])
                elif kind == "names":
                    state.feature_names_in_ = np.asarray([str(v) for v in value], dtype=object)
                elif kind == "optimizer":
                    state._optimizer = _restore_optimizer(value, arrays, state._network, make_optimizer)
                elif kind == "rng":
                    state._rng = _restore_rng(value)
                elif kind == "labels":
                    state._label_binarizer = _restore_labels(value, arrays)
                    state.classes_ = state._label_binarizer.classes_
            if "_best_params" in arrays:
                params = arrays["_best_params"]
                state._best_params = params if params.flags.writeable else params.copy()
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"inconsistent fitted state: {type(exc).__name__}: {exc}") from None
        state._check_layout()
        return state

    def _check_layout(self):
        net = vars(self).get("_network")
        if net is None:
            return
        units = net.layer_units
        got = (getattr(self, "n_features_in_", units[0]), getattr(self, "n_outputs_", units[-1]),
               getattr(self, "n_layers_", len(units)), getattr(self, "out_activation_", net.out_activation))
        if got != (units[0], units[-1], len(units), net.out_activation):
            raise ValueError(f"n_features_in_, n_outputs_, n_layers_ and out_activation_ {got} do not match the "
                             f"network's layer sizes {units} and output {net.out_activation!r}")
        binarizer = vars(self).get("_label_binarizer")
        if binarizer is not None:
            n_classes = len(binarizer.classes_)
            outputs = {"binary": 1, "multiclass": n_classes, "multilabel-indicator": n_classes}
            if outputs.get(binarizer.y_type_) != units[-1]:
                raise ValueError(f"target type {binarizer.y_type_!r} with {n_classes} classes does not match "
                                 f"{units[-1]} outputs")


def expected_arrays(meta) -> dict:
    """``{name: (dtype, shape)}`` of every array that :meth:`FittedState.export` wrote with ``meta``.

    For a loader that checks each member before reading it; ``ValueError`` for
    metadata that names an unknown field or a malformed layout.
    """
    if not isinstance(meta, dict):
        raise ValueError(f"fitted state metadata must be a dict, got {type(meta).__name__}")
    travelling = {name for name, kind in FIELDS.items() if kind != "with labels"}
    if set(meta) - travelling:
        raise ValueError(f"unknown fitted attributes {sorted(set(meta) - travelling)}: expected some of "
                         f"{sorted(travelling)}")
    expected = {}
    network = meta.get("_network")
    if network is not None:
        units = _layer_units(network)
        dtype = np.dtype(network["dtype"])
        n_params = sum(a * b + b for a, b in zip(units[:-1], units[1:]))
        expected["params"] = (dtype, (n_params,))
        if meta.get("_best_params") == "array":
            expected["_best_params"] = (dtype, (n_params,))
        optimizer = meta.get("_optimizer")
        if optimizer is not None:
            names = optimizer.get("arrays")
            if not isinstance(names, list) or not all(isinstance(a, str) for a in names):
                raise ValueError(f"optimizer metadata {optimizer!r}: expected a list of state array names")
            expected.update({f"optimizer_{a}": (dtype, (n_params,)) for a in optimizer["arrays"]})
    elif meta.get("_best_params") == "array" or meta.get("_optimizer") is not None:
        raise ValueError("fitted state with best parameters or an optimizer but no network")
    classes = (meta.get("_label_binarizer") or {}).get("classes")
    if isinstance(classes, dict) and classes.get("stored") == "array":
        size = classes.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"class metadata {classes!r}: expected a positive size")
        expected["classes"] = (np.dtype(classes["dtype"]), (size,))
    return expected


def _layer_units(network):
    if not isinstance(network, dict) or network.get("dtype") not in ("float32", "float64"):
        raise ValueError(f"network metadata {network!r}: expected a dict with dtype float32 or float64")
    units = network.get("layer_units")
    if not isinstance(units, list) or len(units) < 2 or not all(
            isinstance(u, int) and not isinstance(u, bool) and 0 < u < 1 << 40 for u in units):
        raise ValueError(f"layer_units {units!r}: expected a list of at least two positive integers")
    return units


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


_SCALARS = {"int": int, "float": float, "str": str}


def _json_float(value):
    value = float(value)
    return value if np.isfinite(value) else str(value)  # "nan", "inf", "-inf": float() reads them back


def _restore_scalar(name, kind, value):
    if value is None and kind == "float":
        return None
    if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"fitted attribute {name} is {value!r}: expected an integer")
    if kind == "str" and not isinstance(value, str):
        raise ValueError(f"fitted attribute {name} is {value!r}: expected a string")
    return _SCALARS[kind](value)


def _export_network(net, arrays):
    arrays["params"] = net.params
    return {"layer_units": list(net.layer_units), "activation": net.activation, "out_activation": net.out_activation,
            "dtype": net.dtype.name}


def _restore_network(meta, arrays):
    units = _layer_units(meta)
    params = arrays["params"]
    if isinstance(params, np.ndarray) and not params.flags.writeable:
        params = params.copy()  # joblib memory-maps arrays read-only; training writes in place
    return Network(units, meta["activation"], meta["out_activation"], meta["dtype"], params)


def _export_optimizer(opt, arrays):
    if opt is None:
        return None
    state = opt.arrays()
    arrays.update({f"optimizer_{k}": v for k, v in state.items()})
    return {"kind": type(opt).__name__, "learning_rate": opt.learning_rate, "t": opt.t, "arrays": sorted(state)}


def _restore_optimizer(meta, arrays, net, make_optimizer):
    if meta is None:
        return None
    opt = make_optimizer(meta["kind"], net.n_params, net.dtype)
    if sorted(opt.arrays()) != meta["arrays"]:
        raise ValueError(f"optimizer {meta['kind']} state {meta['arrays']}: expected {sorted(opt.arrays())}")
    for name, state in opt.arrays().items():  # shapes and dtypes checked by restore
        np.copyto(state, arrays[f"optimizer_{name}"])
    opt.learning_rate, opt.t = float(meta["learning_rate"]), int(meta["t"])
    return opt


def _export_rng(rng, arrays):
    return json_tree(rng.bit_generator.state)  # names its bit generator: PCG64, MT19937, ...


def _restore_rng(meta):
    kind = meta.get("bit_generator")
    if kind not in BIT_GENERATORS:
        raise ValueError(f"unknown random bit generator {kind!r}: expected one of {BIT_GENERATORS}")
    bit_generator = getattr(np.random, kind)()
    bit_generator.state = meta  # numpy takes the lists JSON gives back
    return np.random.Generator(bit_generator)


def _export_labels(binarizer, arrays):
    classes = binarizer.classes_
    meta = {"y_type": binarizer.y_type_}
    if classes.dtype.kind in "biuf":
        arrays["classes"] = classes
        meta["classes"] = {"stored": "array", "dtype": classes.dtype.str, "size": int(classes.size)}
    else:
        meta["classes"] = {"stored": "json", "values": [str(c) for c in classes], "object": classes.dtype == object}
    return meta


def _restore_labels(meta, arrays):
    info = meta["classes"]
    if info["stored"] == "array":
        classes = arrays["classes"]
    elif not isinstance(info["values"], list) or not all(isinstance(v, str) for v in info["values"]):
        raise ValueError("class labels must be a list of strings")
    else:
        classes = np.asarray(info["values"], dtype=object if info.get("object") else None)
    if meta["y_type"] not in ("binary", "multiclass", "multilabel-indicator"):
        raise ValueError(f"target type {meta['y_type']!r}: expected binary, multiclass or multilabel-indicator")
    binarizer = LabelBinarizer()
    binarizer.classes_, binarizer.y_type_, binarizer.sparse_input_ = classes, meta["y_type"], False
    return binarizer


def json_tree(value):
    """``value`` with numpy scalars and arrays turned into JSON's numbers and lists, recursively."""
    if isinstance(value, dict):
        return {k: json_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_tree(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


_EXPORT = {"network": _export_network, "optimizer": _export_optimizer, "rng": _export_rng, "labels": _export_labels}

"""The schema of fitted states and model files: every key, type, range and cross-check.

:func:`check_fitted` checks what :meth:`fastbp._fitted.FittedState.export`
gives: each field by its kind in :data:`fastbp._fitted.FIELDS` (one check per
kind in :data:`_KINDS`, structured parts included), then what ties the fields
together (layer sizes, outputs, classes, the arrays' shapes).  It returns the
arrays the state implies (name -> dtype, shape), and
:meth:`~fastbp._fitted.FittedState.restore` calls it, so pickling and io meet
the same checks.  :func:`check_metadata` is the model-file loader's gate: the
file's envelope (format, version, estimator, params, scaler) and, through
:func:`check_fitted`, the fitted state it holds.  Nothing is read, allocated or
built from a value that has not been checked first; each refusal is a
``ValueError`` naming the field, the value found and what was expected.

This module imports nothing of fastbp's but its constants: the field table is
passed in, because fastbp._fitted (which owns it) calls this module.
"""

import math

import numpy as np

from ._config import ACTIVATIONS, OUT_ACTIVATIONS

FORMAT = "fastbp-model"
# 2: the file's "fitted" entry and its arrays are FittedState.export()'s.  Version 1 had a layout of
# its own; converting it would be a second hostile-file surface to keep safe, so it is refused.
VERSION = 2
MAX_PARAMS = 1 << 31
ESTIMATORS = ("MLPClassifier", "MLPRegressor")
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
OPTIMIZERS = {"SGDOptimizer": ["velocity"], "AdamOptimizer": ["m1", "m2"]}  # their state vectors, sorted
Y_TYPES = ("binary", "multiclass", "multilabel-indicator")
NON_FINITE = ("inf", "-inf", "nan")  # how export writes non-finite floats (JSON has no such numbers)

# The dtypes export records as the classes' original dtype (native byte order; export normalises it):
# a short list, so that no dtype string from a file can make numpy build an array of its choosing.
CLASS_DTYPES = {np.dtype(t).str: kind for kinds, kind in (
    (("bool",), "bool"),
    (("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"), "int64"),
    (("float16", "float32", "float64", "longdouble"), "float64")) for t in kinds}

# What every fit leaves (fastbp._base._initialize, validate_data): a model file lacking one is not a
# fitted model (predict or a resumed fit would fail on it).  Other fields are optional.
MODEL_FIELDS = ("_network", "_rng", "n_iter_", "t_", "n_features_in_", "n_outputs_", "n_layers_", "out_activation_")
_ENVELOPE = {"format", "version", "estimator", "params", "fitted"}
# Parameters save leaves out: code (callbacks) and live generators (their state is the fitted "_rng").
_PARAMS_OPTIONAL = {"random_state"}
_PARAMS_NEVER = {"callbacks"}
_C_INT = 1 << 31
_MAX_INT = (1 << 63) - 1  # counters fit in numpy's int64
# Small integers of numpy's bit-generator states that its C code uses as indices, with their ranges.
_RNG_SMALL = {"pos": 624, "buffer_pos": 4, "has_uint32": 1, "uinteger": (1 << 32) - 1}


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _refuse(field, value, expected):
    raise ValueError(f"metadata {field} is {_short(value)}: expected {expected}")


def _is_int(value, low=0, high=None):
    return (isinstance(value, int) and not isinstance(value, bool) and value >= low
            and (high is None or value <= high))


def _is_real(value, finite=False):
    """A JSON number (not a bool), not NaN; and finite if asked."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) if finite else not math.isnan(value)


def _is_float(value):
    """A float as export writes it: a finite number, or one of the strings of :data:`NON_FINITE`."""
    return _is_real(value, finite=True) or isinstance(value, str) and value in NON_FINITE


def _check_keys(field, mapping, required, optional=frozenset()):
    if not isinstance(mapping, dict):
        _refuse(field, mapping, "a mapping")
    missing, unknown = required - set(mapping), set(mapping) - required - set(optional)
    if missing or unknown:
        raise ValueError(f"metadata {field} has keys {sorted(map(str, mapping))}: missing {sorted(missing)}, "
                         f"unknown {sorted(map(str, unknown))}")


# ----------------------------------------------------------------------------- one check per kind of field

def _int(field, value):
    if not _is_int(value, 0, _MAX_INT):
        _refuse(field, value, "an integer >= 0")


def _float(field, value):
    if value is not None and not _is_float(value):
        _refuse(field, value, f"a finite number, one of {NON_FINITE} or null")


def _str(field, value):
    if not isinstance(value, str):
        _refuse(field, value, "a string")


def _floats(field, value):
    if value is not None and (not isinstance(value, list) or not all(_is_float(v) for v in value)):
        _refuse(field, value, f"null or a list of finite numbers and {NON_FINITE}")


def _names(field, value):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _refuse(field, value, "a list of strings")


def _array(field, value):
    if not isinstance(value, str) or value != "array":
        _refuse(field, value, "'array' (the member of that name holds it)")


def _network(field, value):
    """``(layer_units, n_params, dtype, out_activation)`` of the network's entry."""
    _check_keys(field, value, {"layer_units", "activation", "out_activation", "dtype"})
    units = value["layer_units"]
    if not isinstance(units, list) or len(units) < 2 or not all(_is_int(u, 1, MAX_PARAMS) for u in units):
        _refuse(f"{field}.layer_units", units, "a list of at least two positive integers")
    n_params = sum(a * b + b for a, b in zip(units[:-1], units[1:]))
    if n_params > MAX_PARAMS:
        raise ValueError(f"layer_units {units} describe {n_params} parameters: more than this loader accepts")
    if value["dtype"] not in ("float32", "float64"):
        _refuse(f"{field}.dtype", value["dtype"], "float32 or float64")
    if value["activation"] not in ACTIVATIONS:
        _refuse(f"{field}.activation", value["activation"], f"one of {ACTIVATIONS}")
    if value["out_activation"] not in OUT_ACTIVATIONS:
        _refuse(f"{field}.out_activation", value["out_activation"], f"one of {OUT_ACTIVATIONS}")
    return units, n_params, np.dtype(value["dtype"]), value["out_activation"]


def _optimizer(field, value):
    """The names of the optimizer's state vectors (none without an optimizer)."""
    if value is None:
        return []
    _check_keys(field, value, {"kind", "learning_rate", "t", "arrays"})
    kind = value["kind"]
    if not isinstance(kind, str) or kind not in OPTIMIZERS:
        _refuse(f"{field}.kind", kind, f"one of {sorted(OPTIMIZERS)}")
    if not _is_real(value["learning_rate"], finite=True) or value["learning_rate"] < 0:
        _refuse(f"{field}.learning_rate", value["learning_rate"], "a finite number >= 0")
    if not _is_int(value["t"], 0, _MAX_INT):
        _refuse(f"{field}.t", value["t"], "a non-negative integer (steps taken)")
    if value["arrays"] != OPTIMIZERS[kind]:
        _refuse(f"{field}.arrays", value["arrays"], f"{OPTIMIZERS[kind]}, the state of {kind}")
    return value["arrays"]


def _rng(field, value):
    kind = value.get("bit_generator") if isinstance(value, dict) else None
    if kind not in BIT_GENERATORS:
        raise ValueError(f"unknown random bit generator {_short(kind)} in {field}: expected one of {BIT_GENERATORS}")
    _same_structure(field, value, getattr(np.random, kind)().state)


def _same_structure(field, value, template, high=None):
    """``value`` has the keys, list lengths and integer ranges of the bit generator's own ``template`` state."""
    if isinstance(template, dict):
        _check_keys(field, value, set(template))
        for name, part in template.items():
            _same_structure(f"{field}.{name}", value[name], part, _RNG_SMALL.get(name))
    elif isinstance(template, (list, np.ndarray)):
        if not isinstance(value, list) or len(value) != len(template):
            _refuse(field, value, f"a list of {len(template)} integers")
        if isinstance(template, np.ndarray):
            high = int(np.iinfo(template.dtype).max)  # numpy refuses a larger one with OverflowError
        for i, part in enumerate(value):
            _same_structure(f"{field}[{i}]", part, template[i], high)
    elif isinstance(template, str):
        if value != template:
            _refuse(field, value, repr(template))
    elif not _is_int(value, 0, (1 << 128) - 1 if high is None else high):
        _refuse(field, value, f"an integer in [0, {'2**128 - 1' if high is None else high}]")


def _labels(field, value):
    """``(y_type, n_classes, members)``: the target type, the class count and the classes' member if any."""
    _check_keys(field, value, {"y_type", "classes"})
    y_type, info = value["y_type"], value["classes"]
    if y_type not in Y_TYPES:
        raise ValueError(f"target type {_short(y_type)} is not one of {list(Y_TYPES)}")
    if not isinstance(info, dict) or info.get("stored") not in ("array", "json"):
        raise ValueError(f"malformed class metadata {_short(info)}")
    if info["stored"] == "array":
        _check_keys(f"{field}.classes", info, {"stored", "dtype", "size", "original"})
        if info["original"] not in CLASS_DTYPES or CLASS_DTYPES[info["original"]] != info["dtype"]:
            raise ValueError(f"malformed class metadata {_short(info)}: expected an original dtype among "
                             f"{sorted(CLASS_DTYPES)} stored as its kind's dtype")
        if not _is_int(info["size"], 1, MAX_PARAMS):
            _refuse(f"{field}.classes.size", info["size"], "a positive integer")
        return y_type, info["size"], {"classes": (np.dtype(info["dtype"]), (info["size"],))}
    _check_keys(f"{field}.classes", info, {"stored", "values", "object"})
    values = info["values"]
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise ValueError("class labels in the metadata must be a non-empty list of strings")
    if not isinstance(info["object"], bool):
        _refuse(f"{field}.classes.object", info["object"], "true or false")
    if any(a >= b for a, b in zip(values[:-1], values[1:])):
        raise ValueError("class labels in the metadata must be sorted and distinct, as fit stores them")
    return y_type, len(values), {}


# kind in fastbp._fitted.FIELDS -> its check(field, value); "with labels" travels inside "labels".
_KINDS = {"int": _int, "float": _float, "str": _str, "floats": _floats, "names": _names, "array": _array,
          "network": _network, "optimizer": _optimizer, "rng": _rng, "labels": _labels}


# ----------------------------------------------------------------------------- the fitted state

def check_fitted(meta, fields) -> dict:
    """Check a fitted state's metadata; the arrays it implies, ``name -> (dtype, shape)``.

    ``fields`` is :data:`fastbp._fitted.FIELDS` (name -> kind).
    """
    if not isinstance(meta, dict):
        _refuse("fitted", meta, "a mapping of fitted attributes")
    known = sorted(name for name, kind in fields.items() if kind in _KINDS)
    unknown = set(meta) - set(known)
    if unknown:
        raise ValueError(f"unknown fitted attributes {sorted(map(str, unknown))}: expected some of {known}")
    kinds = {name: fields[name] for name in meta}
    found = {name: _KINDS[kind](f"fitted.{name}", meta[name]) for name, kind in kinds.items()}
    parts = {kind: found[name] for name, kind in kinds.items() if kind in ("network", "optimizer", "labels")}
    members = {}
    if "network" in parts:
        units, n_params, dtype, out_activation = parts["network"]
        vector = (dtype, (n_params,))  # the parameters, and every vector laid out like them
        members["params"] = vector
        members.update({name: vector for name, kind in kinds.items() if kind == "array"})
        members.update({f"optimizer_{a}": vector for a in parts.get("optimizer", ())})
        _check_layout(meta, units, out_activation)
    elif "array" in kinds.values() or parts.get("optimizer"):
        raise ValueError("fitted state with best parameters or an optimizer but no network")
    n_features = units[0] if "network" in parts else meta.get("n_features_in_")
    for name in (name for name, kind in kinds.items() if kind == "names"):
        if n_features is not None and len(meta[name]) != n_features:
            _refuse(f"fitted.{name}", meta[name], f"a list of {n_features} strings (n_features_in_)")
    if "labels" in parts:
        y_type, n_classes, class_members = parts["labels"]
        outputs = {"binary": 1, "multiclass": n_classes, "multilabel-indicator": n_classes}[y_type]
        n_outputs = units[-1] if "network" in parts else outputs
        if (outputs != n_outputs or y_type == "binary" and n_classes > 2
                or y_type == "multiclass" and n_classes < 3):
            raise ValueError(f"target type {y_type!r} with {n_classes} classes does not match {n_outputs} outputs")
        members.update(class_members)
    return members


def _check_layout(meta, units, out_activation):
    """The attributes that repeat the network's layout (scikit-learn has them) say what the network says."""
    implied = {"n_features_in_": units[0], "n_outputs_": units[-1], "n_layers_": len(units),
               "out_activation_": out_activation}
    for name, expected in implied.items():
        if name in meta and meta[name] != expected:
            raise ValueError(f"fitted.{name} = {_short(meta[name])} and the network's layer_units {units} and "
                             f"output {out_activation!r} do not match: expected {expected!r}")


# ----------------------------------------------------------------------------- the model file

def check_metadata(meta, param_names, fields) -> dict:
    """Check a model file's metadata; the array members it implies, ``name -> (dtype, shape)``.

    ``param_names`` maps each estimator name to the names of its constructor
    parameters; ``fields`` is :data:`fastbp._fitted.FIELDS`.
    """
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"not a fastbp model file (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        older = " (written by an older fastbp: fit and save the model again)" if _is_int(meta.get("version")) \
            and meta["version"] < VERSION else ""
        raise ValueError(f"format version {_short(meta.get('version'))}: this fastbp reads version {VERSION}{older}")
    if meta.get("estimator") not in ESTIMATORS:
        raise ValueError(f"names estimator {_short(meta.get('estimator'))}: expected one of {list(ESTIMATORS)}")
    _check_keys("(top level)", meta, _ENVELOPE, {"scaler"})
    members = check_fitted(meta["fitted"], fields)
    fitted = meta["fitted"]
    missing = [name for name in MODEL_FIELDS if name not in fitted]
    if missing:
        raise ValueError(f"metadata fitted lacks {missing}: a model file holds what every fit leaves")
    classifier = meta["estimator"] == "MLPClassifier"
    if classifier != ("_label_binarizer" in fitted):
        raise ValueError("class labels in the metadata of an MLPRegressor, or none in that of an MLPClassifier")
    network = fitted["_network"]
    _check_params(meta["params"], param_names[meta["estimator"]], network["layer_units"], network["activation"])
    _check_output(fitted, classifier)
    if "scaler" in meta:
        scaler = meta["scaler"]
        if not isinstance(scaler, dict) or set(scaler) != {"with_mean", "with_std"} \
                or not all(isinstance(v, bool) for v in scaler.values()):
            raise ValueError(f"malformed scaler metadata {_short(scaler)}: expected {{'with_mean': bool, "
                             "'with_std': bool}")
        members["scaler_mean"] = members["scaler_scale"] = (np.dtype(np.float64), (network["layer_units"][0],))
    return members


def _check_params(params, known, units, activation):
    _check_keys("params", params, set(known) - _PARAMS_OPTIONAL - _PARAMS_NEVER, _PARAMS_OPTIONAL)
    # The constructor's own constraints are checked by the estimator (_validate_params); here, what ties the
    # parameters to the fitted network.
    sizes = params["hidden_layer_sizes"]
    sizes = sizes if isinstance(sizes, list) else [sizes]
    if sizes != units[1:-1]:
        _refuse("params.hidden_layer_sizes", params["hidden_layer_sizes"],
                f"the hidden sizes of layer_units {units}")
    if params["activation"] != activation:
        _refuse("params.activation", params["activation"], f"the network's activation {activation!r}")
    for name, value in params.items():
        # The constraints leave integers unbounded above, but some reach C ints (n_threads sets BLAS's count).
        if name != "random_state" and isinstance(value, int) and not -_C_INT <= value < _C_INT:
            _refuse(f"params.{name}", value, "an integer below 2**31")


def _check_output(fitted, classifier):
    """The output activation is the one the estimator's fit chooses: predict's decoding depends on it."""
    out = fitted["out_activation_"]
    if classifier:
        y_type = fitted["_label_binarizer"]["y_type"]
        expected = "softmax" if y_type == "multiclass" else "logistic"
        what = f"{expected!r} for target type {y_type!r}"
    else:
        expected = out if out in ("identity", "exp") else None
        what = "'identity' or 'exp' for a regressor"
    if out != expected:
        _refuse("fitted.out_activation_", out, what)

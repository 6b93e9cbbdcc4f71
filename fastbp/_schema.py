"""The metadata schema of fastbp's model files: every key, type, range and cross-check.

:func:`check_metadata` is the loader's gate.  It accepts exactly the metadata
that :func:`fastbp.io.save` writes and returns the array members that metadata
implies (name -> dtype, shape), so that nothing is read, allocated or built
from a value that has not been checked first.  Each refusal is a
``ValueError`` naming the field, the value found and what was expected.
"""

import math

import numpy as np

from ._config import ACTIVATIONS
from ._fitted import FIELDS

FORMAT = "fastbp-model"
VERSION = 1
MAX_PARAMS = 1 << 31
ESTIMATORS = ("MLPClassifier", "MLPRegressor")
LISTS = tuple(name for name, kind in FIELDS.items() if kind == "floats")  # the curves
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
OPTIMIZERS = {"SGDOptimizer": ("velocity",), "AdamOptimizer": ("m1", "m2")}
Y_TYPES = ("binary", "multiclass", "multilabel-indicator")

# The dtypes ``save`` records as the classes' original dtype (native byte order; save normalises it):
# a short list, so that no dtype string from a file can make numpy build an array of its choosing.
CLASS_DTYPES = {np.dtype(t).str: kind for kinds, kind in (
    (("bool",), "bool"),
    (("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"), "int64"),
    (("float16", "float32", "float64", "longdouble"), "float64")) for t in kinds}

_TOP_REQUIRED = {"format", "version", "estimator", "params", "dtype", "layer_units", "activation", "attributes",
                 "lists", "best_params", "rng"}
_TOP_CLASSIFIER = {"classes", "y_type"}
_TOP_OPTIONAL = {"feature_names_in_", "optimizer", "scaler"}
# Parameters save leaves out: code (callbacks) and live generators (their state is the "rng" entry).
_PARAMS_OPTIONAL = {"random_state"}
_PARAMS_NEVER = {"callbacks"}
# Small integers of numpy's bit-generator states that its C code uses as indices, with their ranges.
_C_INT = 1 << 31
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


def _check_keys(field, mapping, required, optional=frozenset()):
    if not isinstance(mapping, dict):
        _refuse(field, mapping, "a mapping")
    missing, unknown = required - set(mapping), set(mapping) - required - set(optional)
    if missing or unknown:
        raise ValueError(f"metadata {field} has keys {sorted(map(str, mapping))}: missing {sorted(missing)}, "
                         f"unknown {sorted(map(str, unknown))}")


def check_metadata(meta, param_names) -> dict:
    """Check ``meta`` against the schema; the array members it implies, ``name -> (dtype, shape)``.

    ``param_names`` maps each estimator name to the names of its constructor parameters.
    """
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"not a fastbp model file (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"format version {_short(meta.get('version'))}: this fastbp reads version {VERSION}")
    if meta.get("estimator") not in ESTIMATORS:
        raise ValueError(f"names estimator {_short(meta.get('estimator'))}: expected one of {list(ESTIMATORS)}")
    classifier = meta["estimator"] == "MLPClassifier"
    if classifier != ("classes" in meta):
        raise ValueError("class labels in the metadata of an MLPRegressor, or none in that of an MLPClassifier")
    _check_keys("(top level)", meta, _TOP_REQUIRED | (_TOP_CLASSIFIER if classifier else set()), _TOP_OPTIONAL)
    if meta["dtype"] not in ("float32", "float64"):
        raise ValueError(f"has dtype {_short(meta['dtype'])}: expected float32 or float64")
    units = meta["layer_units"]
    if not isinstance(units, list) or len(units) < 2 or not all(_is_int(u, 1, MAX_PARAMS) for u in units):
        _refuse("layer_units", units, "a list of at least two positive integers")
    n_params = sum(a * b + b for a, b in zip(units[:-1], units[1:]))
    if n_params > MAX_PARAMS:
        raise ValueError(f"layer_units {units} describe {n_params} parameters: more than this loader accepts")
    if meta["activation"] not in ACTIVATIONS:
        _refuse("activation", meta["activation"], f"one of {ACTIVATIONS}")
    _check_params(meta["params"], param_names[meta["estimator"]], units, meta["activation"])
    class_members = _check_classes(meta["classes"], meta["y_type"], units[-1]) if classifier else {}
    _check_attributes(meta, units, classifier)
    _check_lists(meta["lists"])
    names = meta.get("feature_names_in_")
    if names is not None and (not isinstance(names, list) or len(names) != units[0]
                              or not all(isinstance(n, str) for n in names)):
        _refuse("feature_names_in_", names, f"a list of {units[0]} strings (n_features_in_)")
    _check_rng(meta["rng"])
    dtype = np.dtype(meta["dtype"])
    members = {"params": (dtype, (n_params,))}
    if not isinstance(meta["best_params"], bool):
        _refuse("best_params", meta["best_params"], "true or false")
    if meta["best_params"]:
        members["best_params"] = (dtype, (n_params,))
    if "optimizer" in meta:
        members.update({f"opt_{k}": (dtype, (n_params,)) for k in _check_optimizer(meta["optimizer"])})
    members.update(class_members)
    if "scaler" in meta:
        scaler = meta["scaler"]
        # True is what files written before the scaler's flags were saved hold.
        if scaler is not True and (not isinstance(scaler, dict) or set(scaler) != {"with_mean", "with_std"}
                                   or not all(isinstance(v, bool) for v in scaler.values())):
            raise ValueError(f"malformed scaler metadata {_short(scaler)}: expected {{'with_mean': bool, "
                             "'with_std': bool}")
        members["scaler_mean"] = members["scaler_scale"] = (np.dtype(np.float64), (units[0],))
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


def _check_attributes(meta, units, classifier):
    attributes = meta["attributes"]
    counts = ("n_iter_", "t_", "_no_improvement_count")
    reals = ("loss_", "best_loss_", "best_validation_score_")
    _check_keys("attributes", attributes, {"n_iter_", "t_", "n_features_in_", "n_outputs_", "n_layers_",
                                           "out_activation_"}, {"_no_improvement_count", *reals})
    for name in counts:
        if name in attributes and not _is_int(attributes[name]):
            _refuse(f"attributes.{name}", attributes[name], "a non-negative integer")
    for name in reals:
        value = attributes.get(name)
        if value is not None and not _is_real(value):
            _refuse(f"attributes.{name}", value, "a number or null")
    layout = {"n_features_in_": units[0], "n_outputs_": units[-1], "n_layers_": len(units)}
    for name, expected in layout.items():
        if not _is_int(attributes[name]) or attributes[name] != expected:
            _refuse(f"attributes.{name}", attributes[name], f"{expected}, from layer_units {units}")
    if classifier:
        y_type = meta.get("y_type")
        expected = "softmax" if y_type == "multiclass" else "logistic"
        what = f"{expected!r} for target type {y_type!r}"
    else:
        expected = attributes["out_activation_"] if attributes["out_activation_"] in ("identity", "exp") else None
        what = "'identity' or 'exp' for a regressor"
    if attributes["out_activation_"] != expected:
        _refuse("attributes.out_activation_", attributes["out_activation_"], what)


def _check_lists(lists):
    _check_keys("lists", lists, set(LISTS))
    for name, values in lists.items():
        if values is not None and (not isinstance(values, list) or not all(_is_real(v) for v in values)):
            _refuse(f"lists.{name}", values, "null or a list of numbers")


def _check_optimizer(opt):
    _check_keys("optimizer", opt, {"kind", "learning_rate", "t"})
    if opt["kind"] not in OPTIMIZERS:
        raise ValueError(f"has optimizer {_short(opt)}: expected one of {sorted(OPTIMIZERS)}")
    if not _is_real(opt["learning_rate"], finite=True) or opt["learning_rate"] < 0:
        _refuse("optimizer.learning_rate", opt["learning_rate"], "a finite number >= 0")
    if not _is_int(opt["t"]):
        _refuse("optimizer.t", opt["t"], "a non-negative integer (steps taken)")
    return OPTIMIZERS[opt["kind"]]


def _check_classes(info, y_type, n_outputs):
    """The classes' entry; the ``classes`` member it implies (none when the labels are in the JSON)."""
    if y_type not in Y_TYPES:
        raise ValueError(f"target type {_short(y_type)} is not one of {list(Y_TYPES)}")
    if not isinstance(info, dict) or info.get("stored") not in ("array", "json"):
        raise ValueError(f"malformed class metadata {_short(info)}")
    if info["stored"] == "array":
        _check_keys("classes", info, {"stored", "dtype", "size", "original"})
        if info["original"] not in CLASS_DTYPES or CLASS_DTYPES[info["original"]] != info["dtype"]:
            raise ValueError(f"malformed class metadata {_short(info)}: expected an original dtype among "
                             f"{sorted(CLASS_DTYPES)} stored as its kind's dtype")
        n_classes = info["size"]
    else:
        _check_keys("classes", info, {"stored", "values", "object"})
        values = info["values"]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError("class labels in the metadata must be a list of strings")
        if not isinstance(info["object"], bool):
            _refuse("classes.object", info["object"], "true or false")
        if any(a >= b for a, b in zip(values[:-1], values[1:])):
            raise ValueError("class labels in the metadata must be sorted and distinct, as fit stores them")
        n_classes = len(values)
    outputs = {"binary": 1, "multiclass": n_classes, "multilabel-indicator": n_classes}[y_type]
    if (not _is_int(n_classes, 1) or outputs != n_outputs or y_type == "binary" and n_classes > 2
            or y_type == "multiclass" and n_classes < 3):
        raise ValueError(f"target type {y_type!r} with {_short(n_classes)} classes does not match {n_outputs} outputs")
    return {"classes": (np.dtype(info["dtype"]), (n_classes,))} if info["stored"] == "array" else {}


def _check_rng(state):
    kind = state.get("bit_generator") if isinstance(state, dict) else None
    if kind not in BIT_GENERATORS:
        raise ValueError(f"unknown random bit generator {_short(kind)} in the metadata: expected one of "
                         f"{BIT_GENERATORS}")
    _same_structure("rng", state, getattr(np.random, kind)().state)


def _same_structure(field, value, template, key=None):
    """``value`` has the keys, list lengths and integer kinds of the bit generator's own ``template`` state."""
    if isinstance(template, dict):
        _check_keys(field, value, set(template))
        for name, part in template.items():
            _same_structure(f"{field}.{name}", value[name], part, name)
    elif isinstance(template, (list, np.ndarray)):
        if not isinstance(value, list) or len(value) != len(template):
            _refuse(field, value, f"a list of {len(template)} integers")
        for i, part in enumerate(value):
            _same_structure(f"{field}[{i}]", part, template[i], key)
    elif isinstance(template, str):
        if value != template:
            _refuse(field, value, repr(template))
    elif not _is_int(value, 0, _RNG_SMALL.get(key, (1 << 128) - 1)):
        _refuse(field, value, f"an integer in [0, {_RNG_SMALL.get(key, '2**128 - 1')}]")

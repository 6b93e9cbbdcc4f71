"""Save and load models as one ``.npz`` file: arrays plus JSON metadata, never pickle.

The file holds everything that training needs to continue exactly where it
stopped: the flat parameter vector, the optimizer's state (velocities, Adam
moments and step count, current learning rate), the random generator's state,
the counters and curves.  A model saved by ``fastbp train`` is a scikit-learn
``Pipeline`` of the standardisation it applied and the estimator, so that
``load(path).predict(raw_X)`` works on raw features.

Guarantees
----------
* Writing is atomic: a temporary file in the target's folder is written,
  flushed to disk and renamed over the target, so a crash mid-save leaves the
  previous file intact.
* Loading never unpickles (``allow_pickle=False``).  Every member's name, dtype
  and shape is checked against what the metadata implies before its data is
  read; anything else is refused with ``ValueError``.
"""

import json
import os
import zipfile

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelBinarizer, StandardScaler

from ._atomic import atomic_write
from .estimator import MLPClassifier, MLPRegressor
from .network import Network
from .optim import AdamOptimizer, SGDOptimizer

FORMAT = "fastbp-model"
VERSION = 1
_META = "__meta__"
_MAX_META_BYTES = 16 << 20
_MAX_PARAMS = 1 << 31
_ESTIMATORS = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}
_SCALARS = ("n_iter_", "t_", "loss_", "best_loss_", "best_validation_score_", "_no_improvement_count",
            "n_features_in_", "n_outputs_", "n_layers_", "out_activation_")
_LISTS = ("loss_curve_", "validation_scores_", "validation_loss_curve_")
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def save(model, path) -> None:
    """Write a fitted fastbp estimator (or a Pipeline of a StandardScaler and one) to ``path`` atomically."""
    scaler, est = _split_pipeline(model)
    if not hasattr(est, "_network"):
        raise ValueError(f"{type(est).__name__} is not fitted: call fit before save")
    est._sync_network()  # arrays assigned to coefs_ / intercepts_ are part of the model
    net = est._network
    meta = {"format": FORMAT, "version": VERSION, "estimator": type(est).__name__,
            "params": _json_params(est.get_params()), "dtype": net.dtype.name, "layer_units": list(net.layer_units),
            "activation": net.activation, "attributes": {}, "lists": {}}
    arrays = {"params": net.params}
    for name in _SCALARS:
        if hasattr(est, name):
            meta["attributes"][name] = _json_scalar(getattr(est, name))
    for name in _LISTS:
        value = getattr(est, name, None)
        meta["lists"][name] = None if value is None else [float(v) for v in value]
    if hasattr(est, "feature_names_in_"):
        meta["feature_names_in_"] = [str(f) for f in est.feature_names_in_]
    if hasattr(est, "classes_"):
        meta["classes"] = _encode_classes(est.classes_, arrays)
        meta["y_type"] = est._label_binarizer.y_type_
    if getattr(est, "_best_params", None) is not None:
        arrays["best_params"] = est._best_params
    meta["best_params"] = "best_params" in arrays
    opt = getattr(est, "_optimizer", None)
    if opt is not None:
        meta["optimizer"] = {"kind": type(opt).__name__, "learning_rate": opt.learning_rate, "t": opt.t}
        arrays.update({f"opt_{k}": v for k, v in opt.arrays().items()})
    if hasattr(est, "_rng"):
        meta["rng"] = _json_tree(est._rng.bit_generator.state)  # names its bit generator: PCG64, MT19937, ...
    if scaler is not None:
        if not hasattr(scaler, "n_features_in_"):
            raise ValueError("the Pipeline's StandardScaler is not fitted: fit the pipeline before save")
        # with_mean / with_std are kept: a scaler that does not centre (or scale) must not start to on load.
        meta["scaler"] = {"with_mean": bool(scaler.with_mean), "with_std": bool(scaler.with_std)}
        n = scaler.n_features_in_
        arrays["scaler_mean"] = np.zeros(n) if scaler.mean_ is None else np.asarray(scaler.mean_, np.float64)
        arrays["scaler_scale"] = np.ones(n) if scaler.scale_ is None else np.asarray(scaler.scale_, np.float64)
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load(path):
    """Read a model written by :func:`save`; ``ValueError`` for anything that is not one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    try:
        with zipfile.ZipFile(path) as archive:
            return _load_from(archive, path)
    except ValueError:
        raise
    except Exception as exc:  # a broken zip can raise almost anything: report it as a bad file
        raise ValueError(f"{path!r} is not a readable fastbp model file: {type(exc).__name__}: {exc}") from None


def _load_from(archive, path):
    names = set(archive.namelist())
    if _META + ".npy" not in names:
        raise ValueError(f"{path!r} is not a fastbp model file: no metadata member")
    raw = _read_member(archive, _META, np.dtype(np.uint8), None, max_bytes=_MAX_META_BYTES)
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path!r} has corrupt metadata: {exc}") from None
    expected = _expected_members(meta, path)
    if names != {n + ".npy" for n in expected} | {_META + ".npy"}:
        raise ValueError(f"{path!r} has members {sorted(names)}: expected {sorted(n + '.npy' for n in expected)} "
                         "and the metadata")
    arrays = {name: _read_member(archive, name, dtype, shape) for name, (dtype, shape) in expected.items()}
    for name, values in arrays.items():
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ValueError(f"{path!r}: member {name!r} holds NaN or infinity; a saved model is always finite")
    try:
        return _rebuild(meta, arrays)
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"{path!r} has inconsistent metadata: {type(exc).__name__}: {exc}") from None


def _expected_members(meta, path):
    """Every array member implied by the metadata, with its dtype and shape."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a fastbp model file (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path!r} is format version {meta.get('version')!r}: this fastbp reads version {VERSION}")
    if meta.get("estimator") not in _ESTIMATORS:
        raise ValueError(f"{path!r} names estimator {meta.get('estimator')!r}: expected one of {sorted(_ESTIMATORS)}")
    if meta.get("dtype") not in ("float32", "float64"):
        raise ValueError(f"{path!r} has dtype {meta.get('dtype')!r}: expected float32 or float64")
    units = meta.get("layer_units")
    if (not isinstance(units, list) or len(units) < 2
            or not all(isinstance(u, int) and not isinstance(u, bool) and 0 < u < _MAX_PARAMS for u in units)):
        raise ValueError(f"{path!r} has layer_units {units!r}: expected a list of at least two positive integers")
    n_params = sum(a * b + b for a, b in zip(units[:-1], units[1:]))
    if n_params > _MAX_PARAMS:
        raise ValueError(f"{path!r} describes {n_params} parameters: more than this loader accepts")
    dtype = np.dtype(meta["dtype"])
    members = {"params": (dtype, (n_params,))}
    if meta.get("best_params"):
        members["best_params"] = (dtype, (n_params,))
    opt = meta.get("optimizer")
    if opt is not None:
        kinds = {"SGDOptimizer": ("velocity",), "AdamOptimizer": ("m1", "m2")}
        if not isinstance(opt, dict) or opt.get("kind") not in kinds:
            raise ValueError(f"{path!r} has optimizer {opt!r}: expected one of {sorted(kinds)}")
        members.update({f"opt_{k}": (dtype, (n_params,)) for k in kinds[opt["kind"]]})
    classes = meta.get("classes")
    if isinstance(classes, dict) and classes.get("stored") == "array":
        if not isinstance(classes.get("size"), int) or classes.get("dtype") not in ("bool", "int64", "float64"):
            raise ValueError(f"{path!r} has malformed class metadata {classes!r}")
        members["classes"] = (np.dtype(classes["dtype"]), (classes["size"],))
    if meta.get("scaler"):
        members["scaler_mean"] = (np.dtype(np.float64), (units[0],))
        members["scaler_scale"] = (np.dtype(np.float64), (units[0],))
    return members


def _read_member(archive, name, dtype, shape, max_bytes=None):
    """One ``.npy`` member, its header checked before any data is read."""
    with archive.open(name + ".npy") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"member {name!r} has an unsupported .npy version {version}")
    got_shape, fortran, got_dtype = header
    if got_dtype != dtype or fortran or (shape is not None and tuple(got_shape) != shape) or len(got_shape) != 1:
        raise ValueError(f"member {name!r} is {got_dtype} of shape {got_shape}: expected {dtype} of shape "
                         f"{shape if shape is not None else '(n,)'}")
    if max_bytes is not None and got_shape[0] * dtype.itemsize > max_bytes:
        raise ValueError(f"member {name!r} is larger than {max_bytes} bytes")
    with archive.open(name + ".npy") as f:
        data = np.lib.format.read_array(f, allow_pickle=False)
    if data.shape != tuple(got_shape):
        raise ValueError(f"member {name!r} is truncated")
    return data


def _rebuild(meta, arrays):
    cls = _ESTIMATORS[meta["estimator"]]
    est = cls(**_restore_params(meta["params"], cls))
    est._validate_params()  # predict reads some of them (n_threads): refuse what fit would refuse
    for name, value in meta["attributes"].items():
        if name not in _SCALARS:
            raise ValueError(f"unknown attribute {name!r} in the metadata")
        setattr(est, name, value)
    for name in _LISTS:
        value = meta["lists"].get(name)
        setattr(est, name, None if value is None else [float(v) for v in value])
    if "feature_names_in_" in meta:
        est.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)
    units = meta["layer_units"]
    if (cls is MLPClassifier) != ("classes" in meta):
        raise ValueError("class labels in the metadata of an MLPRegressor, or none in that of an MLPClassifier")
    if "classes" in meta:
        binarizer = LabelBinarizer()
        binarizer.classes_ = _decode_classes(meta["classes"], arrays)
        binarizer.y_type_ = meta["y_type"]
        n_classes = len(binarizer.classes_)
        outputs = {"binary": 1, "multiclass": n_classes, "multilabel-indicator": n_classes}
        if (not isinstance(binarizer.y_type_, str) or outputs.get(binarizer.y_type_) != units[-1]
                or binarizer.y_type_ == "binary" and n_classes > 2 or binarizer.y_type_ == "multiclass" and n_classes < 3):
            raise ValueError(f"target type {binarizer.y_type_!r} with {n_classes} classes does not match "
                             f"{units[-1]} outputs")
        binarizer.sparse_input_ = False
        est._label_binarizer = binarizer
        est.classes_ = binarizer.classes_
    attributes = meta["attributes"]
    if (attributes.get("n_features_in_"), attributes.get("n_outputs_"), attributes.get("n_layers_")) != (
            units[0], units[-1], len(units)):
        raise ValueError(f"n_features_in_, n_outputs_ and n_layers_ in the metadata do not match layer_units {units}")
    out_activation = attributes.get("out_activation_")
    net = Network(meta["layer_units"], meta["activation"], out_activation, meta["dtype"], arrays["params"])
    est._set_network(net)
    if "best_params" in arrays:
        est._best_params = arrays["best_params"]
    est._optimizer = _rebuild_optimizer(meta.get("optimizer"), est, net, arrays)
    if "rng" in meta:
        kind = meta["rng"].get("bit_generator")
        if kind not in _BIT_GENERATORS:
            raise ValueError(f"unknown random bit generator {kind!r} in the metadata: expected one of {_BIT_GENERATORS}")
        bit_generator = getattr(np.random, kind)()
        bit_generator.state = meta["rng"]  # numpy takes the lists JSON gives back
        est._rng = np.random.Generator(bit_generator)
    if not meta.get("scaler"):
        return est
    flags = meta["scaler"] if isinstance(meta["scaler"], dict) else {}
    if set(flags) - {"with_mean", "with_std"} or not all(isinstance(v, bool) for v in flags.values()):
        raise ValueError(f"malformed scaler metadata {meta['scaler']!r}")
    scaler = StandardScaler(**flags)
    scaler.mean_, scaler.scale_ = arrays["scaler_mean"], arrays["scaler_scale"]
    scaler.var_ = scaler.scale_ ** 2
    if not scaler.with_std:
        scaler.scale_ = scaler.var_ = None
    scaler.n_features_in_ = scaler.mean_.shape[0]
    scaler.n_samples_seen_ = 1
    return Pipeline([("scale", scaler), ("mlp", est)])


def _rebuild_optimizer(opt_meta, est, net, arrays):
    if opt_meta is None:
        return None
    if opt_meta["kind"] == "SGDOptimizer":
        opt = SGDOptimizer(net.n_params, net.dtype, est.learning_rate_init, est.learning_rate, est.momentum,
                           est.nesterovs_momentum, est.power_t)
    else:
        opt = AdamOptimizer(net.n_params, net.dtype, est.learning_rate_init, est.beta_1, est.beta_2, est.epsilon)
    for name, state in opt.arrays().items():
        np.copyto(state, arrays[f"opt_{name}"])
    opt.learning_rate = float(opt_meta["learning_rate"])
    opt.t = int(opt_meta["t"])
    return opt


def _split_pipeline(model):
    if isinstance(model, Pipeline):
        steps = [step for _, step in model.steps]
        if len(steps) != 2 or not isinstance(steps[0], StandardScaler) or not isinstance(steps[1], tuple(_ESTIMATORS.values())):
            raise TypeError("save takes a fastbp estimator or a Pipeline of (StandardScaler, fastbp estimator)")
        return steps
    if not isinstance(model, tuple(_ESTIMATORS.values())):
        raise TypeError(f"save takes a fastbp MLPClassifier / MLPRegressor, got {type(model).__name__}")
    return None, model


def _json_params(params):
    out = {}
    for key, value in params.items():
        if key in ("callbacks",) or isinstance(value, (np.random.RandomState, np.random.Generator)):
            continue  # code and live generators are not data; their state is saved separately
        out[key] = _json_tree(value)
    return out


def _restore_params(params, cls):
    if not isinstance(params, dict):
        raise ValueError("model parameters in the metadata must be a mapping")
    known = cls().get_params()
    unknown = set(params) - set(known)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)} in the metadata")
    return {k: tuple(v) if k == "hidden_layer_sizes" and isinstance(v, list) else v for k, v in params.items()}


def _json_tree(value):
    """``value`` with numpy scalars and arrays turned into JSON's numbers and lists, recursively."""
    if isinstance(value, dict):
        return {k: _json_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_tree(v) for v in value]
    return _json_scalar(value)


def _json_scalar(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def _encode_classes(classes, arrays):
    if classes.dtype.kind in "biuf":
        kind = {"b": "bool", "i": "int64", "u": "int64", "f": "float64"}[classes.dtype.kind]
        arrays["classes"] = classes.astype(kind)
        return {"stored": "array", "dtype": kind, "size": int(classes.size), "original": classes.dtype.str}
    return {"stored": "json", "values": [str(c) for c in classes], "object": classes.dtype == object}


def _decode_classes(info, arrays):
    if info["stored"] == "array":
        return arrays["classes"].astype(np.dtype(info["original"]))
    values = info["values"]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("class labels in the metadata must be a list of strings")
    return np.asarray(values, dtype=object if info.get("object") else None)

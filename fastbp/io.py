"""Save and load models as one ``.npz`` file: arrays plus JSON metadata, never pickle.

The file holds everything that training needs to continue exactly where it
stopped: the flat parameter vector, the optimizer's state (velocities, Adam
moments and step count, current learning rate), the random generator's state,
the counters and curves.  A model saved by ``fastbp train`` is a scikit-learn
``Pipeline`` of the standardisation it applied and the estimator, so that
``load(path).predict(raw_X)`` works on raw features.

Layout: the metadata member (JSON) is an envelope (format, version, estimator
class, its parameters, the scaler's flags) around the fitted state's own
export (:meth:`fastbp._fitted.FittedState.export`, under "fitted"); the other
members are that export's arrays, plus the scaler's.  Loading calls
:meth:`~fastbp._fitted.FittedState.restore`, as unpickling does, so a new
fitted attribute needs nothing here.

Guarantees
----------
* Writing is atomic: a temporary file in the target's folder is written,
  flushed to disk and renamed over the target, so a crash mid-save leaves the
  previous file intact.  Only regular files are written (a symlink is written
  through); an existing file keeps its permission bits.
* Loading never unpickles (``allow_pickle=False``) and its cost is bounded by
  the file: the metadata meets a strict schema (:mod:`fastbp._schema`), every
  member's name, dtype, shape and size is checked against what the metadata
  implies and against its zip entry before its data is read, and the memory
  the load would take is estimated first (``max_bytes``).  Anything else is
  refused with ``ValueError``.
"""

import json
import numbers
import os
import zipfile

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ._atomic import atomic_write
from ._fitted import FIELDS, json_tree
from ._schema import FORMAT, VERSION, check_metadata
from .estimator import MLPClassifier, MLPRegressor

_META = "__meta__"
_ESTIMATORS = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}
_PARAM_NAMES = {name: tuple(cls().get_params()) for name, cls in _ESTIMATORS.items()}
# The envelope's members; the others are the fitted state's (FittedState.export names them).
_SCALER_MEMBERS = ("scaler_mean", "scaler_scale")
# The default bound on what a load may allocate is this plus 4x the file's size (issue 13).
_BASE_BUDGET = 64 << 20
# A loaded array exists up to three times at once: read, its finiteness mask, and the optimizer's own
# zero-filled state vector before the saved one replaces it.
_ARRAY_COPIES = 3
_MAX_MEMBERS = 16  # a model has at most 8: params, _best_params, 2 optimizer vectors, classes, 2 scaler, meta
_EOCD_SEARCH = 22 + 65535  # the end-of-central-directory record and the longest zip comment


def save(model, path) -> None:
    """Write a fitted fastbp estimator (or a Pipeline of a StandardScaler and one) to ``path`` atomically.

    ``path`` must be (or become) a regular file; a symlink is written through, an
    existing file keeps its permission bits (see :func:`fastbp._atomic.atomic_write`).
    """
    scaler, est = _split_pipeline(model)
    if not hasattr(est, "_network"):
        raise ValueError(f"{type(est).__name__} is not fitted: call fit before save")
    fitted, arrays = est._export_fitted()  # after packing arrays assigned to coefs_ / intercepts_
    net = est._network
    sizes = est.hidden_layer_sizes
    if list(sizes if hasattr(sizes, "__iter__") else [sizes]) != list(net.layer_units[1:-1]) \
            or est.activation != net.activation:
        # load cross-checks them, so save must not write a file that load refuses
        raise ValueError(f"hidden_layer_sizes={sizes!r} and activation={est.activation!r} were changed after fit "
                         f"(the network has {net.layer_units[1:-1]}, {net.activation!r}): set them back or fit again "
                         "before save")
    meta = {"format": FORMAT, "version": VERSION, "estimator": type(est).__name__,
            "params": _json_params(est.get_params()), "fitted": fitted}
    arrays = dict(arrays)  # the fitted state's members, then the envelope's
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


def load(path, max_bytes=None):
    """Read a model written by :func:`save`; ``ValueError`` for anything that is not one.

    The cost is bounded by the file: the metadata is checked against a strict
    schema, members are read only as ``save`` writes them (stored, not
    compressed, with the sizes their headers declare) and the memory a load
    would take is estimated before anything is allocated.  By default that is at
    most 64 MB plus 4 times the file's size; ``max_bytes`` sets another bound
    (for models with, say, very long loss curves).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    size = os.path.getsize(path)
    if max_bytes is None:
        max_bytes = _BASE_BUDGET + 4 * size
    elif not isinstance(max_bytes, numbers.Integral) or isinstance(max_bytes, bool):
        raise TypeError(f"max_bytes must be an integer (bytes), got {max_bytes!r}")
    elif max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    try:
        with open(path, "rb") as f:
            _check_directory(f, size)
            with zipfile.ZipFile(f) as archive:
                return _load_from(archive, size, int(max_bytes))
    except ValueError as exc:
        raise ValueError(f"{path!r}: {exc}") from None
    except Exception as exc:  # a broken zip can raise almost anything: report it as a bad file
        raise ValueError(f"{path!r} is not a readable fastbp model file: {type(exc).__name__}: {exc}") from None


def _check_directory(f, size):
    """Refuse zips of more entries than a model has, before zipfile builds an object for each."""
    f.seek(max(0, size - _EOCD_SEARCH))
    tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at >= 0 and len(tail) >= at + 12 and int.from_bytes(tail[at + 10:at + 12], "little") > _MAX_MEMBERS:
        raise ValueError(f"not a fastbp model file: more than {_MAX_MEMBERS} members")
    f.seek(0)


def _load_from(archive, size, max_bytes):
    infos = archive.infolist()
    names = [info.filename for info in infos]
    if len(infos) > _MAX_MEMBERS or len(set(names)) != len(names):
        raise ValueError(f"not a fastbp model file: members {sorted(names)[:20]}")
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise ValueError(f"member {info.filename!r} is compressed: fastbp stores members uncompressed")
    # Members may not overlap (a zip can point several entries at the same bytes): together they fit the file.
    if sum(info.compress_size for info in infos) > size:
        raise ValueError("the members claim more bytes than the file holds")
    entries = dict(zip(names, infos))
    if _META + ".npy" not in entries:
        raise ValueError("not a fastbp model file: no metadata member")
    raw = _read_member(archive, entries[_META + ".npy"], _META, np.dtype(np.uint8), None).tobytes()
    cost = _metadata_cost(raw)
    if cost > max_bytes:
        raise ValueError(f"metadata of {len(raw)} bytes would take about {cost >> 20} MB to read, more than "
                         f"max_bytes={max_bytes}: pass a larger max_bytes to load it")
    try:
        meta = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"corrupt metadata: {exc}") from None
    expected = check_metadata(meta, _PARAM_NAMES, FIELDS)
    if set(names) != {n + ".npy" for n in expected} | {_META + ".npy"}:
        raise ValueError(f"has members {sorted(names)}: expected {sorted(n + '.npy' for n in expected)} "
                         "and the metadata")
    cost += _ARRAY_COPIES * sum(entries[n + ".npy"].file_size for n in expected) + _classes_cost(meta)
    if cost > max_bytes:
        raise ValueError(f"loading would take about {cost >> 20} MB, more than max_bytes={max_bytes}: pass a "
                         "larger max_bytes to load it")
    arrays = {name: _read_member(archive, entries[name + ".npy"], name, dtype, shape)
              for name, (dtype, shape) in expected.items()}
    for name, values in arrays.items():
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ValueError(f"member {name!r} holds NaN or infinity; a saved model is always finite")
    if "scaler_scale" in arrays and not (arrays["scaler_scale"] > 0).all():
        raise ValueError("member 'scaler_scale' holds a scale <= 0; StandardScaler's scales are positive")
    return _rebuild(meta, arrays)


def _metadata_cost(raw):
    """Bytes that parsing ``raw`` JSON may take: its text, and a generous Python object per value.

    A value costs at most a dict's size (~230 bytes in CPython), and every value is
    preceded or followed by one of these four characters.
    """
    tokens = sum(raw.count(c) for c in (b",", b":", b"[", b"{")) + 1
    return 4 * len(raw) + 256 * tokens


def _classes_cost(meta):
    """Bytes of the classes array built from labels in the JSON: numpy's fixed-width strings take the longest."""
    labels = meta["fitted"].get("_label_binarizer")  # checked: a dict whose "classes" is one too
    values = labels["classes"].get("values", []) if labels else []
    return 4 * len(values) * max(map(len, values), default=0)


def _read_member(archive, info, name, dtype, shape):
    """One ``.npy`` member as ``save`` writes it: format 1.0, C order, 1-D, of exactly its zip entry's size.

    Its header is checked before any data is read or allocated.
    """
    with archive.open(info) as f:
        if np.lib.format.read_magic(f) != (1, 0):
            raise ValueError(f"member {name!r} is not a .npy file of format 1.0")
        got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(f)
        header_size = f.tell()
    if got_dtype != dtype or fortran or len(got_shape) != 1 or (shape is not None and tuple(got_shape) != shape):
        raise ValueError(f"member {name!r} is {got_dtype} of shape {got_shape}: expected {dtype} of shape "
                         f"{shape if shape is not None else '(n,)'}")
    if header_size + got_shape[0] * dtype.itemsize != info.file_size:
        raise ValueError(f"member {name!r} declares {got_shape[0]} values, but its entry holds "
                         f"{info.file_size - header_size} bytes of data")
    with archive.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _rebuild(meta, arrays):
    """The estimator (or Pipeline) of checked metadata and arrays."""
    cls = _ESTIMATORS[meta["estimator"]]
    est = cls(**{k: tuple(v) if k == "hidden_layer_sizes" and isinstance(v, list) else v
                 for k, v in meta["params"].items()})
    est._validate_params()  # the constructor's constraints; predict reads some of them (n_threads)
    scaling = {name: arrays.pop(name) for name in _SCALER_MEMBERS if name in arrays}
    est._import_fitted(meta["fitted"], arrays)  # FittedState.restore, as unpickling does
    if "scaler" not in meta:
        return est
    scaler = StandardScaler(**meta["scaler"])
    scaler.mean_, scaler.scale_ = scaling["scaler_mean"], scaling["scaler_scale"]
    scaler.var_ = scaler.scale_ ** 2
    if not scaler.with_std:
        scaler.scale_ = scaler.var_ = None
    scaler.n_features_in_ = scaler.mean_.shape[0]
    scaler.n_samples_seen_ = 1
    return Pipeline([("scale", scaler), ("mlp", est)])


def _split_pipeline(model):
    if isinstance(model, Pipeline):
        steps = [step for _, step in model.steps]
        estimators = tuple(_ESTIMATORS.values())
        if len(steps) != 2 or not isinstance(steps[0], StandardScaler) or not isinstance(steps[1], estimators):
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
        out[key] = json_tree(value)
    return out

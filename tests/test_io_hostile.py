"""fastbp.io against hostile files (issue 13): a strict metadata schema, bounded cost, targets respected.

* every case the security review found (dtype strings that build huge arrays,
  deflated members, oversized JSON, fields trusted one by one) is refused with
  ``ValueError``;
* structured fuzzing: every field of every base model's metadata replaced by
  values of every JSON kind, or deleted; the loader meets only ``ValueError``
  (or loads a model that predicts), and a value of the wrong kind is refused in
  every field;
* a subprocess loads a set of hostile files and stays within 64 MB + 4x the
  largest file's size, each load within 2 s;
* ``save`` leaves devices, FIFOs, directories, symlinks and permission bits as
  they were, and its errors name the user's path.
"""

import errno
import io as _bytesio
import json
import math
import os
import stat
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _modelfiles import _members, _meta, _npy, _with_meta, _zip
from sklearn.datasets import load_iris
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fastbp.io
from fastbp import MLPClassifier, MLPRegressor
from fastbp.io import load, save

REPO = Path(__file__).resolve().parents[1]
X_IRIS, Y_IRIS = load_iris(return_X_y=True)
CLASSES = ("fitted", "_label_binarizer", "classes")  # where the metadata keeps the class labels

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _fit(model, X=X_IRIS, y=Y_IRIS):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, y)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Saved bytes of models covering every kind of metadata: name -> bytes."""
    folder = tmp_path_factory.mktemp("bases")
    strings = np.array(["setosa", "versicolor", "virginica"])[Y_IRIS]
    models = {
        "adam-int": _fit(MLPClassifier((3,), solver="adam", max_iter=2, random_state=0)),
        "sgd-strings-early-stopping": _fit(MLPClassifier((3,), solver="sgd", early_stopping=True, max_iter=3,
                                                         random_state=0), y=strings),
        "binary-pipeline": _fit(make_pipeline(StandardScaler(), MLPClassifier((3,), max_iter=2, random_state=0)),
                                y=Y_IRIS == 1),
        "lbfgs-regressor-f32": _fit(MLPRegressor(hidden_layer_sizes=(3,), solver="lbfgs", max_iter=3,
                                                 random_state=0), X_IRIS.astype(np.float32), X_IRIS[:, 0]),
        "poisson-mt19937": _fit(MLPRegressor(loss="poisson", hidden_layer_sizes=(3,), solver="sgd", max_iter=2,
                                             random_state=np.random.Generator(np.random.MT19937(0))),
                                y=np.round(X_IRIS[:, 2])),
    }
    out = {}
    for name, model in models.items():
        save(model, folder / f"{name}.npz")
        out[name] = (folder / f"{name}.npz").read_bytes()
    return out


def _write(tmp_path, data, name="bad.npz"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _refused(tmp_path, data, match=None, **kwargs):
    with pytest.raises(ValueError, match=match):
        load(_write(tmp_path, data), **kwargs)


def _set(meta, path, value):
    """A deep copy of ``meta`` with the value at ``path`` (a tuple of keys / indices) replaced."""
    meta = json.loads(json.dumps(meta))
    parent = meta
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return meta


# ----------------------------------------------------------------------------- the review's cases

@pytest.mark.parametrize("original", ["(100000000,)f8", "S100000000", "<U5", "|O", "V8", ">i8", "float64", 7, None])
def test_classes_dtype_comes_from_the_short_list(tmp_path, bases, original):
    meta = _meta(bases["adam-int"])
    assert meta["fitted"]["_label_binarizer"]["classes"]["stored"] == "array"
    _refused(tmp_path, _with_meta(bases["adam-int"], _set(meta, CLASSES + ("original",), original)),
             "original dtype among")


def test_classes_stored_dtype_must_match_the_original_kind(tmp_path, bases):
    meta = _meta(bases["adam-int"])
    _refused(tmp_path, _with_meta(bases["adam-int"], _set(meta, CLASSES + ("original",), "<f4")), "original dtype")


def test_big_endian_labels_are_saved_in_native_order(tmp_path):
    model = _fit(MLPClassifier((3,), max_iter=2, random_state=0), y=Y_IRIS.astype(">i4"))
    save(model, tmp_path / "m.npz")
    loaded = load(tmp_path / "m.npz")
    assert np.array_equal(loaded.predict(X_IRIS), model.predict(X_IRIS))
    assert loaded.classes_.dtype == np.dtype("int32")


@pytest.mark.parametrize("member", ["params.npy", "__meta__.npy", "optimizer_m1.npy"])
def test_deflated_members_are_refused(tmp_path, bases, member):
    members = _members(bases["adam-int"])
    buf = _bytesio.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data, zipfile.ZIP_DEFLATED if name == member else zipfile.ZIP_STORED)
    _refused(tmp_path, buf.getvalue(), f"member '{member}' is compressed")


def test_oversized_json_is_refused_before_parsing_unless_max_bytes_allows(tmp_path, bases):
    meta = _meta(bases["adam-int"])
    long_curve = _set(meta, ("fitted", "loss_curve_"), [0] * 600_000)  # 1.2 MB of "0,": valid, but costly JSON
    path = _write(tmp_path, _with_meta(bases["adam-int"], long_curve))
    with pytest.raises(ValueError, match="pass a larger max_bytes"):
        load(path)
    assert len(load(path, max_bytes=1 << 30).loss_curve_) == 600_000


def test_max_bytes_bounds_the_arrays_too(tmp_path, bases):
    path = _write(tmp_path, bases["adam-int"])
    load(path, max_bytes=1 << 20)
    with pytest.raises(ValueError, match="more than max_bytes=100"):
        load(path, max_bytes=100)
    with pytest.raises(TypeError, match="max_bytes must be an integer"):
        load(path, max_bytes="1 GB")
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        load(path, max_bytes=0)


def test_json_labels_are_costed_at_numpy_width(tmp_path, bases):
    """One long label makes numpy's fixed-width string array as wide for every class."""
    meta = _meta(bases["sgd-strings-early-stopping"])
    assert meta["fitted"]["_label_binarizer"]["classes"]["stored"] == "json"
    labels = ["a", "b", "c" * 300_000]
    data = _with_meta(bases["sgd-strings-early-stopping"], _set(meta, CLASSES + ("values",), labels))
    _refused(tmp_path, data, "more than max_bytes", max_bytes=3 << 20)
    assert list(load(_write(tmp_path, data)).classes_) == labels  # within the default bound


# field path -> (value, words of the expected message)
TRUSTED_FIELDS = {
    ("fitted", "t_"): ("text", "fitted.t_"),
    ("fitted", "n_iter_"): (-1, "fitted.n_iter_"),
    ("fitted", "_optimizer", "learning_rate"): (math.nan, "fitted._optimizer.learning_rate"),
    ("fitted", "_optimizer", "t"): (-3, "fitted._optimizer.t"),
    ("fitted", "_label_binarizer", "y_type"): ("binary", "target type 'binary' with 3 classes"),
    ("fitted", "out_activation_"): ("logistic", "fitted.out_activation_ = 'logistic' and the network's"),
    ("fitted", "_network", "out_activation"): ("logistic", "fitted.out_activation_ = 'softmax' and the network's"),
    ("fitted", "feature_names_in_"): (["a", "b"], "fitted.feature_names_in_"),
    ("params", "hidden_layer_sizes"): ([5], "params.hidden_layer_sizes"),
    ("params", "activation"): ("tanh", "params.activation"),
    ("fitted", "n_features_in_"): (5, "fitted.n_features_in_"),
    ("fitted", "loss_curve_"): ([1.0, math.nan], "fitted.loss_curve_"),
    ("fitted", "_rng", "state", "inc"): (-1, "fitted._rng.state.inc"),
    ("fitted", "_best_params"): (1, "fitted._best_params"),
    ("scaler",): ({"with_mean": True}, "malformed scaler metadata"),
}


@pytest.mark.parametrize("field", sorted(TRUSTED_FIELDS), ids=".".join)
def test_each_field_is_checked(tmp_path, bases, field):
    base = {("scaler",): "binary-pipeline", ("fitted", "_best_params"): "sgd-strings-early-stopping"}.get(
        field, "adam-int")
    meta = _meta(bases[base])
    if field == ("fitted", "feature_names_in_"):
        meta["fitted"]["feature_names_in_"] = ["a", "b", "c", "d"]
        assert load(_write(tmp_path, _with_meta(bases[base], meta))).feature_names_in_.tolist() == list("abcd")
    value, message = TRUSTED_FIELDS[field]
    _refused(tmp_path, _with_meta(bases[base], _set(meta, field, value)), message)


def test_output_activation_is_the_estimators(tmp_path, bases):
    """Both copies of the output activation changed alike: the estimator's own rule still refuses it."""
    meta = _meta(bases["adam-int"])
    both = _set(_set(meta, ("fitted", "out_activation_"), "logistic"), ("fitted", "_network", "out_activation"),
                "logistic")
    _refused(tmp_path, _with_meta(bases["adam-int"], both), "expected 'softmax' for target type 'multiclass'")


@pytest.mark.parametrize("where", [(), ("params",), ("fitted",), ("fitted", "_network"), ("fitted", "_optimizer"),
                                   ("fitted", "_label_binarizer"), CLASSES, ("fitted", "_rng"),
                                   ("fitted", "_rng", "state")], ids=lambda w: ".".join(w) or "top")
def test_unknown_keys_are_refused(tmp_path, bases, where):
    meta = _meta(bases["adam-int"])
    holder = meta
    for step in where:
        holder = holder[step]
    holder["surprise"] = 1
    _refused(tmp_path, _with_meta(bases["adam-int"], meta), "unknown")


@pytest.mark.parametrize("field, value", [(("state", "pos"), 700), (("state", "pos"), -1),
                                          (("state", "key"), [0] * 623)])
def test_random_state_indices_are_range_checked(tmp_path, bases, field, value):
    """numpy's MT19937 indexes its key with ``pos`` unchecked: an out-of-range one would read out of bounds."""
    meta = _meta(bases["poisson-mt19937"])
    assert meta["fitted"]["_rng"]["bit_generator"] == "MT19937"
    _refused(tmp_path, _with_meta(bases["poisson-mt19937"], _set(meta, ("fitted", "_rng", *field), value)),
             "metadata fitted._rng")


def test_save_refuses_a_layout_changed_after_fit(tmp_path):
    model = _fit(MLPClassifier((3,), max_iter=2, random_state=0)).set_params(hidden_layer_sizes=(4,))
    with pytest.raises(ValueError, match="changed after fit"):
        save(model, tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------- the zip container

def test_member_size_must_match_its_header(tmp_path, bases):
    members = _members(bases["adam-int"])
    members["params.npy"] += b"\0" * 8  # one value more than the header declares
    _refused(tmp_path, _zip(members), "member 'params' declares 27 values")
    members = _members(bases["adam-int"])
    members["params.npy"] = members["params.npy"][:-8]
    _refused(tmp_path, _zip(members), "member 'params' declares 27 values")


def test_npy_format_2_is_refused(tmp_path, bases):
    members = _members(bases["adam-int"])
    params = np.load(_bytesio.BytesIO(members["params.npy"]))
    buf = _bytesio.BytesIO()
    np.lib.format.write_array(buf, params, version=(2, 0))
    members["params.npy"] = buf.getvalue()
    _refused(tmp_path, _zip(members), "format 1.0")


def test_duplicate_member_names_are_refused(tmp_path, bases):
    members = _members(bases["adam-int"])
    buf = _bytesio.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(buf, "w") as archive:
            for name, data in [*members.items(), ("params.npy", members["params.npy"])]:
                archive.writestr(name, data)
    _refused(tmp_path, buf.getvalue(), "members")


def _many_entries(n):
    buf = _bytesio.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for i in range(n):
            archive.writestr(f"{i}", b"")
    return buf.getvalue()


def test_zip_of_many_entries_is_refused_before_zipfile_reads_them(tmp_path):
    _refused(tmp_path, _many_entries(5000), "more than 16 members")


# ----------------------------------------------------------------------------- structured fuzzing

def _paths(obj, prefix=()):
    """Every key / index path of ``obj``, lists visited in their first two elements only."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj[:2]):
            yield prefix + (i,)
            yield from _paths(value, prefix + (i,))


WRONG_KIND = {"unexpected": 1}  # no field of the format holds a mapping with this key
HOSTILE_VALUES = [None, True, -1, 0, 2 ** 70, 1.5, math.nan, -math.inf, "", "x" * 12, [], [[[]]], WRONG_KIND]


def _outcome(path, X):
    """"refused" (ValueError) or "loaded" (a model that predicts on ``X``); anything else fails the test."""
    try:
        model = load(path)
    except ValueError as exc:
        assert str(exc)
        return "refused"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            assert len(model.predict(X)) == len(X)
        except ValueError as exc:  # a changed but valid float can make the output overflow: predict says so
            assert "network output is not finite" in str(exc)
    return "loaded"


@pytest.mark.parametrize("base", ["adam-int", "sgd-strings-early-stopping", "binary-pipeline", "lbfgs-regressor-f32",
                                  "poisson-mt19937"])
def test_fuzz_every_metadata_field(tmp_path, bases, base):
    """Every field replaced by each hostile value, and deleted: only ValueError, and wrong kinds always refused."""
    meta = _meta(bases[base])
    X = X_IRIS.astype(np.float32) if "f32" in base else X_IRIS
    path = tmp_path / "case.npz"
    outcomes = {"refused": 0, "loaded": 0}
    for field in _paths(meta):
        for value in HOSTILE_VALUES:
            path.write_bytes(_with_meta(bases[base], _set(meta, field, value)))
            outcome = _outcome(path, X)
            outcomes[outcome] += 1
            if value is WRONG_KIND:
                assert outcome == "refused", f"{field} = {value} loaded"
        deleted = json.loads(json.dumps(meta))
        parent = deleted
        for step in field[:-1]:
            parent = parent[step]
        del parent[field[-1]]
        path.write_bytes(_with_meta(bases[base], deleted))
        outcomes[_outcome(path, X)] += 1
    assert outcomes["refused"] > outcomes["loaded"] > 0, outcomes


# ----------------------------------------------------------------------------- bounded cost, measured

def _consistent_wide_classifier(bases, n_classes, labels):
    """A metadata-consistent model of ``n_classes`` outputs whose labels are ``labels`` (JSON strings)."""
    members = _members(bases["sgd-strings-early-stopping"])
    meta = _meta(bases["sgd-strings-early-stopping"])
    units = [4, 1, n_classes]
    n = 4 + 1 + n_classes + n_classes
    meta["params"]["hidden_layer_sizes"] = [1]
    meta["fitted"].update(n_outputs_=n_classes, _network={**meta["fitted"]["_network"], "layer_units": units})
    meta["fitted"]["_label_binarizer"]["classes"]["values"] = labels
    for name in ("params.npy", "_best_params.npy", "optimizer_velocity.npy"):
        members[name] = _npy(np.zeros(n))
    members["__meta__.npy"] = _npy(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    return _zip(members)


def _hostile_files(bases):
    meta = _meta(bases["adam-int"])
    files = {
        "huge-dtype": _with_meta(bases["adam-int"], _set(meta, CLASSES + ("original",), "(100000000,)f8")),
        "huge-bytes-dtype": _with_meta(bases["adam-int"], _set(meta, CLASSES + ("original",), "S100000000")),
        "nested-json": _with_meta(bases["adam-int"], _set(meta, ("fitted", "loss_curve_"), [[]] * 2_000_000)),
        "deep-json": _with_meta(bases["adam-int"], _set(meta, ("fitted", "loss_curve_"), json.loads(
            "[" * 500 + "]" * 500))),
        "wide-labels": _consistent_wide_classifier(bases, 2000, [f"{i:05d}" for i in range(1999)] + ["z" * 500_000]),
        "many-entries": _many_entries(30_000),
    }
    members = _members(bases["adam-int"])
    buf = _bytesio.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__meta__.npy", members["__meta__.npy"])
        for name in ("params.npy", "optimizer_m1.npy", "optimizer_m2.npy"):  # 100 MB of zeros each, declared
            with archive.open(name, "w") as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                                         "shape": (12_500_000,)})
                for _ in range(100):
                    f.write(bytes(1 << 20))
    files["deflated-zeros"] = buf.getvalue()
    return files


_MEASURE = textwrap.dedent("""
    import json, resource, sys, time
    from fastbp.io import load

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux

    load(sys.argv[1])  # imports and first-call costs are not the load's
    before = peak()
    seconds = {}
    for path in sys.argv[2:]:
        started = time.perf_counter()
        try:
            load(path)
            outcome = "loaded"
        except ValueError:
            outcome = "refused"
        seconds[path] = (time.perf_counter() - started, outcome)
    print(json.dumps({"growth": peak() - before, "seconds": seconds}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in kB is Linux's unit")
def test_hostile_files_load_in_bounded_memory_and_time(tmp_path, bases):
    paths = []
    for name, data in _hostile_files(bases).items():
        paths.append(str(_write(tmp_path, data, f"{name}.npz")))
    valid = str(_write(tmp_path, bases["adam-int"], "valid.npz"))
    result = subprocess.run([sys.executable, "-c", _MEASURE, valid, *paths], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    largest = max(os.path.getsize(p) for p in paths)
    assert report["growth"] <= (64 << 20) + 4 * largest, report
    for path, (seconds, outcome) in report["seconds"].items():
        assert outcome == "refused", path
        assert seconds < 2.0, (path, seconds)


# ----------------------------------------------------------------------------- save's targets

@pytest.fixture(scope="module")
def small_model():
    return _fit(MLPClassifier((3,), max_iter=2, random_state=0))


def test_save_refuses_a_directory(tmp_path, small_model):
    target = tmp_path / "folder"
    target.mkdir()
    with pytest.raises(ValueError, match=f"cannot write '{target}': it is a directory"):
        save(small_model, target)
    assert target.is_dir() and not list(target.iterdir())


def test_save_refuses_a_fifo(tmp_path, small_model):
    target = tmp_path / "pipe"
    os.mkfifo(target)
    with pytest.raises(ValueError, match="it is a FIFO, not a regular file"):
        save(small_model, target)
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["pipe"]


def test_save_refuses_a_device_node(tmp_path, small_model):
    target = tmp_path / "null"
    try:
        os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a second /dev/null
    except PermissionError:
        pytest.skip("creating a device node needs root")
    with pytest.raises(ValueError, match="it is a character device"):
        save(small_model, target)
    assert stat.S_ISCHR(os.lstat(target).st_mode) and os.lstat(target).st_rdev == os.makedev(1, 3)


def test_save_refuses_an_empty_path(small_model):
    with pytest.raises(ValueError, match="empty path"):
        save(small_model, "")


def test_save_writes_through_a_symlink(tmp_path, small_model):
    real = tmp_path / "real.npz"
    real.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    save(small_model, link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert np.array_equal(load(real).predict(X_IRIS), small_model.predict(X_IRIS))
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "new.npz")
    save(small_model, dangling)
    assert dangling.is_symlink() and (tmp_path / "new.npz").is_file()


def test_save_refuses_a_symlink_to_a_device(tmp_path, small_model):
    link = tmp_path / "to-pipe"
    os.mkfifo(tmp_path / "pipe")
    link.symlink_to(tmp_path / "pipe")
    with pytest.raises(ValueError, match=f"cannot write '{link}': it is a FIFO"):
        save(small_model, link)
    assert link.is_symlink()


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604])
def test_save_keeps_permission_bits(tmp_path, small_model, mode):
    target = tmp_path / "m.npz"
    target.write_bytes(b"old")
    os.chmod(target, mode)
    save(small_model, target)
    assert stat.S_IMODE(os.stat(target).st_mode) == mode
    load(target)


def test_save_of_a_new_file_follows_the_umask(tmp_path, small_model):
    save(small_model, tmp_path / "m.npz")
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o666 & ~fastbp._atomic._read_umask()


@pytest.mark.parametrize("where", ["mkstemp", "write", "replace"])
def test_save_errors_name_the_users_path(tmp_path, small_model, monkeypatch, where):
    target = tmp_path / "m.npz"

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".fastbp-abc.tmp"))

    module = {"mkstemp": fastbp._atomic.tempfile, "write": fastbp.io.np, "replace": fastbp._atomic.os}[where]
    monkeypatch.setattr(module, {"mkstemp": "mkstemp", "write": "savez", "replace": "replace"}[where], fail)
    with pytest.raises(OSError, match=f"cannot write '{target}': No space left on device") as info:
        save(small_model, target)
    monkeypatch.undo()
    assert ".fastbp-" not in str(info.value) and info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []

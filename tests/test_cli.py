"""The ``fastbp train`` command end to end, in subprocesses (``python -m fastbp.cli`` and ``scripts/train.py``).

Every subprocess is started at once by a module fixture and the tests read
their results, so that the interpreter start-ups (imports, loading the
compiled kernels from the cache) overlap instead of adding up.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

import fastbp.cli
from fastbp.datasets import load_dataset, load_raw
from fastbp.io import load

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _module(*args):
    return [sys.executable, "-m", "fastbp.cli", *args]


def _script(*args):
    return [sys.executable, str(REPO / "scripts" / "train.py"), *args]


def _good(tmp):
    return {
        "digits": _module("train", "digits", "--epochs", "20", "--save", str(tmp / "m.npz"),
                          "--plot", str(tmp / "curve.png")),
        "script-regression": _script("diabetes", "--epochs", "5", "--quiet", "--save", str(tmp / "diabetes.npz")),
    }


# name -> (argv, kind): kind "usage" for argparse's usage error, "error" for fastbp's own one-line error.
# Kept few (each is an interpreter start-up); the other bad inputs go through main() in process below.
def _bad(tmp):
    missing = tmp / "no" / "such" / "folder"
    return {
        "epochs-0": (_module("train", "--epochs", "0"), "usage"),
        "lr-negative": (_module("train", "--lr", "-1"), "error"),
        "unknown-dataset": (_module("train", "mnist"), "usage"),
        "hidden-0": (_script("--hidden", "0"), "usage"),
        "save-missing-folder": (_module("train", "iris", "--epochs", "2", "--save", str(missing / "m.npz")), "error"),
        "diverges": (_script("iris", "--lr", "1e6", "--epochs", "30", "--quiet"), "error"),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start every command at once; ``name -> (returncode, stdout, stderr)``."""
    tmp = tmp_path_factory.mktemp("cli")
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    commands = {**_good(tmp), **{name: argv for name, (argv, _) in _bad(tmp).items()}}
    procs = {name: subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, argv in commands.items()}
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=240)
            results[name] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return tmp, results


def _ok(runs, name):
    tmp, results = runs
    rc, out, err = results[name]
    assert rc == 0, f"{name} exited {rc}:\n{out}\n{err}"
    assert "Traceback" not in out + err
    return tmp, out, err


def _metric(out, name):
    match = re.search(rf"^test {re.escape(name)}: (-?\d+\.\d+)$", out, re.MULTILINE)
    assert match, out
    return float(match.group(1))


def test_train_digits_accuracy(runs):
    _, out, err = _ok(runs, "digits")
    assert _metric(out, "accuracy") > 0.95
    assert re.search(r"^dataset digits: 1347 train / 450 test rows, 64 features, float32$", out, re.MULTILINE)
    assert re.search(r"^time per epoch: \d+\.\d+ ms", out, re.MULTILINE)
    progress = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(progress) == 20
    assert progress[-1].startswith("epoch 20/20 [####################] loss ")


def test_train_digits_writes_png(runs):
    tmp, out, _ = _ok(runs, "digits")
    data = (tmp / "curve.png").read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (600, 400)  # figsize (6, 4) at dpi 100
    assert f"wrote plot to {tmp / 'curve.png'}" in out


def test_train_digits_saved_model_predicts_on_raw_features(runs):
    tmp, out, _ = _ok(runs, "digits")
    printed = _metric(out, "accuracy")
    model = load(tmp / "m.npz")
    assert f"saved model to {tmp / 'm.npz'} (predicts on raw features)" in out
    # The estimator alone reproduces the CLI's test score exactly, on the standardised split...
    data = load_dataset("digits", random_state=0, dtype=np.float32)
    assert f"{model[-1].score(data.X_test, data.y_test):.4f}" == f"{printed:.4f}"
    # ... and the pipeline scores the same rows given raw, as ``fastbp train`` split them.
    X, y, _ = load_raw("digits")
    _, X_test, _, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    assert np.allclose(model[0].transform(X_test), data.X_test, rtol=1e-5, atol=1e-5)
    raw_accuracy = float(np.mean(model.predict(X_test) == y_test))
    assert raw_accuracy > 0.95
    assert abs(raw_accuracy - printed) <= 2 / len(y_test)  # float32 standardisation may flip a borderline row
    assert sorted(p.name for p in tmp.iterdir()) == ["curve.png", "diabetes.npz", "m.npz"]  # no temporary files left


def test_scripts_train_py_regression_reports_r2(runs):
    tmp, out, err = _ok(runs, "script-regression")
    assert "dataset diabetes:" in out and "accuracy" not in out
    r2 = _metric(out, "R^2")
    assert not [line for line in err.splitlines() if line.startswith("epoch ")]  # --quiet
    model = load(tmp / "diabetes.npz")
    data = load_dataset("diabetes", random_state=0, dtype=np.float32)
    assert f"{model[-1].score(data.X_test, data.y_test):.4f}" == f"{r2:.4f}"
    X, _, _ = load_raw("diabetes")
    assert model.predict(X).shape == (len(X),)


@pytest.mark.parametrize("name", sorted(_bad(Path("/tmp"))))
def test_bad_input_fails_cleanly(runs, name):
    tmp, results = runs
    rc, out, err = results[name]
    kind = _bad(tmp)[name][1]
    assert rc == 2, f"{name} exited {rc}:\n{out}\n{err}"
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines
    if kind == "error":  # one line, after the compile notice when the error comes from training
        notice = [line for line in lines if line.startswith(("compiling fastbp", "loading fastbp", "ready in "))]
        assert len(lines) == len(notice) + 1 and lines[-1].startswith("fastbp: error: "), err
    else:
        assert lines[0].startswith("usage: fastbp"), err
        assert re.match(r"fastbp( train)?: error: ", lines[-1]), err
    assert "test accuracy" not in out and "test R^2" not in out
    assert not list(tmp.glob("**/no"))  # nothing created for the missing folders


def test_bad_input_messages(runs):
    _, results = runs
    assert "--lr must be > 0, got -1.0" in results["lr-negative"][2]
    assert "argument --epochs: expected a positive integer, got 0" in results["epochs-0"][2]
    assert "invalid choice: 'mnist'" in results["unknown-dataset"][2]
    assert "argument --hidden" in results["hidden-0"][2]
    assert "--save" in results["save-missing-folder"][2] and "no folder" in results["save-missing-folder"][2]
    # Either the loss overflows (TrainingDivergedError) or, first, the per-epoch validation predict does.
    assert re.search(r"training diverged.*learning_rate_init|network output is not finite", results["diverges"][2])


# ----------------------------------------------------------------------------- in process

def test_main_in_process(capsys, tmp_path):
    assert fastbp.cli.main(["train", "iris", "--epochs", "2", "--quiet", "--save", str(tmp_path / "m.npz")]) == 0
    captured = capsys.readouterr()
    assert re.search(r"^test accuracy: \d\.\d{4}$", captured.out, re.MULTILINE)
    notice, ready = captured.err.splitlines()  # --quiet: no progress, but never silent about compiling
    assert re.match(r"(compiling|loading) fastbp's (compiled )?kernels for float32 \(sgd, relu, multiclass\)", notice)
    assert re.match(r"ready in \d+\.\d s \((cached|compiled \d+ functions)\)$", ready)
    assert load(tmp_path / "m.npz").predict(load_raw("iris")[0]).shape == (150,)


def test_main_in_process_progress_and_plot(capsys, tmp_path):
    assert fastbp.cli.main(["train", "moons", "--epochs", "3", "--hidden", "8", "--solver", "adam",
                            "--plot", str(tmp_path / "c.png")]) == 0
    captured = capsys.readouterr()
    assert len([line for line in captured.err.splitlines() if line.startswith("epoch ")]) == 3
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]


def test_main_in_process_lbfgs_regression(capsys):
    assert fastbp.cli.main(["train", "friedman1", "--solver", "lbfgs", "--epochs", "5", "--dtype", "float64",
                            "--hidden", "16,8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "float64" in out and _metric(out, "R^2") > 0.0


# argv -> message: fastbp's own errors, one line on stderr and exit status 2.
IN_PROCESS_ERRORS = {
    ("--lr", "0"): "--lr must be > 0, got 0.0",
    ("--lr", "nan"): "--lr must be > 0, got nan",
    ("--lr", "inf"): "--lr must be > 0, got inf",
    ("--momentum", "2"): "--momentum must be in [0, 1], got 2.0",
    ("--alpha", "-0.5"): "--alpha must be >= 0, got -0.5",
    ("--plot", "/nonexistent-folder/c.png"): "--plot /nonexistent-folder/c.png: cannot write "
                                             "'/nonexistent-folder/c.png': no folder",
    ("--save", "/nonexistent-folder/m.npz"): "--save /nonexistent-folder/m.npz: cannot write "
                                             "'/nonexistent-folder/m.npz': no folder",
    ("--save", ""): "--save '': cannot write to an empty path",
    ("--save", "/"): "--save /: cannot write '/': it is a directory, not a regular file",
    ("--plot", "/dev/null"): "--plot /dev/null: cannot write '/dev/null': it is a character device",
    ("--hidden", "1000000000"): "a 4-1000000000-3 network needs at least",
}


@pytest.mark.parametrize("argv", sorted(IN_PROCESS_ERRORS), ids=" ".join)
def test_main_in_process_one_line_errors(capsys, argv):
    assert fastbp.cli.main(["train", "iris", "--epochs", "1", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"fastbp: error: {IN_PROCESS_ERRORS[argv]}") and captured.err.count("\n") == 1
    assert "test accuracy" not in captured.out


# argv -> message: argparse's usage errors (SystemExit 2, usage then one error line).
USAGE_ERRORS = {
    ("train", "--epochs", "-3"): "argument --epochs: expected a positive integer, got -3",
    ("train", "--epochs", "two"): "argument --epochs",
    ("train", "--lr", "fast"): "argument --lr: invalid float value",
    ("train", "--hidden", "64,-1"): "argument --hidden: expected comma-separated positive integers",
    ("train", "--hidden", "8,,4"): "argument --hidden",
    ("train", "--hidden", ""): "argument --hidden",
    ("train", "--batch-size", "0"): "argument --batch-size: expected a positive integer, got 0",
    ("train", "--dtype", "float16"): "argument --dtype: invalid choice",
    ("train", "--solver", "rmsprop"): "argument --solver: invalid choice",
    ("train", "imagenet"): "argument DATASET: invalid choice: 'imagenet'",
    ("train", "iris", "extra"): "unrecognized arguments: extra",
    (): "the following arguments are required: command",
    ("fit",): "invalid choice: 'fit'",
}


@pytest.mark.parametrize("argv", sorted(USAGE_ERRORS), ids=lambda argv: " ".join(argv) or "(none)")
def test_main_in_process_usage_errors(capsys, argv):
    with pytest.raises(SystemExit) as info:
        fastbp.cli.main(list(argv))
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("usage: fastbp")
    assert re.match(r"fastbp( train)?: error: ", lines[-1]) and USAGE_ERRORS[argv] in lines[-1]


def test_main_in_process_errors(capsys, tmp_path):
    assert fastbp.cli.main(["train", "iris", "--lr", "-1"]) == 2
    assert capsys.readouterr().err == "fastbp: error: --lr must be > 0, got -1.0\n"
    assert fastbp.cli.main(["train", "iris", "--save", str(tmp_path / "nope" / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastbp: error: --save") and err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        fastbp.cli.main(["train", "--epochs", "0"])
    assert info.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err

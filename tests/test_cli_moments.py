"""The command line at hostile moments (issue 13) and its compile notice (issue 10).

* Ctrl-C while compiling, while training (sgd and lbfgs) and while saving:
  status 130, one line saying what was done, no traceback, within a second
  (asserted with a wide margin), and no model file;
* sizes that cannot fit and targets that cannot be written are refused before
  anything is compiled or trained;
* ``fastbp warmup`` compiles only what it is asked (the command itself: tests/test_warmup.py).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fastbp.cli
from fastbp.io import load

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _as_in_a_terminal():
    """In the child before it starts: Ctrl-C as a terminal's program has it.  A job started in the background
    of a non-interactive shell inherits SIGINT ignored, and a program keeps that (as fastbp does): then no
    Ctrl-C could be tested."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(args, wait_for, tmp_path, env=ENV, delay=0.2):
    """Start ``python -m fastbp ARGS``, wait for a stderr line containing ``wait_for``, send SIGINT.

    Returns (status, stderr lines, seconds from the signal to the exit).
    """
    proc = subprocess.Popen([sys.executable, "-m", "fastbp", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_as_in_a_terminal)
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if wait_for in line:
                break
        else:
            pytest.fail(f"never printed {wait_for!r}: {''.join(seen)}")
        time.sleep(delay)
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
        return proc.returncode, (''.join(seen) + rest).splitlines(), time.perf_counter() - sent
    finally:
        if proc.poll() is None:
            proc.kill()


def _assert_one_line_interrupt(status, lines, seconds, message):
    assert status == 130, lines
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in lines), lines
    assert lines[-1] == message or (callable(message) and message(lines[-1])), lines[-3:]
    assert sum("interrupted" in line for line in lines) == 1
    assert seconds < 5, seconds  # stops within a second; the margin is for a loaded machine


def test_ctrl_c_while_numpy_sklearn_and_numba_load(tmp_path):
    """The first second goes on imports: a Ctrl-C then is answered with one line too, not an import's traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "fastbp", "train", "iris", "--save", str(tmp_path / "m.npz")],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_in_a_terminal)
    time.sleep(0.15)  # the interpreter is up, fastbp.cli's imports are not done
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    _assert_one_line_interrupt(proc.returncode, err.splitlines(), time.perf_counter() - sent,
                               "fastbp: interrupted while starting; nothing done")
    assert not (tmp_path / "m.npz").exists()


def test_ctrl_c_while_compiling(tmp_path):
    """An empty cache folder makes the run compile for seconds: Ctrl-C stops it at once."""
    env = {**ENV, "NUMBA_CACHE_DIR": str(tmp_path / "empty-cache")}
    status, lines, seconds = _interrupt(["train", "iris", "--save", str(tmp_path / "m.npz")], "compiling fastbp's",
                                        tmp_path, env)
    _assert_one_line_interrupt(status, lines, seconds, "interrupted while compiling fastbp's kernels; nothing saved")
    assert not (tmp_path / "m.npz").exists()


def test_ctrl_c_while_training(tmp_path):
    status, lines, seconds = _interrupt(["train", "digits", "--epochs", "100000", "--save", str(tmp_path / "m.npz")],
                                        "epoch ", tmp_path)
    done = int(lines[-2].split("/")[0].split()[-1])  # the last progress line before the message
    _assert_one_line_interrupt(status, lines, seconds, f"interrupted after {done} of 100000 epochs; nothing saved")
    assert 1 <= done < 100000
    assert not any(line.startswith("test accuracy") for line in lines)
    assert os.listdir(tmp_path) == []


def test_ctrl_c_while_training_lbfgs(tmp_path):
    status, lines, seconds = _interrupt(["train", "digits", "--solver", "lbfgs", "--epochs", "100000", "--quiet",
                                         "--hidden", "1024,1024"],  # each gradient takes tens of ms
                                        "ready in", tmp_path, delay=0.5)
    _assert_one_line_interrupt(status, lines, seconds, "interrupted while training; nothing saved")


def test_ctrl_c_while_saving_lets_the_file_be_written_whole(tmp_path, monkeypatch, capsys):
    """Ctrl-C during save is answered after it: the model file is complete, and the line says it was written."""
    import fastbp.io

    real_save = fastbp.io.save

    def save_interrupted(model, path):
        os.kill(os.getpid(), signal.SIGINT)
        real_save(model, path)

    monkeypatch.setattr(fastbp.io, "save", save_interrupted)
    target = tmp_path / "m.npz"
    assert fastbp.cli.main(["train", "iris", "--epochs", "2", "--quiet", "--save", str(target),
                            "--plot", str(tmp_path / "c.png")]) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"interrupted after 2 of 2 epochs; wrote {target}"
    assert load(target).predict([[5.0, 3.0, 1.5, 0.2]]).shape == (1,)
    assert not (tmp_path / "c.png").exists()


def test_huge_network_is_refused_at_once():
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "fastbp", "train", "--hidden", "1000000000"], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastbp: error: a 64-1000000000-10 network needs at least"), lines
    assert "GiB of memory is available" in lines[0]
    assert time.perf_counter() - started < 60  # no allocation, no compilation: an interpreter start-up


def test_memory_check_uses_the_memory_available(monkeypatch, capsys):
    monkeypatch.setattr(fastbp.cli, "available_memory", lambda: 1 << 20)
    assert fastbp.cli.main(["train", "iris", "--hidden", "512,512"]) == 2
    assert "network needs at least" in capsys.readouterr().err
    monkeypatch.setattr(fastbp.cli, "available_memory", lambda: 1 << 40)
    fastbp.cli.check_memory([4, 512, 512, 3], 4, "adam", 100)


def _refused_before_training(capsys, argv, message):
    assert fastbp.cli.main(["train", "iris", "--epochs", "1", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and message in captured.err, captured.err  # nothing compiled either
    assert captured.out == ""


def test_fifo_target_is_refused_before_training(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe")
    _refused_before_training(capsys, ["--save", str(tmp_path / "pipe")], "it is a FIFO, not a regular file")


def test_unwritable_folder_is_refused_before_training(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    real_access = os.access
    # As root every folder is writable to os.access: simulate the unwritable one.
    monkeypatch.setattr(fastbp._atomic.os, "access", lambda p, mode: False if str(p) == str(folder)
                        else real_access(p, mode))
    _refused_before_training(capsys, ["--plot", str(folder / "c.png")], f"the folder '{folder}' is not writable")


def test_plot_without_matplotlib_is_refused_before_training(tmp_path, capsys, monkeypatch):
    real_find_spec = fastbp.cli.importlib.util.find_spec
    monkeypatch.setattr(fastbp.cli.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    _refused_before_training(capsys, ["--plot", str(tmp_path / "c.png")], 'pip install "fastbp[plot]"')


def test_warmup_command_clear(monkeypatch, capsys):
    import fastbp._cache
    import fastbp.warmup

    calls = []
    monkeypatch.setattr(fastbp._cache, "clear", lambda: calls.append("clear") or ["a.nbi", "a.1.nbc"])
    monkeypatch.setattr(fastbp.warmup, "warmup",
                        lambda dtypes, activations: calls.append((dtypes, activations)) or 1.25)
    assert fastbp.cli.main(["warmup", "--clear"]) == 0
    assert calls == ["clear", (("float32", "float64"), ("relu",))]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "deleted 2 cached files of fastbp's compiled code"
    assert out[1].startswith("fastbp's kernels for float32, float64 and relu ready in 1.2 s")


def test_warmup_compiles_only_what_it_is_asked(monkeypatch):
    """The command line warms up its own solver, dtype, task and activation: the tiny fits are of those only."""
    import fastbp.estimator
    import fastbp.warmup

    fits = []
    for cls in (fastbp.estimator.MLPClassifier, fastbp.estimator.MLPRegressor):
        real_fit = cls.fit
        monkeypatch.setattr(cls, "fit", lambda self, X, y, _fit=real_fit: fits.append(
            (type(self).__name__, self.solver, self.activation, X.dtype.name, self.batch_size)) or _fit(self, X, y))
    fastbp.warmup.warmup(dtypes="float64", solvers=("adam",), tasks=("regression",), chunked=False,
                         activations=("tanh",))
    assert fits == [("MLPRegressor", "adam", "tanh", "float64", 4)]
    fits.clear()
    fastbp.warmup.warmup(dtypes=("float32",), solvers=("sgd", "lbfgs"), tasks=("binary",), activations="relu")
    assert [f[1] for f in fits] == ["sgd", "sgd", "sgd", "lbfgs", "lbfgs"]
    assert {f[4] for f in fits} == {4, fastbp.warmup.CHUNKED_ROWS, 1}  # one chunk, row chunks, unit halves
    with pytest.raises(ValueError, match="solvers must be"):
        fastbp.warmup.warmup(solvers=("rmsprop",))


def test_entry_point_holds_collection_until_the_command_has_loaded(monkeypatch):
    """The entry point turns the garbage collector off while the command loads; collect_again turns it on,
    the imports frozen, once (and not at all where the entry point did not turn it off)."""
    import gc

    import fastbp._entry

    seen = []

    def run():
        seen.append(gc.isenabled())
        fastbp._entry.collect_again()
        seen.append((gc.isenabled(), gc.get_freeze_count() > 0))

    monkeypatch.setattr(fastbp.cli, "run", run)
    try:
        fastbp._entry.main()
        assert seen == [False, (True, True)]
        gc.disable()
        fastbp._entry.collect_again()  # the entry point's hold is over: a caller's own choice stands
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_train_collects_again_before_its_work(monkeypatch, capsys):
    import gc

    import fastbp._entry

    seen, compile_ = [], fastbp.cli._compile
    monkeypatch.setattr(fastbp.cli, "_compile", lambda *args: (seen.append(gc.isenabled()), compile_(*args))[1])
    monkeypatch.setattr(fastbp._entry, "_held", True)
    gc.disable()
    try:
        assert fastbp.cli.main(["train", "iris", "--epochs", "1", "--quiet"]) == 0
        assert seen == [True] and not fastbp._entry._held  # on before compiling
    finally:
        gc.enable()
        gc.unfreeze()

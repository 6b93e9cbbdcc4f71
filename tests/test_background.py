"""Unit halves' code compiled in another process: started once, found by the fits after it, never waited for."""

import os
import subprocess
import sys
import textwrap
import time

import numba
import numpy as np
import pytest

import fastbp._background as background
from fastbp.step import ready

NO_JIT = numba.config.DISABLE_JIT


@pytest.mark.skipif(NO_JIT or numba.get_num_threads() < 2, reason="needs the JIT and two threads")
def test_a_background_compile_lets_later_fits_train_in_halves(tmp_path):
    """In a process with an empty cache: the first fit trains in one chunk and starts the compile; once it is
    done, a fit trains in halves (their code loaded from the cache the other process wrote), with the same result."""
    script = textwrap.dedent("""
        import numpy as np
        import fastbp._background as background
        import fastbp.trainer as trainer_module
        from fastbp import MLPClassifier
        from fastbp.halves import Halves

        in_halves = []
        schedule = trainer_module.Trainer._schedule

        def recording(self, *args):
            chosen = schedule(self, *args)
            in_halves.append(isinstance(chosen[1][5], Halves))
            return chosen

        trainer_module.Trainer._schedule = recording
        rng = np.random.default_rng(0)
        X = rng.standard_normal((60, 5))
        y = (X[:, 0] > 0).astype(int)

        def fit():  # 128 units at batch 10: one chunk by the shapes, and halves compute it alike
            return MLPClassifier((128,), batch_size=10, max_iter=2, random_state=0).fit(X, y)

        first = fit()
        assert in_halves and not any(in_halves), in_halves
        assert len(background._started) == 1, background._started
        assert background.wait(300), "the background compile did not finish"
        in_halves.clear()
        later = fit()
        assert in_halves and all(in_halves), in_halves
        pairs = zip(first.coefs_ + first.intercepts_, later.coefs_ + later.intercepts_)
        assert all(np.array_equal(a, b) for a, b in pairs)
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), background.SWITCH: "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.rglob("*.lock"))  # the compile's lock went with it


class _Spawned:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def poll(self):
        return 0


@pytest.fixture
def spawns(monkeypatch, tmp_path):
    """The processes compile_later would start (none is), with its lock files in ``tmp_path``."""
    started = []
    monkeypatch.setattr(background, "_started", {})
    monkeypatch.setattr(background._cache, "active_dir", lambda: str(tmp_path))
    monkeypatch.setattr(background.subprocess, "Popen",
                        lambda *args, **kwargs: started.append(_Spawned(*args, **kwargs)) or started[-1])
    monkeypatch.setenv(background.SWITCH, "1")
    return started


def test_compile_later_starts_one_process_per_kind(spawns, tmp_path):
    kind = ("float32", "relu", "multiclass", "sgd")
    assert background.compile_later(*kind)
    assert not background.compile_later(*kind)  # once per process
    assert background.compile_later("float64", "relu", "multiclass", "sgd")
    assert len(spawns) == 2
    command, env = spawns[0].args[0], spawns[0].kwargs["env"]
    assert command[0] == sys.executable and "_main" in command[-1] and all(k in command[-1] for k in kind)
    assert env[background.SWITCH] == "0"  # the child starts none of its own
    locks = list(tmp_path.glob("*.lock"))
    assert len(locks) == 2
    generation = background.generation()  # both fake processes have exited
    assert generation >= 2 and background.generation() == generation


def test_compile_later_leaves_a_kind_to_the_process_holding_its_lock(spawns, tmp_path):
    kind = ("float32", "tanh", "binary", "adam")
    lock = tmp_path / f"fastbp-compiling-{'-'.join(kind)}.lock"
    lock.write_text("")
    assert not background.compile_later(*kind) and spawns == []
    background._started.clear()
    old = time.time() - background.LOCK_SECONDS - 60  # left by a process that died
    os.utime(lock, (old, old))
    assert background.compile_later(*kind) and len(spawns) == 1


def test_compile_later_is_switched_off_by_its_variable(spawns, monkeypatch):
    monkeypatch.setenv(background.SWITCH, "0")
    assert not background.enabled()
    assert not background.compile_later("float32", "relu", "regression", "sgd") and spawns == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="a read-only folder needs POSIX and no root")
def test_compile_later_starts_nothing_where_the_cache_cannot_be_written(spawns, tmp_path):
    tmp_path.chmod(0o500)
    try:
        assert not background.compile_later("float32", "relu", "poisson", "adam") and spawns == []
    finally:
        tmp_path.chmod(0o700)


@pytest.mark.skipif(NO_JIT, reason="without the JIT nothing is compiled")
def test_ready_never_compiles():
    def triple(x):
        return 3 * x

    dispatcher = numba.njit(triple)  # a fresh function, in no cache (no cache=True: not one from an earlier run)
    assert not ready(dispatcher, (np.int64(2),)) and not dispatcher.overloads
    assert dispatcher(2) == 6
    assert ready(dispatcher, (np.int64(2),))
    assert not ready(dispatcher, (np.float32(2),)) and len(dispatcher.overloads) == 1

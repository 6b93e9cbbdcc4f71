"""Numba's cache of fastbp's code: a source stamp that drops stale code, ``clear``, a read-only install."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastbp._cache as cache

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A copy of fastbp's jitted sources and a cache folder holding cached code, a .pyc and nothing else."""
    source = tmp_path / "pkg"
    source.mkdir()
    for name in cache.JIT_SOURCES:
        shutil.copy(REPO / "fastbp" / name, source / name)
    folder = tmp_path / "cache"
    monkeypatch.setattr(cache, "PACKAGE_DIR", str(source))
    monkeypatch.setattr(cache, "cache_dirs", lambda: [str(folder)])
    cache.refresh()  # the stamp of these sources
    for name in ("step._train_epoch-40.py311.nbi", "step._train_epoch-40.py311.1.nbc", "kernels.cpython-311.pyc"):
        (folder / name).write_bytes(b"x")
    return source, folder


def test_refresh_keeps_code_of_the_same_source(package):
    _, folder = package
    cache.refresh()
    assert len(cache.cache_files(str(folder))) == 2


@pytest.mark.parametrize("edited", cache.JIT_SOURCES)
def test_refresh_drops_code_when_any_jitted_source_changed(package, edited):
    source, folder = package
    with open(source / edited, "a") as f:
        f.write("\n# edited\n")
    cache.refresh()
    assert sorted(os.listdir(folder)) == [cache.STAMP_NAME, "kernels.cpython-311.pyc"]
    assert (folder / cache.STAMP_NAME).read_text().partition("\n")[0] == cache.source_hash()
    (folder / "step._train_epoch-40.py311.nbi").write_bytes(b"x")  # compiled from the edited source
    cache.refresh()
    assert len(cache.cache_files(str(folder))) == 1


def test_refresh_reads_no_source_while_sizes_and_times_match(package, monkeypatch):
    _, folder = package
    monkeypatch.setattr(cache, "source_hash", lambda: pytest.fail("the sources were read"))
    cache.refresh()
    assert len(cache.cache_files(str(folder))) == 2


def test_refresh_keeps_code_of_a_touched_source_and_restamps(package, monkeypatch):
    source, folder = package
    info = os.stat(source / "step.py")
    os.utime(source / "step.py", ns=(info.st_atime_ns, info.st_mtime_ns + 10 ** 9))
    cache.refresh()
    assert len(cache.cache_files(str(folder))) == 2
    monkeypatch.setattr(cache, "source_hash", lambda: pytest.fail("the sources were read again"))
    cache.refresh()  # the stamp took the new time


def test_refresh_drops_code_of_an_edit_of_the_same_size(package):
    source, folder = package
    text = (source / "kernels.py").read_bytes()
    info = os.stat(source / "kernels.py")
    (source / "kernels.py").write_bytes(text[:-1] + (b"#" if text[-1:] != b"#" else b" "))
    os.utime(source / "kernels.py", ns=(info.st_atime_ns, info.st_mtime_ns + 1))  # even within one clock tick
    cache.refresh()
    assert cache.cache_files(str(folder)) == []


def test_refresh_drops_code_of_unknown_source(package):
    _, folder = package
    (folder / cache.STAMP_NAME).unlink()
    cache.refresh()
    assert cache.cache_files(str(folder)) == []


def test_refresh_never_fails(tmp_path, monkeypatch):
    """A cache folder that cannot be created or written (here: below a file) is left alone."""
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(cache, "cache_dirs", lambda: [str(tmp_path / "file" / "cache")])
    cache.refresh()


def test_clear_deletes_only_compiled_code(package):
    _, folder = package
    assert sorted(Path(p).name for p in cache.clear()) == ["step._train_epoch-40.py311.1.nbc",
                                                           "step._train_epoch-40.py311.nbi"]
    assert sorted(os.listdir(folder)) == [cache.STAMP_NAME, "kernels.cpython-311.pyc"]


def test_cache_dirs_follow_numbas_order(monkeypatch):
    from numba.core import config

    monkeypatch.setattr(config, "CACHE_DIR", "/somewhere")
    folders = cache.cache_dirs()
    assert folders[0].startswith("/somewhere/fastbp_") and folders[1] == os.path.join(cache.PACKAGE_DIR, "__pycache__")
    monkeypatch.setattr(config, "CACHE_DIR", "")
    assert cache.cache_dirs()[0] == os.path.join(cache.PACKAGE_DIR, "__pycache__")


_FIT = textwrap.dedent("""
    import numpy as np
    import fastbp
    from fastbp import MLPClassifier

    X = np.random.default_rng(0).standard_normal((40, 3))
    model = MLPClassifier((4,), solver="sgd", batch_size=8, max_iter=2).fit(X, np.arange(40) % 2)
    assert model.predict(X).shape == (40,)
    print(fastbp.__file__)
""")


def _read_only_runner(folder):
    """A command prefix that runs with ``folder`` read-only, or None where that cannot be arranged."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
        return []
    # root writes anywhere: mount the folder read-only in a private mount namespace instead
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if shutil.which("unshare") is None or probe.returncode != 0:
        return None
    return ["unshare", "--mount", "sh", "-c",
            f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && exec "$0" "$@"']


def test_read_only_install_fits_with_the_user_wide_cache(tmp_path):
    """A copy of the package in a read-only folder, NUMBA_CACHE_DIR unset: it fits (compiling once, cold) and
    Numba keeps the code in the user-wide cache folder, stamped by fastbp._cache."""
    install = tmp_path / "site"
    shutil.copytree(REPO / "fastbp", install / "fastbp", ignore=shutil.ignore_patterns("__pycache__"))
    prefix = _read_only_runner(install)
    if prefix is None:
        pytest.skip("cannot make a folder read-only for root here (no mount namespaces)")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONPATH=str(install),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    try:
        result = subprocess.run([*prefix, sys.executable, "-c", _FIT], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=600)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(install)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(install / "fastbp" / "__init__.py")
    assert not (install / "fastbp" / "__pycache__").exists()
    user_wide = list((home / ".cache" / "numba").glob("fastbp_*"))
    assert len(user_wide) == 1
    names = os.listdir(user_wide[0])
    assert cache.STAMP_NAME in names and any(n.endswith(".nbi") for n in names)

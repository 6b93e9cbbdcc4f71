"""Numba's on-disk cache of fastbp's compiled code, kept in step with fastbp's source.

Numba keys each cached function on its own source file only.  ``step.py``'s
functions inline the kernels of ``kernels.py`` and the flags of ``_config.py``,
so editing one of those would leave ``step.py``'s cached machine code stale,
silently.  :func:`refresh` runs when ``fastbp._config`` is imported, before any
function compiles: it hashes the source of every module in :data:`JIT_SOURCES`
and compares the hash with a stamp file in the cache folder; on a mismatch it
deletes fastbp's cached code there and writes the new stamp.  It never fails
(a read-only folder is left alone) and costs about a millisecond.

Numba looks for a function's cache in this order (``numba.core.caching``):
``NUMBA_CACHE_DIR`` when set, the package's ``__pycache__`` when writable, and a
user-wide folder (``~/.cache/numba`` or ``$XDG_CACHE_HOME/numba``) otherwise.
"""

import hashlib
import os

from numba.core import caching, config
from numba.misc.appdirs import AppDirs

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Every module whose source reaches compiled code: those holding jitted functions and what they inline.
JIT_SOURCES = ("_config.py", "_blas.py", "kernels.py", "step.py")
STAMP_NAME = "fastbp-sources.stamp"
_CACHE_SUFFIXES = (".nbi", ".nbc")


def source_hash() -> str:
    """A hash of the source of every module in :data:`JIT_SOURCES`."""
    digest = hashlib.sha256()
    for name in JIT_SOURCES:
        digest.update(name.encode())
        try:
            with open(os.path.join(PACKAGE_DIR, name), "rb") as f:
                digest.update(f.read())
        except OSError:  # a frozen or zipped install: Numba cannot cache from source there either
            digest.update(b"?")
    return digest.hexdigest()


def cache_dirs() -> list:
    """The folders Numba may keep fastbp's cache in, in the order it tries them."""
    subpath = caching.UserWideCacheLocator.get_suitable_cache_subpath(os.path.join(PACKAGE_DIR, "_config.py"))
    folders = [os.path.join(config.CACHE_DIR, subpath)] if config.CACHE_DIR else []
    folders.append(os.path.join(PACKAGE_DIR, "__pycache__"))
    folders.append(os.path.join(AppDirs(appname="numba", appauthor=False).user_cache_dir, subpath))
    return folders


def active_dir() -> str:
    """The folder Numba writes fastbp's cache to: the first of :func:`cache_dirs` it can write in."""
    folders = cache_dirs()
    for folder in folders:
        probe = folder
        while not os.path.isdir(probe):  # a folder Numba would create: its nearest existing parent decides
            probe = os.path.dirname(probe)
        if os.access(probe, os.W_OK | os.X_OK):
            return folder
    return folders[-1]


def cache_files(folder) -> list:
    """fastbp's cached code in ``folder`` (index and data files; its own .pyc files are not touched)."""
    try:
        return [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(_CACHE_SUFFIXES)]
    except OSError:
        return []


def clear() -> list:
    """Delete fastbp's cached code from every folder Numba may use; the paths deleted."""
    deleted = []
    for folder in cache_dirs():
        deleted += _delete(cache_files(folder))
    return deleted


def refresh() -> None:
    """Drop cached code compiled from other source than this; see the module's docstring."""
    current = source_hash()
    writable_found = False
    for folder in cache_dirs():
        if writable_found and not os.path.isdir(folder):
            continue  # a fallback folder Numba will not reach
        stamp = os.path.join(folder, STAMP_NAME)
        try:
            os.makedirs(folder, exist_ok=True)  # as Numba would: so that the stamp is there before its files
            if _read(stamp) != current:
                _delete(cache_files(folder))  # no stamp, or another one: compiled from other source
                with open(stamp, "w") as f:
                    f.write(current)
            writable_found = os.access(folder, os.W_OK)
        except OSError:
            continue  # read-only: Numba does not use it either, and falls back to the next folder


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _delete(paths) -> list:
    deleted = []
    for path in paths:
        try:
            os.unlink(path)
            deleted.append(path)
        except OSError:
            pass  # another process deleted it first, or the folder is read-only
    return deleted

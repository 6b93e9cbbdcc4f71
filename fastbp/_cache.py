"""Numba's on-disk cache of fastbp's compiled code, kept in step with fastbp's source.

Numba keys each cached function on its own source file only.  ``step.py``'s and
``halves.py``'s functions inline the loops of ``loops.py`` and ``kernels.py`` and the flags of ``_config.py``,
so editing one of those would leave ``step.py``'s cached machine code stale,
silently.  :func:`refresh` runs when ``fastbp._config`` is imported, before any
function compiles: it compares the source of every module in :data:`JIT_SOURCES`
with a stamp file in the cache folder; on a mismatch it deletes fastbp's cached
code there and writes the new stamp.  It never fails (a read-only folder is left
alone).  The stamp holds a hash of the sources and their sizes and modification
times: while those match, the sources are not read (as Python trusts a .pyc,
and Numba its own index, on a source file's size and modification time); when
they differ the hash decides, so a file touched but not changed keeps its code.

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
JIT_SOURCES = ("_config.py", "_intrinsics.py", "_small_gemm.py", "kernels.py", "loops.py", "step.py", "halves.py")
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


def source_stat() -> str:
    """The size and modification time of every module in :data:`JIT_SOURCES`: they change with an edit."""
    parts = []
    for name in JIT_SOURCES:
        try:
            info = os.stat(os.path.join(PACKAGE_DIR, name))
            parts.append(f"{name}:{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            parts.append(f"{name}:?")
    return " ".join(parts)


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
    stat, current = source_stat(), None
    writable_found = False
    for folder in cache_dirs():
        if writable_found and not os.path.isdir(folder):
            continue  # a fallback folder Numba will not reach
        stamp = os.path.join(folder, STAMP_NAME)
        try:
            os.makedirs(folder, exist_ok=True)  # as Numba would: so that the stamp is there before its files
            stamped_hash, _, stamped_stat = (_read(stamp) or "").partition("\n")
            if stamped_stat != stat:
                current = source_hash() if current is None else current  # read once, and only here
                if stamped_hash != current:
                    _delete(cache_files(folder))  # no stamp, or another one: compiled from other source
                with open(stamp, "w") as f:  # the same source touched, or new: the stamp takes its times
                    f.write(f"{current}\n{stat}")
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

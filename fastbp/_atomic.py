"""Write a file so that readers see the old version or the new one, never half of one."""

import os
import stat
import tempfile


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: setting the umask to read it is process-wide, and another
# thread creating a file in that moment would get loose permissions.
_FILE_MODE = 0o666 & ~_read_umask()

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_target(path) -> str:
    """The file that writing ``path`` replaces: ``path`` itself or, for a symlink, the file it points to.

    Raises ``ValueError`` for an empty path and for a target that exists but is not
    a regular file (a directory, FIFO, device or socket: replacing it would destroy
    it), ``FileNotFoundError`` / ``PermissionError`` when its folder is missing or
    not writable; every message names ``path`` as given.
    """
    path = os.fspath(path)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if not path:
        raise ValueError("cannot write to an empty path: give a file name")
    target = os.path.realpath(path)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:  # a symlink loop, a component that is not a folder, ...
        raise type(exc)(exc.errno, f"cannot write {path!r}: {exc.strerror}") from None
    for is_kind, kind in _KINDS:
        if mode is not None and is_kind(mode):
            raise ValueError(f"cannot write {path!r}: it is {kind}, not a regular file")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):  # else the error would name the temporary file, not the target
        raise FileNotFoundError(f"cannot write {path!r}: no folder {folder!r}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path!r}: the folder {folder!r} is not writable")
    return target


def atomic_write(path, write) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, flush it to disk, rename it over ``path``.

    A crash at any moment leaves ``path`` as it was.  Only regular files are
    written (:func:`check_target`); a symlink is written through, so the link stays
    and the file it points to is replaced.  An existing file keeps its permission
    bits; a new one gets those a plain ``open(path, "wb")`` would give it
    (mkstemp's are 0600).  Errors name ``path``, never the temporary file.
    """
    target = check_target(path)
    path = os.fspath(path)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = _FILE_MODE
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=".tmp", dir=os.path.dirname(target))
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        check_target(path)  # again, just before the rename: the target may have changed while writing
        os.replace(tmp, target)
    except BaseException as exc:
        os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from None
        raise


def _naming(exc, path):
    """``exc`` as the same kind of OSError about ``path`` (its own message may name the temporary file)."""
    if exc.errno is None:
        return type(exc)(f"cannot write {path!r}: {exc.args[0] if exc.args else type(exc).__name__}")
    return type(exc)(exc.errno, f"cannot write {path!r}: {exc.strerror}")

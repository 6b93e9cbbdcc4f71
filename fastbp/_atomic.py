"""Write a file so that readers see the old version or the new one, never half of one."""

import os
import tempfile


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: setting the umask to read it is process-wide, and another
# thread creating a file in that moment would get loose permissions.
_FILE_MODE = 0o666 & ~_read_umask()


def atomic_write(path, write) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, flush it to disk, rename it over ``path``.

    A crash at any moment leaves ``path`` as it was.  The file gets the
    permissions a plain ``open(path, "wb")`` would give it (mkstemp's are 0600).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):  # else the error would name the temporary file, not the target
        raise FileNotFoundError(f"cannot write {path!r}: no folder {folder!r}")
    fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise

"""Atomic file writes: the file that matters is complete and has its mode from the first byte."""

import hashlib
import os
import tempfile


def atomic_write(path, data, mode=0o644, uid=None, gid=None):
    """Write ``data`` (bytes or str) to ``path`` atomically.

    The temporary file is created in the target directory with ``mode`` already set (so a
    secret is never world-readable, not even for an instant), owned as asked, flushed to
    disk, then renamed over ``path``. A failure leaves the old file untouched.
    """
    if isinstance(data, str):
        data = data.encode()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        os.fchmod(fd, mode)
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        with os.fdopen(fd, "wb") as handle:
            fd = None
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(directory)
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def fsync_dir(directory):
    """Make a rename in ``directory`` durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def sha256_file(path):
    """Hex SHA-256 of a file's content, or None when the file does not exist."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(65536), b""):
                digest.update(block)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def sha256_bytes(data):
    """Hex SHA-256 of ``data`` (bytes or str)."""
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()

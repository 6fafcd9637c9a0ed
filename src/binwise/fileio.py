"""Writing files so that a crash or a full disk never leaves half of one, and reading their digest."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path

from .errors import BinwiseError


def sha256_of_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write, durable: bool = False) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``, so a crash never leaves half a file.

    ``durable``: the file's bytes reach the disk before the rename, and the rename itself after
    it (fsync of the file, then of its folder), so the file survives a power cut once this returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600: give it the user's usual mode
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_path(path.parent)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        # safetensors reports a full disk as its own error, naming only the OS error
        if getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e):
            raise BinwiseError("cannot write it: the disk is full", path, kind="disk_full") from None
        if isinstance(e, OSError):
            raise BinwiseError(f"cannot write it ({e.strerror or e})", path, kind="cannot_write") from None
        raise


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a folder's entries to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Atomic file output: write to a temporary file beside the target, then rename."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import UserError


@contextlib.contextmanager
def atomic_path(path, overwrite: bool = True):
    """Yield a temporary path in the target's folder; on success it replaces ``path`` atomically.

    With ``overwrite=False`` an existing ``path`` is refused (UserError) and left untouched."""
    path = Path(path)
    if not overwrite and path.exists():
        raise UserError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes, overwrite: bool = True) -> None:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path, text: str, overwrite: bool = True) -> None:
    atomic_write_bytes(path, text.encode(), overwrite)

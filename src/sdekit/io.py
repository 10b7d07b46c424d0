"""Atomic file output: write to a temporary file beside the target, then rename.

The temporary file of ``name`` is ``.{name}.XXXXXXXX.tmp{suffix}`` in the target's folder (8 random
characters, ``suffix`` the target's own, e.g. ``.checkpoint.safetensors.k2j4x9_a.tmp.safetensors``).
A process killed mid-write leaves it behind; :func:`remove_stale_temps` removes exactly those names.
"""
from __future__ import annotations

import contextlib
import os
import re
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_TMP = ".tmp"
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}" + re.escape(_TMP) + r"(?P<suffix>.*)")   # mkstemp's 8 characters


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is that of a temporary file :func:`atomic_path` makes."""
    m = _TEMP_NAME.fullmatch(name)
    return m is not None and m["suffix"] == Path(m["name"]).suffix


def remove_stale_temps(folder) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_path` left in ``folder`` (not below it);
    return their paths. Call it only while no other process writes there. Other files are kept."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in sorted(folder.iterdir()) if is_temp_name(p.name) and p.is_file() and not p.is_symlink()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes, overwrite: bool = True) -> None:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path, text: str, overwrite: bool = True) -> None:
    atomic_write_bytes(path, text.encode(), overwrite)

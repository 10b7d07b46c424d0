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

from sdekit.core.errors import UserError


@contextlib.contextmanager
def atomic_path(path, overwrite: bool = True):
    """Yield a temporary path in the target's folder; on success it replaces ``path`` atomically.

    With ``overwrite=False`` an existing ``path`` is refused (UserError) and left untouched. A system
    error while writing (disk full, read-only or missing permission, a folder in the way) is a UserError
    naming ``path`` (not the temporary file); ``path`` is then left as it was."""
    path = Path(path)
    if not overwrite and path.exists():
        raise UserError(f"{path} exists; pass --overwrite to replace it")
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP + path.suffix, dir=path.parent)
        os.close(fd)
    try:
        with write_errors(path):
            yield Path(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def write_errors(path):
    """Turn a system error (an OSError with an errno: no space, read-only, no permission, ...) raised
    while writing ``path`` into one UserError line naming ``path``."""
    try:
        yield
    except OSError as e:
        if e.errno is None:
            raise
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from None


ROOM = 1 << 20          # bytes a probe writes: a full disk fails here, before the work, not after it


def check_writable(folder, room: int = ROOM) -> Path:
    """Refuse, before any work, an output folder that could not be written: the nearest existing
    folder at or above ``folder`` must be a folder in which a temporary file of ``room`` bytes can
    be written (so a read-only file system, a missing permission or a full disk is found now).
    UserError naming the folder; nothing is left behind. Returns ``folder``."""
    folder = Path(folder)
    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise UserError(f"{p} is not a folder; cannot write below it")
    try:
        with tempfile.TemporaryFile(dir=p) as f:             # what the atomic write will do there
            f.write(bytes(room))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise UserError(f"{p}: cannot write here ({e.strerror or type(e).__name__})") from None
    return folder


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

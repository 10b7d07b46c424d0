"""Image bytes from the page -> tensors in [0, 1] at the model's resolution, and tensors -> PNG bytes.

Uploads follow the rule of :mod:`sdekit.images` (the same as ``sdekit edit``): refuse non-images, truncated
files and decompression bombs; composite transparency over black; centre-crop to the model's aspect;
resize; grey by ITU-R 601 luma for 1-channel models. The canvas, an exact zoom of the model's pixels, is
averaged block by block, so what the page shows is what the model gets.

Masks follow the library's convention: 1 (white in a PNG) = keep the guide, 0 (black) = regenerate.

:mod:`sdekit.images` reads files, so the bytes of an upload lie in a file of this process's own folder
(``<tmp>/sdekit-serve-<pid>-*``, mode 0700) while they are decoded. A process killed meanwhile leaves its
folder behind; :func:`remove_stale` (run when a server starts) removes the folders of processes that no
longer run.
"""
from __future__ import annotations

import atexit
import base64
import binascii
import io
import os
import re
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import torch

from ..errors import UserError
from .limits import Limits

FOLDER_PREFIX = "sdekit-serve-"
_folder: Path | None = None
_folder_lock = threading.Lock()


def upload_folder() -> Path:
    """This process's folder for uploads being decoded (created on first use, removed at exit)."""
    global _folder
    with _folder_lock:
        if _folder is None or not _folder.is_dir():
            _folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-"))
            atexit.register(shutil.rmtree, _folder, True)
        return _folder


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)                      # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:                  # it exists, and belongs to someone else
        return True
    return True


def remove_stale(tmp: Path | None = None) -> list[Path]:
    """Remove the upload folders of processes that no longer run (a server killed mid-upload); returns them.
    Folders of running processes, and those this user may not remove, are left alone. POSIX only."""
    if os.name != "posix":
        return []
    removed = []
    for d in Path(tmp or tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*-*"):
        m = re.fullmatch(rf"{FOLDER_PREFIX}(\d+)-\w+", d.name)
        if m and d.is_dir() and not d.is_symlink() and int(m.group(1)) != os.getpid() and not _running(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
            if not d.exists():
                removed.append(d)
    return removed


def load_upload(data: bytes, shape, limits: Limits = Limits(), what: str = "image"):
    """Bytes of an image file -> :class:`sdekit.images.LoadedImage` at ``shape`` = (C, H, W).

    Raises UserError (its message names ``what``, never a server path) for an empty or too large file
    (more than ``limits.upload_bytes``), a file that is not an image, a truncated one, or one of more than
    ``limits.pixels`` pixels."""
    from ..images import load_image
    if len(data) > limits.upload_bytes:
        raise UserError(f"{what} is {len(data) / 1e6:.1f} MB; the limit is {limits.upload_bytes / 1e6:.1f} MB")
    if not data:
        raise UserError(f"{what} is an empty file")
    path = upload_folder() / f"upload-{uuid.uuid4().hex}"
    try:
        path.write_bytes(data)
        return load_image(path, shape, max_pixels=limits.pixels)
    except UserError as e:
        raise UserError(str(e).replace(str(path), what)) from None
    finally:
        path.unlink(missing_ok=True)


def _zoom(data: bytes, H: int, W: int) -> int:
    """k when the image is exactly k times the model's size (the page's canvas), else 0."""
    from PIL import Image
    try:
        w, h = Image.open(io.BytesIO(data)).size          # the header only
    except Exception:
        return 0
    return w // W if w % W == 0 and h % H == 0 and w // W == h // H else 0


def load_canvas(data: bytes, shape, limits: Limits = Limits(), what: str = "image"):
    """The page's canvas (k x k screen pixels per model pixel) -> LoadedImage at ``shape``: each model
    pixel is the mean of its block (alpha: the block is opaque when at least half of it is), so an
    image shown at zoom k comes back unchanged. Any other size goes by the rule of sdekit.images."""
    import torch.nn.functional as F
    C, H, W = shape
    k = _zoom(data, H, W)
    if k <= 1:
        return load_upload(data, shape, limits, what)
    big = load_upload(data, (C, k * H, k * W), limits, what)
    alpha = None if big.alpha is None else (F.avg_pool2d(big.alpha, k) >= 0.5).float()
    return type(big)(F.avg_pool2d(big.pixels, k), alpha, big.size)


def keep_mask(data: bytes, shape, limits: Limits = Limits()) -> torch.Tensor:
    """The page's mask layer (a PNG; painted = opaque = the region to regenerate) -> [1, 1, H, W] in the
    library's convention: 1 = keep the guide, 0 = regenerate. A PNG without transparency is all painted."""
    C, H, W = shape
    painted = load_canvas(data, (1, H, W), limits, "mask").alpha
    return torch.zeros(1, 1, H, W) if painted is None else 1 - painted


def png_bytes(u: torch.Tensor) -> bytes:
    """One image [C, H, W] in [0, 1] -> PNG bytes."""
    from ..images import to_pil
    buf = io.BytesIO()
    to_pil(u).save(buf, format="PNG")
    return buf.getvalue()


def data_url_bytes(url, what: str) -> bytes:
    """``data:image/png;base64,...`` -> bytes; UserError for anything else."""
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url[:100]:
        raise UserError(f"{what} must be an image data URL (data:image/png;base64,...)")
    try:
        return base64.b64decode(url.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{what} is not valid base64") from None

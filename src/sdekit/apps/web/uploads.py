"""Image bytes from the page -> tensors in [0, 1] at the model's resolution, and tensors -> PNG bytes.

Uploads follow the rule of :mod:`sdekit.data.images` (the same as ``sdekit edit``): refuse non-images, truncated
files and decompression bombs; composite transparency over black; centre-crop to the model's aspect;
resize; grey by ITU-R 601 luma for 1-channel models. The canvas, an exact zoom of the model's pixels, is
averaged block by block, so what the page shows is what the model gets.

Masks follow the library's convention: 1 (white in a PNG) = keep the guide, 0 (black) = regenerate.

Uploads are decoded from memory: no file is written, so a server killed mid-upload leaves nothing behind.
Versions before this one wrote each upload to ``<tmp>/sdekit-web-*/upload`` for the time of its decode;
:func:`remove_stale` (run when a server starts) removes such folders that a killed server left.
"""
from __future__ import annotations

import base64
import binascii
import ctypes
import functools
import io
import shutil
import tempfile
import time
from pathlib import Path

import torch

from sdekit.core.errors import UserError
from sdekit.apps.web.limits import Limits

STALE_SECONDS = 600                          # no decode takes this long: an older folder was left by a kill


def remove_stale(tmp: Path | None = None) -> list[Path]:
    """Remove the upload folders (``sdekit-web-*`` holding one file, ``upload``) that servers of earlier
    versions left in the temporary folder when killed mid-upload; returns those removed. Recent folders,
    and anything else, are left alone."""
    removed = []
    for d in Path(tmp or tempfile.gettempdir()).glob("sdekit-web-*"):
        try:
            stale = (d.is_dir() and not d.is_symlink() and [f.name for f in d.iterdir()] in ([], ["upload"])
                     and time.time() - d.stat().st_mtime > STALE_SECONDS)
        except OSError:
            continue
        if stale:
            shutil.rmtree(d, ignore_errors=True)
            if not d.exists():
                removed.append(d)
    return removed


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim          # glibc
    except (OSError, AttributeError):
        return None


def return_memory() -> None:
    """Give the memory that decodes freed back to the system. glibc keeps what worker threads free in
    their own arenas (about 150 MB per thread after a 16-megapixel upload, for good); ``malloc_trim``
    returns it. A no-op where the C library has no ``malloc_trim``."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def load_upload(data: bytes, shape, limits: Limits = Limits(), what: str = "image", max_pixels: int | None = None,
                background=None):
    """Bytes of an image file -> :class:`sdekit.data.images.LoadedImage` at ``shape`` = (C, H, W), transparency
    composited over ``background`` (the model's :func:`sdekit.data.datasets.background`; None: black).

    Raises UserError (its message names ``what``, never a server path) for an empty or too large file
    (more than ``limits.upload_bytes``), a file that is not an image, a truncated one (also one whose
    pixel data end before its declared size), or one of more than ``max_pixels`` pixels (default
    ``limits.max_pixels(shape)``: at most ``limits.zoom`` times the model's size a side), refused from
    its header before any pixel is decoded."""
    from sdekit.data.images import load_image
    if len(data) > limits.upload_bytes:
        raise UserError(f"{what} is {len(data) / 1e6:.1f} MB; the limit is {limits.upload_bytes / 1e6:.1f} MB")
    if not data:
        raise UserError(f"{what} is an empty file")
    try:
        im = load_image(data, shape, max_pixels=limits.max_pixels(shape) if max_pixels is None else max_pixels,
                        background=background)
    except UserError as e:                   # sdekit.data.images calls bytes "image"
        raise UserError(str(e).replace("image: ", f"{what}: ", 1)) from None
    except (OSError, SyntaxError, EOFError, ValueError) as e:      # a decoder's own complaint: still a bad file
        raise UserError(f"{what}: unreadable image ({type(e).__name__})") from None
    return type(im)(im.pixels, im.alpha, im.size)            # without the whole picture


def _zoom(data: bytes, H: int, W: int, max_pixels: int) -> int:
    """k when the image is exactly k times the model's size (the page's canvas), else 0."""
    from sdekit.data.images import image_size
    try:
        w, h = image_size(data, max_pixels)               # the header only
    except Exception:                                     # not a canvas; the decode says what is wrong
        return 0
    return w // W if w % W == 0 and h % H == 0 and w // W == h // H else 0


def load_canvas(data: bytes, shape, limits: Limits = Limits(), what: str = "image", background=None):
    """The page's canvas (k x k screen pixels per model pixel) -> LoadedImage at ``shape``: each model
    pixel is the mean of its block (alpha: the block is opaque when at least half of it is), so an
    image shown at zoom k comes back unchanged. Any other size goes by the rule of sdekit.data.images.
    Transparency is composited over ``background`` (as :func:`load_upload`; None: black)."""
    import torch.nn.functional as F
    C, H, W = shape
    bound = limits.max_pixels(shape)
    k = _zoom(data, H, W, bound)
    if k <= 1:
        return load_upload(data, shape, limits, what, background=background)
    big = load_upload(data, (C, k * H, k * W), limits, what, bound, background)
    alpha = None if big.alpha is None else (F.avg_pool2d(big.alpha, k) >= 0.5).float()
    return type(big)(F.avg_pool2d(big.pixels, k), alpha, big.size)


def _same_canvas(layer, image_size, what: str) -> None:
    """UserError naming both sizes unless a layer has the (width, height) ``image_size`` of its image (None: unchecked)."""
    if image_size is not None and tuple(layer.size) != tuple(image_size):
        raise UserError(f"the {what} is {layer.size[0]}x{layer.size[1]} but the image is "
                        f"{image_size[0]}x{image_size[1]}: send every layer of one canvas")


def keep_mask(data: bytes, shape, limits: Limits = Limits(), image_size=None) -> torch.Tensor:
    """The page's mask layer (a PNG; painted = opaque = the region to regenerate) -> [1, 1, H, W] in the
    library's convention: 1 = keep the guide, 0 = regenerate. A PNG without transparency is all painted.
    ``image_size``: the (width, height) of the image the mask goes with; a mask of another size is
    refused (UserError naming both sizes): the page sends both layers of one canvas."""
    C, H, W = shape
    layer = load_canvas(data, (1, H, W), limits, "mask")
    _same_canvas(layer, image_size, "mask")
    painted = layer.alpha
    return torch.zeros(1, 1, H, W) if painted is None else 1 - painted


STRENGTH_GREEN = 160      # the strength layer's colour for t0 = a: (255 a, STRENGTH_GREEN, 255 (1 - a)), blue = keep


def strength_map(data: bytes, shape, t0: float, limits: Limits = Limits(), image_size=None) -> torch.Tensor | None:
    """The page's strength layer (a PNG; painted = opaque, in the colour (255 a, 160, 255 (1 - a)) for the
    amount t0 = a in [0, 1]) -> a t0 map [1, 1, H, W]: a = R / (R + B) where at least half of a model
    pixel is painted (the ratio survives block averaging and a stroke's soft edge), ``t0`` (the page's
    slider) elsewhere; None when nothing is painted. A PNG without transparency is all painted.
    ``image_size``: as for :func:`keep_mask`."""
    C, H, W = shape
    img = load_canvas(data, (3, H, W), limits, "strength")
    _same_canvas(img, image_size, "strength layer")
    painted = torch.ones(1, 1, H, W, dtype=torch.bool) if img.alpha is None else img.alpha.bool()
    if not painted.any():
        return None
    r, b = img.pixels[:, :1], img.pixels[:, 2:3]
    a = (r / (r + b).clamp_min(1e-6)).clamp(0, 1).double()            # float64: the slider's t0 exactly
    return torch.where(painted, a, torch.full_like(a, float(t0)))


def png_bytes(u: torch.Tensor) -> bytes:
    """One image [C, H, W] in [0, 1] -> PNG bytes."""
    from sdekit.data.images import to_pil
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

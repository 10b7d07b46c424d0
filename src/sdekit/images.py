"""Image files in and out: any PIL mode to the model's channels and resolution, safely.

The rule for a guide of any size (stated once, used by ``sdekit edit``, the demo and the web page):

1. Refuse files that are not images, truncated files, and images with more than ``max_pixels``
   pixels (decompression bombs) before decoding them.
2. Mode: palette (P) images are expanded (to RGBA if they carry transparency); L, LA, I, F, 1
   become grey, everything else RGB(A). An alpha channel, when not fully opaque, is returned
   as a mask (opaque = 1 = keep); the colour is composited over black (the digits' background).
3. Channels: grey -> C copies; colour -> grey by ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B)
   for a 1-channel model.
4. Size: centre-crop to the model's aspect ratio (square), then resize to H x W: Lanczos when
   shrinking, bicubic when enlarging; a mask is resized bilinearly and thresholded at 1/2.

Pixels are returned as float tensors [1, C, H, W] in [0, 1]; the model's ``from_unit`` maps them to
its space.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .io import atomic_path

__all__ = ["LoadedImage", "load_image", "load_mask", "save_image", "save_labelled_grid", "to_pil", "MAX_PIXELS"]

MAX_PIXELS = 64_000_000          # a 8000 x 8000 painting; anything larger is refused unread
GREY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "F"}


@dataclass
class LoadedImage:
    pixels: torch.Tensor              # [1, C, H, W] in [0, 1] at the model's resolution
    alpha: torch.Tensor | None        # [1, 1, H, W] in {0, 1} (1 = opaque) or None
    size: tuple[int, int]             # original (width, height)


def _open(path, max_pixels: int):
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
            w, h = im.size
            if w * h > max_pixels:
                raise UserError(f"{path}: {w}x{h} image is too large ({w * h} pixels > {max_pixels}); "
                                "downscale it first")
            im.load()                   # decode now: a truncated file fails here
    except UserError:
        raise
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image file PIL can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(f"{path}: refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path}: unreadable or truncated image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return im


def _split(im):
    """(colour image in L or RGB, alpha array in [0, 1] or None)."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "La", "PA"):
        im = im.convert("LA")
        return im.getchannel("L"), np.asarray(im.getchannel("A"), dtype=np.float32) / 255
    if im.mode in ("RGBA", "RGBa"):
        im = im.convert("RGBA")
        return im.convert("RGB"), np.asarray(im.getchannel("A"), dtype=np.float32) / 255
    if im.mode in GREY_MODES:
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            a = np.asarray(im, dtype=np.float64)
            hi = 65535.0 if a.max() > 255 else 255.0
            from PIL import Image
            im = Image.fromarray((np.clip(a / hi, 0, 1) * 255 + 0.5).astype(np.uint8), "L")
        return im.convert("L"), None
    return im.convert("RGB"), None


def _crop_resize(im, size_hw, resample=None):
    from PIL import Image
    H, W = size_hw
    w, h = im.size
    target = W / H
    if w / h > target:                           # too wide: crop the sides
        cw, ch = max(1, round(h * target)), h
    else:
        cw, ch = w, max(1, round(w / target))
    left, top = (w - cw) // 2, (h - ch) // 2
    im = im.crop((left, top, left + cw, top + ch))
    if resample is None:
        resample = Image.LANCZOS if cw >= W else Image.BICUBIC
    return im.resize((W, H), resample)


def _to_channels(a: np.ndarray, C: int) -> np.ndarray:
    """[H, W] or [H, W, 3] in [0, 1] -> [C, H, W]."""
    if a.ndim == 2:
        a = a[None]
    else:
        a = a.transpose(2, 0, 1)
    if a.shape[0] == C:
        return a
    if C == 1:
        return (0.299 * a[0] + 0.587 * a[1] + 0.114 * a[2])[None]
    if a.shape[0] == 1:
        return np.repeat(a, C, 0)
    raise UserError(f"cannot convert a {a.shape[0]}-channel image to {C} channels")


def load_image(path, shape=(1, 16, 16), max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Read an image file and convert it to ``shape`` = (C, H, W) by the rule of this module."""
    from PIL import Image
    C, H, W = (int(s) for s in shape)
    im = _open(path, max_pixels)
    size = im.size
    colour, alpha = _split(im)
    if alpha is not None and alpha.min() >= 1.0:
        alpha = None
    a = np.asarray(colour, dtype=np.float32) / 255
    if alpha is not None:                        # over black: the digits' background
        a = a * (alpha if a.ndim == 2 else alpha[..., None])
    pil = Image.fromarray((a * 255 + 0.5).astype(np.uint8), "L" if a.ndim == 2 else "RGB")
    px = np.asarray(_crop_resize(pil, (H, W)), dtype=np.float32) / 255
    pixels = torch.from_numpy(_to_channels(px, C).copy())[None].clamp(0, 1)
    m = None
    if alpha is not None:
        m = _resize_mask(alpha, (H, W))
    return LoadedImage(pixels, m, size)


def _resize_mask(a: np.ndarray, size_hw) -> torch.Tensor:
    from PIL import Image
    im = Image.fromarray(a.astype(np.float32), "F")
    r = np.asarray(_crop_resize(im, size_hw, Image.BILINEAR), dtype=np.float32)
    return torch.from_numpy((r >= 0.5).astype(np.float32))[None, None]


def load_mask(path, size_hw=(16, 16), max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """A mask file -> [1, 1, H, W] in {0, 1}: white (>= 1/2 after the resize rule) = 1 = keep the
    guide. An image with transparency uses its alpha instead (opaque = keep)."""
    im = _open(path, max_pixels)
    colour, alpha = _split(im)
    if alpha is not None and alpha.min() < 1.0:
        return _resize_mask(alpha, size_hw)
    a = np.asarray(colour.convert("L"), dtype=np.float32) / 255
    return _resize_mask(a, size_hw)


def to_pil(u: torch.Tensor, size: tuple[int, int] | None = None):
    """One image [C, H, W] or [1, C, H, W] in [0, 1] -> PIL image (L or RGB), optionally resized
    to size = (width, height) with Lanczos (bicubic when enlarging)."""
    from PIL import Image
    if u.dim() == 4:
        if u.shape[0] != 1:
            raise UserError(f"to_pil takes one image, got a batch of {u.shape[0]}")
        u = u[0]
    a = (u.detach().float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    im = Image.fromarray(a[0], "L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0), "RGB")
    if size is not None and tuple(size) != im.size:
        w, h = size
        im = im.resize((int(w), int(h)), Image.LANCZOS if w <= im.width else Image.BICUBIC)
    return im


def save_image(path, u: torch.Tensor, size: tuple[int, int] | None = None, overwrite: bool = True) -> Path:
    """Write one image in [0, 1] atomically (PNG, or the format the suffix names); an existing
    file is refused unless ``overwrite``."""
    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP",
           ".tif": "TIFF", ".tiff": "TIFF"}.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: unknown image type {path.suffix!r}; use .png or .jpg")
    im = to_pil(u, size)
    with atomic_path(path, overwrite=overwrite) as tmp:
        im.save(tmp, format=fmt)
    return path


def save_labelled_grid(path, u: torch.Tensor, row_labels=None, col_labels=None, scale: int = 4, pad: int = 4) -> Path:
    """Write images u [R, K, C, H, W] in [0, 1] as an R x K table, each cell enlarged ``scale``
    times (nearest), with row labels on the left and column labels on top (PNG, atomically)."""
    from PIL import Image, ImageDraw, ImageFont
    R, K, C, H, W = u.shape
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = lambda t: int(probe.textlength(str(t), font=font))
    left = (max(width(t) for t in row_labels) + 2 * pad) if row_labels else pad
    top = 14 + pad if col_labels else pad
    cw, ch = W * scale, H * scale
    cw_lab = max([cw] + [width(t) + 4 for t in (col_labels or [])])
    im = Image.new("RGB", (left + K * (cw_lab + pad), top + R * (ch + pad)), "white")
    draw = ImageDraw.Draw(im)
    for k in range(K):
        x = left + k * (cw_lab + pad)
        if col_labels:
            draw.text((x + (cw_lab - width(col_labels[k])) // 2, pad // 2), str(col_labels[k]), fill="black", font=font)
        for r in range(R):
            cell = to_pil(u[r, k]).convert("RGB").resize((cw, ch), Image.NEAREST)
            im.paste(cell, (x + (cw_lab - cw) // 2, top + r * (ch + pad)))
    for r in range(R if row_labels else 0):
        draw.text((pad, top + r * (ch + pad) + ch // 2 - 6), str(row_labels[r]), fill="black", font=font)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return Path(path)

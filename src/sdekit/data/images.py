"""Image files in and out: the picture a viewer shows, at the model's channels and resolution.

The rule for an image file of any size and mode (stated once; used by ``sdekit edit``, ``inpaint``,
``colorize``, the demo, the web page's uploads and ``folder:`` datasets):

1. Formats: only the raster formats of :data:`FORMATS` (PNG, JPEG, BMP, GIF, WebP, TIFF) are decoded;
   anything else (EPS and PostScript, which Pillow would hand to Ghostscript, and every other
   plugin) is refused unread. An image of more than ``max_pixels`` pixels (:data:`MAX_PIXELS` by
   default) is refused from the size its header declares, before any pixel is decoded; a truncated
   file (for PNG also one that ends before its IEND chunk, or whose compressed pixel data end before
   the size its header declares, which Pillow would fill with zeros) is refused.
2. Picture: what a viewer shows: the first frame, turned upright by its EXIF orientation
   (``PIL.ImageOps.exif_transpose``).
3. Values in [0, 1]: 8-bit modes v / 255; 16-bit grey (I;16, I;16B, I;16L, I;16N) and 32-bit
   integers (I, as Pillow opens 16-bit PGM) v / 65535, clipped; 32-bit float (F) as is, clipped to
   [0, 1]. Palette, CMYK, YCbCr, LAB and HSV images become RGB by Pillow's own conversion.
   Transparency (an alpha band, a transparent palette entry, grey value or colour) is composited
   over black (the digits' background), or over the model's own background where one is given
   (``background=``: :func:`sdekit.data.datasets.background`, white for emoji), and, where not fully opaque,
   returned as a mask (opaque = 1 = keep).
4. Channels: grey -> C copies; colour -> grey by ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B) for a
   1-channel model.
5. Geometry: the centre crop with the model's aspect ratio (:func:`crop_box`: the whole width or the
   whole height is kept) is resized to H x W, Lanczos when shrinking, bicubic when enlarging; a mask
   is resized bilinearly and thresholded at 1/2. The rule is inverted by :func:`restore`: an output
   resized back onto the crop box and pasted into the guide's frame, so it lines up with the guide
   wherever the model saw it; outside the box the guide is kept. A mask that goes with a guide or
   image must have its size, or its aspect ratio (then it goes through the same crop, and the
   command's message says it was scaled), else it is refused naming both sizes (:func:`check_agree`).

6. Polarity (grey models only, by the caller's choice: :func:`follow_polarity`): a guide drawn the other
   way round (dark strokes on white for a model of light strokes on black) is recognised from its border,
   the outer ring of pixels at the model's resolution, which strokes seldom reach: when the border's median
   lies farther than 1/2 from the model's background and within 1/4 of its inverse, the guide is inverted.

Pixels are returned as float tensors [1, C, H, W] in [0, 1]; the model's ``from_unit`` maps them to
its space. Pictures are written atomically by :func:`save_picture` (format from the file suffix).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sdekit.core.errors import UserError
from sdekit.core.io import atomic_path

__all__ = ["LoadedImage", "load_image", "load_mask", "read_image", "image_size", "check_agree", "crop_box", "restore",
           "guide_frame", "save_image", "save_picture", "picture", "enlarge", "grid_shape", "grid_size",
           "check_picture_size", "save_labelled_grid", "to_pil", "from_pil", "FORMATS", "EXTENSIONS",
           "MAX_PIXELS", "MAX_OUTPUT_PIXELS", "SCALE", "load_map", "follow_polarity", "reversed_polarity"]

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")   # Pillow plugin names; nothing else is decoded
SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP",
            ".tif": "TIFF", ".tiff": "TIFF"}
EXTENSIONS = tuple(SUFFIXES)                              # file names of the formats above
MAX_PIXELS = 4096 * 4096          # largest decoded image (16.8 M pixels, ~64 MB as RGBA); larger: refused unread
MAX_OUTPUT_PIXELS = 8192 * 8192   # largest written picture: below Pillow's decompression-bomb warning
SCALE = 4                         # default enlargement of written pictures (nearest neighbour)

GREY8 = ("1", "L", "LA", "La")
DEEP = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}  # full scale
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


@dataclass
class LoadedImage:
    pixels: torch.Tensor                  # [1, C, H, W] in [0, 1] at the model's resolution
    alpha: torch.Tensor | None            # [1, 1, H, W] in {0, 1} (1 = opaque) or None
    size: tuple[int, int]                 # the picture's (width, height) as a viewer shows it
    box: tuple[int, int, int, int] | None = None   # the crop the model saw: (left, top, right, bottom)
    frame: object = None                  # the whole picture over black (or the background), a PIL image (L, RGB or F on 0..255)


# ---- reading --------------------------------------------------------------------------------------

def _name(source) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "image"


def _source(source):
    """A path, bytes or a binary file -> something Image.open reads from its start."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise UserError(f"{path}: no such file")
        if path.is_dir():
            raise UserError(f"{path}: is a folder, not an image")
        return path
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    source.seek(0)
    return source


def _open(source, max_pixels: int):
    """Open (not decode) ``source``: a path, bytes or a binary file; refuses other formats and images
    of more than ``max_pixels`` pixels from the header."""
    from PIL import Image, UnidentifiedImageError
    name = _name(source)
    source = _source(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(source, formats=FORMATS)
    except UnidentifiedImageError:
        raise UserError(f"{name}: not an image file of a supported format ({', '.join(FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(f"{name}: refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UserError(f"{name}: unreadable image ({_first_line(e)})") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise UserError(f"{name}: {w}x{h} image is too large ({w * h} pixels > {max_pixels}); downscale it first")
    return im


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e).strip() else type(e).__name__


def image_size(source, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of the picture a viewer shows (EXIF orientation applied), read from the header
    only. source: a path, bytes or a binary file. UserError as for :func:`read_image`."""
    with _open(source, max_pixels) as im:
        w, h = im.size
        try:
            turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)   # orientations that swap the axes
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise UserError(f"{_name(source)}: unreadable image ({_first_line(e)})") from None
    return (h, w) if turned else (w, h)


def read_image(source, max_pixels: int = MAX_PIXELS):
    """Decode ``source`` (a path, bytes or a binary file) into the PIL image a viewer shows: the first
    frame, upright by its EXIF orientation, in the file's own mode.

    Raises UserError for a missing file, a folder, a format outside :data:`FORMATS`, more than
    ``max_pixels`` pixels (checked before decoding) and a truncated or corrupt file."""
    from PIL import Image, ImageOps
    name = _name(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    with _open(source, max_pixels) as im:
        try:
            if im.format == "PNG":                             # pixel data that end early: before any memory
                raw = _source(source)
                with (open(raw, "rb") if isinstance(raw, Path) else contextlib.nullcontext(raw)) as f:
                    _png_data_complete(f, name)
            im.load()                                          # a truncated file fails here
            if im.format == "PNG":                             # and one that ends before IEND here
                with Image.open(_source(source), formats=("PNG",)) as again:
                    again.verify()
            return ImageOps.exif_transpose(im)                 # a copy, upright
        except UserError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as e:
            raise UserError(f"{name}: unreadable or truncated image ({_first_line(e)})") from None


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))  # x0, y0, dx, dy
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}             # by colour type (PNG specification, 11.2.2)


def png_data_size(width: int, height: int, depth: int, colour: int, interlaced: bool) -> int:
    """Bytes of a PNG's decompressed pixel data (filter byte + packed samples per row, per Adam7 pass
    when interlaced), as its IHDR declares (PNG specification, 7.2 and 8.2)."""
    bits = depth * PNG_CHANNELS[colour]
    passes = ADAM7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if w > 0 and h > 0:
            total += h * (1 + -(-w * bits // 8))
    return total


def _png_data_complete(f, name: str) -> None:
    """UserError unless the IDAT chunks of the PNG file ``f`` decompress to the size its IHDR declares.
    Pillow fills rows missing from a zlib stream that ends early with zeros (96 bytes can declare
    4096 x 4096 RGBA); this reads the chunks and counts the decompressed bytes without keeping them."""
    import struct
    f.seek(8)
    need, got, inflate = None, 0, zlib.decompressobj()
    while True:
        head = f.read(8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IHDR":
            w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", f.read(13))
            need = png_data_size(w, h, depth, colour, interlace == 1)
            f.seek(length - 13 + 4, 1)
        elif kind == b"IDAT":
            data = f.read(length)
            while data and got <= need:                        # at most need + 64 kB in memory at a time
                got += len(inflate.decompress(data, 1 << 16))
                data = inflate.unconsumed_tail
            f.seek(4, 1)
        elif kind == b"IEND":
            break
        else:
            f.seek(length + 4, 1)
    if need is not None and got < need:
        raise UserError(f"{name}: truncated image: its pixel data end after {got} of the {need} bytes "
                        "its header declares")


def _ground(background, grey: bool) -> np.ndarray | None:
    """A background (1 or 3 values in [0, 1]; None = black) on the 0..255 scale of a grey (ITU-R 601
    luma of a colour) or RGB picture; None for black."""
    if background is None or not any(background):
        return None
    b = np.asarray(background, dtype=np.float32) * 255
    if grey:
        return b[:1] if len(b) == 1 else np.asarray([0.299 * b[0] + 0.587 * b[1] + 0.114 * b[2]], dtype=np.float32)
    return np.repeat(b, 3) if len(b) == 1 else b


def _planes(im, background=None):
    """(colour composited over ``background`` (None: black): L or RGB, or F on the 0..255 scale for deep
    modes; alpha as an L image, or None when fully opaque) of a decoded image, by rule 3 of this module."""
    from PIL import Image
    if im.mode in DEEP:
        a = np.asarray(im, dtype=np.float32)
        v = np.clip(a * (255.0 / DEEP[im.mode]), 0, 255)
        t = im.info.get("transparency")
        keep = (a != t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None
        if keep is None or keep.all():
            return Image.fromarray(v.astype(np.float32), "F"), None
        ground = _ground(background, True)
        under = 0 if ground is None else (1 - keep) * ground[0]
        return (Image.fromarray((v * keep + under).astype(np.float32), "F"),
                Image.fromarray((keep * 255).astype(np.uint8), "L"))
    if im.mode == "1":
        im = im.convert("L")
    grey = im.mode in GREY8
    plain = "L" if grey else "RGB"
    if im.mode not in ALPHA_MODES and "transparency" not in im.info:
        return im.convert(plain), None
    im = im.convert("LA" if grey else "RGBA")               # Pillow applies palette / colour-key transparency
    alpha = im.getchannel("A")
    if alpha.getextrema()[0] == 255:
        return im.convert(plain), None
    ground = _ground(background, grey)
    if ground is not None:                                   # colour a + background (1 - a)
        px = np.asarray(im, dtype=np.float32)
        a = px[..., -1:] / 255
        over = np.round(px[..., :-1] * a + (1 - a) * ground).astype(np.uint8)
        return Image.fromarray(over[..., 0] if grey else over, plain), alpha
    bands = im.convert("La" if grey else "RGBa").split()     # premultiplied: colour over black
    return (bands[0] if grey else Image.merge("RGB", bands[:3])), alpha


def crop_box(size, shape_hw) -> tuple[int, int, int, int]:
    """The centre crop (left, top, right, bottom) of a (width, height) picture with the aspect ratio of
    shape_hw = (H, W): the whole height of a picture that is too wide, else the whole width."""
    w, h = (int(s) for s in size)
    H, W = (int(s) for s in shape_hw)
    if w * H > h * W:                                        # too wide: crop the sides
        cw, ch = max(1, round(h * W / H)), h
    else:
        cw, ch = w, max(1, round(w * H / W))
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def _resample(box_w: int, W: int):
    from PIL import Image
    return Image.LANCZOS if box_w >= W else Image.BICUBIC


def _to_channels(a: np.ndarray, C: int) -> np.ndarray:
    """[H, W] or [H, W, 3] in [0, 1] -> [C, H, W]."""
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    if a.shape[0] == C:
        return a
    if C == 1:
        return (0.299 * a[0] + 0.587 * a[1] + 0.114 * a[2])[None]
    if a.shape[0] == 1:
        return np.repeat(a, C, 0)
    raise UserError(f"cannot convert a {a.shape[0]}-channel image to {C} channels")


def _mask(alpha, box, size_hw) -> torch.Tensor:
    """An L image (255 = 1) -> [1, 1, H, W] in {0, 1}: the crop box resized bilinearly, threshold 1/2."""
    from PIL import Image
    H, W = size_hw
    r = np.asarray(alpha.crop(box).convert("F").resize((W, H), Image.BILINEAR), dtype=np.float32)
    return torch.from_numpy((r >= 127.5).astype(np.float32))[None, None]


def load_image(path, shape=(1, 16, 16), max_pixels: int = MAX_PIXELS, background=None) -> LoadedImage:
    """Read an image file (a path, bytes or a binary file) and convert it to ``shape`` = (C, H, W) by
    the rule of this module, transparency composited over ``background`` (1 or 3 values in [0, 1], the
    model's :func:`sdekit.data.datasets.background`; None: black). Returns pixels [1, C, H, W] in [0, 1], the
    alpha mask [1, 1, H, W] in {0, 1} (None when opaque), the picture's size, the crop box and the whole
    picture (for :func:`restore`). Raises UserError as :func:`read_image` does."""
    C, H, W = (int(s) for s in shape)
    if min(C, H, W) < 1:
        raise UserError(f"shape must be positive (C, H, W), got {tuple(shape)}")
    colour, alpha = _planes(read_image(path, max_pixels), background)
    box = crop_box(colour.size, (H, W))
    small = colour.resize((W, H), _resample(box[2] - box[0], W), box=box)
    px = np.asarray(small, dtype=np.float32) / 255
    pixels = torch.from_numpy(_to_channels(px, C).copy())[None].clamp(0, 1)
    mask = None if alpha is None else _mask(alpha, box, (H, W))
    return LoadedImage(pixels, mask, colour.size, box, colour)


def reversed_polarity(pixels: torch.Tensor, background) -> bool:
    """Whether a 1-channel guide (pixels [1, 1, H, W] in [0, 1]) is drawn in the polarity opposite to a model
    whose pictures lie on ``background`` (1 value in [0, 1]; :func:`sdekit.data.datasets.background`): its
    border's median is farther than 1/2 from the background and within 1/4 of its inverse (rule 6). Always
    False for colour guides and for a background of mid grey, which has no opposite."""
    if pixels.shape[1] != 1 or background is None:
        return False
    bg = float(background[0])
    p = pixels[0, 0]
    ring = torch.cat([p[0], p[-1], p[1:-1, 0], p[1:-1, -1]])
    border = float(ring.median())
    return abs(border - bg) > 0.5 and abs(border - (1 - bg)) <= 0.25


def follow_polarity(img: LoadedImage, background) -> tuple[LoadedImage, bool]:
    """``img`` inverted (pixels and the frame :func:`restore` pastes into) when :func:`reversed_polarity` says it
    is drawn the other way round for a model on ``background``; returns (image, whether it was inverted)."""
    if not reversed_polarity(img.pixels, background):
        return img, False
    from PIL import ImageOps
    frame = img.frame
    if frame is not None:
        frame = frame.point(lambda v: 255 - v) if frame.mode == "F" else ImageOps.invert(frame.convert("L"))
    return LoadedImage(1 - img.pixels, img.alpha, img.size, img.box, frame), True


def load_mask(path, size_hw=(16, 16), max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """A mask file -> [1, 1, H, W] in {0, 1}: white (>= 1/2 after the resize rule) = 1 = keep the
    guide. An image with transparency uses its alpha instead (opaque = keep)."""
    colour, alpha = _planes(read_image(path, max_pixels))
    box = crop_box(colour.size, size_hw)
    if alpha is None:
        alpha = colour if colour.mode == "F" else colour.convert("L")
    return _mask(alpha, box, size_hw)


def check_agree(size, ref, what: str, ref_what: str) -> str | None:
    """Two inputs that must line up pixel for pixel (a mask with its guide or image): ``size`` and
    ``ref`` are their (width, height). The same size: None. The same aspect ratio (up to a pixel's
    rounding): both go through the same crop and resize (rule 5), so they line up; returns the note the
    output's message shows ("what 28x28 scaled to ref_what's 280x280"). Otherwise UserError naming both sizes."""
    (w, h), (W, H) = (tuple(int(v) for v in size), tuple(int(v) for v in ref))
    if (w, h) == (W, H):
        return None
    if abs(w * H - h * W) > max(w, h, W, H):
        raise UserError(f"{what} is {w}x{h} but {ref_what} is {W}x{H}: they must have the same size "
                        f"(or the same aspect ratio) to line up")
    return f"{what} {w}x{h} scaled to {ref_what}'s {W}x{H}"


def load_map(path, size_hw=(16, 16), max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """A grey-level map file (a t0 map: grey level = value) -> [1, 1, H, W] in [0, 1] by the rule of
    this module: values by rule 3 (so transparency reads as 0), colour by luma (rule 4), the centre
    crop of aspect H : W resized (rule 5), which covers what the guide's conversion keeps when the map
    has the guide's aspect ratio (:func:`check_agree`). UserError as :func:`read_image`."""
    return load_image(path, (1, *size_hw), max_pixels).pixels


def guide_frame(img: LoadedImage, channels: int):
    """The whole picture ``img`` was read from, over black (or the background it was read with), as a PIL image (L for 1 channel, else RGB;
    grey by the same ITU-R 601 luma) of ``img.size``."""
    from PIL import Image
    frame = img.frame
    if frame is None:
        raise UserError("this image was not read by sdekit.data.images.load_image; it has no frame")
    if frame.mode == "F":
        frame = Image.fromarray((np.clip(np.asarray(frame), 0, 255) + 0.5).astype(np.uint8), "L")
    return frame.convert("L" if channels == 1 else "RGB")


def restore(img: LoadedImage, u: torch.Tensor):
    """Invert the geometry of the rule: an output u ([C, H, W] or [1, C, H, W] in [0, 1], at the
    model's resolution, from the guide ``img``) resized onto ``img.box`` and pasted into the guide's
    frame (:func:`guide_frame`). Returns a PIL image of ``img.size`` that lines up with the guide;
    outside the crop box it is the guide."""
    out = to_pil(u)
    frame = guide_frame(img, 1 if out.mode == "L" else 3)
    left, top, right, bottom = img.box
    frame.paste(to_pil(u, (right - left, bottom - top)), (left, top))
    return frame


# ---- writing --------------------------------------------------------------------------------------

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
        im = im.resize((int(w), int(h)), _resample(im.width, int(w)))
    return im


def picture_format(path) -> str:
    """Pillow's format name for an output file, from its suffix; UserError for an unknown one."""
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: unknown image type {path.suffix!r}; use .png or .jpg")
    return fmt


def save_picture(path, im, overwrite: bool = True) -> Path:
    """Write a PIL image atomically in the format its suffix names; an existing file is refused
    unless ``overwrite`` (UserError)."""
    path = Path(path)
    fmt = picture_format(path)
    if fmt == "JPEG" and im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    with atomic_path(path, overwrite=overwrite) as tmp:
        im.save(tmp, format=fmt)
    return path


def save_image(path, u: torch.Tensor, size: tuple[int, int] | None = None, overwrite: bool = True) -> Path:
    """Write one image in [0, 1] atomically (PNG, or the format the suffix names); an existing
    file is refused unless ``overwrite``."""
    picture_format(path)
    return save_picture(path, to_pil(u, size), overwrite)


def from_pil(im) -> torch.Tensor:
    """A PIL image (L or RGB) -> [C, H, W] in [0, 1]."""
    a = np.asarray(im, dtype=np.float32) / 255
    return torch.from_numpy((a[None] if a.ndim == 2 else a.transpose(2, 0, 1)).copy())


def grid_shape(n: int, nrow: int | None = None) -> tuple[int, int]:
    """(rows, columns) of a grid of n images with nrow images per row (default: a square)."""
    cols = int(nrow) if nrow else math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def grid_size(n: int, image_hw, nrow: int | None = None, scale: int = SCALE, pad: int = 1) -> tuple[int, int]:
    """(width, height) in pixels of :func:`picture` of n images of image_hw = (H, W)."""
    rows, cols = grid_shape(n, nrow)
    H, W = image_hw
    return (cols * (W + pad) + pad) * scale, (rows * (H + pad) + pad) * scale


def enlarge(im, scale: int = SCALE):
    """A PIL image enlarged ``scale`` times by nearest neighbour (every pixel a scale x scale block)."""
    from PIL import Image
    return im if scale == 1 else im.resize((im.width * scale, im.height * scale), Image.NEAREST)


def check_picture_size(width: int, height: int, what: str = "picture") -> None:
    """UserError when a picture to write would have more than :data:`MAX_OUTPUT_PIXELS` pixels."""
    if width * height > MAX_OUTPUT_PIXELS:
        raise UserError(f"the {what} would be {width}x{height} pixels (more than {MAX_OUTPUT_PIXELS}); "
                        "use a smaller --scale or fewer images")


def picture(u: torch.Tensor, nrow: int | None = None, scale: int = SCALE):
    """Images u [B, C, H, W] in [0, 1] as one PIL grid (1-pixel black lines between them, ``nrow``
    per row), enlarged ``scale`` times by nearest neighbour."""
    from PIL import Image
    from sdekit.data.datasets import grid
    a = grid(u, nrow)
    return enlarge(Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a), scale)


def save_labelled_grid(path, u: torch.Tensor, row_labels=None, col_labels=None, scale: int = SCALE, pad: int = 4) -> Path:
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

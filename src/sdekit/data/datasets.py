"""Datasets, all held in memory as tensors in model space, and picture grids.

Specs (``--data``):
  digits                scikit-learn's 8x8 digits (bundled), upsampled bilinearly to 16x16 (``size``),
                        values 0..16 -> [0, 1] -> model space [-1, 1]; light strokes on dark; 10 classes.
  toy:NAME              1-D / 2-D toy data: bimodal (1-D), gmm8, moons, circles, swissroll, checkerboard.
  folder:PATH           every image under PATH (png, jpg, bmp, gif, webp, tif), read by the rule of
                        sdekit.data.images (upright as a viewer shows it, transparency over black, centre-cropped
                        to a square) at ``size`` (default 32) with ``channels`` 1 or 3 (default 3); images
                        in sub-folders get one class per sub-folder.
  mnist:DIR, fashion-mnist:DIR   the idx files train-images-idx3-ubyte[.gz] / train-labels-idx1-ubyte[.gz].
  cifar10:DIR           the binary version: data_batch_1.bin .. data_batch_5.bin (optionally in
                        cifar-10-batches-bin/).
  emoji:DIR             colour emoji, both artwork styles (DIR/twemoji-64, DIR/noto-64, DIR/emoji.json); see
                        :func:`emoji` for the background, the resolution, the classes and the held-out split.
MNIST, Fashion-MNIST and CIFAR-10 are read from a local directory; with ``download=True``
(``sdekit train --download``) missing files are fetched first and checked against the published MD5s.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sdekit.core.errors import UserError
from sdekit.data.images import EXTENSIONS, SCALE, grid_shape, load_image, picture, save_picture
from sdekit.core.io import atomic_path

__all__ = ["Dataset", "load_dataset", "digits", "toy", "image_folder", "read_idx", "mnist", "cifar10",
           "save_grid", "grid", "fetch", "SOURCES", "TOYS", "IMAGE_EXTS", "emoji", "emoji_split",
           "EMOJI_CATEGORIES", "EMOJI_STYLES", "EMOJI_BACKGROUND", "data_kind", "background", "class_names",
           "BACKGROUNDS", "CLASS_NAMES", "class_index", "short_name", "UNPACKED_MD5", "source_of"]

IMAGE_EXTS = set(EXTENSIONS)


@dataclass
class Dataset:
    """x: [N, ...] in model space; labels: [N] int64 or None."""

    x: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int
    name: str
    data_range: tuple | None = (-1.0, 1.0)   # model-space values of pixel 0 and 1 (None: not images)

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> tuple:
        return tuple(self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x.dim() == 4


def _to_model(u: torch.Tensor) -> torch.Tensor:
    return 2 * u.clamp(0, 1) - 1


def _resize(u: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or tuple(u.shape[-2:]) == (size, size):
        return u
    return F.interpolate(u, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _channels(u: torch.Tensor, channels: int | None) -> torch.Tensor:
    if channels is None or u.shape[1] == channels:
        return u
    if channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=u.dtype).reshape(1, 3, 1, 1)
        return (u * w).sum(1, keepdim=True)
    if channels == 3:
        return u.expand(-1, 3, -1, -1).contiguous()
    raise UserError(f"channels must be 1 or 3, got {channels}")


def digits(size: int = 16, channels: int | None = None) -> Dataset:
    from sklearn.datasets import load_digits
    d = load_digits()
    u = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    u = F.interpolate(u, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1) if size != 8 else u
    return Dataset(_to_model(_channels(u, channels)), torch.tensor(d.target, dtype=torch.long), 10, "digits")


# ---- toy data -------------------------------------------------------------------------------------

def _bimodal(n, g):
    """1-D: 0.4 N(-2, 0.5^2) + 0.6 N(2, 0.5^2)."""
    k = (torch.rand(n, generator=g) < 0.6).float()
    return (4 * k - 2 + 0.5 * torch.randn(n, generator=g))[:, None]


def _gmm8(n, g):
    a = 2 * math.pi * torch.randint(8, (n,), generator=g) / 8
    return 2 * torch.stack([a.cos(), a.sin()], 1) + 0.1 * torch.randn(n, 2, generator=g)


def _moons(n, g):
    k = torch.randint(2, (n,), generator=g)
    a = math.pi * torch.rand(n, generator=g)
    x = torch.where(k == 0, a.cos(), 1 - a.cos())
    y = torch.where(k == 0, a.sin(), 0.5 - a.sin())
    return torch.stack([x - 0.5, y - 0.25], 1) * 1.5 + 0.05 * torch.randn(n, 2, generator=g)


def _circles(n, g):
    r = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, 2.0)
    a = 2 * math.pi * torch.rand(n, generator=g)
    return r[:, None] * torch.stack([a.cos(), a.sin()], 1) + 0.05 * torch.randn(n, 2, generator=g)


def _swissroll(n, g):
    s = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))
    return torch.stack([s * s.cos(), s * s.sin()], 1) / 5 + 0.05 * torch.randn(n, 2, generator=g)


def _checkerboard(n, g):
    x = 4 * torch.rand(n, generator=g) - 2
    y = torch.rand(n, generator=g) - 2 + 2 * torch.randint(2, (n,), generator=g)
    return torch.stack([x, y + (x.floor() % 2)], 1)


TOYS = {"bimodal": _bimodal, "gmm8": _gmm8, "moons": _moons, "circles": _circles,
        "swissroll": _swissroll, "checkerboard": _checkerboard}


def toy(name: str, n: int = 8192, seed: int = 0) -> Dataset:
    if name not in TOYS:
        raise UserError(f"unknown toy data {name!r}; choose one of {', '.join(TOYS)}")
    x = TOYS[name](n, torch.Generator().manual_seed(seed)).float()
    return Dataset(x, None, 0, f"toy:{name}", None)


# ---- image files ----------------------------------------------------------------------------------

def _open_image(path: Path, size: int, channels: int) -> torch.Tensor:
    """One image file -> [channels, size, size] in [0, 1], by the rule of :mod:`sdekit.data.images`."""
    return load_image(path, (channels, size, size)).pixels[0]


def image_folder(path, size: int | None = None, channels: int | None = None) -> Dataset:
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise UserError(f"{root}: no images found ({', '.join(sorted(IMAGE_EXTS))})")
    size, channels = size or 32, channels or 3
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 or 3, got {channels}")
    u = torch.stack([_open_image(p, size, channels) for p in files])
    parents = [p.parent.relative_to(root) for p in files]
    labels, num_classes = None, 0
    if all(str(q) != "." for q in parents):
        names = sorted({q.parts[0] for q in parents})
        labels = torch.tensor([names.index(q.parts[0]) for q in parents], dtype=torch.long)
        num_classes = len(names)
    return Dataset(_to_model(u), labels, num_classes, f"folder:{root}")


def _find(root: Path, names) -> Path:
    for sub in ("", "raw", "cifar-10-batches-bin"):
        for name in names:
            p = root / sub / name
            if p.is_file():
                return p
    raise UserError(f"{root}: none of {', '.join(names)} found")


def read_idx(path) -> np.ndarray:
    """An idx file (MNIST's format): magic 0 0 dtype ndim, big-endian sizes, then the data."""
    path = Path(path)
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise UserError(f"{path}: not a readable gzip file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or len(raw) < 4 + 4 * raw[3]:
        raise UserError(f"{path}: not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    n = int(np.prod(dims))
    if len(raw) != 4 + 4 * ndim + n:
        raise UserError(f"{path}: truncated idx file ({len(raw)} bytes, expected {4 + 4 * ndim + n})")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def mnist(root, size: int | None = None, channels: int | None = None, name: str = "mnist", split: str = "train") -> Dataset:
    root = Path(root)
    img = read_idx(_find(root, [f"{split}-images-idx3-ubyte", f"{split}-images-idx3-ubyte.gz"]))
    lab = read_idx(_find(root, [f"{split}-labels-idx1-ubyte", f"{split}-labels-idx1-ubyte.gz"]))
    if img.shape[0] != lab.shape[0]:
        raise UserError(f"{root}: {img.shape[0]} images but {lab.shape[0]} labels")
    u = torch.from_numpy(img.astype(np.float32) / 255.0)[:, None]
    return Dataset(_to_model(_channels(_resize(u, size), channels)), torch.from_numpy(lab.astype(np.int64)), 10, name)


def cifar10(root, size: int | None = None, channels: int | None = None) -> Dataset:
    """CIFAR-10 binary version: records of 1 label byte + 3072 bytes (R, G, B planes of 32x32)."""
    root = Path(root)
    files = [_find(root, [f"data_batch_{i}.bin"]) for i in range(1, 6)]
    xs, ys = [], []
    for f in files:
        raw = np.frombuffer(f.read_bytes(), dtype=np.uint8)
        if raw.size % 3073:
            raise UserError(f"{f}: truncated CIFAR-10 batch ({raw.size} bytes)")
        rec = raw.reshape(-1, 3073)
        ys.append(rec[:, 0].astype(np.int64))
        xs.append(rec[:, 1:].reshape(-1, 3, 32, 32))
    u = torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0)
    return Dataset(_to_model(_channels(_resize(u, size), channels)), torch.from_numpy(np.concatenate(ys)), 10, "cifar10")


# ---- colour emoji ---------------------------------------------------------------------------------

EMOJI_CATEGORIES = ("Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink",
                    "Travel & Places", "Activities", "Objects", "Symbols", "Flags")   # class k = index k
EMOJI_STYLES = ("twemoji-64", "noto-64")   # Twemoji (CC BY 4.0), Noto Emoji (Apache 2.0)
EMOJI_BACKGROUND = (1.0, 1.0, 1.0)         # the alpha channel is composited over white
EMOJI_HELD_OUT = 10                        # one emoji in ten (by the rule of emoji_split) is held out


def emoji_split(unified: str) -> str:
    """'test' or 'train' for the emoji with code points ``unified`` (emoji.json's spelling of the base
    emoji, e.g. ``'1F385'``; a skin-tone variant is given by its base). The rule is fixed and stable:
    CRC-32 of the upper-case code points modulo 10 equal to 0 holds the emoji out (about 10 %), so both
    artwork styles and all skin tones of one emoji are on the same side."""
    return "test" if zlib.crc32(unified.upper().encode()) % EMOJI_HELD_OUT == 0 else "train"


def _emoji_pixels(path: Path, size: int) -> np.ndarray:
    """One 64x64 emoji PNG -> [3, size, size] in [0, 1]: Pillow's conversion to RGBA, the mean of each
    (64/size)^2 block of premultiplied colour and of alpha (a box filter), composited over
    :data:`EMOJI_BACKGROUND`."""
    from PIL import Image
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255
    if a.shape[:2] != (64, 64):
        raise UserError(f"{path}: expected a 64x64 emoji, got {a.shape[1]}x{a.shape[0]}")
    rgb, alpha = a[..., :3] * a[..., 3:], a[..., 3:]
    f = 64 // size
    rgb = rgb.reshape(size, f, size, f, 3).mean((1, 3))
    alpha = alpha.reshape(size, f, size, f, 1).mean((1, 3))
    out = rgb + (1 - alpha) * np.asarray(EMOJI_BACKGROUND, dtype=np.float32)
    return out.transpose(2, 0, 1)


def emoji(root, size: int | None = None, channels: int | None = None, split: str = "train") -> Dataset:
    """Colour emoji of ``root`` (the layout of ``../shared/data/emoji``: ``emoji.json`` and one folder per
    artwork style of :data:`EMOJI_STYLES`, each holding ``<code points>.png`` at 64x64 RGBA).

    Every emoji and every skin-tone variant is read in both styles. Pixels: alpha composited over white
    (:data:`EMOJI_BACKGROUND`) after a box filter from 64x64 to ``size`` (32 by default; 64, 32, 16 or 8),
    model space [-1, 1]; ``channels`` 3 (default) or 1 (ITU-R 601 luma). Labels: the category, index into
    :data:`EMOJI_CATEGORIES` (9 classes); the five emoji of the ``Component`` group (skin-tone swatches
    and hair parts, not pictures of their own) are dropped. ``split``: 'train' (about 90 % of the emoji),
    'test' (the held-out rest, by :func:`emoji_split`) or 'all'. Raises UserError for a missing folder,
    file or an unknown split.
    """
    import json
    root = Path(root)
    size = size or 32
    if size not in (8, 16, 32, 64):
        raise UserError(f"emoji data come at 64x64: size must be 64, 32, 16 or 8, got {size}")
    if split not in ("train", "test", "all"):
        raise UserError(f"emoji split must be train, test or all, got {split!r}")
    meta = root / "emoji.json"
    if not meta.is_file():
        raise UserError(f"{root}: no emoji.json (expected the emoji folder with {', '.join(EMOJI_STYLES)})")
    for style in EMOJI_STYLES:
        if not (root / style).is_dir():
            raise UserError(f"{root}: no {style}/ folder")
    xs, ys = [], []
    for e in json.loads(meta.read_text()):
        if e["category"] not in EMOJI_CATEGORIES:
            continue
        if split != "all" and emoji_split(e["unified"]) != split:
            continue
        images = [e["image"]] + [v["image"] for v in (e.get("skin_variations") or {}).values()]
        for style in EMOJI_STYLES:
            for name in images:
                path = root / style / name
                if path.is_file():
                    xs.append(_emoji_pixels(path, size))
                    ys.append(EMOJI_CATEGORIES.index(e["category"]))
    if not xs:
        raise UserError(f"{root}: no emoji images found")
    u = torch.from_numpy(np.stack(xs))
    return Dataset(_to_model(_channels(u, channels)), torch.tensor(ys, dtype=torch.long),
                   len(EMOJI_CATEGORIES), "emoji")


def short_name(name: str) -> str:
    """A class name's short form, its first word in lower case ("Food & Drink" -> "food"): what grids label
    rows with and what ``--class`` accepts besides the full name."""
    return name.split()[0].lower()


def class_index(config: dict, value, also: str = "") -> int:
    """The class index K a user's ``value`` names for a model of ``config`` (a bundle's config): an int, or a
    string of digits, as it is (its range is checked where it is used); else a name of the model's classes
    (:func:`class_names`), matched without regard to case in full ("Food & Drink") or by its first word
    ("food"). UserError naming the choices (and ``also``, the other words the caller takes) for any other
    value."""
    if isinstance(value, bool) or isinstance(value, float):
        raise UserError(f"a class is a whole number or a class name, got {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    names = class_names(config) or ()
    for k, name in enumerate(names):
        if text.lower() in (name.lower(), short_name(name)):
            return k
    choices = (f"a class 0..{len(names) - 1}{also}, or a name: " + ", ".join(f"{k} {n!r}" for k, n in enumerate(names))
               if names else f"a class K >= 0{also} (this model's classes have no names)")
    raise UserError(f"unknown class {text!r}: give {choices}")


# ---- what a model's pictures look like --------------------------------------------------------------

BACKGROUNDS = {"emoji": EMOJI_BACKGROUND}   # data kind -> the colour its pictures are drawn on (pixels in [0, 1])
CLASS_NAMES = {"emoji": EMOJI_CATEGORIES}   # data kind -> the name of class k (data whose classes have names)
# data kind -> (what one class is called, the classes in words); the digits' words for every other kind
CLASS_WORDS = {"emoji": ("category", "emoji of the 9 Unicode categories"),
               "folder": ("class", "the folder's classes (one per sub-folder)"),
               "cifar10": ("class", "the 10 CIFAR-10 classes"),
               "fashion-mnist": ("class", "the 10 Fashion-MNIST classes")}
DIGIT_WORDS = ("digit", "the digits 0-9")


def data_kind(spec) -> str:
    """The kind of a dataset spec (a bundle's "data"): "emoji" for "emoji:DIR", "mnist", "digits", ...;
    "" for None."""
    return str(spec or "").partition(":")[0].lower()


def class_words(spec) -> tuple[str, str]:
    """(the noun for one class, the classes in words) of a dataset spec, for reports: ("category", "emoji of
    the 9 Unicode categories") for emoji, ("digit", "the digits 0-9") for the digits and MNIST."""
    return CLASS_WORDS.get(data_kind(spec), DIGIT_WORDS)


def background(config: dict) -> tuple[float, ...]:
    """The colour a model's pictures are drawn on: one value in [0, 1] per channel (C = config["shape"][0]).

    In this order: the bundle's own ``"background"`` (a list of 1 or C numbers in [0, 1], checked when
    the bundle loads); its data's (:data:`BACKGROUNDS`, by :func:`data_kind`: emoji are composited over
    white, :data:`EMOJI_BACKGROUND`); else black for a 1-channel model (digits, MNIST: light strokes on
    a dark background) and mid grey 0.5, the middle of the data range, for a colour model of natural
    pictures. The web page's canvas starts in this colour."""
    shape = config.get("shape") or [1]
    C = int(shape[0]) if len(shape) == 3 else 1
    own = config.get("background")
    if own is None:
        own = BACKGROUNDS.get(data_kind(config.get("data")), (0.0,) if C == 1 else (0.5,))
    own = tuple(float(v) for v in own)
    if len(own) not in (1, C):
        raise UserError(f"background {list(own)} has {len(own)} values for a {C}-channel model: give 1 or {C}")
    return own * C if len(own) == 1 else own


def class_names(config: dict) -> tuple[str, ...] | None:
    """The name of each class of a model's data (:data:`CLASS_NAMES`, by :func:`data_kind`: the emoji
    categories for "emoji"), or None where its classes have no names (digits: class k is the digit k) or
    their number is not the model's ``num_classes``."""
    names = CLASS_NAMES.get(data_kind(config.get("data")))
    return names if names is not None and len(names) == int(config.get("num_classes") or 0) else None

# name -> (mirrors, {file: published MD5}); the MD5s are those of the original distributions.
SOURCES = {
    "mnist": (["https://ossci-datasets.s3.amazonaws.com/mnist/"],
              {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
               "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
               "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",      # the test split: evaluation
               "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion-mnist": (["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
                      {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                       "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe"}),
    "cifar10": (["https://www.cs.toronto.edu/~kriz/"],
                {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"}),
}


# name -> {.gz file: published MD5 of its decompressed bytes}: a copy already in DIR that was re-compressed
# (other gzip settings, the same data) is accepted by these
UNPACKED_MD5 = {
    "mnist": {"train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
              "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
              "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
              "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637"},
}


def _md5(path: Path, unpack: bool = False) -> str:
    """The MD5 of a file's bytes (``unpack``: of its gunzipped bytes)."""
    h = hashlib.md5(usedforsecurity=False)
    with (gzip.open if unpack else open)(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _present_ok(name: str, target: Path, md5: str) -> bool:
    """Whether a file already in DIR is the published one: its MD5, or that of its decompressed bytes."""
    if _md5(target) == md5:
        return True
    unpacked = UNPACKED_MD5.get(name, {}).get(target.name)
    try:
        return unpacked is not None and _md5(target, unpack=True) == unpacked
    except (OSError, EOFError, zlib.error):
        return False


def fetch(name: str, root, mirrors=None, timeout: float = 60.0) -> Path:
    """Fetch the files of ``name`` into ``root`` (skipping those present), verify their MD5s, and
    unpack CIFAR-10's archive (only its data_batch_*.bin / test_batch.bin members). MNIST's files are its
    training and its test split. A file present is checked too: its MD5, or for a .gz of
    :data:`UNPACKED_MD5` that of its decompressed bytes. UserError on a mismatch or a failed download."""
    import tarfile
    import urllib.error
    import urllib.request
    default_mirrors, files = SOURCES[name]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for fname, md5 in files.items():
        target = root / fname
        if name == "cifar10" and all((root / f"data_batch_{i}.bin").exists() for i in range(1, 6)):
            continue
        if not target.exists():
            errors = []
            for base in mirrors or default_mirrors:
                try:
                    with urllib.request.urlopen(base + fname, timeout=timeout) as r, atomic_path(target) as tmp:
                        tmp.write_bytes(r.read())
                        if _md5(tmp) != md5:
                            raise UserError(f"{base + fname}: checksum mismatch (expected MD5 {md5})")
                    break
                except (urllib.error.URLError, OSError) as e:
                    errors.append(f"{base + fname}: {e}")
            else:
                raise UserError(f"could not download {fname} (offline?): {errors[-1] if errors else 'no mirror'}")
        elif not _present_ok(name, target, md5):
            raise UserError(f"{target}: checksum mismatch (expected MD5 {md5})")
        if name == "cifar10":
            with tarfile.open(target) as tar:
                for m in tar.getmembers():
                    base_name = Path(m.name).name
                    if m.isfile() and (base_name.startswith("data_batch_") or base_name == "test_batch.bin"):
                        with atomic_path(root / base_name) as tmp:
                            tmp.write_bytes(tar.extractfile(m).read())
    return root


def source_of(spec) -> str | None:
    """The :data:`SOURCES` name of a data spec's kind ("mnist", "fashion-mnist", "cifar10"), or None for
    data sdekit does not download."""
    kind = data_kind(spec)
    key = {"fashion_mnist": "fashion-mnist", "cifar-10": "cifar10"}.get(kind, kind)
    return key if key in SOURCES else None


def load_dataset(spec: str, size: int | None = None, channels: int | None = None, seed: int = 0,
                 n: int = 8192, download: bool = False) -> Dataset:
    """The dataset a ``--data`` spec names (see the module docstring)."""
    kind, _, arg = str(spec).partition(":")
    kind = kind.lower()
    if download and arg and source_of(spec):
        fetch(source_of(spec), arg)
    if kind == "digits" and not arg:
        return digits(size or 16, channels)
    if kind == "toy":
        return toy(arg, n=n, seed=seed)
    if kind == "folder" and arg:
        return image_folder(arg, size, channels)
    if kind in ("mnist", "fashion-mnist", "fashion_mnist") and arg:
        return mnist(arg, size, channels, name=kind.replace("_", "-"))
    if kind in ("cifar10", "cifar-10") and arg:
        return cifar10(arg, size, channels)
    if kind == "emoji" and arg:
        return emoji(arg, size, channels)
    if kind in ("mnist", "fashion-mnist", "fashion_mnist", "cifar10", "cifar-10", "folder", "emoji") and not arg:
        raise UserError(f"{kind} data needs its folder: {kind}:DIR")
    raise UserError(f"unknown dataset {spec!r}; use digits, toy:NAME, folder:PATH, mnist:DIR, "
                    f"fashion-mnist:DIR, cifar10:DIR or emoji:DIR")


# ---- pictures -------------------------------------------------------------------------------------

def grid(u: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images u [B, C, H, W] in [0, 1] into one uint8 array [H', W', C]."""
    u = u.detach().float().clamp(0, 1).cpu()
    B, C, H, W = u.shape
    rows, nrow = grid_shape(B, nrow)
    out = torch.zeros(C, rows * (H + pad) + pad, nrow * (W + pad) + pad)
    for i in range(B):
        r, c = divmod(i, nrow)
        out[:, pad + r * (H + pad): pad + r * (H + pad) + H, pad + c * (W + pad): pad + c * (W + pad) + W] = u[i]
    return (out.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def save_grid(path, u: torch.Tensor, nrow: int | None = None, scale: int = SCALE, overwrite: bool = True) -> Path:
    """Write images u [B, C, H, W] in [0, 1] as one grid picture (atomically; format from the suffix),
    enlarged ``scale`` times; an existing file is refused unless ``overwrite``."""
    return save_picture(path, picture(u, nrow, scale), overwrite)

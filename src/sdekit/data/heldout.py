"""The held-out evaluation subsets shipped with the package, and the function that makes them.

A model of MNIST or emoji is evaluated (``sdekit likelihood``, ``sdekit evaluate``) on images it never
saw. The datasets themselves are not shipped; small held-out subsets are, in ``sdekit/assets/heldout/``,
so that ``--data mnist`` or ``--data emoji`` without a folder works out of the box for the commands
that only read held-out data (training still needs ``mnist:DIR``):

=========  =========================================================================================
mnist.npz  1000 MNIST test images, the first 100 of each digit in the test file's order:
           ``images`` uint8 [1000, 1, 28, 28], ``labels`` uint8 [1000], ``index`` uint16 [1000] (the
           position of each image in MNIST's 10000-image test split, increasing)
emoji.npz  the 880 held-out emoji images (:func:`sdekit.data.datasets.emoji_split`; both artwork styles
           and every skin tone) at 32x32 RGB over white by :func:`sdekit.data.datasets.emoji`'s rule:
           ``images`` uint8 [880, 3, 32, 32], ``labels`` uint8 [880] (the category,
           index into :data:`sdekit.data.datasets.EMOJI_CATEGORIES`)
=========  =========================================================================================

Both are numpy ``.npz`` archives of plain uint8 / uint16 arrays, read with ``allow_pickle=False``.
:func:`make_heldout` writes them from the datasets' own folders (the layout of ``../shared/data``); the
README beside them says how it was run.

MNIST: Y. LeCun and C. Cortes, licence CC BY-SA 3.0. Emoji: Twemoji (Twitter, Inc. and other
contributors), CC BY 4.0; Noto Emoji (Google), Apache License 2.0.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sdekit.core.assets import ASSETS
from sdekit.core.errors import UserError
from sdekit.data.datasets import (EMOJI_CATEGORIES, Dataset, _channels, _find, _resize, _to_model, data_kind, emoji,
                                  read_idx)
from sdekit.core.io import atomic_path

__all__ = ["HELDOUT_DIR", "Subset", "SUBSETS", "PER_CLASS", "shipped", "load_heldout", "make_heldout", "mnist_subset",
           "emoji_subset"]

HELDOUT_DIR = ASSETS / "heldout"
PER_CLASS = 100          # MNIST test images per digit in the shipped subset


def _box(u: torch.Tensor, size: int) -> torch.Tensor:
    """Emoji's resolution rule (:func:`sdekit.data.datasets.emoji`): the mean of each block of pixels.
    The mean of 2x2 block means of a box-filtered image is the box filter from 64x64 itself."""
    if u.shape[-1] % size:
        raise UserError(f"the shipped emoji subset is {u.shape[-1]}x{u.shape[-1]}: size must divide it, got {size} "
                        "(give --data emoji:DIR for other sizes)")
    return F.avg_pool2d(u, u.shape[-1] // size)


@dataclass(frozen=True)
class Subset:
    """One shipped held-out subset: its file in :data:`HELDOUT_DIR`, what it holds in words, its
    number of classes, the dataset's rule for other resolutions (``resize(u, size)``) and its credit."""

    kind: str
    file: str
    what: str
    num_classes: int
    resize: Callable[[torch.Tensor, int], torch.Tensor]
    credit: str

    @property
    def path(self) -> Path:
        return HELDOUT_DIR / self.file

    def note(self) -> str:
        """The line a command prints when it reads this subset."""
        return (f"the shipped held-out subset: {self.what}; give --data {self.kind}:DIR for the full set")


SUBSETS = {
    "mnist": Subset("mnist", "mnist.npz", f"{10 * PER_CLASS} MNIST test images", 10, _resize,
                    "MNIST: Y. LeCun and C. Cortes, licence CC BY-SA 3.0"),
    "emoji": Subset("emoji", "emoji.npz", "880 held-out emoji (both styles)", len(EMOJI_CATEGORIES), _box,
                    "Twemoji (Twitter, Inc. and other contributors), licence CC BY 4.0; "
                    "Noto Emoji (Google), licence Apache 2.0"),
}


def shipped(spec) -> Subset | None:
    """The shipped :class:`Subset` a data spec means, or None: "mnist" / "emoji" without a folder mean
    their subset; "mnist:DIR", "digits" or any other spec do not."""
    kind, _, arg = str(spec or "").partition(":")
    return None if arg else SUBSETS.get(data_kind(kind))


def _read(subset: Subset) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, C, H, W], labels uint8 [N]) of a subset's file, checked."""
    path = subset.path
    if not path.is_file():
        raise UserError(f"{path}: the shipped {subset.kind} subset is not installed with this copy of sdekit "
                        f"(give --data {subset.kind}:DIR)")
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: not a readable held-out subset ({e})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != images.shape[:1] \
            or labels.size and int(labels.max()) >= subset.num_classes:
        raise UserError(f"{path}: images {images.dtype} {images.shape} and labels {labels.shape} are not a subset")
    return images, labels


def load_heldout(spec, size: int | None = None, channels: int | None = None) -> Dataset:
    """The shipped held-out subset of ``spec`` ("mnist" or "emoji", no folder) as a :class:`Dataset` in
    model space [-1, 1], [N, C, size, size] (default its own size; other sizes by the dataset's own
    rule: MNIST bilinear with antialiasing, emoji the box filter, which needs ``size`` to divide 32),
    ``channels`` 1 or 3 (default its own), int64 labels. UserError for any other spec."""
    subset = shipped(spec)
    if subset is None:
        raise UserError(f"no shipped held-out subset for {spec!r}; sdekit ships {', '.join(SUBSETS)} (without DIR)")
    images, labels = _read(subset)
    u = torch.from_numpy(images).float().div_(255)
    if size is not None and size != u.shape[-1]:
        u = subset.resize(u, size)
    return Dataset(_to_model(_channels(u, channels)), torch.from_numpy(labels.astype(np.int64)), subset.num_classes,
                   subset.kind)


# ---- making them -------------------------------------------------------------------------------------

def mnist_subset(root, per_class: int = PER_CLASS) -> dict[str, np.ndarray]:
    """The arrays of mnist.npz from MNIST's test files in ``root`` (t10k-images-idx3-ubyte[.gz],
    t10k-labels-idx1-ubyte[.gz]): the first ``per_class`` images of each digit, in the file's order."""
    root = Path(root)
    images = read_idx(_find(root, ["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"]))
    labels = read_idx(_find(root, ["t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz"]))
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise UserError(f"{root}: test images {images.shape} do not match labels {labels.shape}")
    keep = [np.flatnonzero(labels == c)[:per_class] for c in range(10)]
    if any(len(k) < per_class for k in keep):
        raise UserError(f"{root}: fewer than {per_class} test images of some digit")
    index = np.sort(np.concatenate(keep))
    return {"images": np.ascontiguousarray(images[index][:, None]), "labels": labels[index].astype(np.uint8),
            "index": index.astype(np.uint16)}


def emoji_subset(root) -> dict[str, np.ndarray]:
    """The arrays of emoji.npz from the emoji folder ``root``: :func:`sdekit.data.datasets.emoji`'s held-out
    split at 32x32 RGB, pixels rounded to 8 bits."""
    d = emoji(root, 32, 3, split="test")
    u = ((d.x + 1) / 2).clamp(0, 1).numpy()
    return {"images": np.rint(u * 255).astype(np.uint8), "labels": d.labels.numpy().astype(np.uint8)}


def make_heldout(out=HELDOUT_DIR, mnist_dir=None, emoji_dir=None) -> list[Path]:
    """Write mnist.npz (from the MNIST folder ``mnist_dir``) and emoji.npz (from the emoji folder ``emoji_dir``)
    into ``out``, each atomically and only for the folders given, compressed, with no pickled objects;
    return the paths written. The files depend only on the data (a rerun writes the same arrays)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, root, make in (("mnist", mnist_dir, mnist_subset), ("emoji", emoji_dir, emoji_subset)):
        if root is None:
            continue
        arrays = make(root)
        path = out / SUBSETS[kind].file
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        written.append(path)
    return written


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser(description="write the shipped held-out subsets (sdekit/assets/heldout)")
    p.add_argument("--mnist", help="MNIST's folder (the idx files)")
    p.add_argument("--emoji", help="the emoji folder (emoji.json, twemoji-64/, noto-64/)")
    p.add_argument("--out", default=str(HELDOUT_DIR), help=f"output folder (default: {HELDOUT_DIR})")
    a = p.parse_args()
    for path in make_heldout(a.out, a.mnist, a.emoji):
        print(path)

"""The judge of generated digits, and the held-out real images it judges them against.

A judge is a small CNN classifier (:class:`sdekit.nets.features.DigitsFeatures`) trained on a
dataset's training split only. Its penultimate layer is the feature space of KID and FID (realism,
:mod:`sdekit.metrics`); its class head says which digit an image shows (class fidelity: the
fraction of outputs judged the intended class). There is one judge per dataset, chosen by the
model's data spec (the ``"data"`` field of a bundle's config.json):

==========  ==============================  =======  ==========================================
data        weights                         size     held-out images (never trained on)
==========  ==============================  =======  ==========================================
digits      sdekit/assets/digits-features   16x16    the seeded 20% test split (359 images)
mnist:DIR   sdekit/assets/mnist-features    28x28    MNIST's 10000-image test split
emoji:DIR   sdekit/assets/emoji-features    32x32    the held-out emoji (:func:`sdekit.data.emoji_split`,
                                                     880 images in both styles), RGB, 9 categories
==========  ==============================  =======  ==========================================

:func:`held_out` divides the held-out images into a fixed KID/FID *reference* and disjoint *real*
images (the sources of simulated strokes and the real-vs-real comparison, measured exactly as the
outputs are). For MNIST both are halves of the test split, so neither the judge nor a model trained
on MNIST's training split has seen any of them. The digits test split is too small to halve; there
the real images come from the training split, as in the digits model's published numbers.

MNIST: Y. LeCun and C. Cortes, http://yann.lecun.com/exdb/mnist/, licence CC BY-SA 3.0.
Emoji: Twemoji (Twitter, Inc. and contributors), CC BY 4.0; Noto Emoji (Google), Apache License 2.0.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError
from .nets.features import (EMOJI_FEATURES_DIR, FEATURES_DIR, MNIST_FEATURES_DIR, DigitsFeatures, load_features,
                            split_digits)

__all__ = ["Judged", "JUDGED", "judged", "split", "load_judge", "HeldOut", "held_out", "predict"]

MNIST_CREDIT = "MNIST: Y. LeCun and C. Cortes, licence CC BY-SA 3.0"
EMOJI_CREDIT = ("Twemoji (Twitter, Inc. and other contributors), licence CC BY 4.0; "
                "Noto Emoji (Google), licence Apache 2.0")


@dataclass(frozen=True)
class Judged:
    """A dataset sdekit can judge: its judge's weights folder, native size and training length."""

    name: str
    weights: Path
    size: int
    epochs: int
    real_from_test: bool        # real images: the test split's other half (True) or the training split
    credit: str = ""
    channels: int = 1
    num_classes: int = 10


JUDGED = {
    "digits": Judged("digits", FEATURES_DIR, 16, 40, real_from_test=False, credit="scikit-learn's digits (UCI)"),
    "mnist": Judged("mnist", MNIST_FEATURES_DIR, 28, 4, real_from_test=True, credit=MNIST_CREDIT),
    "emoji": Judged("emoji", EMOJI_FEATURES_DIR, 32, 30, real_from_test=True, credit=EMOJI_CREDIT, channels=3,
                    num_classes=9),
}
NEEDS_FOLDER = ("mnist", "emoji")


def _parse(data) -> tuple[Judged, str]:
    kind, _, arg = str(data).partition(":")
    spec = JUDGED.get(kind.lower())
    if spec is None:
        raise UserError(f"no judge for data {data!r}: sdekit judges digits, mnist:DIR and emoji:DIR")
    if spec.name in NEEDS_FOLDER and not arg:
        raise UserError(f"{spec.name} data needs its folder: {spec.name}:DIR")
    return spec, arg


def judged(data) -> Judged:
    """The :class:`Judged` entry of a data spec ("digits", "mnist:DIR"); UserError for any other."""
    return _parse(data)[0]


def split(data, seed: int = 0, size: int | None = None):
    """(train_u, train_y, test_u, test_y) of ``data``: pixels in [0, 1], [N, C, size, size] (default
    the judge's size), labels int64 in 0..K-1. Digits: the seeded 80/20 split; MNIST: its own files;
    emoji: the fixed held-out split of :func:`sdekit.data.emoji_split`."""
    from .data import _resize, emoji
    spec, arg = _parse(data)
    if spec.name == "digits":
        tr, tr_y, te, te_y = split_digits(seed)
    elif spec.name == "emoji":
        size = size or spec.size
        (tr, tr_y), (te, te_y) = [((d.x + 1) / 2, d.labels) for d in
                                  (emoji(arg, size, split="train"), emoji(arg, size, split="test"))]
        return tr, tr_y, te, te_y
    else:
        (tr, tr_y), (te, te_y) = _mnist(arg, "train"), _mnist(arg, "t10k")
    size = size or spec.size
    return _resize(tr, size), tr_y, _resize(te, size), te_y


def _mnist(root, part: str):
    """MNIST's ``part`` ("train" or "t10k") from its idx files: pixels [N, 1, 28, 28] in [0, 1], labels."""
    from .data import _find, read_idx
    root = Path(root)
    try:
        img = read_idx(_find(root, [f"{part}-images-idx3-ubyte", f"{part}-images-idx3-ubyte.gz"]))
        lab = read_idx(_find(root, [f"{part}-labels-idx1-ubyte", f"{part}-labels-idx1-ubyte.gz"]))
    except UserError as e:
        raise UserError(f"{e}; MNIST's idx files are needed (give their folder: --data mnist:DIR)") from None
    if img.ndim != 3 or lab.shape != img.shape[:1]:
        raise UserError(f"{root}: {part} images {img.shape} do not match labels {lab.shape}")
    u = torch.from_numpy(img.copy())[:, None].float().div_(255)
    return u, torch.from_numpy(lab.astype("int64"))


def load_judge(data) -> DigitsFeatures:
    """The shipped judge of ``data`` in eval mode: ``net(u)`` features [B, 64], ``net.logits(u)``
    class scores [B, K], for pixels u in [0, 1] of shape [B, C, H, W] (resized to its size)."""
    spec = judged(data)
    if not (spec.weights / "config.json").is_file():
        raise UserError(f"the {spec.name} judge is not installed with this copy of sdekit "
                        f"(train it: sdekit train-features --data {data})")
    return load_features(spec.weights)


@torch.no_grad()
def predict(judge: DigitsFeatures, u: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The judged class of each image u [B, C, H, W] in [0, 1]: int64 [B]."""
    return torch.cat([judge.logits(b).argmax(1) for b in u.split(batch_size)])


@dataclass
class HeldOut:
    """Real images of one dataset at one size, pixels in [0, 1], [N, 1, H, W]; labels int64 [N]."""

    reference: torch.Tensor       # the KID / FID reference: unseen by the judge
    real: torch.Tensor            # disjoint from the reference: real-vs-real, simulated strokes
    real_labels: torch.Tensor
    train: torch.Tensor           # the training split (nearest-neighbour baseline)
    train_labels: torch.Tensor

    def pick(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """n of the real images and their labels, chosen by a permutation seeded with ``seed``."""
        if not 1 <= n <= len(self.real):
            raise UserError(f"asked for {n} real images; there are {len(self.real)}")
        idx = torch.randperm(len(self.real), generator=torch.Generator().manual_seed(seed))[:n]
        return self.real[idx], self.real_labels[idx]

    def pick_like(self, labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Distinct real images showing ``labels`` (int [N]), one each, chosen by ``seed``: [N, 1, H, W]."""
        g = torch.Generator().manual_seed(seed)
        idx = torch.empty(len(labels), dtype=torch.long)
        for c in labels.unique().tolist():
            want, have = (labels == c).nonzero().flatten(), (self.real_labels == c).nonzero().flatten()
            if len(want) > len(have):
                raise UserError(f"asked for {len(want)} real images of the digit {c}; there are {len(have)}")
            idx[want] = have[torch.randperm(len(have), generator=g)[:len(want)]]
        return self.real[idx]


def held_out(data, size: int | None = None) -> HeldOut:
    """The :class:`HeldOut` images of ``data`` at ``size`` (default the judge's), split as the shipped
    judge was trained (seed 0). MNIST's test split is halved by a fixed permutation (seed 0): the first
    half is the reference, the second the real images."""
    spec = judged(data)
    tr, tr_y, te, te_y = split(data, 0, size)
    if not spec.real_from_test:
        return HeldOut(te, tr, tr_y, tr, tr_y)
    perm = torch.randperm(len(te), generator=torch.Generator().manual_seed(0))
    ref, real = perm[: len(te) // 2], perm[len(te) // 2:]
    return HeldOut(te[ref], te[real], te_y[real], tr, tr_y)

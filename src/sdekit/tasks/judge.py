"""The judge of generated digits, and the held-out real images it judges them against.

A judge is a small CNN classifier (:class:`sdekit.models.nets.features.DigitsFeatures`) trained on a
dataset's training split only. Its penultimate layer is the feature space of KID and FID (realism,
:mod:`sdekit.tasks.metrics`); its class head says which digit an image shows (class fidelity: the
fraction of outputs judged the intended class). There is one judge per dataset, chosen by the
model's data spec (the ``"data"`` field of a bundle's config.json):

==========  ==============================  =======  ==========================================
data        weights                         size     held-out images (never trained on)
==========  ==============================  =======  ==========================================
digits      sdekit/assets/digits-features   16x16    the seeded 20% test split (359 images)
mnist:DIR   sdekit/assets/mnist-features    28x28    MNIST's 10000-image test split
emoji:DIR   sdekit/assets/emoji-features    32x32    the held-out emoji (:func:`sdekit.data.datasets.emoji_split`,
                                                     880 images in both styles), RGB, 9 categories
==========  ==============================  =======  ==========================================

``mnist`` and ``emoji`` without a folder mean the held-out subsets shipped with the package
(:mod:`sdekit.data.heldout`: 1000 MNIST test images, the 880 held-out emoji): enough to evaluate, and
they hold no training images (:attr:`HeldOut.train` is None). Any other labelled dataset (``folder:PATH``
with one sub-folder per class, ``cifar10:DIR``, ...) gets a judge of its own from :func:`train_features`
(``sdekit train-features``), trained on a seeded 80% and judged against the other 20%, as the digits;
:func:`judged_folder` reads such a folder back.

:func:`held_out` divides the held-out images into a fixed KID/FID *reference* and disjoint *real*
images (the sources of simulated strokes and the real-vs-real comparison, measured exactly as the
outputs are). For MNIST both are halves of the test split, so neither the judge nor a model trained
on MNIST's training split has seen any of them. The digits test split is too small to halve; there
the real images come from the training split, as in the digits model's published numbers.

MNIST: Y. LeCun and C. Cortes, http://yann.lecun.com/exdb/mnist/, licence CC BY-SA 3.0.
Emoji: Twemoji (Twitter, Inc. and contributors), CC BY 4.0; Noto Emoji (Google), Apache License 2.0.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from sdekit.core.errors import UserError
from sdekit.core.persist import read_config, save_folder
from sdekit.data.datasets import data_kind, digits
from sdekit.data.heldout import load_heldout, shipped
from sdekit.models.nets.features import (EMOJI_FEATURES_DIR, FEATURES_DIR, FORMAT, MNIST_FEATURES_DIR, DigitsFeatures,
                                         load_features)
from sdekit.models.nets.features import FORMAT as FEATURES
from sdekit.data.datasets import _resize, emoji
from sdekit.data.datasets import _find, read_idx
from sdekit.data.datasets import load_dataset

__all__ = ["Judged", "JUDGED", "judged", "judged_folder", "split", "load_judge", "HeldOut", "held_out", "predict",
           "split_digits", "train_features", "GENERIC_EPOCHS"]

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
    split_seed: int = 0         # the seed of the train/test split the judge was trained with (digits, other data)

    def load(self) -> DigitsFeatures:
        """The judge network in eval mode: ``net(u)`` features [B, 64], ``net.logits(u)`` class scores
        [B, K], for pixels u in [0, 1] of shape [B, C, H, W] (resized to its size). UserError if its
        weights are missing (naming the command that trains them) or unreadable."""
        if not (self.weights / "config.json").is_file():
            raise UserError(f"the {self.name} judge is not installed with this copy of sdekit "
                            f"(train it: sdekit train-features --data {self.name}:DIR --out DIR)")
        return load_features(self.weights)


JUDGED = {
    "digits": Judged("digits", FEATURES_DIR, 16, 40, real_from_test=False, credit="scikit-learn's digits (UCI)"),
    "mnist": Judged("mnist", MNIST_FEATURES_DIR, 28, 4, real_from_test=True, credit=MNIST_CREDIT),
    "emoji": Judged("emoji", EMOJI_FEATURES_DIR, 32, 30, real_from_test=True, credit=EMOJI_CREDIT, channels=3,
                    num_classes=9),
}
NEEDS_FOLDER = ("mnist", "emoji")
GENERIC_EPOCHS = 20         # the training length of the judge of data sdekit ships no judge for


def _parse(data, folder: bool = True) -> tuple[Judged, str]:
    kind, _, arg = str(data).partition(":")
    spec = JUDGED.get(kind.lower())
    if spec is None:
        raise UserError(f"no judge for data {data!r}: sdekit judges digits, mnist:DIR and emoji:DIR; for other "
                        f"labelled data train one (sdekit train-features --data {data} --out DIR) and pass "
                        "--judge DIR")
    if folder and spec.name in NEEDS_FOLDER and not arg:
        raise UserError(f"{spec.name} data needs its folder: {spec.name}:DIR")
    return spec, arg


def judged(data, folder: bool = True) -> Judged:
    """The :class:`Judged` entry of a data spec ("digits", "mnist:DIR"); UserError for any other. With
    ``folder`` False "mnist" and "emoji" need no DIR (the judge's weights and the shipped held-out
    subsets need none)."""
    return _parse(data, folder)[0]


def judged_folder(folder) -> Judged:
    """The :class:`Judged` entry of a features folder written by :func:`train_features` (``sdekit
    train-features --out FOLDER``): a shipped kind's entry with these weights, or for other data the
    entry its config records (data spec, size, channels, classes, split seed). UserError if ``folder``
    holds no feature network."""
    folder = Path(folder)
    cfg = read_config(folder, FEATURES, "feature network")
    net, data = cfg.get("network") or {}, cfg.get("data")
    if not data or not {"size", "in_channels", "num_classes"} <= net.keys():
        raise UserError(f"{folder}: a feature network without its data or network in config.json")
    seed = int(cfg.get("seed", cfg.get("split_seed", 0)))
    base = JUDGED.get(data_kind(data))
    if base is not None:
        return replace(base, weights=folder, size=int(net["size"]), split_seed=seed)
    return Judged(str(data), folder, int(net["size"]), int(cfg.get("epochs") or GENERIC_EPOCHS), real_from_test=False,
                  credit=cfg.get("credit", ""), channels=int(net["in_channels"]), num_classes=int(net["num_classes"]),
                  split_seed=seed)


def split(data, seed: int = 0, size: int | None = None, channels: int | None = None):
    """(train_u, train_y, test_u, test_y) of ``data``: pixels in [0, 1], [N, C, size, size] (default
    the judge's size), labels int64 in 0..K-1. Digits: the seeded 80/20 split; MNIST: its own files;
    emoji: the fixed held-out split of :func:`sdekit.data.datasets.emoji_split`; any other labelled data
    (:func:`sdekit.data.datasets.load_dataset`, read at ``size`` and ``channels``, default its own): the
    seeded 80/20 split, as the digits. UserError for unlabelled data."""
    if data_kind(data) not in JUDGED:
        return _split_other(data, seed, size, channels)
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


def _seeded_split(u, y, seed: int, test_fraction: float = 0.2):
    """(train_u, train_y, test_u, test_y): a seeded permutation's first ``test_fraction`` is the test split."""
    perm = torch.randperm(len(u), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(u)))
    te, tr = perm[:n_test], perm[n_test:]
    return u[tr], y[tr], u[te], y[te]


def _split_other(data, seed: int, size: int | None, channels: int | None):
    """:func:`split` of data sdekit ships no judge for: the seeded 80/20 split of its images."""
    ds = load_dataset(data, size, channels)
    if not ds.is_image or ds.labels is None or ds.num_classes < 2:
        raise UserError(f"{data}: a judge is a classifier and needs labelled images of 2 or more classes "
                        "(folder:PATH with one sub-folder per class)")
    return _seeded_split((ds.x + 1) / 2, ds.labels, seed)


def load_judge(data) -> DigitsFeatures:
    """The shipped judge of ``data`` ("digits", "mnist", "mnist:DIR", "emoji", ...) in eval mode
    (:meth:`Judged.load`); UserError for data sdekit ships no judge for."""
    return judged(data, folder=False).load()


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
    train: torch.Tensor | None    # the training split (nearest-neighbour baseline); None: not at hand
    train_labels: torch.Tensor | None
    note: str = ""                # where the images come from, when a shipped subset stands in for the data

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


def held_out(data, size: int | None = None, judge: Judged | None = None) -> HeldOut:
    """The :class:`HeldOut` images of ``data`` at ``size`` (default the judge's), split as the judge was
    trained (``judge``: default the shipped one of ``data``, split seed 0). MNIST's and emoji's test
    splits are halved by a fixed permutation (seed 0): the first half is the reference, the second the
    real images. "mnist" or "emoji" without a folder: the shipped held-out subset
    (:func:`sdekit.data.heldout.load_heldout`), halved the same way, with no training images and a
    ``note`` saying so."""
    spec = judge or judged(data, folder=False)
    subset = shipped(data)
    if subset is not None:
        d = load_heldout(data, size or spec.size, spec.channels)
        tr = tr_y = None
        te, te_y = (d.x + 1) / 2, d.labels
    else:
        tr, tr_y, te, te_y = split(data, spec.split_seed, size or spec.size, spec.channels)
    note = "" if subset is None else subset.note()
    if not spec.real_from_test:
        return HeldOut(te, tr, tr_y, tr, tr_y, note)
    perm = torch.randperm(len(te), generator=torch.Generator().manual_seed(0))
    ref, real = perm[: len(te) // 2], perm[len(te) // 2:]
    return HeldOut(te[ref], te[real], te_y[real], tr, tr_y, note)


def split_digits(seed: int = 0, test_fraction: float = 0.2):
    """The digits (pixels in [0, 1], 16x16) split once, by a seeded permutation, into
    (train_u, train_y, test_u, test_y). The test split is the held-out reference for KID."""
    d = digits(16)
    return _seeded_split((d.x + 1) / 2, d.labels, seed, test_fraction)


def _augment(u: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shifts by up to 1 pixel and mild pixel noise: features robust to small misplacement."""
    B = u.shape[0]
    pad = F.pad(u, (1, 1, 1, 1))
    dx, dy = torch.randint(0, 3, (2,), generator=g).tolist()
    u = pad[..., dy:dy + u.shape[-2], dx:dx + u.shape[-1]]
    return (u + 0.05 * torch.randn(u.shape, generator=g)).clamp(0, 1) if B else u


def train_features(out=FEATURES_DIR, epochs: int | None = None, seed: int = 0, progress: bool = True,
                   data: str = "digits", batch_size: int = 64, lr: float = 2e-3, dtype=torch.float32,
                   size: int | None = None, channels: int | None = None) -> dict:
    """Train the feature network of ``data`` ("digits", "mnist:DIR", "emoji:DIR", or any labelled image
    data such as "folder:PATH" with one sub-folder per class, see :mod:`sdekit.tasks.judge`) on that
    dataset's training split only, save it in ``out`` (weights stored in ``dtype``) and return its
    config, which holds the accuracy on the test split (a fraction in [0, 1]).

    ``epochs`` defaults to the dataset's own (digits 40, MNIST 4, emoji 30, other data
    :data:`GENERIC_EPOCHS`). ``size`` and ``channels`` (other data only; default the data's own) are the
    images the judge reads: a model's resolution and channels. Adam with a cosine schedule over the
    epochs, batches drawn by a seeded permutation, random 1-pixel shifts and mild pixel noise: with one
    torch thread on CPU the run is bitwise reproducible. Raises UserError for unknown or unlabelled data."""
    from sdekit.core.bars import progress_bar
    if data_kind(data) in JUDGED:
        spec = judged(data)
        if size is not None or channels is not None:
            raise UserError(f"the {spec.name} judge reads its own images ({spec.channels}x{spec.size}x{spec.size}): "
                            "size and channels apply to other data")
        tr_u, tr_y, te_u, te_y = split(data, seed)
    else:
        tr_u, tr_y, te_u, te_y = _split_other(data, seed, size, channels)
        C, S, _ = tr_u.shape[1:]
        spec = Judged(str(data), Path(out), S, GENERIC_EPOCHS, real_from_test=False, channels=C,
                      num_classes=int(max(tr_y.max(), te_y.max())) + 1, split_seed=seed)
    epochs = spec.epochs if epochs is None else int(epochs)
    if epochs < 1 or batch_size < 1:
        raise UserError(f"epochs and batch size must be positive, got {epochs} and {batch_size}")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = DigitsFeatures(spec.channels, spec.size, num_classes=spec.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    batches = (len(tr_u) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    bar = progress_bar(total=epochs * batches, disable=not progress, desc=f"features ({spec.name})", unit="batch")
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(tr_u), generator=g).split(batch_size):
            loss = F.cross_entropy(net.logits(_augment(tr_u[idx], g)), tr_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update()
        sched.step()
    bar.close()
    net.eval()
    as_stored = lambda: net.load_state_dict({k: v.to(dtype).to(v.dtype) for k, v in net.state_dict().items()})
    with torch.no_grad():
        as_stored()                                     # measure the network as it is stored
        sq = sum(float(net.body(net._prep(b)).pow(2).sum()) for b in tr_u.split(1000))
        net.scale.fill_(math.sqrt(sq / (len(tr_u) * net.num_features)))
        as_stored()
        pred = torch.cat([net.logits(b).argmax(1) for b in te_u.split(1000)])
        acc = float((pred == te_y).float().mean())
    S = spec.size
    cfg = {"format": FORMAT, "network": net.cfg, "input": f"pixels in [0, 1], [B, {spec.channels}, {S}, {S}]",
           "data": spec.name, "train_images": len(tr_u), "test_images": len(te_u), "seed": seed,
           "epochs": epochs, "batch_size": batch_size, "lr": lr, "dtype": str(dtype).replace("torch.", ""),
           "test_accuracy": round(acc, 4), "credit": spec.credit}
    save_folder(out, cfg, net.state_dict(), dtype)
    return cfg

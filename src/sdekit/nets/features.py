"""A small digits classifier whose penultimate layer is the feature space for KID / FID.

Inception weights cannot be fetched here, so realism is measured in the feature space of a network
trained on the data itself (as "FID with a domain classifier" is done for MNIST-like data). The
network takes pixels u in [0, 1], shape [B, 1, size, size], and returns ``num_features`` features;
``logits`` adds the linear class head. Weights ship per dataset (config.json + model.safetensors),
each trained by :func:`train_features` on that dataset's training split only:

* ``sdekit/assets/digits-features/``: scikit-learn's digits at 16x16 (the seeded 80% split);
* ``sdekit/assets/mnist-features/``: MNIST at 28x28 (its 60000 training images; MNIST by Y. LeCun
  and C. Cortes, licence CC BY-SA 3.0);
* ``sdekit/assets/emoji-features/``: colour emoji at 32x32 RGB, 9 categories (the training split of
  :func:`sdekit.data.emoji`; Twemoji CC BY 4.0, Noto Emoji Apache 2.0).

:mod:`sdekit.judge` picks the one that matches a model's data.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from ..persist import check_fields, folder_of, load_module, read_config, save_folder

__all__ = ["DigitsFeatures", "load_features", "train_features", "split_digits", "FEATURES_DIR",
           "MNIST_FEATURES_DIR", "EMOJI_FEATURES_DIR"]

FORMAT = "sdekit-features"
FEATURES_DIR = Path(__file__).resolve().parent.parent / "assets" / "digits-features"
MNIST_FEATURES_DIR = FEATURES_DIR.parent / "mnist-features"
EMOJI_FEATURES_DIR = FEATURES_DIR.parent / "emoji-features"


class DigitsFeatures(nn.Module):
    """conv(32) - conv(32) - pool - conv(64) - pool - fc(num_features) - [fc(classes)]."""

    def __init__(self, in_channels: int = 1, size: int = 16, num_features: int = 64, num_classes: int = 10):
        super().__init__()
        self.cfg = {"in_channels": in_channels, "size": size, "num_features": num_features, "num_classes": num_classes}
        self.num_features = num_features
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, num_features), nn.ReLU())
        self.head = nn.Linear(num_features, num_classes)
        # features are divided by their RMS over the training images, so that d = num_features
        # coordinates of order 1 feed KID's kernel (x.y / d + 1)^3 as Inception features do
        self.register_buffer("scale", torch.ones(()))

    def _prep(self, u: torch.Tensor) -> torch.Tensor:
        if u.dtype == torch.uint8:
            u = u.float() / 255
        C, S = self.cfg["in_channels"], self.cfg["size"]
        if u.dim() != 4 or u.shape[1] != C:
            raise UserError(f"feature network expects images [B, {C}, H, W], got {tuple(u.shape)}")
        if tuple(u.shape[-2:]) != (S, S):
            u = F.interpolate(u.float(), size=(S, S), mode="bilinear", align_corners=False, antialias=True)
        return (u.float() * 2 - 1).to(self.head.weight.dtype)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Features [B, num_features] of pixels u in [0, 1] (or uint8), in the weights' dtype."""
        return self.body(self._prep(u)) / self.scale

    def logits(self, u: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self._prep(u)))


def split_digits(seed: int = 0, test_fraction: float = 0.2):
    """The digits (pixels in [0, 1], 16x16) split once, by a seeded permutation, into
    (train_u, train_y, test_u, test_y). The test split is the held-out reference for KID."""
    from ..data import digits
    d = digits(16)
    u = (d.x + 1) / 2
    perm = torch.randperm(len(u), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(u)))
    te, tr = perm[:n_test], perm[n_test:]
    return u[tr], d.labels[tr], u[te], d.labels[te]


def _augment(u: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shifts by up to 1 pixel and mild pixel noise: features robust to small misplacement."""
    B = u.shape[0]
    pad = F.pad(u, (1, 1, 1, 1))
    dx, dy = torch.randint(0, 3, (2,), generator=g).tolist()
    u = pad[..., dy:dy + u.shape[-2], dx:dx + u.shape[-1]]
    return (u + 0.05 * torch.randn(u.shape, generator=g)).clamp(0, 1) if B else u


def train_features(out=FEATURES_DIR, epochs: int | None = None, seed: int = 0, progress: bool = True,
                   data: str = "digits", batch_size: int = 64, lr: float = 2e-3, dtype=torch.float32) -> dict:
    """Train the feature network of ``data`` ("digits" or "mnist:DIR", see :mod:`sdekit.judge`) on
    that dataset's training split only, save it in ``out`` (weights stored in ``dtype``) and return
    its config, which holds the accuracy on the test split (a fraction in [0, 1]).

    ``epochs`` defaults to the dataset's own (digits 40, MNIST 4). Adam with a cosine schedule over
    the epochs, batches drawn by a seeded permutation, random 1-pixel shifts and mild pixel noise: with one
    torch thread on CPU the run is bitwise reproducible. Raises UserError for unknown data."""
    from tqdm.auto import tqdm
    from ..judge import judged, split
    spec = judged(data)
    epochs = spec.epochs if epochs is None else int(epochs)
    if epochs < 1 or batch_size < 1:
        raise UserError(f"epochs and batch size must be positive, got {epochs} and {batch_size}")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    tr_u, tr_y, te_u, te_y = split(data, seed)
    net = DigitsFeatures(spec.channels, spec.size, num_classes=spec.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    batches = (len(tr_u) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    bar = tqdm(total=epochs * batches, disable=not progress, desc=f"features ({spec.name})", unit="batch")
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


def load_features(path=None) -> DigitsFeatures:
    """The shipped feature network (or one saved by :func:`train_features` at ``path``), in eval mode,
    with ``.test_accuracy`` (in [0, 1], or None). Every config field is checked, and against the
    weights: a missing, corrupt or inconsistent folder is one UserError line."""
    folder = folder_of(path, FEATURES_DIR)
    cfg = read_config(folder, FORMAT, "feature network")
    check_fields(cfg, folder / "config.json", required=("network",))
    net = load_module(lambda: DigitsFeatures(**cfg["network"]), folder, "feature network")
    net.test_accuracy = cfg.get("test_accuracy")
    return net.eval().requires_grad_(False)


if __name__ == "__main__":
    print(train_features())        # the digits network; `sdekit train-features --data mnist:DIR` for MNIST

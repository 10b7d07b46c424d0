"""A small digits classifier whose penultimate layer is the feature space for KID / FID.

Inception weights cannot be fetched here, so realism is measured in the feature space of a network
trained on the data itself (as "FID with a domain classifier" is done for MNIST-like data). The
network takes pixels u in [0, 1], shape [B, 1, 16, 16], and returns ``num_features`` features;
``logits`` adds the linear class head. Weights ship at ``sdekit/assets/digits-features/``
(config.json + model.safetensors), trained by :func:`train_features` on the digits' training split.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from ..persist import check_fields, folder_of, load_module, read_config, save_folder

__all__ = ["DigitsFeatures", "load_features", "train_features", "split_digits", "FEATURES_DIR"]

FORMAT = "sdekit-features"
FEATURES_DIR = Path(__file__).resolve().parent.parent / "assets" / "digits-features"


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
        return u.float() * 2 - 1

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Features [B, num_features] of pixels u in [0, 1] (or uint8)."""
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


def train_features(out=FEATURES_DIR, epochs: int = 40, seed: int = 0, progress: bool = True) -> dict:
    """Train the classifier on the digits' training split; save it; return its test accuracy."""
    from tqdm.auto import tqdm
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    tr_u, tr_y, te_u, te_y = split_digits(seed)
    net = DigitsFeatures()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in tqdm(range(epochs), disable=not progress, desc="features"):
        net.train()
        for idx in torch.randperm(len(tr_u), generator=g).split(64):
            loss = F.cross_entropy(net.logits(_augment(tr_u[idx], g)), tr_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        acc = float((net.logits(te_u).argmax(1) == te_y).float().mean())
        net.scale.fill_(float(net.body(net._prep(tr_u)).pow(2).mean().sqrt()))
    cfg = {"format": FORMAT, "network": net.cfg, "input": "pixels in [0, 1], [B, 1, 16, 16]",
           "data": "digits", "split_seed": seed, "test_fraction": 0.2, "epochs": epochs,
           "test_accuracy": round(acc, 4)}
    save_folder(out, cfg, net.state_dict())
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
    print(train_features())

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
  :func:`sdekit.data.datasets.emoji`; Twemoji CC BY 4.0, Noto Emoji Apache 2.0).

:mod:`sdekit.tasks.judge` picks the one that matches a model's data.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from sdekit.core.errors import UserError
from sdekit.core.persist import check_fields, folder_of, load_module, read_config, save_folder
from sdekit.core.assets import ASSETS

__all__ = ["DigitsFeatures", "load_features", "FEATURES_DIR",
           "MNIST_FEATURES_DIR", "EMOJI_FEATURES_DIR"]

FORMAT = "sdekit-features"
FEATURES_DIR = ASSETS / "digits-features"
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


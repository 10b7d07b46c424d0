"""A time-dependent (noise-conditional) classifier p_t(y | x_t) for classifier guidance.

Like the score networks (precond.py), it sees the scaled input c_in y, y = x / s(t), c_in =
1/sqrt(sigma^2 + sigma_data^2), and the noise label c_noise = ln(sigma(t)) / 4, so one trained
classifier serves every SDE of the family. Trained by cross-entropy on x_t ~ p_0t(x_t | x_0)
(Song et al. 2021, sec. 5 and App. I.1), with log sigma uniform over the SDE's range.
Saved as ``config.json`` + ``model.safetensors`` through :mod:`sdekit.core.persist` (never pickled).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sdekit.core.persist import check_fields, folder_of, load_module, read_config, save_folder
from sdekit.core.sde import SDE, _as_t, _bcast, get_sde
from sdekit.models.nets.embedding import NoiseEmbedding
from sdekit.models.nets.unet import Down, ResBlock, _groups
from sdekit.core.assets import ASSETS

FORMAT = "sdekit-classifier"
BUNDLED = ASSETS / "digits-classifier"

__all__ = ["NoiseClassifier", "train_classifier", "accuracy_by_noise", "save_classifier", "load_classifier"]


class NoiseClassifier(nn.Module):
    """logits(x, t) [B, K] for data x at time t of ``sde``: ResBlocks with the noise embedding, pooled."""

    def __init__(self, sde: SDE, in_channels: int = 1, num_classes: int = 10, ch: int = 16,
                 ch_mult=(1, 2, 2), dropout: float = 0.1, sigma_data: float = 0.5):
        super().__init__()
        self.sde = sde
        self.cfg = {"in_channels": in_channels, "num_classes": num_classes, "ch": ch, "ch_mult": list(ch_mult),
                    "dropout": dropout, "sigma_data": sigma_data}
        self.num_classes, self.sigma_data = int(num_classes), float(sigma_data)
        emb = 4 * ch
        self.embed = NoiseEmbedding("fourier", ch, emb)
        self.stem = nn.Conv2d(in_channels, ch, 3, padding=1)
        blocks, c = [], ch
        for i, m in enumerate(ch_mult):
            blocks.append(ResBlock(c, ch * m, emb, dropout))
            c = ch * m
            if i < len(ch_mult) - 1:
                blocks.append(Down(c))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU())
        self.out = nn.Linear(c, num_classes)

    def config(self) -> dict:
        return dict(self.cfg)

    def check_shape(self, shape: tuple) -> None:
        """ValueError unless images of ``shape`` (C, H, W) have this network's in_channels."""
        C = self.cfg["in_channels"]
        if len(shape) != 3 or shape[0] != C:
            raise ValueError(f"data shape {list(shape)} does not fit the classifier, which takes [{C}, H, W]")

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        """Logits [B, K] in the weights' dtype (x is cast to it)."""
        t = _as_t(t, x)
        s, sig = self.sde.scale(t), self.sde.sigma(t)
        y = x / _bcast(s, x) * _bcast((sig ** 2 + self.sigma_data ** 2).rsqrt(), x)
        emb = self.embed(sig.log() / 4)
        h = self.stem(y.to(self.stem.weight.dtype))
        for b in self.blocks:
            h = b(h, emb)
        return self.out(self.head(h).mean((2, 3)))


def _noisy(sde: SDE, x0: torch.Tensor, g: torch.Generator):
    """x_t ~ p_0t(. | x0) with log sigma(t) uniform on [log sigma(eps), log sigma(T)]; returns (x_t, t)."""
    ends = sde.sigma(torch.tensor([sde.eps, sde.T], dtype=torch.float64)).log()
    u = torch.rand(x0.shape[0], generator=g, dtype=torch.float64)
    t = sde.sigma_inv((ends[0] + u * (ends[1] - ends[0])).exp()).to(x0.dtype)
    return sde.perturb(x0, t, g), t


def train_classifier(net: NoiseClassifier, x: torch.Tensor, labels: torch.Tensor, steps: int = 3000,
                     batch_size: int = 64, lr: float = 2e-3, seed: int = 0, progress: bool = True) -> NoiseClassifier:
    """Cross-entropy on noisy data, AdamW with a cosine learning rate."""
    from sdekit.core.bars import progress_bar
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    net.train()
    bar = progress_bar(range(steps), disable=not progress, desc="classifier")
    for i in bar:
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=g)
        xt, t = _noisy(net.sde, x[idx], g)
        loss = F.cross_entropy(net(xt, t), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if i % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return net.eval()


@torch.no_grad()
def accuracy_by_noise(net: NoiseClassifier, x: torch.Tensor, labels: torch.Tensor, sigmas=(0.01, 0.1, 0.3, 0.5, 1.0, 2.0, 5.0),
                      seed: int = 0) -> dict:
    """Accuracy on x_t = s(t) (x0 + sigma n) at each noise-to-signal ratio sigma: {sigma: accuracy}."""
    g = torch.Generator().manual_seed(seed)
    net.eval()
    out = {}
    for sig in sigmas:
        t = net.sde.sigma_inv(torch.full((x.shape[0],), float(sig), dtype=torch.float64)).to(x.dtype)
        xt = net.sde.perturb(x, t, g)
        out[float(sig)] = float((net(xt, t).argmax(1) == labels).float().mean())
    return out


def save_classifier(folder, net: NoiseClassifier, shape, data_range=(-1.0, 1.0), data: str | None = None,
                    extra: dict | None = None) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` (atomically); ``shape`` is the
    data's (C, H, W), ``data_range`` its model-space [lo, hi]."""
    cfg = {"format": FORMAT, "version": 1, "shape": [int(s) for s in shape], "num_classes": net.num_classes,
           "data_range": [float(v) for v in data_range], "data": data, "sde": net.sde.config(),
           "network": net.config(), **(extra or {})}
    return save_folder(folder, cfg, net.state_dict())


def _build(cfg: dict, sde: SDE | None) -> NoiseClassifier:
    net = NoiseClassifier(sde or get_sde(cfg["sde"]), **cfg["network"])
    net.check_shape(tuple(cfg["shape"]))
    if cfg["num_classes"] != net.num_classes:
        raise ValueError(f"num_classes {cfg['num_classes']} is not the network's {net.num_classes}")
    return net


def load_classifier(path=None, sde: SDE | None = None) -> NoiseClassifier:
    """A saved classifier (default: the bundled digits classifier) in eval mode, with ``.shape``
    the data's (C, H, W); ``sde`` overrides its SDE. Every config field is checked, and against the
    weights: a missing, corrupt or inconsistent folder is one UserError line."""
    folder = folder_of(path, BUNDLED)
    cfg = read_config(folder, FORMAT, "classifier")
    check_fields(cfg, folder / "config.json", required=("shape", "num_classes", "sde", "network"))
    net = load_module(lambda: _build(cfg, sde), folder, "classifier")
    net.shape = tuple(cfg["shape"])
    return net.eval()


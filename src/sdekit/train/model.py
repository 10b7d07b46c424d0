"""The network a training config describes, and network + loss as one module for DDP."""
from __future__ import annotations

import numpy as np
from torch import nn

from ..data import Dataset
from ..errors import UserError
from ..losses import get_loss
from ..nets import Preconditioned, build_net
from ..sde import get_sde
from .config import TrainConfig

__all__ = ["build_model", "LossModule"]


def build_model(cfg: TrainConfig, data: Dataset) -> Preconditioned:
    """A fresh preconditioned U-Net (images) or MLP (vectors) for ``data``; UserError if they do not fit."""
    sde = get_sde(cfg.sde)
    num_classes = data.num_classes if cfg.class_cond else 0
    if cfg.class_cond and not data.num_classes:
        raise UserError(f"--class-cond needs labelled data; {data.name} has none")
    kind = cfg.net if cfg.net != "auto" else ("unet" if data.is_image else "mlp")
    if kind == "unet":
        if not data.is_image:
            raise UserError(f"the U-Net needs image data; {data.name} has shape {data.shape}")
        C, H, W = data.shape
        if H != W:
            raise UserError(f"images must be square, got {H}x{W}")
        net_cfg = {"type": "unet", "in_channels": C, "resolution": H, "ch": cfg.ch, "ch_mult": list(cfg.ch_mult),
                   "num_res_blocks": cfg.num_res_blocks, "attn_resolutions": list(cfg.attn), "dropout": cfg.dropout,
                   "embedding": cfg.embedding, "num_classes": num_classes}
    elif kind == "mlp":
        net_cfg = {"type": "mlp", "dim": int(np.prod(data.shape)), "hidden": cfg.hidden, "depth": cfg.depth,
                   "embedding": cfg.embedding, "num_classes": num_classes}
    else:
        raise UserError(f"unknown network {cfg.net!r}; choose auto, unet or mlp")
    try:
        return Preconditioned(build_net(net_cfg), sde, cfg.precond, cfg.sigma_data)
    except ValueError as e:
        raise UserError(str(e)) from None


class LossModule(nn.Module):
    """model + loss as one module, so DistributedDataParallel sees the whole forward pass."""

    def __init__(self, model: Preconditioned, cfg: TrainConfig):
        super().__init__()
        self.model, self.cfg, self.fn = model, cfg, get_loss(cfg.loss)

    def forward(self, x0, labels, draws):
        c, extra = self.cfg, {}
        if c.loss == "dsm":
            extra = {"weighting": c.weighting}
        elif c.loss == "edm":
            extra = {"sigma_data": c.sigma_data}
        elif c.loss == "flow":
            extra = {"density": c.time_density, "mean": c.ln_mean, "std": c.ln_std}
        return self.fn(self.model, self.model.sde, x0, labels, reduce=c.reduce, **draws, **extra)

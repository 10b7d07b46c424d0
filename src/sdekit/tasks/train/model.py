"""The network a training config describes, and network + loss as one module for DDP."""
from __future__ import annotations

import numpy as np
from torch import nn

from sdekit.data.datasets import Dataset
from sdekit.core.errors import UserError
from sdekit.tasks.losses import get_loss
from sdekit.models.nets import Preconditioned, build_net
from sdekit.core.sde import get_sde
from sdekit.tasks.train.config import TrainConfig

__all__ = ["build_model", "LossModule"]


def build_model(cfg: TrainConfig, data: Dataset) -> Preconditioned:
    """A fresh preconditioned U-Net (images) or MLP (vectors) for ``data``; UserError if they do not fit.
    With a ``teacher`` (consistency distillation): a copy of the teacher's network and SDE, parametrised as a
    consistency function (Song et al. 2023 initialise the student from the teacher)."""
    if cfg.teacher is not None:
        return student_of(load_teacher(cfg, data), cfg)
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


def init_from(model: Preconditioned, source: str) -> None:
    """Copy the weights of the sdekit bundle ``source`` into ``model`` (UserError unless the bundle's
    network, parametrisation and SDE are the ones ``model`` has)."""
    from sdekit.models.bundle import load
    init = load(source)
    if not isinstance(init.net, Preconditioned):
        raise UserError(f"--init {source}: only sdekit's own bundles can start a run")
    mine = (model.net.config(), model.config(), model.sde.config())
    theirs = (init.net.net.config(), init.net.config(), init.net.sde.config())
    for what, a, b in zip(("network", "parametrisation", "SDE"), mine, theirs):
        if a != b:
            raise UserError(f"--init {source}: its {what} {b} is not this run's {a}")
    model.load_state_dict(init.net.state_dict())


def load_teacher(cfg: TrainConfig, data: Dataset) -> Preconditioned:
    """The frozen teacher network of ``cfg.teacher`` (UserError unless it is an sdekit model of the data's shape)."""
    from sdekit.models.bundle import load
    teacher = load(cfg.teacher)
    if not isinstance(teacher.net, Preconditioned):
        raise UserError(f"{cfg.teacher}: only sdekit's own models can be distilled")
    if tuple(teacher.shape) != tuple(data.shape):
        raise UserError(f"the teacher takes {tuple(teacher.shape)} images, the data are {tuple(data.shape)}")
    net = teacher.net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def student_of(teacher: Preconditioned, cfg: TrainConfig) -> Preconditioned:
    import copy
    net = copy.deepcopy(teacher.net)
    for p in net.parameters():
        p.requires_grad_(True)
    return Preconditioned(net, teacher.sde, "consistency", teacher.sigma_data)


class LossModule(nn.Module):
    """model + loss as one module, so DistributedDataParallel sees the whole forward pass."""

    def __init__(self, model: Preconditioned, cfg: TrainConfig, teacher: Preconditioned | None = None):
        super().__init__()
        self.model, self.cfg, self.fn = model, cfg, get_loss(cfg.loss)
        self.teacher = [teacher]          # a list: not a submodule (no gradients, not in the state)

    def forward(self, x0, labels, draws):
        c, extra = self.cfg, {}
        if c.loss == "dsm":
            extra = {"weighting": c.weighting}
        elif c.loss == "edm":
            extra = {"sigma_data": c.sigma_data}
        elif c.loss == "cd":
            extra = {"teacher": self.teacher[0], "N": c.cd_levels}
        elif c.loss == "flow":
            extra = {"density": c.time_density, "mean": c.ln_mean, "std": c.ln_std}
        return self.fn(self.model, self.model.sde, x0, labels, reduce=c.reduce, **draws, **extra)

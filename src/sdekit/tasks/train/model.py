"""The network a training config describes, and network + loss as one module for DDP."""
from __future__ import annotations

import numpy as np
from torch import nn

from sdekit.data.datasets import Dataset
from sdekit.core.errors import UserError
from sdekit.tasks.losses import get_loss
from sdekit.core.denoisers import NetworkDenoiser
from sdekit.models.nets import Preconditioned, build_net
from sdekit.core.sde import get_sde
from sdekit.tasks.train.config import TrainConfig, hparams
from sdekit.models.pretrained.folder import find_diffusers
from sdekit.models.pretrained.folder import load_diffusers
from sdekit.models.bundle import save_bundle
from sdekit.models.model import Model
from sdekit.models.pretrained.export import to_diffusers
from sdekit.models.pretrained.folder import read_json
from sdekit.models.bundle import load

__all__ = ["build_model", "LossModule", "init_from", "diffusers_init", "diffusers_network", "save_model"]


def build_model(cfg: TrainConfig, data: Dataset) -> nn.Module:
    """A fresh preconditioned U-Net (images) or MLP (vectors) for ``data``; UserError if they do not fit.
    With a ``teacher`` (consistency distillation): a copy of the teacher's network and SDE, parametrised as a
    consistency function (Song et al. 2023 initialise the student from the teacher). With an ``init`` that is a
    diffusers folder: that folder's UNet2DModel as :func:`diffusers_network` wraps it."""
    if cfg.teacher is not None:
        return student_of(load_teacher(cfg, data), cfg)
    found = diffusers_init(cfg)
    if found is not None:
        return diffusers_network(found, cfg, data)
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


def diffusers_init(cfg: TrainConfig):
    """The diffusers folder (:class:`~sdekit.models.pretrained.folder.DiffusersFolder`) ``cfg.init`` names, or
    None (no --init, or an sdekit bundle)."""
    return None if cfg.init is None else find_diffusers(cfg.init)


def diffusers_network(found, cfg: TrainConfig, data: Dataset) -> NetworkDenoiser:
    """The trainable denoiser of the diffusers folder ``found``: its UNet2DModel with its weights, wrapped as
    :func:`sdekit.load` wraps it (the scheduler's noise schedule and prediction type; for a DDPM-style scheduler
    D(y; sigma) from the network's eps / x0 / v at the fractional timestep of sigma). The run trains this
    denoiser; the network, the SDE and the parametrisation are the folder's (--sde, --precond and the network
    flags do not apply). UserError unless the folder's images are the data's shape, its classes the data's
    (with --class-cond), and, the UNet2DModel having no null label, --label-dropout is 0."""
    model = load_diffusers(found)
    if tuple(model.shape) != tuple(data.shape):
        raise UserError(f"--init {found.unet}: its network takes {tuple(model.shape)} images, the data are "
                        f"{tuple(data.shape)}")
    if model.num_classes and model.num_classes != data.num_classes:
        raise UserError(f"--init {found.unet}: a network of {model.num_classes} classes, the data {data.name} have "
                        f"{data.num_classes}")
    if bool(model.num_classes) != bool(cfg.class_cond):
        raise UserError(f"--init {found.unet}: its network is {'' if model.num_classes else 'un'}conditional; "
                        f"{'pass' if model.num_classes else 'leave out'} --class-cond")
    if cfg.label_dropout:
        raise UserError(f"--init {found.unet}: a diffusers UNet2DModel has no null label; --label-dropout must be 0")
    net = model.denoiser
    for p in net.parameters():
        p.requires_grad_(True)
    return net.train()


def save_model(folder, net: nn.Module, cfg: TrainConfig, data: Dataset, step: int) -> None:
    """Write a run's model ``folder``: an sdekit bundle of a preconditioned network (its EMA weights, the
    hyper-parameters and ``step``), or, for a run from a diffusers folder, a diffusers pipeline folder
    (:func:`sdekit.models.pretrained.export.to_diffusers`) with that folder's scheduler config."""
    from pathlib import Path
    found = diffusers_init(cfg) if not isinstance(net, Preconditioned) else None
    if found is None:
        save_bundle(folder, net, shape=data.shape, name=Path(cfg.out).name, data_range=data.data_range or (-1.0, 1.0),
                    data=cfg.data, extra={"train": hparams(cfg), "step": step})
        return
    sched = read_json(found.scheduler, "scheduler config")
    config = {"format": "diffusers", "shape": list(data.shape), "num_classes": net.num_classes,
              "scheduler": sched["_class_name"], "scheduler_config": sched}
    to_diffusers(Model(net, config, Path(cfg.out).name), folder, overwrite=True)


def init_from(model: Preconditioned, source: str) -> None:
    """Copy the weights of the sdekit bundle ``source`` into ``model`` (UserError unless the bundle's
    network, parametrisation and SDE are the ones ``model`` has)."""
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

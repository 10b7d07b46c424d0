"""Score networks: a U-Net for images, an MLP for toy data, and the preconditioning wrapper."""
from __future__ import annotations

from sdekit.models.nets.mlp import ScoreMLP
from sdekit.models.nets.precond import Preconditioned
from sdekit.models.nets.unet import UNet

NETS = {"unet": UNet, "mlp": ScoreMLP}

__all__ = ["UNet", "ScoreMLP", "Preconditioned", "NETS", "build_net"]


def build_net(config: dict):
    """A network from its ``config()`` dict: {"type": "unet" | "mlp", **constructor arguments}."""
    config = dict(config)
    kind = config.pop("type", None)
    if kind not in NETS:
        raise ValueError(f"unknown network type {kind!r}; choose one of {', '.join(NETS)}")
    return NETS[kind](**config)

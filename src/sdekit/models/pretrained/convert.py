"""Original checkpoints -> diffusers folders that :func:`sdekit.load` reads.

* SDEdit's DDPM checkpoints (``church_outdoor.ckpt``, ``bedroom.ckpt``, ``celeba_hq.ckpt``; also
  ermongroup/ddim's): a state dict of tensors (keys ``temb.dense.0``, ``down.0.block.0``, ...; a
  ``module.`` prefix is dropped), or ddim's training list [model, optimizer, epoch, step, ema].
* score_sde's PyTorch checkpoints (``checkpoint_N.pth``): {"model": state dict with the ``module.``
  prefix, "ema": {"shadow_params": [tensors in parameter order], ...}, "optimizer": ..., "step": N}.

EMA weights are used when the checkpoint has them (``ema=False``: the raw model weights). Files are
read with ``torch.load(weights_only=True)`` only: nothing in them is executed. The output folder is a
diffusers pipeline folder (``model_index.json``, ``unet/`` with config.json and safetensors weights,
``scheduler/scheduler_config.json``), written file by file atomically.
"""
from __future__ import annotations

from pathlib import Path

import torch

from sdekit.core.errors import UserError
from sdekit.models.pretrained.export import write_pipeline
from sdekit.models.pretrained.folder import need_diffusers
from sdekit.models.pretrained.layouts import LAYOUTS, to_diffusers
from sdekit.models.pretrained.presets import Arch

__all__ = ["read_checkpoint", "original_state", "convert_state", "write_folder", "convert_checkpoint"]

NON_TRAINABLE = ("sigmas", "all_modules.0.W")   # score_sde: a buffer and the fixed Fourier features


def read_checkpoint(path) -> object:
    """The object in ``path``, read with torch.load(weights_only=True) on the CPU. UserError if missing,
    unreadable, or holding anything but tensors and plain containers."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a checkpoint torch.load(weights_only=True) can read ({first})") from None


def _strip(state: dict) -> dict:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _tensors(obj, path, what: str) -> dict:
    if not (isinstance(obj, dict) and obj and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())):
        raise UserError(f"{path}: the {what} is not a state dict of tensors")
    return _strip(obj)


def _sdedit_state(obj, path, ema: bool) -> dict:
    """SDEdit's state dict, or ermongroup/ddim's [model, optimizer, epoch, step(, ema)] list."""
    if isinstance(obj, (list, tuple)):
        if not obj:
            raise UserError(f"{path}: an empty list, not a checkpoint")
        use = obj[4] if ema and len(obj) == 5 else obj[0]
        return _tensors(use, path, "model state")
    if isinstance(obj, dict) and "model" in obj and not torch.is_tensor(obj["model"]):
        raise UserError(f"{path}: looks like a score_sde checkpoint (it has 'model'); use --from score_sde")
    return _tensors(obj, path, "checkpoint")


def _score_sde_state(obj, path, ema: bool) -> dict:
    """score_sde's {"model", "ema": {"shadow_params"}, ...}: the model's state with, by default, its
    trainable parameters replaced by the EMA shadow parameters (the same order)."""
    if not (isinstance(obj, dict) and "model" in obj):
        raise UserError(f"{path}: not a score_sde checkpoint (no 'model' entry); for SDEdit's use --from sdedit")
    state = _tensors(obj["model"], path, "'model' entry")
    shadow = (obj.get("ema") or {}).get("shadow_params") if ema else None
    trainable = [k for k in state if k not in NON_TRAINABLE]
    if shadow is None:
        return {k: v for k, v in state.items() if k != "sigmas"}
    if not (isinstance(shadow, (list, tuple)) and len(shadow) == len(trainable)
            and all(torch.is_tensor(s) and s.shape == state[k].shape for s, k in zip(shadow, trainable))):
        raise UserError(f"{path}: the EMA's shadow_params do not match the model's parameters "
                        f"({len(shadow) if isinstance(shadow, (list, tuple)) else '?'} vs {len(trainable)}); "
                        f"use --no-ema for the raw weights")
    return {k: v for k, v in {**state, **dict(zip(trainable, shadow))}.items() if k != "sigmas"}


READERS = {"sdedit": _sdedit_state, "score_sde": _score_sde_state}


def original_state(path, source: str, ema: bool = True) -> dict:
    """The original network's state dict (EMA weights by default) in the checkpoint ``path``."""
    if source not in READERS:
        raise UserError(f"unknown checkpoint source {source!r}; choose one of {', '.join(READERS)}")
    return READERS[source](read_checkpoint(path), Path(path), ema)


def _unet_skeleton(arch: Arch):
    """The UNet2DModel of ``arch`` on the meta device (structure and shapes, no memory)."""
    need_diffusers("the conversion target")
    from diffusers import UNet2DModel
    with torch.device("meta"):
        return UNet2DModel.from_config(arch.unet_config())


def convert_state(state: dict, arch: Arch, source="checkpoint") -> dict:
    """The UNet2DModel state dict (float32) of an original state dict of architecture ``arch``."""
    unet = _unet_skeleton(arch)
    shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    out = to_diffusers(state, LAYOUTS[arch.source](unet), shapes, source)
    bad = [k for k, v in out.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"{source}: tensor for {bad[0]!r} holds NaN or infinite values")
    return {k: v.float().contiguous() for k, v in out.items()}


def write_folder(out, arch: Arch, unet_state: dict, overwrite: bool = False) -> Path:
    """Write the diffusers pipeline folder of ``arch`` with ``unet_state``; each file atomically.
    An existing non-empty folder is refused unless ``overwrite``."""
    return write_pipeline(out, arch.unet_config(), unet_state, arch.scheduler_config(), overwrite)


def convert_checkpoint(path, arch: Arch, out, ema: bool = True, overwrite: bool = False) -> Path:
    """Convert the original checkpoint ``path`` (layout ``arch.source``) into the folder ``out``."""
    arch.check()
    state = convert_state(original_state(path, arch.source, ema), arch, path)
    return write_folder(out, arch, state, overwrite)

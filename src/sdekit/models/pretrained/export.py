"""sdekit models -> diffusers folders that plain diffusers loads and samples with.

:func:`to_diffusers` writes a diffusers pipeline folder (``model_index.json``, ``unet/`` with config.json and
``diffusion_pytorch_model.safetensors``, ``scheduler/scheduler_config.json``) that
``diffusers.UNet2DModel.from_pretrained(folder, subfolder="unet")`` and the scheduler's ``from_pretrained(folder,
subfolder="scheduler")`` load, and that :func:`sdekit.load` loads back as the same denoiser.

What exports, exactly (the same function, weights bit for bit):

* a model whose network is a diffusers ``UNet2DModel``: one :func:`sdekit.load` read from a diffusers folder
  (DDPM/DDIM-style, ScoreSdeVe, FlowMatchEuler or CMStochasticIterative scheduler), or a run trained with
  ``sdekit train --init DIFFUSERS_FOLDER``. The UNet2DModel is written as it is (float32) with the scheduler
  config the model was read with, loading options applied (``prediction_type``, ``sigma_min``, ``sigma_max``),
  so diffusers' eps / v / sample / score prediction is the network's own output.

What does not (:class:`~sdekit.core.errors.UserError`, one line saying why):

* sdekit's own networks (the bundles, ``sdekit train`` without a diffusers ``--init``): sdekit's U-Net does not
  map onto a UNet2DModel. The residual and attention blocks of its down and up paths return (x + h) / sqrt(2),
  where UNet2DModel builds them with output scale 1 (only the middle block's is a config field), and an
  identity shortcut cannot take the 1/sqrt(2) into weights; its network is fed EDM's c_in y and ln(sigma) / 4,
  which no diffusers scheduler feeds a UNet2DModel embedding as sdekit embeds it (UNet2DModel's Fourier
  embedding takes log(timestep) and divides its output by the timestep); its GroupNorm groups follow each
  width, where UNet2DModel has one ``norm_num_groups`` (docs/pretrained.md spells it out). A custom diffusers
  class that only looked like one would need sdekit's code to load, so none is written.
* any other network (``sdekit.wrap`` of a module of the user's own): diffusers has no class for it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from sdekit.core.errors import UserError
from sdekit.core.io import atomic_write_text
from sdekit.core.persist import write_tensors
from sdekit.models.model import Model
from sdekit.models.nets.precond import Preconditioned
from sdekit.models.pretrained.folder import need_diffusers

__all__ = ["to_diffusers", "refusal", "diffusers_unet", "write_pipeline", "PIPELINES", "WEIGHTS", "NOT_EXPORTABLE"]

WEIGHTS = "diffusion_pytorch_model.safetensors"
# scheduler class -> the diffusers pipeline that samples a UNet2DModel with it (model_index.json's _class_name);
# DDPM-style schedulers: DDPMPipeline. FlowMatchEuler has no UNet2DModel pipeline: a generic DiffusionPipeline
# index, read by sdekit.load and by UNet2DModel / scheduler .from_pretrained(subfolder=...).
PIPELINES = {"ScoreSdeVeScheduler": "ScoreSdeVePipeline", "CMStochasticIterativeScheduler": "ConsistencyModelPipeline",
             "FlowMatchEulerDiscreteScheduler": "DiffusionPipeline"}
DEFAULT_PIPELINE = "DDPMPipeline"

NOT_EXPORTABLE = ("sdekit's own U-Net does not map onto diffusers' UNet2DModel (its down/up residual and attention "
                  "blocks scale by 1/sqrt(2), its noise embedding takes EDM's ln(sigma)/4 and its GroupNorm groups "
                  "follow each width; docs/pretrained.md says why); what exports: models loaded from a diffusers "
                  "folder, and runs trained with `sdekit train --init DIFFUSERS_FOLDER`")


def _version() -> str:
    try:
        import diffusers
        return diffusers.__version__
    except ImportError:
        return "0.27.0"


def diffusers_unet(model: Model):
    """The diffusers ``UNet2DModel`` behind ``model`` (its denoiser's network), or None when it has none."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None
    inner = getattr(getattr(model.denoiser, "net", None), "net", None)     # NetworkDenoiser -> TensorOutput -> unet
    inner = getattr(inner, "_orig_mod", inner)                             # torch.compile's wrapper
    return inner if isinstance(inner, UNet2DModel) else None


def _unet_config(unet) -> dict:
    """The UNet2DModel's constructor arguments (lists for tuples), as its config.json holds them."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in unet.config.items() if not k.startswith("_")}


def write_pipeline(out, unet_config: dict, unet_state: dict, scheduler_config: dict, overwrite: bool = False) -> Path:
    """Write a diffusers pipeline folder: ``unet/`` (``unet_config`` without its "_class_name", ``unet_state``
    as safetensors), ``scheduler/scheduler_config.json`` (``scheduler_config``, with its "_class_name") and
    ``model_index.json`` (the pipeline of :data:`PIPELINES`); each file atomically. An existing non-empty
    folder is refused (UserError) unless ``overwrite``; a file at ``out`` always."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; the output is a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} exists and is not empty; pass --overwrite to write into it")
    version, kind = _version(), scheduler_config["_class_name"]
    unet_cfg = {k: v for k, v in unet_config.items() if k not in ("_class_name", "_diffusers_version")}
    write_tensors(out / "unet" / WEIGHTS, unet_state, metadata={"format": "pt"})
    atomic_write_text(out / "unet" / "config.json", json.dumps(
        {"_class_name": "UNet2DModel", "_diffusers_version": version, **unet_cfg}, indent=2) + "\n")
    atomic_write_text(out / "scheduler" / "scheduler_config.json", json.dumps(
        {**scheduler_config, "_diffusers_version": version}, indent=2) + "\n")
    atomic_write_text(out / "model_index.json", json.dumps(
        {"_class_name": PIPELINES.get(kind, DEFAULT_PIPELINE), "_diffusers_version": version,
         "scheduler": ["diffusers", kind], "unet": ["diffusers", "UNet2DModel"]}, indent=2) + "\n")
    return out


def refusal(model: Model) -> str | None:
    """Why ``model`` cannot be exported to diffusers (one line), or None when it can."""
    if diffusers_unet(model) is not None:
        if not isinstance(model.config.get("scheduler_config"), dict):
            return f"{model.name}: its diffusers UNet2DModel comes without the scheduler config it was read with"
        return None
    if isinstance(model.denoiser, Preconditioned):
        return f"{model.name}: {NOT_EXPORTABLE}"
    return (f"{model.name}: its network is not a diffusers UNet2DModel (diffusers has no class for it); what exports: "
            f"models loaded from a diffusers folder, and runs trained with `sdekit train --init DIFFUSERS_FOLDER`")


def to_diffusers(model: Model, folder, overwrite: bool = False) -> Path:
    """Write ``model`` as the diffusers pipeline folder ``folder`` (see the module docstring for which
    models export); returns the folder. The UNet2DModel's weights are stored in float32 whatever the
    model's device and dtype. UserError (one line, before anything is written) for a model that does not
    export, for a ``folder`` that is a file or a non-empty folder without ``overwrite``, and without the
    optional dependency diffusers."""
    need_diffusers(model.name)
    why = refusal(model)
    if why is not None:
        raise UserError(why)
    unet = diffusers_unet(model)
    state = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
             for k, v in unet.state_dict().items()}
    return write_pipeline(folder, _unet_config(unet), state, dict(model.config["scheduler_config"]), overwrite)

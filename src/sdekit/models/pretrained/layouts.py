"""The key maps between original checkpoints and diffusers' UNet2DModel, written once per layout.

A layout pairs each module of a UNet2DModel with the module of the original network that holds the
same weights, and says how each parameter is renamed and reshaped (:class:`Param`). The same list
converts in both directions (:func:`to_diffusers`, :func:`to_original`), so a test can write a
checkpoint the original way and check that the conversion computes the same function.

* :func:`ddpm_layout`: DDPM in the layout of SDEdit's (and ermongroup/ddim's) ``Model``:
  ``temb.dense.{0,1}``, ``conv_in``, ``down.{i}.block.{j}`` / ``.attn.{j}`` / ``.downsample.conv``,
  ``mid.block_1`` / ``attn_1`` / ``block_2``, ``up.{i}.block.{j}`` / ``.attn.{j}`` / ``.upsample.conv``
  (``up`` indexed by resolution level, so diffusers' up block k is ``up.{L-1-k}``), ``norm_out``,
  ``conv_out``; attention q, k, v, proj_out are 1x1 convolutions (diffusers: linear layers).
* :func:`ncsnpp_layout`: score_sde's NCSN++ (``all_modules.{m}``, modules numbered in construction
  order): the Fourier projection (``W``), two dense layers, conv_in; per level the residual blocks
  (``GroupNorm_0, Conv_0, Dense_0, GroupNorm_1, Conv_1, Conv_2``) and attention blocks (``GroupNorm_0,
  NIN_0..3``, NIN weights [in, out]), the down-sampling residual block and the input-skip combiner
  (``Conv_0``); the middle; per level up the residual blocks, one attention block, the output-skip
  GroupNorm and 3x3 conv, the up-sampling residual block; the last level's GroupNorm and conv.
  (diffusers' ``convert_ncsnpp_original_checkpoint_to_diffusers.py`` walks the same order, with
  attribute names of an older diffusers.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from sdekit.core.errors import UserError

__all__ = ["Param", "Pair", "ddpm_layout", "ncsnpp_layout", "to_diffusers", "to_original", "LAYOUTS"]


def _same(w: torch.Tensor) -> torch.Tensor:
    return w


@dataclass(frozen=True)
class Param:
    """A parameter's original name and the maps original -> diffusers (``fwd``) and back (``inv``)."""
    original: str
    fwd: Callable[[torch.Tensor], torch.Tensor] = _same
    inv: Callable[[torch.Tensor], torch.Tensor] = _same


@dataclass(frozen=True)
class Pair:
    """A UNet2DModel module (``target`` path), the original module holding its weights (``original``
    path) and the parameter map {diffusers parameter name: Param}."""
    target: str
    original: str
    params: dict


def _plain(*names):
    return {n: Param(n) for n in names}


PLAIN = _plain("weight", "bias")
CONV1X1 = Param("weight", lambda w: w[:, :, 0, 0], lambda w: w[:, :, None, None])   # 1x1 conv <-> linear
NIN = Param("W", lambda w: w.t().contiguous(), lambda w: w.t().contiguous())          # x W + b <-> linear

DDPM_RESNET = {"norm1.weight": Param("norm1.weight"), "norm1.bias": Param("norm1.bias"),
               "conv1.weight": Param("conv1.weight"), "conv1.bias": Param("conv1.bias"),
               "time_emb_proj.weight": Param("temb_proj.weight"), "time_emb_proj.bias": Param("temb_proj.bias"),
               "norm2.weight": Param("norm2.weight"), "norm2.bias": Param("norm2.bias"),
               "conv2.weight": Param("conv2.weight"), "conv2.bias": Param("conv2.bias"),
               "conv_shortcut.weight": Param("nin_shortcut.weight"), "conv_shortcut.bias": Param("nin_shortcut.bias")}
ATTN_NAMES = ("to_q", "to_k", "to_v", "to_out.0")
DDPM_ATTN = {"group_norm.weight": Param("norm.weight"), "group_norm.bias": Param("norm.bias"),
             **{f"{new}.{p}": Param(f"{old}.{p}", *((CONV1X1.fwd, CONV1X1.inv) if p == "weight" else ()))
                for new, old in zip(ATTN_NAMES, ("q", "k", "v", "proj_out")) for p in ("weight", "bias")}}

NCSNPP_RESNET = {f"{new}.{p}": Param(f"{old}.{p}") for new, old in
                 (("norm1", "GroupNorm_0"), ("conv1", "Conv_0"), ("time_emb_proj", "Dense_0"),
                  ("norm2", "GroupNorm_1"), ("conv2", "Conv_1"), ("conv_shortcut", "Conv_2"))
                 for p in ("weight", "bias")}
NCSNPP_ATTN = {"group_norm.weight": Param("GroupNorm_0.weight"), "group_norm.bias": Param("GroupNorm_0.bias"),
               **{k: v for new, old in zip(ATTN_NAMES, ("NIN_0", "NIN_1", "NIN_2", "NIN_3"))
                  for k, v in ((f"{new}.weight", Param(f"{old}.W", NIN.fwd, NIN.inv)), (f"{new}.bias", Param(f"{old}.b")))}}


def ddpm_layout(unet) -> list[Pair]:
    """The pairs of a DDPM UNet2DModel (DownBlock2D / AttnDownBlock2D ...) and SDEdit's ``Model``."""
    L = len(unet.down_blocks)
    pairs = [Pair("time_embedding.linear_1", "temb.dense.0", PLAIN),
             Pair("time_embedding.linear_2", "temb.dense.1", PLAIN), Pair("conv_in", "conv_in", PLAIN)]
    for i, blk in enumerate(unet.down_blocks):
        pairs += [Pair(f"down_blocks.{i}.resnets.{j}", f"down.{i}.block.{j}", DDPM_RESNET) for j in range(len(blk.resnets))]
        pairs += [Pair(f"down_blocks.{i}.attentions.{j}", f"down.{i}.attn.{j}", DDPM_ATTN)
                  for j in range(len(getattr(blk, "attentions", None) or []))]
        if blk.downsamplers is not None:
            pairs.append(Pair(f"down_blocks.{i}.downsamplers.0.conv", f"down.{i}.downsample.conv", PLAIN))
    pairs += [Pair("mid_block.resnets.0", "mid.block_1", DDPM_RESNET), Pair("mid_block.attentions.0", "mid.attn_1", DDPM_ATTN),
              Pair("mid_block.resnets.1", "mid.block_2", DDPM_RESNET)]
    for k, blk in enumerate(unet.up_blocks):
        i = L - 1 - k
        pairs += [Pair(f"up_blocks.{k}.resnets.{j}", f"up.{i}.block.{j}", DDPM_RESNET) for j in range(len(blk.resnets))]
        pairs += [Pair(f"up_blocks.{k}.attentions.{j}", f"up.{i}.attn.{j}", DDPM_ATTN)
                  for j in range(len(getattr(blk, "attentions", None) or []))]
        if blk.upsamplers is not None:
            pairs.append(Pair(f"up_blocks.{k}.upsamplers.0.conv", f"up.{i}.upsample.conv", PLAIN))
    return pairs + [Pair("conv_norm_out", "norm_out", PLAIN), Pair("conv_out", "conv_out", PLAIN)]


def ncsnpp_layout(unet) -> list[Pair]:
    """The pairs of an NCSN++ UNet2DModel (SkipDownBlock2D ..., Fourier embedding) and score_sde's
    ``NCSNpp.all_modules``, numbered as score_sde builds them."""
    pairs, m = [], 0

    def add(target, params, sub=""):
        nonlocal m
        pairs.append(Pair(target, f"all_modules.{m}{sub}", params))
        m += 1

    add("time_proj", {"weight": Param("W")})
    add("time_embedding.linear_1", PLAIN)
    add("time_embedding.linear_2", PLAIN)
    add("conv_in", PLAIN)
    for i, blk in enumerate(unet.down_blocks):
        attns = getattr(blk, "attentions", None)
        for j in range(len(blk.resnets)):
            add(f"down_blocks.{i}.resnets.{j}", NCSNPP_RESNET)
            if attns is not None:
                add(f"down_blocks.{i}.attentions.{j}", NCSNPP_ATTN)
        if blk.downsamplers is not None:
            add(f"down_blocks.{i}.resnet_down", NCSNPP_RESNET)
            add(f"down_blocks.{i}.skip_conv", PLAIN, ".Conv_0")
    add("mid_block.resnets.0", NCSNPP_RESNET)
    add("mid_block.attentions.0", NCSNPP_ATTN)
    add("mid_block.resnets.1", NCSNPP_RESNET)
    for k, blk in enumerate(unet.up_blocks):
        for j in range(len(blk.resnets)):
            add(f"up_blocks.{k}.resnets.{j}", NCSNPP_RESNET)
        if getattr(blk, "attentions", None) is not None:
            add(f"up_blocks.{k}.attentions.0", NCSNPP_ATTN)
        if blk.resnet_up is not None:
            add(f"up_blocks.{k}.skip_norm", PLAIN)
            add(f"up_blocks.{k}.skip_conv", PLAIN)
            add(f"up_blocks.{k}.resnet_up", NCSNPP_RESNET)
    add("conv_norm_out", PLAIN)
    add("conv_out", PLAIN)
    return pairs


LAYOUTS = {"sdedit": ddpm_layout, "score_sde": ncsnpp_layout}


def _entries(pairs: list[Pair], target_keys):
    """(diffusers key, original key, Param) for every parameter the target has."""
    keys = set(target_keys)
    out = [(f"{p.target}.{name}", f"{p.original}.{par.original}", par)
           for p in pairs for name, par in p.params.items() if f"{p.target}.{name}" in keys]
    missing = keys - {e[0] for e in out}
    if missing:                                     # a layout that does not cover the network: a bug
        raise AssertionError(f"layout leaves {len(missing)} UNet2DModel weights unmapped, e.g. {sorted(missing)[0]}")
    return out


def to_diffusers(state: dict, pairs: list[Pair], target_shapes: dict, source) -> dict:
    """The UNet2DModel state dict of an original ``state``. ``target_shapes``: {key: shape} of the
    UNet2DModel. A checkpoint of another architecture (a missing, left-over or mis-shaped tensor):
    UserError naming ``source``."""
    entries = _entries(pairs, target_shapes)
    absent = [o for _, o, _ in entries if o not in state]
    extra = sorted(set(state) - {o for _, o, _ in entries})
    if absent or extra:
        first = (absent or extra)[0]
        raise UserError(f"{source}: not a checkpoint of this architecture ({len(absent)} tensors missing, "
                        f"{len(extra)} unexpected, e.g. {first!r}); check --preset and the checkpoint kind")
    out = {}
    for new, old, par in entries:
        v = par.fwd(state[old])
        if tuple(v.shape) != tuple(target_shapes[new]):
            raise UserError(f"{source}: tensor {old!r} has shape {tuple(state[old].shape)}, which does not fit "
                            f"this architecture (check --preset or the channel widths)")
        out[new] = v
    return out


def to_original(state: dict, pairs: list[Pair]) -> dict:
    """The original checkpoint's state dict of a UNet2DModel ``state`` (the inverse of to_diffusers)."""
    return {old: par.inv(state[new]) for new, old, par in _entries(pairs, state)}

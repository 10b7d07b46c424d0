"""How a network's forward pass runs: torch.compile, channels-last memory and autocast, applied in one place.

:class:`Acceleration` names the options and checks them against a device before any work;
:func:`accelerate` applies them to a denoiser (anything holding its network as ``.net``, e.g.
:class:`sdekit.core.denoisers.Preconditioned`) and returns a shallow copy whose ``net`` is
:class:`Accelerated`. The copy shares every parameter with the original, so an optimizer, the EMA,
a checkpoint or a bundle keep seeing the plain module (its state_dict keys are unchanged), while
training and sampling call the accelerated one:

* ``channels_last``: the network's 4-D weights and its 4-D input in ``torch.channels_last`` (NHWC)
  memory; the output is handed back in the usual (contiguous) format. Same values up to float32
  rounding.
* ``autocast``: "bf16" or "fp16" runs the forward under ``torch.autocast`` (matrix products and
  convolutions in that dtype, reductions and the rest in float32); the output is cast back to the
  input's dtype. "fp16" needs a CUDA device (CPUs have no fast float16, and its training needs loss
  scaling: :func:`grad_scaler`); "bf16" runs on CPUs and on CUDA GPUs that support it.
* ``compile``: ``torch.compile`` of the accelerated forward (the network with the two above); the
  first call of each new input shape compiles (seconds to minutes), later calls reuse the code.
"""
from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass

import torch
from torch import nn

from sdekit.core.errors import UserError

__all__ = ["Acceleration", "Accelerated", "accelerate", "grad_scaler", "prefers_channels_last", "AUTOCAST",
           "CHANNELS_LAST_FROM"]

AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CHANNELS_LAST_FROM = 256   # image side (pixels) from which sampling uses channels-last by default (BENCHMARKS.md 10)


@dataclass(frozen=True)
class Acceleration:
    """What :func:`accelerate` applies: ``compile`` (bool), ``channels_last`` (bool), ``autocast``
    (a key of AUTOCAST: "none", "bf16" or "fp16")."""

    compile: bool = False
    channels_last: bool = False
    autocast: str = "none"

    @property
    def active(self) -> bool:
        return self.compile or self.channels_last or self.autocast != "none"

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: no autocast)."""
        return AUTOCAST[self.autocast]

    def check(self, device) -> None:
        """UserError (one line) when these options cannot run on ``device`` (a torch.device or name)."""
        kind = torch.device(device or "cpu").type
        if self.autocast not in AUTOCAST:
            raise UserError(f"--autocast must be one of {', '.join(AUTOCAST)}, got {self.autocast!r}")
        if self.autocast == "fp16" and kind != "cuda":
            raise UserError(f"--autocast fp16 needs a CUDA device ({kind} has no fast float16 and no loss scaling "
                            "for it); use --autocast bf16")
        if self.autocast == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("--autocast bf16: this CUDA device does not support bfloat16; use --autocast fp16")
        if self.autocast == "bf16" and kind not in ("cpu", "cuda"):
            raise UserError(f"--autocast bf16 runs on cpu or cuda, not {kind}")
        if self.compile and kind == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
            raise UserError("--compile on the CPU needs a C++ compiler (g++ or clang++) on the PATH")

    def __str__(self) -> str:
        parts = (["compile"] if self.compile else []) + (["channels-last"] if self.channels_last else []) \
            + ([self.autocast] if self.autocast != "none" else [])
        return "+".join(parts) or "eager"


class Accelerated(nn.Module):
    """``net(x, *args)`` with x [B, C, H, W] (or any shape) in channels-last memory and the call under
    autocast, as ``options`` say, on a device of type ``device_type`` ("cpu", "cuda"); the output has
    x's dtype and contiguous memory. ``net``'s weights are put in channels-last memory in place."""

    def __init__(self, net: nn.Module, options: Acceleration, device_type: str = "cpu"):
        super().__init__()
        self.net, self.options, self.device_type = net, options, device_type
        self.num_classes = int(getattr(net, "num_classes", 0) or 0)
        self.train(net.training)
        if options.channels_last:
            net.to(memory_format=torch.channels_last)
        if options.compile:
            self.compile()

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        if self.options.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = self.options.dtype
        with torch.autocast(self.device_type, dtype=dtype, enabled=dtype is not None):
            out = self.net(x, *args)
        return out.to(dtype=x.dtype, memory_format=torch.contiguous_format)


def accelerate(denoiser: nn.Module, options: Acceleration, device=None) -> nn.Module:
    """``denoiser`` itself when no option is set, else a shallow copy whose network ``.net`` is
    :class:`Accelerated` (sharing its parameters). UserError when the options cannot run on ``device``
    (default: the denoiser's) or the denoiser holds no network (an exact score, for instance)."""
    device = torch.device(device) if device is not None else _device_of(denoiser)
    options.check(device)
    if not options.active:
        return denoiser
    net = getattr(denoiser, "net", None)
    if not isinstance(net, nn.Module):
        raise UserError(f"--compile, --channels-last and --autocast apply to a network; "
                        f"{type(denoiser).__name__} has none")
    fast = copy.copy(denoiser)
    fast._modules = {**denoiser._modules, "net": Accelerated(net, options, device.type)}
    return fast


def prefers_channels_last(shape) -> bool:
    """Whether sampling a model of data ``shape`` (C, H, W) runs channels-last by default: for images of
    at least CHANNELS_LAST_FROM pixels a side, where it measured faster (1.18x for a 256x256 DDPM U-Net
    on a CPU) and gives the same values to float32 rounding; not for small images (slower at 28x28)."""
    return len(shape) == 3 and min(shape[1:]) >= CHANNELS_LAST_FROM


def grad_scaler(options: Acceleration, device) -> torch.amp.GradScaler:
    """The loss scaler of a training run: enabled for float16 autocast only (bfloat16 has float32's range)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=options.autocast == "fp16")


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")

"""Where a network runs: a device this machine has, in a precision that device can run.

``sdekit.load(device=, dtype=)`` and the command line's ``--device`` / ``--dtype`` check both here,
before any work: a device the machine lacks, an unknown precision, or one the device cannot run is
one UserError line.
"""
from __future__ import annotations

import warnings

import torch

from sdekit.core.errors import SlowPrecisionWarning, UserError

__all__ = ["DTYPES", "check_device", "check_dtype", "precision_on", "placement", "SlowPrecisionWarning",
           "warn_slow_precision"]

DTYPES = ("float32", "float16", "bfloat16", "float64")     # the precisions a network may run (and be stored) in


def check_device(text) -> str:
    """``text`` (cpu, cuda, cuda:1, mps, ...) if this machine has that device, else UserError."""
    text = str(text)
    try:
        d = torch.device(text)
    except RuntimeError:
        raise UserError(f"not a torch device: {text!r} (cpu, cuda, cuda:1, mps, ...)") from None
    if d.type == "cpu":
        return text
    have = torch.accelerator.current_accelerator()
    if have is None or have.type != d.type:
        raise UserError(f"{text}: this machine has no {d.type} device "
                        f"(available: cpu{', ' + have.type if have is not None else ''})")
    if d.index is not None and d.index >= torch.accelerator.device_count():
        raise UserError(f"{text}: this machine has {torch.accelerator.device_count()} {d.type} device(s)")
    return text


def check_dtype(dtype) -> torch.dtype | None:
    """A torch dtype of DTYPES, given as itself or by name ("bfloat16"); None stays None. UserError otherwise."""
    if dtype is None:
        return None
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)} (a torch dtype or its name), got {dtype!r}")
    return getattr(torch, name)


def precision_on(device, dtype) -> torch.dtype | None:
    """check_dtype(dtype), refusing a precision that ``device`` (a checked device or None: the CPU) cannot
    run: bfloat16 on a CUDA GPU without it, float64 on MPS."""
    dtype = check_dtype(dtype)
    kind = torch.device(device).type if device else "cpu"
    if dtype is torch.bfloat16 and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"bfloat16: {device} does not support it; use float16 or float32")
    if dtype is torch.float64 and kind == "mps":
        raise UserError("float64: MPS devices have no float64; use float32")
    return dtype


def placement(device=None, dtype=None) -> tuple[str | None, torch.dtype | None]:
    """(device, torch dtype or None): check_device(device) and precision_on(device, dtype)."""
    device = None if device is None else check_device(device)
    return device, precision_on(device, dtype)


SLOW = {("cpu", torch.float16): "float16 on a CPU runs much slower than float32 (14-20x measured for likelihoods: "
                                "CPUs have no fast float16 arithmetic) and is no more accurate; float32 is the "
                                "precision for CPUs"}
_warned: set = set()


def warn_slow_precision(device, dtype) -> None:
    """Warn once per process (SlowPrecisionWarning) when the user runs a network in a precision that
    ``device`` (a device or its name; None: the CPU) runs much slower than float32: float16 on a CPU."""
    kind = torch.device(device).type if device is not None else "cpu"
    msg = SLOW.get((kind, dtype))
    if msg is not None and (kind, dtype) not in _warned:
        _warned.add((kind, dtype))
        warnings.warn(msg, SlowPrecisionWarning, stacklevel=3)

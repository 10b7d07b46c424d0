"""The input checks the entry points share, each written once: counts (steps, repeats, resampling rounds),
SDEdit's t0 (a number or a per-pixel map), class labels and guidance weights, and shapes.

Every check raises :class:`~sdekit.core.errors.UserError` with a one-line message naming the value, before
any work; the ranges come from :mod:`sdekit.policy`.
"""
from __future__ import annotations

import math

import torch

from sdekit.core.errors import UserError
from sdekit.policy import T0

__all__ = ["check_count", "check_t0", "check_t0_map", "check_broadcasts", "check_labels", "check_guidance",
           "check_class", "check_shape"]


def check_count(value, name: str = "steps", minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (1: "a positive integer", 0: "a non-negative integer"); bools,
    fractions and smaller numbers are refused: "<name> must be a positive integer, got <value>"."""
    what = "a positive integer" if minimum == 1 else "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= minimum
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise UserError(f"{name} must be {what}, got {value}")
    return int(value)


def check_broadcasts(what: str, a: torch.Tensor, target: torch.Tensor) -> None:
    """UserError unless ``a`` broadcasts to ``target``'s shape (naming both shapes)."""
    shape, gs = tuple(a.shape), tuple(target.shape)
    if len(shape) > len(gs) or any(m not in (1, g) for m, g in zip(shape[::-1], gs[::-1])):
        raise UserError(f"{what} of shape {shape} does not match the guide's shape {gs}")


def check_t0_map(t0: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """A t0 map checked: float64, values in [0, 1] (0 = keep the guide), not all 0, broadcasting to ``guide``."""
    check_broadcasts("t0 map", t0, guide)
    t0 = t0.detach().to(torch.float64)
    if t0.numel() == 0 or not torch.isfinite(t0).all() or t0.min() < T0.low or t0.max() > T0.high:
        raise UserError(f"t0 map values must lie in [{T0.low:g}, {T0.high:g}] (0 = keep the guide), without NaN")
    if t0.max() == 0:
        raise UserError("t0 map is 0 everywhere (keep the guide): nothing to edit")
    return t0


def check_t0(t0, guide: torch.Tensor | None = None, name: str = "t0"):
    """SDEdit's t0: a number in (0, 1] (returned as a float), or with ``guide`` a t0 map (a tensor of at
    least one dimension, :func:`check_t0_map`; returned as float64). ``name``: how the message calls it
    (e.g. "--t0")."""
    if guide is not None and torch.is_tensor(t0) and t0.dim() > 0:
        return check_t0_map(t0, guide)
    try:
        t0 = float(t0)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number in {T0.interval} or a t0 map (a tensor), got {t0!r}") from None
    if not T0.allows(t0):
        raise UserError(f"{name} must lie in {T0.interval}, got {t0}")
    return t0


def check_guidance(w) -> float:
    """A classifier-free guidance weight: a finite number >= 0."""
    try:
        v = float(w)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or v < 0:
        raise UserError(f"guidance must be a number >= 0, got {w}")
    return v


def check_labels(class_labels, num_classes: int, null_label: bool = True, guidance: float = 0.0) -> None:
    """UserError unless ``class_labels`` (None, an int or a tensor) fit a model of ``num_classes`` classes:
    0..K-1, or None / -1 for "no label". A conditional model without a null label (``null_label`` False, as
    a diffusers UNet with class embeddings) has no unconditional score: it needs a label 0..K-1 for every
    sample and takes no classifier-free ``guidance``. ``guidance`` w: a finite number >= 0, and w > 0 needs
    labels, not the one label -1 (guidance towards no class changes nothing). Labels must be whole numbers (a float
    3.5 is refused, not cut to 3)."""
    try:
        w = float(guidance)
    except (TypeError, ValueError, RuntimeError):
        w = float("nan")
    if not (math.isfinite(w) and w >= 0):
        raise UserError(f"guidance must be a finite number >= 0, got {guidance!r}")
    if class_labels is not None and num_classes == 0:
        raise UserError("this model is unconditional; it takes no class labels")
    if isinstance(class_labels, (str, bool)):
        raise UserError(f"class labels are whole numbers 0..{num_classes - 1} (a name: Model.class_index), "
                        f"got {class_labels!r}")
    y = None if class_labels is None else torch.as_tensor(class_labels)
    if y is not None and (y.is_floating_point() or y.is_complex()) and not torch.equal(y, y.real.round()):
        raise UserError(f"class labels must be whole numbers, got {y.flatten()[:4].tolist()}")
    y = None if y is None else y.long()
    if guidance and (y is None or (y.dim() == 0 and y < 0)):
        raise UserError(f"guidance w = {guidance:g} needs class labels 0..{num_classes - 1} to guide towards")
    if y is not None and ((y < -1) | (y >= num_classes)).any():
        raise UserError(f"class labels must lie in 0..{num_classes - 1} (or -1 for none)")
    if num_classes and not null_label and (y is None or guidance or (y < 0).any()):
        raise UserError(f"this model needs a class label 0..{num_classes - 1} for every sample: it has no null "
                        "label (no unconditional score), so no unlabelled sampling and no classifier-free guidance")


def check_class(label, num_classes: int, name: str = "--class") -> None:
    """One class K given by name (a command-line flag): None, or an integer in 0..num_classes-1 of a
    conditional model."""
    if label is None:
        return
    if num_classes == 0:
        raise UserError(f"{name} needs a class-conditional model; this one is unconditional")
    if not 0 <= label < num_classes:
        raise UserError(f"{name} must lie in 0..{num_classes - 1}, got {label}")


def check_shape(x: torch.Tensor, shape: tuple) -> None:
    """UserError unless x is a batch [B, *shape] (one comparison: it runs at every evaluation)."""
    if x.shape[1:] != shape:
        raise UserError(f"the model takes x of shape [B, {', '.join(map(str, shape))}], got {list(x.shape)}")

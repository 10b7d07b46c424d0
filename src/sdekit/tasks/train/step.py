"""One optimisation step: the loss, its (loss-scaled) gradient, clipping and the optimizer's step."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["optimizer_step"]


def optimizer_step(step_module: nn.Module, params, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   grad_clip: float, *inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss = step_module(*inputs)``, its gradient (through ``scaler``: float16 loss scaling, a no-op
    when disabled), the gradient norm of ``params`` clipped to ``grad_clip`` (0: no clipping), and the
    step (skipped by an enabled scaler when the gradient is not finite). Returns (loss, the gradient
    norm before clipping), 0-d tensors."""
    loss = step_module(*inputs)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    norm = nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else float("inf"))
    scaler.step(opt)
    scaler.update()
    return loss, norm

"""The exponential moving average of a network's weights, the weights a trained model ships."""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Exponential moving average of parameters (and copied buffers), decay warmed up as
    min(decay, (1 + k) / (10 + k)) (Tarvainen & Valpola 2017; score_sde)."""

    def __init__(self, model: nn.Module, decay: float):
        self.model, self.decay = copy.deepcopy(model).eval(), decay
        for p in self.model.parameters():
            p.requires_grad_(False)

    def rate(self, num_updates: int) -> float:
        return min(self.decay, (1 + num_updates) / (10 + num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        d = self.rate(num_updates)
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)                     # e <- d e + (1 - d) p
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)

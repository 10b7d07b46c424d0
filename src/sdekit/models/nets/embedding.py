"""Noise-level embeddings shared by the score networks.

Networks are conditioned on a scalar noise label c_noise of order one (the preconditioning uses
c_noise = ln(sigma) / 4, EDM Table 1), embedded either with random Fourier features (NCSN++,
Tancik et al. 2020) or with the transformer's sinusoidal positions (DDPM++).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class FourierEmbedding(nn.Module):
    """[cos(2 pi w c), sin(2 pi w c)] with fixed w ~ N(0, scale^2) (Song et al. 2021, NCSN++)."""

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        g = torch.Generator().manual_seed(0)                 # fixed features, also stored in the weights
        self.register_buffer("freqs", torch.randn(dim // 2, generator=g) * scale)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        a = 2 * math.pi * c.float()[:, None] * self.freqs.float()[None]
        return torch.cat([a.cos(), a.sin()], dim=1)


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of ``scale * c`` (Vaswani et al. 2017; DDPM embeds 1000 t)."""

    def __init__(self, dim: int, scale: float = 1000.0, max_positions: int = 10000):
        super().__init__()
        self.dim, self.scale, self.max_positions = dim, float(scale), max_positions

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(self.max_positions) * torch.arange(half, device=c.device) / half)
        a = self.scale * c.float()[:, None] * freqs[None]
        return torch.cat([a.cos(), a.sin()], dim=1)


class NoiseEmbedding(nn.Sequential):
    """features(c) -> Linear -> SiLU -> Linear, run in the Linear layers' dtype; the features are
    computed in float32 (their phases need it) and then cast."""

    def __init__(self, kind: str, dim: int, out: int, scale: float | None = None):
        super().__init__(make_embedding(kind, dim, scale), nn.Linear(dim, out), nn.SiLU(), nn.Linear(out, out))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        features, *mlp = self
        h = features(c).to(mlp[0].weight.dtype)
        for layer in mlp:
            h = layer(h)
        return h


def make_embedding(kind: str, dim: int, scale: float | None = None) -> nn.Module:
    if kind == "fourier":
        return FourierEmbedding(dim, 16.0 if scale is None else scale)
    if kind == "positional":
        return PositionalEmbedding(dim, 1000.0 if scale is None else scale)
    raise ValueError(f"unknown embedding {kind!r}; choose fourier or positional")

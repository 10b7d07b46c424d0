"""Determinism: everything random in step k is drawn from generators seeded by (seed, k).

The data order is the epoch-wise permutations seeded by (seed, epoch); the loss's t / sigma / noise
draws and label dropout come from the step's generator; network dropout from the global generator
reseeded by (seed, k, rank). The global batch of step k is drawn in full on every rank and each rank
takes its shard, so a run resumed at step k continues exactly as it would have.
"""
from __future__ import annotations

import torch
from sdekit.tasks.losses import flow_times

__all__ = ["step_seed", "Batches", "draw_randomness"]


def step_seed(seed: int, step: int, salt: int = 0) -> int:
    """The seed of step ``step``'s generator (``salt`` tells apart the generators of one step)."""
    return (seed * 1_000_003 + step * 7919 + salt * 104_729) % (2 ** 63 - 1)


class Batches:
    """Global batch k = positions kB .. kB+B-1 of the epoch-wise permutations of the data."""

    def __init__(self, n: int, B: int, seed: int):
        self.n, self.B, self.seed, self._perm = n, B, seed, {}

    def perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perm:
            g = torch.Generator().manual_seed(step_seed(self.seed, epoch, 1))
            self._perm = {epoch: torch.randperm(self.n, generator=g)}
        return self._perm[epoch]

    def indices(self, step: int) -> torch.Tensor:
        pos = step * self.B + torch.arange(self.B)
        return torch.cat([self.perm(int(e))[pos[(pos // self.n) == e] % self.n] for e in torch.unique(pos // self.n)])


def draw_randomness(cfg, sde, B: int, shape, g: torch.Generator) -> dict:
    """The loss's random draws for a global batch of B, from the step's generator."""
    z = torch.randn((B, *shape), generator=g)
    if cfg.loss == "dsm":
        return {"t": sde.eps + (sde.T - sde.eps) * torch.rand(B, generator=g), "z": z}
    if cfg.loss == "edm":
        return {"sigma": (cfg.P_mean + cfg.P_std * torch.randn(B, generator=g)).exp(), "z": z}
    if cfg.loss == "cd":
        return {"index": torch.randint(cfg.cd_levels - 1, (B,), generator=g), "z": z}
    if cfg.loss == "flow":
        return {"tau": flow_times(B, sde, cfg.time_density, cfg.ln_mean, cfg.ln_std, g), "z": z}
    return {"index": torch.randint(sde.N, (B,), generator=g), "z": z}

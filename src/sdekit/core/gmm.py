"""Gaussian mixtures with exact scores under every SDE of the family.

For p_0 = sum_k w_k N(mu_k, v_k I) and the kernel N(s x0, s^2 sigma^2 I) of sde.py, the marginal
p_t is again a mixture:  p_t = sum_k w_k N(s mu_k, s^2 (v_k + sigma^2) I),  so its score, its
density and the posterior over components p_t(k | x) are closed forms. Sampling error with this
score is pure discretisation error, and likelihoods have an exact answer.
"""
from __future__ import annotations

import math

import torch

from sdekit.core.sde import SDE, _as_t

__all__ = ["GaussianMixture"]


class GaussianMixture:
    """Isotropic Gaussian mixture. ``means``: [K, *event_shape]; ``stds``: [K] or one for all;
    ``weights``: [K] (normalised here; uniform if None). ValueError unless the stds are K (or one) positive
    numbers and the weights K non-negative numbers."""

    def __init__(self, means, stds, weights=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() == 1:
            means = means[:, None]
        self.event_shape = tuple(means.shape[1:])
        self.K, self.dim = means.shape[0], math.prod(self.event_shape)
        self.means = means.reshape(self.K, self.dim)
        stds = torch.as_tensor(stds, dtype=torch.float64)
        w = torch.ones(self.K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if stds.numel() not in (1, self.K) or w.shape != (self.K,) or (w < 0).any() or (stds <= 0).any():
            raise ValueError(f"GaussianMixture needs K means, K positive stds (or one) and K non-negative weights; "
                             f"got K = {self.K}, stds of shape {list(stds.shape)}, weights of shape {list(w.shape)}")
        self.stds = stds.reshape(-1).expand(self.K).clone()
        self.weights = w / w.sum()

    # -- t = 0 ----------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, return_labels: bool = False,
               dtype=torch.float32):
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = (self.means[k] + self.stds[k, None] * z).to(dtype).reshape((n,) + self.event_shape)
        return (x, k) if return_labels else x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p_0(x), shape [B]."""
        return self._joint(x, torch.ones(1), self.stds ** 2).logsumexp(1).to(x.dtype)

    # -- time t under an SDE --------------------------------------------------------------------
    def _params(self, sde: SDE, t: torch.Tensor):
        """Per-sample component means scale s and variances s^2 (v_k + sigma^2): [B], [B, K]."""
        s = sde.scale(t).double()
        var = s[:, None] ** 2 * (self.stds[None] ** 2 + sde.sigma(t).double()[:, None] ** 2)
        return s, var

    def _joint(self, x: torch.Tensor, s: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; s mu_k, var_k I): [B, K]."""
        x = x.reshape(x.shape[0], -1).double()
        var = var.expand(x.shape[0], self.K) if var.dim() == 2 else var[None].expand(x.shape[0], self.K)
        d2 = (x[:, None, :] - s.reshape(-1, 1, 1) * self.means[None]).pow(2).sum(-1)
        return self.weights.log()[None] - 0.5 * d2 / var - 0.5 * self.dim * torch.log(2 * math.pi * var)

    def log_prob_t(self, sde: SDE, x: torch.Tensor, t) -> torch.Tensor:
        """log p_t(x), shape [B]."""
        s, var = self._params(sde, _as_t(t, x))
        return self._joint(x, s, var).logsumexp(1).to(x.dtype)

    def class_log_prob(self, sde: SDE, x: torch.Tensor, t) -> torch.Tensor:
        """log p_t(k | x): the exact noisy-data classifier over components, shape [B, K]."""
        s, var = self._params(sde, _as_t(t, x))
        return self._joint(x, s, var).log_softmax(1).to(x.dtype)

    def score_fn(self, sde: SDE, component: int | None = None):
        """Exact score of p_t under ``sde`` (of component ``component`` alone if given)."""
        def score(x: torch.Tensor, t) -> torch.Tensor:
            t = _as_t(t, x)
            s, var = self._params(sde, t)
            xf = x.reshape(x.shape[0], -1).double()
            if component is None:
                r = self._joint(x, s, var).softmax(1)                     # p_t(k | x)
            else:
                r = torch.zeros(x.shape[0], self.K, dtype=torch.float64, device=x.device)
                r[:, component] = 1.0
            m = s[:, None, None] * self.means[None]                       # [B, K, D]
            out = (r[:, :, None] * (m - xf[:, None]) / var[:, :, None]).sum(1)
            return out.to(x.dtype).reshape(x.shape)
        return score

    def component(self, k: int) -> "GaussianMixture":
        return GaussianMixture(self.means[k:k + 1].reshape((1,) + self.event_shape), self.stds[k:k + 1])

    def __repr__(self):
        return f"GaussianMixture(K={self.K}, event_shape={self.event_shape})"

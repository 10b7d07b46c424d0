"""The exact probability-flow endpoint of Gaussian data, for solver convergence tests."""
import math

import torch

import sdekit


def gaussian_flow(sde, n: int = 64):
    """(gmm, x_T, exact) for data N(mu, v I) in 3-D: n prior draws x_T [n, 3] (float64) and the
    probability-flow endpoint at sigma = 0 of each, mu + sqrt(v / (v + sigma_T^2)) (y_T - mu) with
    y_T = x_T / s(T)."""
    mu, v = torch.tensor([[0.5, -1.0, 0.25]], dtype=torch.float64), 0.09
    gmm = sdekit.GaussianMixture(mu, math.sqrt(v))
    xT = sde.prior_sampling((n, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    T = torch.tensor([sde.T], dtype=torch.float64)
    yT, sT = xT / sde.scale(T).item(), sde.sigma(T).item()
    return gmm, xT, mu + math.sqrt(v / (v + sT ** 2)) * (yT - mu)

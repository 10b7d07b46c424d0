"""Likelihoods through the probability-flow ODE against exact Gaussian-mixture densities."""
import math
import sys

import pytest
import torch

import sdekit
from sdekit.models.bundle import random_model
from sdekit.tasks.likelihood import (bits_per_dim, decode, default_eps, encode, interpolate, likelihood, slerp,
                               uniform_dequantize)

import sdekit.tasks.likelihood as LIK

from conftest import energy_distance

LN2 = math.log(2)
SDES = {"vp": sdekit.VPSDE(), "ve": sdekit.VESDE(), "subvp": sdekit.SubVPSDE(), "edm": sdekit.EDMSDE()}


def mixture():
    return sdekit.GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]]),
                                  torch.tensor([0.5, 0.3, 0.7]), torch.tensor([0.3, 0.3, 0.4]))


@pytest.mark.parametrize("name", list(SDES))
def test_bpd_matches_exact_density(name, gen):
    """score_sde's setting (RK45, rtol = atol = 1e-5, exact divergence): |bpd - exact| < 0.01."""
    sde, gmm = SDES[name], mixture()
    x = gmm.sample(32, generator=gen).double()
    bpd, info = likelihood(sde, gmm.score_fn(sde), x, probes="exact", return_info=True)
    exact = -gmm.log_prob(x) / (2 * LN2)
    assert float((bpd - exact).abs().mean()) < 0.01
    assert info["nfe"] > 10 and bpd.shape == (32,)


def test_solver_is_exact_with_the_true_prior(gen):
    """With log p_T exact, (ll) reproduces log p_eps to solver accuracy, forwards in t and in sigma."""
    sde, gmm = SDES["vp"], mixture()
    x = gmm.sample(32, generator=gen).double()
    eps = default_eps(sde)
    exact = -gmm.log_prob_t(sde, x, eps) / (2 * LN2)
    prior = lambda z: gmm.log_prob_t(sde, z, sde.T)  # noqa: E731
    bpd = likelihood(sde, gmm.score_fn(sde), x, probes="exact", prior_logp=prior)
    assert float((bpd - exact).abs().mean()) < 2e-4 and float((bpd - exact).abs().max()) < 5e-3
    bpd_h = likelihood(sde, gmm.score_fn(sde), x, probes="exact", prior_logp=prior, solver="heun", steps=96)
    assert float((bpd_h - exact).abs().mean()) < 0.02


def test_hutchinson_is_unbiased_and_reports_its_error(gen):
    sde = SDES["vp"]
    gmm = sdekit.GaussianMixture(torch.randn(4, 6, generator=gen) * 2, 0.6)
    x = gmm.sample(4, generator=gen).double()
    ref = likelihood(sde, gmm.score_fn(sde), x, probes="exact", rtol=1e-3, atol=1e-3)
    for kind in ("rademacher", "gaussian"):
        bpd, info = likelihood(sde, gmm.score_fn(sde), x, probes=kind, n_probes=16, rtol=1e-3, atol=1e-3,
                               generator=gen, return_info=True)
        se = info["bpd_se"]
        assert (se > 0).all() and info["bpd_probes"].shape == (4, 16)
        assert ((bpd - ref).abs() < 4 * se + 1e-3).all()
    _, one = likelihood(sde, gmm.score_fn(sde), x, probes="rademacher", n_probes=1, rtol=1e-3, atol=1e-3,
                        generator=gen, return_info=True)
    assert torch.isnan(one["bpd_se"]).all()


def test_low_dimension_uses_the_exact_divergence_by_default(gen):
    """2-D: one probe's noise was 0.13 bits/dim per sample; the default is now the exact divergence."""
    sde = SDES["vp"]
    gmm = sdekit.GaussianMixture(torch.tensor([[-1.5, 0.0], [1.5, 0.5]]), 0.3)
    x = gmm.sample(64, generator=gen).double()
    exact = -gmm.log_prob(x) / (2 * math.log(2))
    bpd, info = likelihood(sde, gmm.score_fn(sde), x, generator=gen, return_info=True)
    assert info["probes"] == "exact" and (info["bpd_se"] == 0).all()
    assert float((bpd - exact).abs().median()) < 0.01
    noisy = likelihood(sde, gmm.score_fn(sde), x, probes="rademacher", generator=gen)
    assert float((noisy - exact).abs().median()) > 0.03


def test_8bit_offset_matches_discrete_probabilities(gen):
    """(bpd) with data in [-1, 1]: the bits/dim of the pixel-bin probabilities of a Gaussian."""
    sde, s = SDES["vp"], 0.3
    gmm = sdekit.GaussianMixture(torch.zeros(1, 2), s)
    k = torch.randint(100, 156, (16, 2), generator=gen).double()
    x = -1 + 2 * (k + 0.5) / 256                                           # bin centres
    normal = torch.distributions.Normal(0.0, s)
    lo, hi = -1 + 2 * k / 256, -1 + 2 * (k + 1) / 256
    p_bins = (normal.cdf(hi) - normal.cdf(lo)).log().sum(1)
    exact = -p_bins / (2 * LN2)
    bpd = likelihood(sde, gmm.score_fn(sde), x, probes="exact", data_range=(-1, 1), rtol=1e-4, atol=1e-4)
    assert float((bpd - exact).abs().max()) < 0.01
    assert torch.allclose(bits_per_dim(torch.tensor([-3.0]), 1, 2.0), torch.tensor([3 / LN2 + 7]))
    assert torch.allclose(bits_per_dim(torch.tensor([-3.0]), 1, 1.0), torch.tensor([3 / LN2 + 8]))


def test_dequantize_stays_in_the_pixel_bin(gen):
    u = torch.randint(0, 256, (8, 1, 4, 4), generator=gen).float() / 255
    x = 2 * u - 1
    d = uniform_dequantize(x, (-1, 1), gen)
    k = (u * 255).round()
    v = (d + 1) / 2 * 256
    assert ((v >= k) & (v <= k + 1)).all() and not torch.equal(v, k)


@pytest.mark.parametrize("name", ["vp", "edm"])
def test_encode_decode_round_trip_and_latent_is_prior(name, gen):
    sde, gmm = SDES[name], mixture()
    x = gmm.sample(256, generator=gen).double()
    z = encode(sde, gmm.score_fn(sde), x)
    assert float((decode(sde, gmm.score_fn(sde), z) - x).abs().max()) < 1e-2
    prior = sde.prior_sampling((256, 2), generator=gen).double()
    floor = energy_distance(prior, sde.prior_sampling((256, 2), generator=gen).double())
    assert energy_distance(z, prior) < 5 * floor + 0.05 * sde.prior_std
    zh = encode(sde, gmm.score_fn(sde), x, solver="heun", steps=48)
    assert float((decode(sde, gmm.score_fn(sde), zh, solver="heun", steps=48) - x).abs().max()) < 0.05


def test_slerp_and_interpolate(gen):
    z0, z1 = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    assert torch.allclose(slerp(z0, z1, 0.0), z0, atol=1e-6) and torch.allclose(slerp(z0, z1, 1.0), z1, atol=1e-6)
    u0, u1 = z0 / z0.norm(dim=1, keepdim=True), z1 / z1.norm(dim=1, keepdim=True)
    assert torch.allclose(slerp(u0, u1, 0.3).norm(dim=1), torch.ones(3), atol=1e-5)   # stays on the sphere
    sde, gmm = SDES["vp"], mixture()
    x0, x1 = gmm.sample(2, generator=gen).double(), gmm.sample(2, generator=gen).double()
    path = interpolate(sde, gmm.score_fn(sde), x0, x1, n=5)
    assert path.shape == (5, 2, 2)
    assert torch.allclose(path[0], x0, atol=1e-2) and torch.allclose(path[-1], x1, atol=1e-2)


def test_network_model_with_hutchinson():
    """A Model's score_fn (run under no_grad) is still differentiated; the fast path gives similar numbers."""
    model = random_model((1, 8, 8), sde="vp", ch=8)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    g = torch.Generator().manual_seed(0)
    bpd, info = likelihood(model.sde, model.score_fn, x, data_range=(-1, 1), solver="heun", steps=8,
                           probes="rademacher", generator=g, return_info=True)
    assert torch.isfinite(bpd).all() and info["nfe"] == 16


@pytest.mark.parametrize("name", ["vp", "edm"])
def test_every_sample_of_a_gaussian_within_0_01_at_the_defaults(name, gen):
    """16-D Gaussian, closed-form log p_eps: every sample's bits/dim within 0.01 at the defaults (the exact
    divergence up to 64 dimensions; one Rademacher probe used to be off by ~0.3 bits/dim per sample)."""
    sde = SDES[name]
    gmm = sdekit.GaussianMixture(torch.linspace(-1, 1, 16)[None], 0.4)
    x = gmm.sample(16, generator=gen).double()
    exact = -gmm.log_prob_t(sde, x, default_eps(sde)) / (16 * LN2)
    bpd, info = likelihood(sde, gmm.score_fn(sde), x, return_info=True)
    assert info["probes"] == "exact" and info["vjps_per_nfe"] == 16
    assert float((bpd - exact).abs().max()) < 0.01


@pytest.mark.parametrize("solver", ["rk45", "rk45_logsigma"])
def test_every_sample_of_a_mixture_within_0_01(solver, gen):
    """A 3-component mixture in 8-D: every sample within 0.01 bits/dim of log p_eps, in t and in log sigma."""
    sde = SDES["vp"]
    gmm = sdekit.GaussianMixture(torch.randn(3, 8, generator=gen), torch.tensor([0.3, 0.5, 0.4]))
    x = gmm.sample(24, generator=gen).double()
    exact = -gmm.log_prob_t(sde, x, default_eps(sde)) / (8 * LN2)
    bpd, info = likelihood(sde, gmm.score_fn(sde), x, solver=solver, return_info=True)
    assert float((bpd - exact).abs().max()) < 0.01 and info["solver"] == solver


def test_divergences_in_one_call_match_the_jacobian(monkeypatch, gen):
    """The exact trace and the probes' e^T J e, computed on the batch repeated per probe (also in chunks),
    equal those of the full Jacobian."""
    W = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    x = torch.randn(3, 5, generator=gen, dtype=torch.float64)

    def velocity(z, t):
        return torch.tanh(z @ W) * t
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: velocity(v[None], 2.0)[0], xi) for xi in x])
    probes = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64)
    for rows in (1024, 4):                                  # one call; several calls
        monkeypatch.setattr(LIK, "CHUNK_ROWS", rows)
        v, tr = LIK._velocity_div(velocity, x, 2.0, None)
        assert torch.allclose(v, velocity(x, 2.0)) and tr.shape == (3, 1)
        assert torch.allclose(tr[:, 0], jac.diagonal(dim1=1, dim2=2).sum(1))
        _, est = LIK._velocity_div(velocity, x, 2.0, probes)
        assert torch.allclose(est, torch.einsum("kbi,bij,kbj->bk", probes, jac, probes))


def test_bad_input():
    sde, gmm = SDES["vp"], mixture()
    x = torch.zeros(2, 2)
    for kw in ({"probes": "bogus"}, {"solver": "euler"}, {"n_probes": 0}, {"eps": 2.0},
               {"dequantize": True}, {"data_scale": -1.0}, {"bpd_tol": 0.0}, {"rtol": -1.0}):
        with pytest.raises(sdekit.UserError):
            likelihood(sde, gmm.score_fn(sde), x, **kw)
    with pytest.raises(sdekit.UserError):
        likelihood(sde, gmm.score_fn(sde), torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(sdekit.UserError):
        likelihood(sde, lambda x, t: (x * 0).detach(), x)

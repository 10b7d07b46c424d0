"""The SDE family against closed forms, autograd and Monte-Carlo simulation of the forward SDE."""
import math

import pytest
import torch

import sdekit
from sdekit.core.errors import UserError

SDES = [sdekit.VESDE(0.01, 50.0), sdekit.VPSDE(0.1, 20.0), sdekit.SubVPSDE(0.1, 20.0), sdekit.EDMSDE(),
        sdekit.FlowSDE(), sdekit.FlowSDE(shift=3.0)]
IDS = ["ve", "vp", "subvp", "edm", "flow", "flow-shift3"]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_drift_and_diffusion_follow_from_scale_and_sigma(sde):
    # f = d log s / dt and g^2 = s^2 d sigma^2 / dt (EDM eqs. 28, 34), by autograd of the closed forms.
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64) * sde.T
    t.requires_grad_(True)
    dlogs = torch.autograd.grad((torch.log(sde.scale(t)) + 0 * t).sum(), t)[0]
    dsig2 = torch.autograd.grad((sde.sigma(t) ** 2 + 0 * t).sum(), t)[0]
    x = torch.ones(7, 3, dtype=torch.float64)
    drift, g = sde.sde(x, t.detach())
    torch.testing.assert_close(drift[:, 0], dlogs)
    torch.testing.assert_close(g ** 2, sde.scale(t.detach()) ** 2 * dsig2)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_sigma_inv_inverts_sigma(sde):
    t = torch.linspace(0.01, 1.0, 11, dtype=torch.float64) * sde.T
    torch.testing.assert_close(sde.sigma_inv(sde.sigma(t)), t)


def test_closed_forms_match_song_et_al():
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    x0 = torch.ones(2, 1, dtype=torch.float64)
    ve = sdekit.VESDE(0.01, 50.0)
    _, std = ve.marginal_prob(x0, t)
    torch.testing.assert_close(std, 0.01 * (50 / 0.01) ** t)
    vp, sub = sdekit.VPSDE(0.1, 20.0), sdekit.SubVPSDE(0.1, 20.0)
    lmc = -0.25 * t ** 2 * (19.9) - 0.5 * t * 0.1                       # log mean coefficient
    mean, std = vp.marginal_prob(x0, t)
    torch.testing.assert_close(mean[:, 0], torch.exp(lmc))
    torch.testing.assert_close(std, torch.sqrt(1 - torch.exp(2 * lmc)))
    mean, std = sub.marginal_prob(x0, t)
    torch.testing.assert_close(mean[:, 0], torch.exp(lmc))
    torch.testing.assert_close(std, 1 - torch.exp(2 * lmc))
    _, g = sub.sde(x0, t)
    beta = 0.1 + t * 19.9
    torch.testing.assert_close(g, torch.sqrt(beta * (1 - torch.exp(-2 * (0.1 * t + 0.5 * 19.9 * t ** 2)))))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginals_match_monte_carlo_simulation(sde):
    # Simulate dx = f x dt + g dw from x0 with fine Euler-Maruyama; compare mean and variance.
    # The kernel's variance s^2 sigma(t)^2 includes s^2 sigma(0)^2, nonzero for VE (sigma_min^2).
    g = torch.Generator().manual_seed(1)
    n, steps, t_end = 20000, 400, 0.4 * sde.T
    x0 = torch.full((n, 1), 1.5, dtype=torch.float64)
    x, dt = x0.clone(), t_end / steps
    for i in range(steps):
        t = torch.full((n,), i * dt, dtype=torch.float64)
        drift, diff = sde.sde(x, t)
        x = x + drift * dt + diff[:, None] * math.sqrt(dt) * torch.randn(x.shape, generator=g, dtype=x.dtype)
    tt = torch.full((n,), t_end, dtype=torch.float64)
    mean, std = sde.marginal_prob(x0, tt)
    s0 = sde.sigma(torch.zeros(1, dtype=torch.float64))
    var = std[0] ** 2 - sde.scale(tt[:1]) ** 2 * s0 ** 2
    se_mean = var.sqrt() / math.sqrt(n)
    assert abs(x.mean() - mean[0, 0]) < 4 * se_mean + 1e-2 * var.sqrt()
    assert abs(x.var() / var - 1) < 0.05


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_logp_matches_torch_distributions(sde, gen):
    z = sde.prior_sampling((5, 2, 3, 3), generator=gen)
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), ref)
    assert abs(float(z.std()) / sde.prior_std - 1) < 0.35


def test_prior_sampling_is_reproducible_with_generator():
    sde = sdekit.VPSDE()
    a = sde.prior_sampling((4, 3), generator=torch.Generator().manual_seed(3))
    b = sde.prior_sampling((4, 3), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_reverse_drift_signs(sde):
    # Reverse SDE drift f - g^2 score, probability-flow drift f - g^2 score / 2 (Song et al. eqs. 6, 13).
    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.full((4,), 0.5 * sde.T, dtype=torch.float64)
    score = lambda x, t: -x                                        # noqa: E731
    f, g = sde.sde(x, t)
    rd, rg = sde.reverse(score).sde(x, t)
    od, og = sde.reverse(score, probability_flow=True).sde(x, t)
    torch.testing.assert_close(rd, f + g[:, None] ** 2 * x)
    torch.testing.assert_close(od, f + 0.5 * g[:, None] ** 2 * x)
    torch.testing.assert_close(rg, g)
    assert torch.all(og == 0)
    torch.testing.assert_close(sde.ode_drift(score, x, t), od)


def test_discretize_smld_and_ddpm():
    ve, vp = sdekit.VESDE(0.01, 50.0, N=10), sdekit.VPSDE(0.1, 20.0, N=100)
    x = torch.ones(1, 2, dtype=torch.float64)
    t = torch.tensor([0.5], dtype=torch.float64)
    f, G = ve.discretize(x, t)
    assert torch.all(f == 0)
    torch.testing.assert_close(G ** 2, ve.sigma(t) ** 2 - ve.sigma(t - 0.1) ** 2)
    f, G = vp.discretize(x, t)
    b = vp.beta(t) * 0.01
    torch.testing.assert_close(f[:, 0], torch.sqrt(1 - b) - 1)
    torch.testing.assert_close(G, torch.sqrt(b))


def test_get_sde_by_name_and_config():
    for sde in SDES:
        again = sdekit.get_sde(sde.config())
        assert type(again) is type(sde) and again.config() == sde.config()
    with pytest.raises(ValueError, match="unknown SDE"):
        sdekit.get_sde("vee")
    with pytest.raises(ValueError):
        sdekit.VESDE(sigma_min=5.0, sigma_max=1.0)
    assert issubclass(UserError, ValueError)

"""The discrete-time VP (DDPM) schedule as a member of the SDE family: its grid is DDPM's exactly,
the eps network's score at a grid timestep is -eps / sqrt(1 - abar), and every solver, SDEdit,
inpainting and the likelihood work on it (checked against exact mixture answers)."""
import math

import pytest
import torch

import sdekit
from sdekit.core.denoisers import ModelSpaceInput, NetworkDenoiser
from sdekit.tasks.likelihood import default_eps, likelihood
from sdekit.core.sde import DiscreteVPSDE, get_sde

from conftest import energy_distance

F64 = torch.float64
SDE = DiscreteVPSDE(schedule="linear")


def grid_t(sde, i):
    return torch.as_tensor(i, dtype=F64) / (sde.N - 1)


def test_grid_is_ddpm_and_timestep_inverts_sigma():
    sde = SDE
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    abar = torch.cumprod(1 - betas, 0)
    i = torch.arange(1000)
    t = grid_t(sde, i)
    torch.testing.assert_close(sde.sigma(t), ((1 - abar) / abar).sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(sde.scale(t) ** 2, abar, rtol=1e-12, atol=0)
    torch.testing.assert_close(sde.timestep(sde.sigma(t)), i.to(F64), rtol=0, atol=1e-9)
    mean, std = sde.marginal_prob(torch.ones(1000, 1, dtype=F64), t)
    torch.testing.assert_close(std, (1 - abar).sqrt(), rtol=1e-12, atol=0)     # DDPM's kernel
    # between grid points log sigma is linear in the timestep; outside it extends the end slopes
    mid = sde.sigma(grid_t(sde, torch.tensor([10.5])))
    torch.testing.assert_close(mid.log(), (sde.sigma(grid_t(sde, torch.tensor([10, 11]))).log().mean()).reshape(1))
    s = torch.tensor([1e-3, 0.02, 1.0, 157.0, 400.0], dtype=F64)
    torch.testing.assert_close(sde.sigma(sde.sigma_inv(s)), s)
    assert float(sde.timestep(torch.tensor([400.0], dtype=F64))) == 999.0     # the network's range
    assert float(sde.timestep(torch.tensor([1e-4], dtype=F64))) == 0.0


def test_config_round_trip_and_schedules():
    for sde in (SDE, DiscreteVPSDE(schedule="scaled_linear", N=50, beta_start=1e-3, beta_end=0.012),
                DiscreteVPSDE(schedule="squaredcos_cap_v2", N=100), DiscreteVPSDE(betas=torch.full((20,), 0.05)),
                DiscreteVPSDE(torch.linspace(0.99, 0.01, 30))):
        back = get_sde(sde.config())
        assert type(back) is sdekit.DiscreteVPSDE and repr(back) == repr(sde)
        torch.testing.assert_close(back.alphas_cumprod, sde.alphas_cumprod, rtol=0, atol=0)
    for bad in ({"alphas_cumprod": [0.5, 0.6]}, {"alphas_cumprod": [0.9, 1.2]}, {"betas": [0.1, 1.0]},
                {"schedule": "quadratic"}, {"schedule": ["linear"]}, {"alphas_cumprod": [0.9, 0.5], "schedule": "linear"},
                {}):
        with pytest.raises(sdekit.UserError):
            DiscreteVPSDE(**bad)


def test_beta_schedules_are_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for name, kw in (("linear", {}), ("scaled_linear", {"beta_start": 0.00085, "beta_end": 0.012}),
                     ("squaredcos_cap_v2", {})):
        ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=name, **kw).alphas_cumprod
        ours = DiscreteVPSDE(schedule=name, N=1000, **kw).alphas_cumprod
        torch.testing.assert_close(ours.float(), ref, rtol=2e-5, atol=1e-7)


class EpsNet(torch.nn.Module):
    """A smooth stand-in eps network that records the timesteps it is called with."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, timestep):
        self.seen.append(timestep.clone())
        return torch.tanh(x) * torch.cos(timestep / 300).reshape(-1, 1) + 0.1 * (timestep / 1000).reshape(-1, 1)


def test_score_at_grid_timesteps_is_minus_eps_over_std():
    sde, net = SDE, EpsNet()
    den = NetworkDenoiser(net, sde, "eps", ModelSpaceInput("timestep"))
    i = torch.tensor([0, 1, 17, 500, 998, 999])
    x = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(0)) * 2
    score = den.score(x, grid_t(sde, i))
    abar = sde.alphas_cumprod[i]
    torch.testing.assert_close(net.seen[-1], i.to(F64), rtol=0, atol=1e-9)     # the network saw timestep i
    expected = -net(x, i.to(F64)) / (1 - abar).sqrt()[:, None]
    torch.testing.assert_close(score, expected, rtol=1e-9, atol=1e-12)


def test_drift_and_diffusion_are_the_kernels_derivatives():
    sde = SDE
    t = torch.tensor([0.0013, 0.2, 0.5, 0.9], dtype=F64)
    h = 1e-7
    dlog_s = (sde.scale(t + h).log() - sde.scale(t - h).log()) / (2 * h)
    dsig2 = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(sde.drift_coef(t), dlog_s, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(sde.diffusion_sq(t), sde.scale(t) ** 2 * dsig2, rtol=1e-5, atol=1e-9)
    # its own discretisation is DDPM's step at the grid: 1 - b_i = abar_i / abar_{i-1} = 1 - beta_i
    x = torch.ones(1, 1, dtype=F64)
    f, G = sde.discretize(x, grid_t(sde, 300), dt=1 / 999)
    beta = 1e-4 + 300 * (0.02 - 1e-4) / 999                     # betas[300], 0-based
    torch.testing.assert_close(G, torch.tensor([math.sqrt(beta)], dtype=F64))


def mixture():
    return sdekit.GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), torch.tensor([0.3, 0.5]),
                                  torch.tensor([0.4, 0.6]))


CASES = [("reverse_diffusion", 300, {}), ("em", 300, {}), ("ancestral", 300, {}), ("pc", 200, {}),
         ("ode", 1, {}), ("ddim", 60, {}), ("heun", 30, {}), ("dpm_solver", 25, {})]


@pytest.mark.parametrize("sampler,steps,opts", CASES, ids=[c[0] for c in CASES])
def test_every_sampler_reproduces_a_mixture(sampler, steps, opts):
    gmm, n = mixture(), 800
    x = sdekit.sample(SDE, gmm.score_fn(SDE), (n, 2), sampler=sampler, steps=steps,
                      generator=torch.Generator().manual_seed(1), **opts)
    a = gmm.sample(n, generator=torch.Generator().manual_seed(2))
    b = gmm.sample(n, generator=torch.Generator().manual_seed(3))
    assert energy_distance(x, a) < 3 * energy_distance(a, b) + 3e-3


def test_sdedit_and_inpaint_run_on_it():
    gmm = mixture()
    score = gmm.score_fn(SDE)
    guide = torch.tensor([[2.0, 1.0], [-2.0, 0.0]]).repeat(100, 1)
    out = sdekit.sdedit(SDE, score, guide, t0=0.3, sampler="ddim", steps=20, generator=torch.Generator().manual_seed(0))
    assert (out - guide).norm(dim=1).mean() < 1.0                      # stays in the guide's mode
    mask = torch.tensor([[1.0, 0.0]])
    filled = sdekit.inpaint(SDE, score, guide, mask, sampler="ddim", steps=30, generator=torch.Generator().manual_seed(0))
    assert torch.equal(filled[:, 0], guide[:, 0])
    # the free coordinate follows the conditional of the mode the kept coordinate selects
    assert abs(float(filled[::2, 1].mean()) - 1.0) < 0.25 and abs(float(filled[1::2, 1].mean())) < 0.25


def test_likelihood_matches_exact_density():
    gmm = mixture()
    x = gmm.sample(16, generator=torch.Generator().manual_seed(4)).double()
    bpd = likelihood(SDE, gmm.score_fn(SDE), x, probes="exact")
    eps = default_eps(SDE)
    exact = -gmm.log_prob_t(SDE, x, eps) / (2 * math.log(2))
    assert float((bpd - exact).abs().mean()) < 0.02

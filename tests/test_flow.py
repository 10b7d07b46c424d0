"""Flow matching as a member of the family: FlowSDE's path and marginals against the straight path
x = (1 - tau) x0 + tau n simulated directly, the likelihood of a mixture against its exact density, the
samplers and editors on it, and the "velocity" parametrisation against the exact velocity of Gaussian data."""
import math

import pytest
import torch

import sdekit
from sdekit.tasks.likelihood import likelihood

from conftest import energy_distance


def mixture():
    return sdekit.GaussianMixture(torch.tensor([[-1.5, 0.0], [1.5, 0.5], [0.0, -1.0]], dtype=torch.float64),
                                  torch.tensor([0.3, 0.4, 0.25], dtype=torch.float64),
                                  torch.tensor([0.3, 0.4, 0.3], dtype=torch.float64))


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_the_kernel_is_the_straight_path(shift):
    """mean (1 - tau) x0 and std tau with tau = k t / (1 + (k - 1) t) (diffusers' shifted sigma)."""
    sde = sdekit.FlowSDE(shift=shift)
    t = torch.tensor([0.0, 0.1, 0.5, 0.9, sde.T], dtype=torch.float64)
    tau = shift * t / (1 + (shift - 1) * t)
    x0 = torch.full((5, 2), 2.0, dtype=torch.float64)
    mean, std = sde.marginal_prob(x0, t)
    torch.testing.assert_close(mean, (1 - tau)[:, None] * x0)
    torch.testing.assert_close(std, tau)
    assert sde.prior_std == pytest.approx(float(tau[-1]))


def test_a_mixtures_marginal_under_the_flow_is_that_of_the_simulated_path():
    """Empirical CDF of x = (1 - t) x0 + t n (x0 from the mixture) against the CDF of the marginal the
    mixture's closed form gives under FlowSDE (log_prob_t), on a 1-D mixture, at several t."""
    gmm = sdekit.GaussianMixture(torch.tensor([[-1.0], [2.0]], dtype=torch.float64),
                                 torch.tensor([0.2, 0.5], dtype=torch.float64), torch.tensor([0.4, 0.6], dtype=torch.float64))
    sde, n, g = sdekit.FlowSDE(), 200_000, torch.Generator().manual_seed(0)
    grid = torch.linspace(-4, 4, 4001, dtype=torch.float64)[:, None]
    for t in (0.2, 0.5, 0.8):
        x = (1 - t) * gmm.sample(n, generator=g).double() + t * torch.randn(n, 1, generator=g, dtype=torch.float64)
        pdf = gmm.log_prob_t(sde, grid, torch.full((len(grid),), t, dtype=torch.float64)).exp()
        cdf = torch.cumulative_trapezoid(pdf, grid[:, 0])
        for q in (-1.5, -0.5, 0.5, 1.5, 2.5):
            k = int((grid[:, 0] < q).sum()) - 1
            p = float(cdf[k - 1])
            emp = float((x[:, 0] < grid[k, 0]).double().mean())
            assert abs(emp - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-4, (t, q, emp, p)


def test_likelihood_of_a_mixture_under_the_flow_matches_its_density(gen):
    sde, gmm = sdekit.FlowSDE(), mixture()
    x = gmm.sample(32, generator=gen).double()
    bpd = likelihood(sde, gmm.score_fn(sde), x, probes="exact")
    exact = -gmm.log_prob(x) / (2 * math.log(2))
    assert float((bpd - exact).abs().mean()) < 0.01


N = 1500


@pytest.mark.parametrize("sampler,steps", [("ddim", 100), ("heun", 40), ("abm", None), ("dpm_solver", 40),
                                           ("reverse_diffusion", 500), ("pc", 500), ("ode", None)])
def test_samplers_reproduce_a_mixture_on_the_flow(sampler, steps):
    sde, gmm = sdekit.FlowSDE(), mixture()
    x = sdekit.sample(sde, gmm.score_fn(sde), (N, 2), sampler=sampler, steps=steps,
                      generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = gmm.sample(N, generator=torch.Generator().manual_seed(2)).double()
    floor = energy_distance(gmm.sample(N, generator=torch.Generator().manual_seed(3)).double(), exact)
    ed = energy_distance(x, exact)
    assert ed < 3 * floor + 2e-3, f"{sampler}: energy distance {ed:.4f}, floor {floor:.4f}"


def test_sdedit_and_inpainting_run_on_the_flow():
    sde, gmm = sdekit.FlowSDE(), mixture()
    g = torch.Generator().manual_seed(4)
    guide = gmm.sample(N, generator=g).double()
    out = sdekit.sdedit(sde, gmm.score_fn(sde), guide, t0=0.5, generator=g)
    floor = energy_distance(gmm.sample(N, generator=g).double(), guide)
    assert energy_distance(out, guide) < 3 * floor + 2e-3          # an edit of data keeps the data's law
    mask = torch.tensor([1.0, 0.0], dtype=torch.float64)
    filled = sdekit.inpaint(sde, gmm.score_fn(sde), guide, mask, steps=200, generator=g)
    assert torch.equal(filled[:, 0], guide[:, 0]) and torch.isfinite(filled).all()


SD = 0.6


class ExactVelocity(torch.nn.Module):
    """E[n - x0 | x_tau] for x0 ~ N(0, SD^2 I) on x = (1 - tau) x0 + tau n, from the closed form
    E[x0 | x] = (1 - tau) SD^2 / ((1 - tau)^2 SD^2 + tau^2) x and n - x0 = (x - x0) / tau."""

    def forward(self, x, tau):
        tau = tau.reshape(-1, 1)
        d = (1 - tau) * SD ** 2 / ((1 - tau) ** 2 * SD ** 2 + tau ** 2) * x
        return (x - d) / tau


@pytest.mark.parametrize("shift,time_input", [(1.0, "t"), (1.0, "flow"), (3.0, "flow")])
def test_wrapping_an_exact_velocity_field_gives_the_exact_score(shift, time_input):
    sde = sdekit.FlowSDE(shift=shift)
    model = sdekit.wrap(ExactVelocity(), prediction="velocity", sde=sde, time_input=time_input, shape=(3,))
    t = torch.tensor([0.05, 0.3, 0.6, 0.9], dtype=torch.float64)
    tau = shift * t / (1 + (shift - 1) * t)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = -x / ((1 - tau) ** 2 * SD ** 2 + tau ** 2)[:, None]
    torch.testing.assert_close(model.score_fn(x, t), exact)

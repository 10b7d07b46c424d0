"""Consistency models: the parametrisation's boundary condition and its coefficients against diffusers'
scheduler, bundles and wrap of a consistency network, and the "consistency" sampler (Song et al. 2023,
Algorithm 1) against the exact consistency function of Gaussian data, for sampling, SDEdit and inpainting."""
import math

import pytest
import torch

import sdekit
from sdekit.models.bundle import load, save_bundle
from sdekit.core.denoisers import Consistency, Denoiser, NetworkDenoiser, Preconditioned
from sdekit.models.nets import build_net
from sdekit.core.noise import bcast

M, S, SMIN = 0.7, 0.5, 0.002           # data N(M, S^2 I); boundary level
SDE = sdekit.EDMSDE(sigma_min=SMIN, sigma_max=80.0)


class ExactConsistency(Denoiser):
    """The consistency function of N(M, S^2 I) data under the PF-ODE of an s = 1 member: the ODE keeps
    (y - M) / sqrt(S^2 + sigma^2) fixed, so f(y, sigma) = M + (y - M) sqrt(S^2 + SMIN^2) / sqrt(S^2 + sigma^2)."""
    consistency = True
    sigma_min = SMIN

    def denoise(self, y, sigma, class_labels=None):
        sigma = torch.as_tensor(sigma, dtype=y.dtype)
        return M + (y - M) * bcast(math.sqrt(S ** 2 + SMIN ** 2) / (S ** 2 + sigma ** 2).sqrt(), y)


class Constant(torch.nn.Module):
    """F = c, whatever the input (to read off c_skip and c_out)."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x, cond, class_labels=None):
        return torch.full_like(x, self.c)


def test_the_coefficients_are_those_of_diffusers_consistency_scheduler():
    from diffusers import CMStochasticIterativeScheduler
    sched = CMStochasticIterativeScheduler(sigma_min=0.01, sigma_data=0.4)
    sigma = torch.tensor([0.01, 0.05, 0.8, 3.0, 80.0], dtype=torch.float64)
    c_skip, c_out = sched.get_scalings_for_boundary_condition(sigma)
    y = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    den = NetworkDenoiser(Constant(1.5), SDE, "consistency", sigma_data=0.4, sigma_min=0.01)
    torch.testing.assert_close(den.denoise(y, sigma), c_skip[:, None] * y + c_out[:, None] * 1.5)
    assert den.consistency and den.sigma_min == 0.01


def test_boundary_condition_holds_exactly_for_any_network():
    net = build_net({"type": "unet", "in_channels": 1, "resolution": 8, "ch": 8, "ch_mult": [1, 2],
                     "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0})
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    pre = Preconditioned(net, SDE, kind="consistency", sigma_min=SMIN)
    y = torch.randn(3, 1, 8, 8)
    assert torch.equal(pre.denoise(y, SMIN), y)
    assert not torch.allclose(pre.denoise(y, 1.0), y)
    with pytest.raises(ValueError, match="sigma_min"):
        Preconditioned(net, SDE, kind="edm", sigma_min=0.01)
    with pytest.raises(sdekit.UserError, match="sigma_min"):
        Consistency(0.0)


def test_a_consistency_bundle_saves_loads_and_samples_with_its_own_sampler(tmp_path):
    net = build_net({"type": "unet", "in_channels": 1, "resolution": 8, "ch": 8, "ch_mult": [1, 2],
                     "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0})
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    pre = Preconditioned(net, sdekit.VPSDE(), kind="consistency", sigma_min=0.005)
    save_bundle(tmp_path / "cm", pre, shape=(1, 8, 8), name="cm")
    model = load(tmp_path / "cm")
    assert model.consistency and model.denoiser.sigma_min == 0.005
    assert model.config["precond"] == {"kind": "consistency", "sigma_data": 0.5, "sigma_min": 0.005}
    y = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(model.denoise(y, 0.3), pre.denoise(y, 0.3))
    x, info = sdekit.models.model.generate(model, 3, seed=1, return_info=True)
    assert info == {"nfe": 2, "steps": 2} and x.shape == (3, 1, 8, 8)
    assert not sdekit.load("digits").consistency


def test_wrap_takes_a_consistency_network():
    model = sdekit.wrap(Constant(0.25), prediction="consistency", sde=SDE, shape=(2,), sigma_min=0.01)
    assert model.consistency and model.config["sigma_min"] == 0.01
    y = torch.tensor([[1.0, -1.0]])
    torch.testing.assert_close(model.denoise(y, 0.01), y)
    with pytest.raises(sdekit.UserError, match="sigma_min"):
        sdekit.wrap(Constant(0.0), prediction="eps", sde=SDE, shape=(2,), sigma_min=0.01)
    with pytest.raises(sdekit.UserError, match="time_input"):
        sdekit.wrap(Constant(0.0), prediction="consistency", sde=SDE, shape=(2,), time_input="t")


def _moments(x):
    return x.mean().item(), x.var().item()


N = 400_000


def _close(x, mean, var):
    """Sample mean and variance within 5 standard errors of the Gaussian's."""
    m, v = _moments(x)
    assert abs(m - mean) < 5 * math.sqrt(var / x.numel()), (m, mean)
    assert abs(v - var) < 5 * var * math.sqrt(2 / x.numel()), (v, var)


def test_one_step_from_the_exact_marginal_is_exactly_the_boundary_marginal():
    g = torch.Generator().manual_seed(0)
    x_T = M + math.sqrt(S ** 2 + 80.0 ** 2) * torch.randn(N, 1, dtype=torch.float64, generator=g)
    x, info = sdekit.sample(SDE, ExactConsistency(SDE), x_T=x_T, sampler="consistency", steps=1, generator=g,
                            return_info=True)
    assert info["nfe"] == 1
    _close(x, M, S ** 2 + SMIN ** 2)


def test_one_step_from_the_prior_matches_its_closed_form():
    """From the prior N(0, T^2): f(x_T) = M (1 - k) + k x_T with k = sqrt(S^2 + SMIN^2) / sqrt(S^2 + T^2)."""
    k = math.sqrt(S ** 2 + SMIN ** 2) / math.sqrt(S ** 2 + 80.0 ** 2)
    x, info = sdekit.sample(SDE, ExactConsistency(SDE), (N, 1), sampler="consistency", steps=1,
                            generator=torch.Generator().manual_seed(1), dtype=torch.float64, return_info=True)
    assert info["nfe"] == 1 and x.shape == (N, 1) and x.dtype == torch.float64
    _close(x, M * (1 - k), (k * 80.0) ** 2)          # asserts the mean and variance within 5 standard errors


@pytest.mark.parametrize("grid", [dict(steps=2), dict(steps=4), dict(sigmas=[80.0, 5.0, 0.3, 0.0])])
def test_multistep_sampling_with_the_exact_function_stays_exact(grid):
    g = torch.Generator().manual_seed(2)
    x_T = M + math.sqrt(S ** 2 + 80.0 ** 2) * torch.randn(N, 1, dtype=torch.float64, generator=g)
    x, info = sdekit.sample(SDE, ExactConsistency(SDE), x_T=x_T, sampler="consistency", generator=g,
                            return_info=True, **grid)
    assert info["nfe"] == info["steps"]
    _close(x, M, S ** 2 + SMIN ** 2)


def test_the_default_two_step_grid_is_sigma_max_then_0821():
    seen = []
    sdekit.sample(SDE, ExactConsistency(SDE), (2, 1), sampler="consistency",
                  callback=lambda st: seen.append(st.sigma))
    assert seen == pytest.approx([0.821, 0.0])


def test_sdedit_and_inpainting_default_to_consistency_sampling_and_stay_exact():
    g = torch.Generator().manual_seed(3)
    guide = M + S * torch.randn(N, 1, dtype=torch.float64, generator=g)
    x, info = sdekit.sdedit(SDE, ExactConsistency(SDE), guide, t0=0.5, generator=g, return_info=True)
    assert info["sampler"] == "consistency" and info["nfe"] == 2
    _close(x, M, S ** 2 + SMIN ** 2)
    known = M + S * torch.randn(N, 2, dtype=torch.float64, generator=g)
    mask = torch.tensor([1.0, 0.0], dtype=torch.float64)
    out, info = sdekit.inpaint(SDE, ExactConsistency(SDE), known, mask, generator=g, return_info=True)
    assert info["sampler"] == "consistency"
    assert torch.equal(out[:, 0], known[:, 0])
    _close(out[:, 1:], M, S ** 2 + SMIN ** 2)


def test_the_commands_default_to_consistency_sampling_on_a_consistency_model(tmp_path, capsys):
    from sdekit.apps.cli import main
    net = build_net({"type": "unet", "in_channels": 1, "resolution": 8, "ch": 8, "ch_mult": [1, 2],
                     "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0})
    save_bundle(tmp_path / "cm", Preconditioned(net, sdekit.VPSDE(), kind="consistency"), shape=(1, 8, 8))
    assert main(["sample", "--model", str(tmp_path / "cm"), "-n", "2", "--out", str(tmp_path / "g.png")]) == 0
    assert "(consistency, 2 steps, 2 evaluations" in capsys.readouterr().out
    assert main(["sample", "--model", str(tmp_path / "cm"), "-n", "2", "--sampler", "heun", "--steps", "3",
                 "--out", str(tmp_path / "h.png")]) == 0
    assert "(heun, 3 steps" in capsys.readouterr().out

"""The few-evaluation solver `abm` and its cosine grid, against closed forms and exact mixture flows."""
import math

import pytest
import torch

import sdekit
from gaussian_flow import gaussian_flow
from sdekit.core.noise import SIGMA_DATA, TAIL, cos_theta, sigma_schedule
from sdekit.solvers.samplers import _exp_weights

SDES = {"vp": sdekit.VPSDE(), "ve": sdekit.VESDE(), "subvp": sdekit.SubVPSDE(), "edm": sdekit.EDMSDE()}


def test_weights_in_cos_theta_integrate_one_c_and_c_squared_exactly_over_a_long_step():
    # sum_j w_j p(c_j) = int_lam^lam' e^(u - lam') p(c(u)) du for p(c) = 1, c, c^2, c = cos theta(e^-u):
    # with w = e^u the integrals are (1 - e^-h), (sqrt(s^2 w'^2 + 1) - sqrt(s^2 w^2 + 1)) / (s w') and
    # [w - arctan(s w) / s] / w' between the ends. The step is the first one of a 3-level grid on VP.
    s = SIGMA_DATA
    lam, lam_next = -math.log(152.0), -math.log(0.8)
    nodes = [cos_theta(152.0), cos_theta(3.0), cos_theta(1.2)]
    ws = _exp_weights(nodes, lam, lam_next, lambda u: cos_theta(math.exp(-u)))
    w0, w1 = math.exp(lam), math.exp(lam_next)
    exact = {0: 1 - w0 / w1,
             1: (math.sqrt(s * s * w1 * w1 + 1) - math.sqrt(s * s * w0 * w0 + 1)) / (s * w1),
             2: ((w1 - math.atan(s * w1) / s) - (w0 - math.atan(s * w0) / s)) / w1}
    for k, want in exact.items():
        assert sum(w * c ** k for w, c in zip(ws, nodes)) == pytest.approx(want, rel=1e-10, abs=1e-13), k


@pytest.mark.parametrize("name", SDES)
def test_cosine_grid_is_uniform_in_v_and_its_last_step_to_zero_is_as_long_as_the_others(name):
    # v = arctan(sigma / sigma_data) + (TAIL / n) asinh(10 sigma / sigma_data), sdekit.core.noise.cosine
    sde = SDES[name]
    top = float(sde.sigma(torch.tensor([sde.T], dtype=torch.float64)))
    bottom = float(sde.sigma(torch.tensor([sde.eps], dtype=torch.float64)))
    for n in (1, 2, 5, 10, 20, 79, 80, 200, 1000):
        levels = sigma_schedule(sde, n, "cosine")
        assert len(levels) == n and bool((levels[1:] < levels[:-1]).all()) and bool((levels > 0).all())
        assert float(levels[0]) == pytest.approx(top, rel=1e-12)
        v = lambda s: math.atan(s / SIGMA_DATA) + TAIL / n * math.asinh(10 * s / SIGMA_DATA)
        vs = [v(s) for s in levels.tolist()] + [0.0]
        gaps = [a - b for a, b in zip(vs[:-1], vs[1:])]
        if v(top) / n >= v(bottom):                    # few levels: n equal steps down to sigma = 0
            assert max(gaps) == pytest.approx(min(gaps), rel=1e-9)
        else:                                          # many: uniform down to sigma(eps)
            assert float(levels[-1]) == pytest.approx(bottom, rel=1e-9)
            assert max(gaps[:-1]) == pytest.approx(min(gaps[:-1]), rel=1e-9)
    few = sigma_schedule(sde, 5, "cosine").tolist()
    assert sum(s > 2 for s in few) == 2 and few[-1] < 0.2        # a level in the tail, the last near the data


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("order,rate", [(2, 2.6), (3, 3.6)])
def test_abm_converges_at_one_order_above_its_predictor_to_the_exact_flow_of_a_gaussian(name, order, rate):
    # The corrector raises the order by one: about 3 for order=2 and 4 for order=3.
    sde = SDES[name]
    gmm, xT, exact = gaussian_flow(sde)        # data N(mu, v I) and its exact flow endpoints
    errs = []
    for n in (8, 16, 32):
        x, info = sdekit.sample(sde, gmm.score_fn(sde), x_T=xT, sampler="abm", steps=n, order=order,
                                return_info=True)
        assert info["nfe"] == n
        errs.append(float((x - exact).pow(2).sum(1).mean().sqrt()))
    assert math.log2(errs[1] / errs[2]) > rate, errs
    assert errs[2] < (2e-4 if order == 2 else 2e-5), errs


def unequal_mixture():
    """Four isotropic components of unequal widths and weights (the few-step benchmark's 2-D problem)."""
    return sdekit.GaussianMixture(torch.tensor([[-2.5, -0.5], [0.0, 2.0], [2.0, -1.5], [1.0, 0.5]], dtype=torch.float64),
                                  torch.tensor([0.2, 0.5, 0.35, 0.6], dtype=torch.float64),
                                  torch.tensor([0.15, 0.35, 0.2, 0.3], dtype=torch.float64))


def median_errors(sde, steps, samplers=("abm", "dpm_solver")):
    """Median distance to the exact probability-flow endpoint (RK45, tight) on the unequal mixture."""
    gmm = unequal_mixture()
    score = gmm.score_fn(sde)
    xT = sde.prior_sampling((300, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = sdekit.sample(sde, score, None, sampler="ode", x_T=xT, rtol=1e-8, atol=1e-8, eps=1e-5 * sde.T)
    return {s: float((sdekit.sample(sde, score, None, sampler=s, steps=steps, x_T=xT) - ref).norm(dim=1).median())
            for s in samplers}


@pytest.mark.parametrize("name", ["vp", "edm"])
def test_abm_at_ten_evaluations_is_several_times_closer_to_the_exact_flow_than_dpm_solver(name):
    """On widths and weights that differ, DPM-Solver++(2M) on its log-SNR grid spends half of 10 evaluations
    below sigma = 0.1 and interpolates D in log sigma, which overshoots on long steps (median error 0.07
    against the exact ODE endpoint, more than diffusers' schedulers); abm's cosine grid and corrector
    bring it below 0.01."""
    err = median_errors(SDES[name], 10)
    assert err["abm"] < 0.2 * err["dpm_solver"], err
    assert err["abm"] < 0.02, err


@pytest.mark.parametrize("steps,bound", [(2, 0.5), (3, 0.15), (4, 0.06)])
def test_abm_with_fewer_than_five_evaluations_extrapolates_to_sigma_zero_by_a_lower_degree(steps, bound):
    """The cubic in cos theta through the last 4 evaluations, extrapolated from a last level far from
    sigma = 0, overshoots (median error 0.54 at 2 evaluations, 0.063 at 4); a lower degree from further
    away keeps abm well ahead of dpm_solver and ddim."""
    err = median_errors(SDES["vp"], steps, ("abm", "dpm_solver", "ddim"))
    assert err["abm"] < bound and err["abm"] < 0.5 * min(err["dpm_solver"], err["ddim"]), err


def test_abm_keeps_known_pixels_and_takes_rewinds():
    """Inpainting runs in the step hook (replacement) with RePaint rewinds; the corrector is added to the
    hook's state and skipped after a rewind, so the known region stays the image exactly."""
    g = torch.Generator().manual_seed(0)
    sde = sdekit.SubVPSDE()
    gmm = sdekit.GaussianMixture(torch.randn(3, 1, 4, 4, generator=g), 0.3)
    image = gmm.sample(2, generator=g)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    for resample in (0, 2):
        out = sdekit.inpaint(sde, gmm.score_fn(sde), image, mask, steps=6, sampler="abm", generator=g,
                             resample=resample)
        assert torch.isfinite(out).all()
        assert torch.allclose(out[..., :2], image[..., :2])


def test_abm_order_is_checked():
    sde = sdekit.VESDE()
    gmm = sdekit.GaussianMixture(torch.zeros(1, 2), 0.5)
    with pytest.raises(sdekit.UserError, match="order"):
        sdekit.sample(sde, gmm.score_fn(sde), (4, 2), sampler="abm", steps=5, order=4)

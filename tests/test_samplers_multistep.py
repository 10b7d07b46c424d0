"""DPM-Solver++ of order 3 (exponential Adams-Bashforth with exact weights) against closed forms."""
import math

import pytest
import torch

import sdekit
from gaussian_flow import gaussian_flow
from sdekit.solvers.samplers import _exp_ab_weights


def test_exp_ab_weights_integrate_polynomials_times_exponential_exactly():
    # sum_j w_j p(lam_j) = int_lam^lam' e^(u - lam') p(u) du for p of degree <= 2; here p(u) = u^2.
    lams, lam_next = [-1.3, -0.4, 0.2], 1.5
    ws = _exp_ab_weights(lams, lam_next)
    got = sum(w * l ** 2 for w, l in zip(ws, lams))
    F = lambda u: math.exp(u - lam_next) * (u ** 2 - 2 * u + 2)      # antiderivative of e^(u-L) u^2
    assert got == pytest.approx(F(lam_next) - F(lams[-1]), rel=1e-12)


@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.VESDE()], ids=["vp", "ve"])
def test_order3_converges_at_third_order_to_the_exact_flow_of_a_gaussian(sde):
    """On a grid uniform in lambda = -log sigma, where the multistep orders are defined."""
    gmm, xT, exact = gaussian_flow(sde)        # data N(mu, v I) and its exact flow endpoints
    errs = {}
    for order in (2, 3):
        for n in (16, 32, 64):
            x = sdekit.sample(sde, gmm.score_fn(sde), x_T=xT, sampler="dpm_solver", steps=n, order=order,
                              schedule="logsnr")
            errs[order, n] = float((x - exact).pow(2).sum(1).mean().sqrt())
    rate = math.log2(errs[3, 32] / errs[3, 64])
    assert rate > 2.5, errs
    assert errs[3, 64] < 0.2 * errs[2, 64], errs


def test_order_is_checked():
    sde = sdekit.VESDE()
    gmm = sdekit.GaussianMixture(torch.zeros(1, 2), 0.5)
    with pytest.raises(sdekit.UserError, match="order"):
        sdekit.sample(sde, gmm.score_fn(sde), (4, 2), sampler="dpm_solver", steps=5, order=4)

"""The model interface: every parametrisation, given the exact network for Gaussian data, yields the
exact score; score and denoiser views agree; guidance combines as the formulas say."""
import math

import pytest
import torch

import sdekit
from sdekit.core.denoisers import (ClassifierFree, Conditional, Counted, ModelSpaceInput, NetworkDenoiser,
                              ScoreDenoiser, as_denoiser)

SD = 0.6                                         # data N(0, SD^2 I)
SDES = [sdekit.VPSDE(), sdekit.VESDE(0.01, 20.0), sdekit.SubVPSDE(), sdekit.EDMSDE()]


def exact_d(y, sigma):
    """E[x0 | x0 + sigma n = y] for x0 ~ N(0, SD^2): SD^2 / (SD^2 + sigma^2) y."""
    return (SD ** 2 / (SD ** 2 + sigma ** 2)).reshape(-1, 1) * y


class Oracle(torch.nn.Module):
    """The exact network output F of one parametrisation, from the model-space input x and the time input."""

    def __init__(self, sde, prediction, time):
        super().__init__()
        self.sde, self.prediction, self.time = sde, prediction, time

    def forward(self, x, c):
        sde = self.sde
        sigma = {"sigma": lambda: c, "t": lambda: sde.sigma(c)}[self.time]()
        t = sde.sigma_inv(sigma)
        s = sde.scale(t).reshape(-1, 1)
        y = x / s
        d = exact_d(y, sigma)
        sig = sigma.reshape(-1, 1)
        if self.prediction == "eps":
            return (y - d) / sig
        if self.prediction == "x0":
            return d
        if self.prediction == "v":                  # v = alpha eps - sigma_t x0, alpha = 1/sqrt(1+sig^2)
            a = (1 + sig ** 2).rsqrt()
            return a * (y - d) / sig - sig * a * d
        if self.prediction == "score":
            return (d - y) / (s * sig ** 2)
        raise AssertionError


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "score"])
@pytest.mark.parametrize("time", ["sigma", "t"])
def test_each_parametrisation_gives_the_exact_score(sde, prediction, time):
    exact = sdekit.GaussianMixture(torch.zeros(1, 4, dtype=torch.float64), torch.tensor([SD], dtype=torch.float64))
    den = NetworkDenoiser(Oracle(sde, prediction, time), sde, prediction, ModelSpaceInput(time))
    t = torch.linspace(sde.eps * 2, sde.T, 6, dtype=torch.float64)
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    torch.testing.assert_close(den.score(x, t), exact.score_fn(sde)(x, t), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_score_and_denoiser_views_are_tweedie_of_each_other(sde):
    gmm = sdekit.GaussianMixture(torch.tensor([[-1.0, 0.5], [2.0, 0.0]], dtype=torch.float64),
                                 torch.tensor([0.3, 0.7], dtype=torch.float64))
    den = ScoreDenoiser(sde, gmm.score_fn(sde))
    t = torch.linspace(sde.eps * 2, sde.T * 0.9, 5, dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    s, sig = sde.scale(t)[:, None], sde.sigma(t)[:, None]
    d = den.denoise(x / s, sde.sigma(t))
    torch.testing.assert_close((d - x / s) / (s * sig ** 2), gmm.score_fn(sde)(x, t))
    torch.testing.assert_close(den.x0(x, t), d)


def test_counted_counts_and_refuses_nan():
    sde = sdekit.VPSDE()
    c = Counted(ScoreDenoiser(sde, lambda x, t: -x))
    x = torch.randn(3, 2)
    c.score(x, 0.5)
    c.denoise(x, 1.0)
    assert c.nfe == 2
    bad = Counted(ScoreDenoiser(sde, lambda x, t: x * math.nan))
    with pytest.raises(sdekit.UserError, match="NaN"):
        bad.score(x, 0.5)


def test_guidance_combinations():
    sde = sdekit.VPSDE()

    def score(x, t, class_labels=None):
        k = torch.zeros(x.shape[0]) if class_labels is None else class_labels.float()
        return -x + k[:, None]

    base = as_denoiser(sde, score)
    x, t = torch.randn(4, 2), torch.full((4,), 0.3)
    null = score(x, t, torch.full((4,), -1))
    cond = score(x, t, torch.full((4,), 2))
    torch.testing.assert_close(Conditional(base, 2).score(x, t), cond)
    torch.testing.assert_close(ClassifierFree(base, 2, 1.5).score(x, t), 2.5 * cond - 1.5 * null)
    # the denoiser view of the guided model is the same combination of denoisers
    s, sig = sde.scale(t)[:, None], sde.sigma(t)
    y = x / s
    d = ClassifierFree(base, 2, 1.5).denoise(y, sig)
    torch.testing.assert_close(d, 2.5 * Conditional(base, 2).denoise(y, sig) - 1.5 * Conditional(base, -1).denoise(y, sig))


def test_bundle_score_fn_carries_its_denoiser():
    m = sdekit.load("digits")                         # the network itself, behind the check of x's shape
    assert as_denoiser(m.sde, m.score_fn).inner is m.net
    assert as_denoiser(m.sde, m.conditional(3)).inner.inner is m.net

"""The exact mixture score against autograd of the closed-form density and torch.distributions."""
import pytest
import torch

import sdekit

SDES = [sdekit.VESDE(), sdekit.VPSDE(), sdekit.SubVPSDE(), sdekit.EDMSDE()]


def mixture():
    means = torch.tensor([[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0], [0.0, -2.0, 0.5]])
    return sdekit.GaussianMixture(means, torch.tensor([0.3, 0.5, 0.8]), torch.tensor([0.2, 0.5, 0.3]))


def test_log_prob_matches_torch_distributions():
    gmm = mixture()
    comp = torch.distributions.Independent(torch.distributions.Normal(gmm.means, gmm.stds[:, None].expand(3, 3)), 1)
    ref = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(gmm.weights), comp)
    x = torch.randn(10, 3, dtype=torch.float64) * 2
    torch.testing.assert_close(gmm.log_prob(x), ref.log_prob(x))


@pytest.mark.parametrize("sde", SDES, ids=["ve", "vp", "subvp", "edm"])
def test_score_is_gradient_of_marginal_log_density(sde):
    gmm = mixture()
    x = (torch.randn(6, 3, dtype=torch.float64) * 3).requires_grad_(True)
    t = torch.linspace(0.05, 0.9, 6, dtype=torch.float64) * sde.T
    grad = torch.autograd.grad(gmm.log_prob_t(sde, x, t).sum(), x)[0]
    torch.testing.assert_close(gmm.score_fn(sde)(x.detach(), t), grad)


def test_marginal_at_t_is_the_convolved_mixture():
    # p_t = sum_k w_k N(s mu_k, s^2 (v_k + sigma^2)): compare with Monte-Carlo of the kernel.
    gmm, sde = mixture(), sdekit.VPSDE()
    x0 = gmm.sample(200000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((len(x0),), 0.3, dtype=torch.float64)
    mean, std = sde.marginal_prob(x0, t)
    xt = mean + std[:, None] * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=x0.dtype)
    s = float(sde.scale(t[:1]))
    torch.testing.assert_close(xt.mean(0), s * (gmm.weights[:, None] * gmm.means).sum(0), atol=0.01, rtol=0)
    sig2 = float(sde.sigma(t[:1])) ** 2
    second = s ** 2 * (gmm.weights * ((gmm.means ** 2).sum(1) + 3 * (gmm.stds ** 2 + sig2))).sum()
    assert abs(float((xt ** 2).sum(1).mean()) / float(second) - 1) < 0.01


def test_sample_moments_and_labels(gen):
    gmm = mixture()
    x, k = gmm.sample(50000, generator=gen, return_labels=True)
    assert x.shape == (50000, 3)
    freq = torch.bincount(k, minlength=3).double() / 50000
    torch.testing.assert_close(freq, gmm.weights, atol=0.01, rtol=0)
    torch.testing.assert_close(x[k == 1].mean(0).double(), gmm.means[1], atol=0.02, rtol=0)
    assert abs(float(x[k == 2].std(0).mean()) - 0.8) < 0.02


def test_class_log_prob_is_bayes_rule():
    gmm, sde = mixture(), sdekit.VESDE()
    x = torch.randn(5, 3, dtype=torch.float64)
    t = torch.full((5,), 0.2, dtype=torch.float64)
    lp = gmm.class_log_prob(sde, x, t)
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(5, dtype=torch.float64))
    joint = torch.stack([gmm.component(k).log_prob_t(sde, x, t) + gmm.weights[k].log() for k in range(3)], 1)
    torch.testing.assert_close(lp, joint.log_softmax(1))


def test_image_shaped_mixture():
    means = torch.randn(4, 1, 5, 5)
    gmm = sdekit.GaussianMixture(means, 0.1)
    x = gmm.sample(3)
    assert x.shape == (3, 1, 5, 5)
    assert gmm.score_fn(sdekit.VPSDE())(x, torch.full((3,), 0.5)).shape == x.shape


def test_bad_parameters():
    with pytest.raises(ValueError):
        sdekit.GaussianMixture(torch.zeros(2, 2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"K = 2, stds of shape \[3\]") as e:
        sdekit.GaussianMixture(torch.zeros(2, 2), stds=torch.tensor([0.3, 0.5, 0.1]))
    assert "\n" not in str(e.value)
    for one in (0.3, torch.tensor(0.3), torch.tensor([0.3])):                    # one std for every component
        torch.testing.assert_close(sdekit.GaussianMixture(torch.zeros(2, 2), stds=one).stds,
                                   torch.full((2,), 0.3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"weights of shape \[3\]"):
        sdekit.GaussianMixture(torch.zeros(2, 2), 0.5, weights=[1.0, 1.0, 1.0])

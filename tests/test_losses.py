"""Each loss against a hand computation, and DSM's minimum against a closed form."""
import math

import pytest
import torch

import sdekit
from sdekit.core.errors import UserError
from sdekit.tasks.losses import ddpm_loss, dsm_loss, edm_loss, smld_loss
from sdekit.models.nets import Preconditioned


def neg_x(x, t, labels=None):
    return -x


def _vp_closed(t, bmin=0.1, bmax=20.0):
    B = bmin * t + 0.5 * (bmax - bmin) * t ** 2
    s = math.exp(-0.5 * B)
    return s, math.sqrt(1 - s * s), bmin + t * (bmax - bmin)


def test_dsm_sigma2_and_likelihood_by_hand():
    sde = sdekit.VPSDE()
    g = torch.Generator().manual_seed(0)
    x0, z = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    t = torch.tensor([0.1, 0.5, 0.9])
    want_s2, want_lik, want_sum = 0.0, 0.0, 0.0
    for i in range(3):
        s, std, beta = _vp_closed(float(t[i]))
        x = s * x0[i] + std * z[i]
        e = (std * (-x) + z[i]) ** 2
        want_s2 += float(e.mean()) / 3
        want_sum += float(e.sum()) / 3
        want_lik += beta * float(((-x + z[i] / std) ** 2).mean()) / 3
    assert dsm_loss(neg_x, sde, x0, t=t, z=z).item() == pytest.approx(want_s2, rel=1e-5)
    assert dsm_loss(neg_x, sde, x0, t=t, z=z, reduce="sum").item() == pytest.approx(want_sum, rel=1e-5)
    assert dsm_loss(neg_x, sde, x0, t=t, z=z, weighting="likelihood").item() == pytest.approx(want_lik, rel=1e-5)


@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.VESDE(), sdekit.SubVPSDE()], ids=lambda s: s.config()["name"])
def test_dsm_with_the_exact_score_reaches_its_closed_form_minimum(sde):
    # x0 ~ N(0, sd^2): E || std score + z ||^2 / d = 1 - std^2 / (s^2 sd^2 + std^2) at every t.
    sd, n, d = 0.8, 20000, 2
    g = torch.Generator().manual_seed(1)
    gmm = sdekit.GaussianMixture(torch.zeros(1, d), torch.tensor([sd]))
    exact = gmm.score_fn(sde)
    x0 = sd * torch.randn(n, d, generator=g)
    t0 = 0.3
    t = torch.full((n,), t0)
    z = torch.randn(n, d, generator=g)
    loss = dsm_loss(lambda x, t, y=None: exact(x, t), sde, x0, t=t, z=z).item()
    s, std = float(sde.scale(torch.tensor(t0))), float(sde.marginal_std(torch.tensor(t0)))
    assert loss == pytest.approx(1 - std ** 2 / (s ** 2 * sd ** 2 + std ** 2), rel=0.03)
    worse = dsm_loss(lambda x, t, y=None: 0.9 * exact(x, t), sde, x0, t=t, z=z).item()
    assert worse > loss


class Zero(torch.nn.Module):
    num_classes = 0

    def forward(self, u, c, labels=None):
        return torch.zeros_like(u)


def test_edm_loss_by_hand_and_through_the_score():
    sde, sd = sdekit.VPSDE(), 0.5
    model = Preconditioned(Zero(), sde, "edm", sigma_data=sd)
    g = torch.Generator().manual_seed(0)
    x0, z = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    sigma = torch.tensor([0.3, 2.0])
    want = 0.0
    for i in range(2):
        sg = float(sigma[i])
        c_skip = sd ** 2 / (sg ** 2 + sd ** 2)
        lam = (sg ** 2 + sd ** 2) / (sg * sd) ** 2
        want += lam * float(((c_skip * (x0[i] + sg * z[i]) - x0[i]) ** 2).mean()) / 2
    assert edm_loss(model, sde, x0, sigma=sigma, z=z, sigma_data=sd).item() == pytest.approx(want, rel=1e-5)
    score_only = lambda x, t, y=None: model.score(x, t, y)     # a plain score: Tweedie from it
    assert edm_loss(score_only, sde, x0, sigma=sigma, z=z, sigma_data=sd).item() == pytest.approx(want, rel=1e-4)


def test_edm_loss_clamps_sigma_to_the_sdes_range():
    sde = sdekit.VPSDE()
    model = Preconditioned(Zero(), sde)
    x0, z = torch.randn(1, 3), torch.randn(1, 3)
    smax = sde.sigma(torch.tensor(1.0)).item()
    assert edm_loss(model, sde, x0, sigma=torch.tensor([1e6]), z=z).item() == pytest.approx(
        edm_loss(model, sde, x0, sigma=torch.tensor([smax]), z=z).item(), rel=1e-5)


def test_smld_loss_by_hand():
    sde = sdekit.VESDE(0.01, 50.0, N=10)
    x0, z = torch.randn(2, 3), torch.randn(2, 3)
    idx = torch.tensor([0, 9])
    seen = []

    def model(x, t, y=None):
        seen.append(t.clone())
        return -x / (1 + x.new_tensor(1.0))
    want = 0.0
    for i, k in enumerate(idx.tolist()):
        sig = 0.01 * (50 / 0.01) ** (k / 9)
        x = x0[i] + sig * z[i]
        want += float(((sig * (-x / 2) + z[i]) ** 2).mean()) / 2
    assert smld_loss(model, sde, x0, index=idx, z=z).item() == pytest.approx(want, rel=1e-5)
    torch.testing.assert_close(seen[0], torch.tensor([0.0, 1.0]))


def test_ddpm_loss_by_hand():
    sde = sdekit.VPSDE(0.1, 20.0, N=100)
    x0, z = torch.randn(2, 3), torch.randn(2, 3)
    idx = torch.tensor([0, 60])
    betas = [(0.1 + k / 99 * (20.0 - 0.1)) / 100 for k in range(100)]
    abar = [math.prod(1 - b for b in betas[: k + 1]) for k in range(100)]
    seen = []

    def model(x, t, y=None):
        seen.append(t.clone())
        return -x
    want = 0.0
    for i, k in enumerate(idx.tolist()):
        a = abar[k]
        x = math.sqrt(a) * x0[i] + math.sqrt(1 - a) * z[i]
        eps_hat = -math.sqrt(1 - a) * (-x)
        want += float(((eps_hat - z[i]) ** 2).mean()) / 2
    assert ddpm_loss(model, sde, x0, index=idx, z=z).item() == pytest.approx(want, rel=1e-5)
    torch.testing.assert_close(seen[0], torch.tensor([1 / 100, 61 / 100]))


def test_bad_options():
    sde = sdekit.VPSDE()
    x0 = torch.randn(2, 2)
    with pytest.raises(UserError, match="reduce"):
        dsm_loss(neg_x, sde, x0, reduce="max")
    with pytest.raises(UserError, match="weighting"):
        dsm_loss(neg_x, sde, x0, weighting="snr")
    with pytest.raises(UserError, match="VE"):
        smld_loss(neg_x, sde, x0)
    with pytest.raises(UserError, match="VP"):
        ddpm_loss(neg_x, sdekit.VESDE(), x0)

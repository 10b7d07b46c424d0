"""Score networks and the preconditioning wrapper, against exact Gaussian scores."""

import pytest
import torch

import sdekit
from sdekit.models.nets import Preconditioned, ScoreMLP, UNet, build_net
from sdekit.core.denoisers import ScoreDenoiser

SDES = [sdekit.VESDE(), sdekit.VPSDE(), sdekit.SubVPSDE(), sdekit.EDMSDE()]


class Zero(torch.nn.Module):
    num_classes = 0

    def forward(self, u, c, labels=None):
        return torch.zeros_like(u)


class ExactEps(torch.nn.Module):
    """E[n | y] for x0 ~ N(0, sd^2 I), y = x0 + sigma n, written in F's own inputs u = c_in y and
    c = ln(sigma)/4:  E[n | y] = sigma y / (sigma^2 + sd^2) = sigma u / sqrt(sigma^2 + sd^2)."""
    num_classes = 0

    def __init__(self, sd):
        super().__init__()
        self.sd = sd

    def forward(self, u, c, labels=None):
        sig = torch.exp(4 * c).reshape(-1, *[1] * (u.dim() - 1))
        return sig * u / (sig ** 2 + self.sd ** 2).sqrt()


def _times(sde, n=7):
    return torch.linspace(sde.eps, sde.T, n, dtype=torch.float64)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_edm_precond_with_zero_net_is_exact_gaussian_score(sde):
    # For data N(0, sd^2 I) the ideal denoiser is c_skip y, i.e. F = 0 (Karras et al. eq. 7).
    sd = 0.5
    exact = sdekit.GaussianMixture(torch.zeros(1, 6, dtype=torch.float64), torch.tensor([sd], dtype=torch.float64))
    pre = Preconditioned(Zero(), sde, "edm", sigma_data=sd)
    x = torch.randn(7, 6, dtype=torch.float64) * 3
    t = _times(sde)
    torch.testing.assert_close(pre.score(x, t), exact.score_fn(sde)(x, t), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_eps_and_scaled_score_parametrisations(sde):
    sd = 0.7
    exact = sdekit.GaussianMixture(torch.zeros(1, 5, dtype=torch.float64), torch.tensor([sd], dtype=torch.float64))
    x, t = torch.randn(7, 5, dtype=torch.float64), _times(sde)
    ref = exact.score_fn(sde)(x, t)
    eps = Preconditioned(ExactEps(sd), sde, "eps", sigma_data=sd)
    torch.testing.assert_close(eps.score(x, t), ref, rtol=1e-7, atol=1e-10)

    class Neg(ExactEps):
        def forward(self, u, c, labels=None):
            return -super().forward(u, c)
    torch.testing.assert_close(Preconditioned(Neg(sd), sde, "scaled_score", sigma_data=sd).score(x, t), ref,
                               rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("kind", ["edm", "eps"])
def test_denoise_is_tweedie_of_the_score(kind):
    sde = sdekit.VPSDE()
    torch.manual_seed(0)
    pre = Preconditioned(ScoreMLP(dim=3, hidden=16, depth=2), sde, kind).double()
    torch.nn.init.normal_(pre.net.out.weight, std=0.3)
    x, t = torch.randn(5, 3, dtype=torch.float64), torch.rand(5, dtype=torch.float64) * 0.9 + 0.05
    torch.testing.assert_close(pre.x0(x, t), ScoreDenoiser(sde, pre.score).x0(x, t))


def test_unknown_kind():
    with pytest.raises(ValueError, match="preconditioning"):
        Preconditioned(Zero(), sdekit.VPSDE(), "v")


@pytest.mark.parametrize("channels", [1, 3])
def test_unet_shapes_and_config_roundtrip(channels):
    torch.manual_seed(0)
    net = UNet(channels, resolution=8, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
               embedding="positional")
    x = torch.randn(3, channels, 8, 8)
    out = net(x, torch.rand(3))
    assert out.shape == x.shape
    twin = build_net(net.config())
    twin.load_state_dict(net.state_dict())
    torch.testing.assert_close(twin(x, torch.full((3,), 0.2)), net(x, torch.full((3,), 0.2)))


def test_unet_class_embedding_has_a_null_label():
    torch.manual_seed(0)
    net = UNet(1, resolution=8, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_classes=3).eval()
    for p in net.parameters():
        if not p.abs().sum():
            torch.nn.init.normal_(p, std=0.1)
    x, c = torch.randn(2, 1, 8, 8), torch.zeros(2)
    null = net(x, c, torch.tensor([3, 3]))
    torch.testing.assert_close(net(x, c, None), null)
    assert (net(x, c, torch.tensor([0, 0])) - null).abs().max() > 1e-4
    assert (net(x, c, torch.tensor([0, 0])) - net(x, c, torch.tensor([1, 1]))).abs().max() > 1e-4


def test_unet_noise_label_matters_and_gradients_flow():
    torch.manual_seed(0)
    net = UNet(1, resolution=16, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,)).eval()
    x = torch.randn(2, 1, 16, 16)
    out = net(x, torch.tensor([0.1, 0.1]))
    assert torch.equal(out, torch.zeros_like(out))                # zero-initialised output layer (DDPM++)
    out.sum().backward()
    assert net.conv_out.weight.grad.abs().sum() > 0
    for p in net.parameters():
        if not p.abs().sum():
            torch.nn.init.normal_(p, std=0.1)
    assert (net(x, torch.tensor([0.1, 0.1])) - net(x, torch.tensor([-1.0, -1.0]))).abs().max() > 1e-4


def test_unet_rejects_bad_geometry():
    with pytest.raises(ValueError):
        UNet(2)
    with pytest.raises(ValueError, match="divisible"):
        UNet(1, resolution=10, ch_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="network type"):
        build_net({"type": "transformer"})


def test_mlp_shapes():
    net = ScoreMLP(dim=2, hidden=16, depth=2, num_classes=4)
    x = torch.randn(5, 2)
    assert net(x, torch.zeros(5), torch.arange(5) % 4).shape == (5, 2)
    assert ScoreMLP(dim=1)(torch.randn(4, 1), torch.zeros(4)).shape == (4, 1)


def _rel(a, b) -> float:
    """|a - b| / |b|, in float32."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", ["digits", None], ids=["digits", "default"])
def test_bundled_models_run_in_half_precision(name, dtype):
    # load(dtype=...) casts the network; its whole forward (noise and class embeddings too) runs in it
    ref, half = sdekit.load(name), sdekit.load(name, dtype=dtype)
    assert half.dtype == dtype
    x = torch.randn(4, *ref.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.05, 0.2, 0.5, 0.9])
    for labels in (None, torch.tensor([0, 3, 7, -1])):
        got = half.score_fn(x, t, labels)
        assert got.dtype == x.dtype
        assert _rel(got, ref.score_fn(x, t, labels)) < 2e-2


def test_nets_run_in_their_weights_dtype():
    torch.manual_seed(0)
    x, c = torch.randn(6, 2), torch.linspace(-1, 1, 6)
    mlp = ScoreMLP(dim=2, hidden=16, depth=2, num_classes=3, embedding="positional")
    torch.nn.init.normal_(mlp.out.weight, std=0.3)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    out = mlp.to(torch.bfloat16)(x, c, labels)
    assert out.dtype == torch.bfloat16
    assert _rel(out, mlp.float()(x, c, labels)) < 2e-2
    from sdekit.models.nets.classifier import load_classifier
    clf = load_classifier()
    x, t = torch.randn(4, *clf.shape, generator=torch.Generator().manual_seed(1)), torch.tensor([0.05, 0.2, 0.5, 0.9])
    ref = clf(x, t)
    assert _rel(clf.to(torch.bfloat16)(x, t), ref) < 2e-2
    from sdekit.models.nets.features import load_features
    feats, u = load_features(), torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    ref = feats(u)
    assert _rel(feats.to(torch.bfloat16)(u), ref) < 2e-2

"""SDEdit against closed forms: for Gaussian data the edited output's law is known exactly.

Data N(mu, v I); guide g; y = x(t)/s(t) = g + sigma z with sigma = sigma(t0 T). The exact reverse SDE
from t0 samples the posterior p(x0 | y) = N(mu + a (y - mu), a sigma^2 I) with a = v / (v + sigma^2),
so the output is N(mu + a (g - mu), a sigma^2 (1 + a) I). The probability-flow ODE is the linear map
x0 = mu + sqrt(a) (y - mu): output N(mu + sqrt(a) (g - mu), a sigma^2 I).
"""
import pytest
import torch

import sdekit
from sdekit import GaussianMixture, UserError, VESDE, VPSDE, SubVPSDE
from sdekit.tasks.sdedit import (composite, median_filter, perturb, quantize_colors, sdedit, sdedit_time,
                           simulate_strokes)

from conftest import energy_distance

MU = torch.tensor([1.0, -1.0, 0.5, 0.0])
V = 0.3 ** 2
G = torch.tensor([2.0, 0.0, -1.0, 1.0])


def _gauss():
    return GaussianMixture(MU[None], V ** 0.5)


def _a_sig2(sde, t0):
    sig2 = float(sde.sigma(torch.tensor([sdedit_time(sde, t0)], dtype=torch.float64))) ** 2
    return V / (V + sig2), sig2


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(0.01, 10.0), SubVPSDE()], ids=["vp", "ve", "subvp"])
@pytest.mark.parametrize("sampler,steps,stochastic", [("reverse_diffusion", 100, True), ("dpm_solver", 20, False)])
def test_sdedit_matches_exact_posterior_law(sde, sampler, steps, stochastic, gen):
    g = G.expand(2000, 4).contiguous()
    t0 = 0.4
    out = sdedit(sde, _gauss().score_fn(sde), g, t0=t0, steps=steps, sampler=sampler, generator=gen)
    a, sig2 = _a_sig2(sde, t0)
    if stochastic:
        mean, var = MU + a * (G - MU), a * sig2 * (1 + a)
    else:
        mean, var = MU + a ** 0.5 * (G - MU), a * sig2
    se = (var / 2000) ** 0.5
    assert (out.mean(0) - mean).abs().max() < 5 * se + 0.01
    assert abs(out.var(0).mean() / var - 1) < 0.08


def test_repeats_compose_the_map(gen):
    """Two rounds: mean mu + a^2 (g - mu), variance V1 (1 + a^2) with V1 = a sigma^2 (1 + a)."""
    sde = VPSDE()
    g = G.expand(2000, 4).contiguous()
    out = sdedit(sde, _gauss().score_fn(sde), g, t0=0.3, steps=100, repeats=2, sampler="em", generator=gen)
    a, sig2 = _a_sig2(sde, 0.3)
    v1 = a * sig2 * (1 + a)
    assert (out.mean(0) - (MU + a * a * (G - MU))).abs().max() < 0.03
    assert abs(out.var(0).mean() / (v1 * (1 + a * a)) - 1) < 0.08


def test_t0_one_forgets_the_guide(gen):
    """At t0 = 1 the output is a sample of the data, whatever the guide."""
    gmm = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), 0.4, [0.3, 0.7])
    sde = VPSDE()
    guide = torch.tensor([[10.0, -10.0]]).expand(1000, 2).contiguous()
    out = sdedit(sde, gmm.score_fn(sde), guide, t0=1.0, steps=100, generator=gen)
    ref = gmm.sample(1000, generator=gen)
    far = gmm.sample(1000, generator=gen) + 0.5
    assert energy_distance(out, ref) < 0.02 < energy_distance(far, ref)


def test_l2_to_the_guide_grows_with_t0(gen):
    gmm = GaussianMixture(torch.randn(5, 16, generator=gen), 0.3)
    sde = VPSDE()
    guide = gmm.sample(200, generator=gen) + 0.5 * torch.randn(200, 16, generator=gen)
    l2 = [float((sdedit(sde, gmm.score_fn(sde), guide, t0=t0, steps=30, generator=gen) - guide).norm(dim=1).mean())
          for t0 in (0.05, 0.15, 0.3, 0.5)]
    assert all(b > a for a, b in zip(l2, l2[1:])), l2


@pytest.mark.parametrize("sampler", ["reverse_diffusion", "heun", "ode"])
def test_mask_keeps_the_guide_exactly(sampler, gen):
    gmm = GaussianMixture(torch.randn(3, 1, 4, 4, generator=gen), 0.3)
    sde = VESDE(0.01, 10.0)
    guide = torch.randn(8, 1, 4, 4, generator=gen)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    out = sdedit(sde, gmm.score_fn(sde), guide, t0=0.6, steps=10, mask=mask, sampler=sampler, generator=gen)
    assert torch.equal(out[..., :2, :], guide[..., :2, :])
    assert (out[..., 2:, :] - guide[..., 2:, :]).abs().mean() > 0.05


def test_masked_edit_conditions_on_the_kept_part(gen):
    """Two well-separated modes in 2-D: keeping coordinate 0 of a guide at mode B's value must make
    the regenerated coordinate 1 follow mode B (exact conditional), not the 50/50 mixture."""
    gmm = GaussianMixture(torch.tensor([[-3.0, -3.0], [3.0, 3.0]]), 0.3)
    sde = VPSDE()
    guide = torch.tensor([[3.0, -3.0]]).expand(400, 2).contiguous()
    mask = torch.tensor([[1.0, 0.0]])
    out = sdedit(sde, gmm.score_fn(sde), guide, t0=1.0, steps=100, mask=mask, generator=gen)
    assert (out[:, 1] > 0).float().mean() > 0.95
    assert torch.equal(out[:, 0], guide[:, 0])


def test_perturb_is_the_kernel(gen):
    sde = VPSDE()
    x0 = G.expand(20000, 4).contiguous()
    x = perturb(sde, x0, 0.5, gen)
    mean, std = sde.marginal_prob(x0[:1], torch.tensor([0.5]))
    assert torch.allclose(x.mean(0), mean[0], atol=0.02)
    assert abs(float(x.std(0).mean()) / float(std) - 1) < 0.02


def test_seeded_runs_repeat(gen):
    sde = VPSDE()
    score = _gauss().score_fn(sde)
    g = G.expand(4, 4).contiguous()
    a = sdedit(sde, score, g, 0.5, steps=5, generator=torch.Generator().manual_seed(3))
    b = sdedit(sde, score, g, 0.5, steps=5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_t_start_option_of_sample(gen):
    """sample(t_start=t, steps=n) from x(t) equals SDEdit's unmasked solve."""
    sde = VPSDE()
    score = _gauss().score_fn(sde)
    xt = torch.randn(5, 4, generator=gen)
    a = sdekit.sample(sde, score, x_T=xt, t_start=0.3, steps=7, sampler="em", generator=torch.Generator().manual_seed(1))
    b = sdekit.sample(sde, score, x_T=xt, t_start=0.3, steps=7, sampler="em", generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(UserError):
        sdekit.sample(sde, score, shape=(2, 4), t_start=0.3)
    with pytest.raises(UserError):
        sdekit.sample(sde, score, x_T=xt, t_start=1.5)


@pytest.mark.parametrize("kwargs,msg", [({"t0": 0.0}, "t0"), ({"t0": 1.2}, "t0"), ({"t0": float("nan")}, "t0"),
                                        ({"steps": 0}, "steps"), ({"repeats": 0}, "repeats"),
                                        ({"mask": torch.ones(3, 3)}, "mask"), ({"mask": torch.full((1, 4), 2.0)}, "mask")])
def test_bad_input(kwargs, msg):
    sde = VPSDE()
    with pytest.raises(UserError, match=msg):
        sdedit(sde, _gauss().score_fn(sde), G.expand(2, 4).contiguous(), **{"t0": 0.5, **kwargs})


def test_nan_guide_refused():
    sde = VPSDE()
    g = G.expand(2, 4).clone()
    g[0, 0] = float("nan")
    with pytest.raises(UserError, match="NaN"):
        sdedit(sde, _gauss().score_fn(sde), g)


def test_composite_keeps_source_outside_the_seam(gen):
    gmm = GaussianMixture(torch.randn(3, 1, 8, 8, generator=gen), 0.3)
    sde = VPSDE()
    src, patch = gmm.sample(2, generator=gen), gmm.sample(2, generator=gen)
    region = torch.zeros(1, 1, 8, 8)
    region[..., 2:5, 2:5] = 1
    out, guide = composite(sde, gmm.score_fn(sde), src, patch, region, t0=0.5, border=1, steps=20, generator=gen)
    assert torch.equal(guide[..., 3, 3], patch[..., 3, 3])
    keep = torch.ones(8, 8, dtype=torch.bool)
    keep[1:6, 1:6] = False
    assert torch.equal(out[..., keep], src[..., keep])
    assert not torch.equal(out[..., 1:6, 1:6], guide[..., 1:6, 1:6])


def test_median_filter_and_quantisation():
    u = torch.zeros(1, 1, 5, 5)
    u[0, 0, 2, 2] = 1.0                          # an isolated pixel: removed by the median
    assert median_filter(u, 3).abs().max() == 0
    u = torch.zeros(1, 1, 6, 6)
    u[..., :, 3:] = 1.0                          # an edge: kept
    assert torch.equal(median_filter(u, 3), u)
    v = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    q = quantize_colors(v, k=4)
    for b in range(2):
        assert len(torch.unique(q[b].reshape(3, -1).T, dim=0)) <= 4
    assert (q - v).abs().mean() < 0.2


def test_simulate_strokes_on_digits():
    from sdekit.data.datasets import digits
    u = (digits(16).x[:32] + 1) / 2
    s = simulate_strokes(u, colors=3)
    assert s.shape == u.shape
    assert all(len(torch.unique(s[b])) <= 3 for b in range(32))
    # a stroke painting keeps the layout: closer to its own image than to the others
    d = torch.cdist(s.flatten(1), u.flatten(1))
    assert (d.argmin(1) == torch.arange(32)).float().mean() > 0.9


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(0.01, 50.0), SubVPSDE(), sdekit.EDMSDE()], ids=["vp", "ve", "subvp", "edm"])
def test_t0_is_the_same_noise_level_for_every_sde(sde):
    """t0 means the VP SDE's noise level sigma(t0) for every member: VP starts at t0 itself, EDM at
    that sigma, and every SDE reaches the same sigma (clamped to its range)."""
    vp = VPSDE()
    for t0 in (0.1, 0.3, 0.5):
        want = float(vp.sigma(torch.tensor([t0], dtype=torch.float64)))
        t = sdedit_time(sde, t0)
        got = float(sde.sigma(torch.tensor([t], dtype=torch.float64)))
        top = float(sde.sigma(torch.tensor([sde.T], dtype=torch.float64)))
        assert got == pytest.approx(min(want, top), rel=1e-6)
    assert sdedit_time(vp, 0.3) == 0.3
    assert sdedit_time(sde, 1.0) == pytest.approx(sde.T) or float(sde.sigma(torch.tensor([sde.T]))) > 150


@pytest.mark.parametrize("sampler", list(sdekit.SAMPLERS))
def test_all_zero_mask_is_as_accurate_as_no_mask(sampler):
    """An all-zero mask regenerates everything: the same problem as no mask, so the same error against a
    fine reference (8-D mixture, exact score, 256 guides), for every sampler; an all-one mask returns
    the guide exactly."""
    g = torch.Generator().manual_seed(0)
    means = torch.randn(4, 8, generator=g) * 1.5
    gmm = GaussianMixture(means, torch.tensor([0.3, 0.5, 0.4, 0.6]))
    sde = VPSDE()
    guide = gmm.sample(256, generator=g) + 0.3 * torch.randn(256, 8, generator=g)
    spec = sdekit.get_sampler(sampler)
    steps = 20 if spec.kind != "sde" else 300 if sampler in ("langevin", "ald") else 100   # Langevin alone: keeps up
    deterministic = not spec.stochastic

    def run(mask, steps, seed=1):
        return sdedit(sde, gmm.score_fn(sde), guide, t0=0.6, steps=steps, sampler=sampler, mask=mask,
                      generator=torch.Generator().manual_seed(seed))

    if deterministic:
        ref = sdedit(sde, gmm.score_fn(sde), guide, t0=0.6, steps=400, sampler="heun",
                     generator=torch.Generator().manual_seed(1)) if sampler != "ode" else None
        if ref is None:
            ref = sdedit(sde, gmm.score_fn(sde), guide, t0=0.6, sampler="ode", rtol=1e-8, atol=1e-8,
                         generator=torch.Generator().manual_seed(1))
        err_plain = float((run(None, steps) - ref).norm(dim=1).mean())
        err_mask = float((run(torch.zeros(8), steps) - ref).norm(dim=1).mean())
        assert err_mask <= 1.5 * err_plain + 1e-6, (err_mask, err_plain)
    else:                                          # stochastic: compare output laws with exact samples
        a = run(None, steps)
        b = run(torch.zeros(8), steps, seed=2)
        floor = energy_distance(run(None, steps, seed=3), a)
        assert energy_distance(a, b) < 3 * floor + 0.01
    out = run(torch.ones(8), steps)
    assert torch.equal(out, guide)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_any_floating_guide_dtype_works_on_a_network(dtype):
    """A float64 guide once crashed deep in a convolution ("Input type (double) and bias type (float)");
    inputs are cast to the model's dtype at the boundary and the output comes back in the guide's."""
    m = sdekit.load("digits")
    guide = torch.rand(2, *m.shape, generator=torch.Generator().manual_seed(0)).to(dtype) * 2 - 1
    out = sdekit.sdedit(m.sde, m.score_fn, guide, t0=0.4, steps=3, generator=torch.Generator().manual_seed(0))
    assert out.dtype == dtype and out.shape == guide.shape and torch.isfinite(out.float()).all()
    mask = torch.ones(1, 1, *m.shape[1:])
    mask[..., :8, :] = 0
    out = sdekit.sdedit(m.sde, m.score_fn, guide, t0=0.4, steps=3, mask=mask, sampler="heun")
    assert out.dtype == dtype and torch.equal(out[..., 8:, :], guide[..., 8:, :])
    x = sdekit.sample(m.sde, m.score_fn, None, sampler="ddim", steps=2, x_T=torch.randn(2, *m.shape).to(dtype))
    assert x.dtype == dtype
    inp = sdekit.inpaint(m.sde, m.score_fn, guide, mask, steps=2, sampler="ddim")
    assert inp.dtype == dtype

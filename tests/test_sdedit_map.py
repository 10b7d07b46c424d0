"""SDEdit with a t0 map (per-pixel t0) against exact answers.

For Gaussian data N(mu, v I) the exact score acts on every coordinate alone, so a coordinate released
at its own t0 is an SDEdit of that coordinate from t0: with a = v / (v + sigma^2), sigma the noise level
of t0, the reverse SDE gives N(mu + a (g - mu), a sigma^2 (1 + a)) and the probability-flow ODE
N(mu + sqrt(a) (g - mu), a sigma^2) (as in test_sdedit.py).
"""
import pytest
import torch

import sdekit
from sdekit import GaussianMixture, UserError, VESDE, VPSDE, SubVPSDE
from sdekit.tasks.sdedit import sdedit, sdedit_time

SAMPLERS = list(sdekit.SAMPLERS)


def _steps(sampler):
    if sampler in ("langevin", "ald"):          # a Langevin chain alone needs a fine grid (it refuses a coarse one)
        return 400
    return 40 if sdekit.get_sampler(sampler).kind == "sde" else 8


def _mixture(gen, shape=(1, 4, 4)):
    return GaussianMixture(torch.randn(3, *shape, generator=gen), torch.tensor([0.3, 0.5, 0.4]))


def _run(sde, gmm, guide, t0, sampler, seed=1, **kw):
    return sdedit(sde, gmm.score_fn(sde), guide, t0=t0, steps=_steps(sampler), sampler=sampler,
                  generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_zero_t0_keeps_the_guide_exactly(sampler, gen):
    gmm = _mixture(gen)
    sde = VESDE(0.01, 10.0)
    guide = torch.randn(6, 1, 4, 4, generator=gen)
    t0 = torch.linspace(0, 0.7, 4).reshape(1, 1, 1, 4).expand(1, 1, 4, 4).clone()      # keep .. change
    t0[..., 0, :] = 0.0
    out = _run(sde, gmm, guide, t0, sampler)
    keep = (t0 == 0).expand_as(guide)
    assert torch.equal(out[keep], guide[keep])
    assert (out[~keep] - guide[~keep]).abs().mean() > 0.05


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(0.01, 10.0)], ids=["vp", "ve"])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_constant_map_is_plain_sdedit(sde, sampler, gen):
    gmm = _mixture(gen)
    guide = torch.randn(5, 1, 4, 4, generator=gen)
    plain, a = _run(sde, gmm, guide, 0.45, sampler, return_info=True)
    mapped, b = _run(sde, gmm, guide, torch.full((4, 4), 0.45, dtype=torch.float64), sampler, return_info=True)
    torch.testing.assert_close(mapped, plain, rtol=1e-6, atol=1e-6)
    assert a == b
    other = _run(sde, gmm, guide, torch.full((4, 4), 0.3), sampler)
    assert (other - plain).abs().max() > 1e-3                                 # the map's value matters


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_two_valued_map_is_masked_sdedit(sampler, gen):
    gmm = _mixture(gen)
    sde = VPSDE()
    guide = torch.randn(5, 1, 4, 4, generator=gen)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1:3, :] = 1                                                     # 1 = keep
    masked = _run(sde, gmm, guide, 0.6, sampler, mask=mask)
    mapped = _run(sde, gmm, guide, 0.6 * (1 - mask.double()), sampler)
    torch.testing.assert_close(mapped, masked, rtol=1e-6, atol=1e-6)


def test_map_and_mask_together(gen):
    """The mask keeps its region whatever the map says there; elsewhere the map rules."""
    gmm = _mixture(gen)
    sde = VPSDE()
    guide = torch.randn(4, 1, 4, 4, generator=gen)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    t0 = torch.full((1, 1, 4, 4), 0.5)
    t0[..., 3, :] = 0
    out = _run(sde, gmm, guide, t0, "reverse_diffusion", mask=mask)
    keep = ((mask == 1) | (t0 == 0)).expand_as(guide)
    assert torch.equal(out[keep], guide[keep])
    assert (out[~keep] - guide[~keep]).abs().mean() > 0.05
    ones = _run(sde, gmm, guide, torch.full((1, 1, 4, 4), 0.5), "reverse_diffusion", mask=mask)
    plain = _run(sde, gmm, guide, 0.5, "reverse_diffusion", mask=mask)
    torch.testing.assert_close(ones, plain, rtol=1e-6, atol=1e-6)          # a constant map: the masked edit


MU = torch.tensor([1.0, -1.0, 0.5, 0.0])
V = 1.0
G = torch.tensor([2.0, 0.0, -1.0, 1.5])
T0 = torch.tensor([0.0, 0.1, 0.3, 0.6])


def _law(sde, times, stochastic):
    """Mean [4] and variance [4] of SDEdit of N(MU, V I) started at ``times`` [4] (per coordinate)."""
    sig2 = sde.sigma(times.double()).float() ** 2 * (times > 0)
    a = V / (V + sig2)
    if stochastic:
        return MU + a * (G - MU), a * sig2 * (1 + a)
    return MU + a.sqrt() * (G - MU), a * sig2


def _release(sde, sampler, steps, t0):
    """Each coordinate's start: the last time of the solver's grid at or above sdedit_time(t0) (0: kept)."""
    from sdekit.solvers.loop import make_grid
    t_start = sdedit_time(sde, float(t0.max()))
    grid = make_grid(sde, sdekit.get_sampler(sampler), steps, t_start, sde.eps, True)
    ts = torch.tensor(grid.ts, dtype=torch.float64)
    return torch.tensor([0.0 if t == 0 else float(ts[ts >= sdedit_time(sde, float(t))].min()) for t in t0])


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(0.01, 20.0), SubVPSDE()], ids=["vp", "ve", "subvp"])
@pytest.mark.parametrize("sampler,steps,stochastic", [("reverse_diffusion", 200, True), ("heun", 50, False)])
def test_released_pixels_follow_sdedit_from_their_own_t0(sde, sampler, steps, stochastic, gen):
    """Each coordinate follows the exact law of SDEdit from its own start; on the fine uniform grid of
    reverse diffusion that is its own t0 (within a step, 0.003); the coarser grid of Heun releases it
    at the last grid time at or above its t0."""
    n = 4000
    gauss = GaussianMixture(MU[None], V ** 0.5)
    out = sdedit(sde, gauss.score_fn(sde), G.expand(n, 4).contiguous(), t0=T0, steps=steps, sampler=sampler,
                 generator=gen)
    mean, var = _law(sde, _release(sde, sampler, steps, T0), stochastic)
    assert torch.equal(out[:, 0], G[0].expand(n))                              # t0 = 0: the guide
    se = (var[1:] / n) ** 0.5
    assert ((out[:, 1:].mean(0) - mean[1:]).abs() < 5 * se + 0.01).all(), (out.mean(0), mean)
    assert ((out[:, 1:].var(0) / var[1:] - 1).abs() < 0.08).all(), (out.var(0), var)
    # the test tells t0s apart: every released coordinate under the law of the map's largest t0 fails
    top, _ = _law(sde, _release(sde, sampler, steps, T0[-1:].expand(4)), stochastic)
    assert ((out[:, 1:3].mean(0) - top[1:3]).abs() > 10 * se[:2] + 0.01).all()
    if stochastic:                                  # and on the fine grid: the law of SDEdit from t0 itself
        own, _ = _law(sde, torch.tensor([0.0] + [sdedit_time(sde, float(t)) for t in T0[1:]]), stochastic)
        assert ((out[:, 1:].mean(0) - own[1:]).abs() < 5 * se + 0.01).all()


def test_noise_level_below_the_sde_range_is_kept(gen):
    """A t0 whose noise level the SDE never reaches (below sigma(eps)) cannot start: the pixel is kept."""
    gmm = _mixture(gen)
    sde = VESDE(0.01, 10.0)
    guide = torch.randn(3, 1, 4, 4, generator=gen)
    t0 = torch.full((4, 4), 0.5)
    t0[0, 0] = 1e-4                                       # sigma_ref = 0.0032 < sigma_min = 0.01
    out = _run(sde, gmm, guide, t0, "reverse_diffusion")
    assert torch.equal(out[..., 0, 0], guide[..., 0, 0])


def test_a_map_costs_the_evaluations_of_its_largest_t0(gen):
    gmm = _mixture(gen)
    sde = VPSDE()
    guide = torch.randn(2, 1, 4, 4, generator=gen)
    ramp = torch.linspace(0, 0.5, 4).expand(4, 4)
    _, a = sdedit(sde, gmm.score_fn(sde), guide, t0=ramp, return_info=True, generator=gen)
    _, b = sdedit(sde, gmm.score_fn(sde), guide, t0=0.5, return_info=True, generator=gen)
    assert (a["nfe"], a["steps"], a["t0"], a["t"]) == (b["nfe"], b["steps"], b["t0"], b["t"])


@pytest.mark.parametrize("t0,msg", [(torch.full((3, 3), 0.5), "shape"), (torch.full((4,), 1.5), r"\[0, 1\]"),
                                    (torch.full((4,), -0.1), r"\[0, 1\]"),
                                    (torch.tensor([0.5, float("nan"), 0.5, 0.5]), "NaN"),
                                    (torch.zeros(4), "nothing to edit"), (torch.full((1, 1, 4), 0.5), "shape")])
def test_bad_maps_are_one_line_errors(t0, msg):
    sde = VPSDE()
    gauss = GaussianMixture(MU[None], V ** 0.5)
    with pytest.raises(UserError, match=msg) as e:
        sdedit(sde, gauss.score_fn(sde), G.expand(2, 4).contiguous(), t0=t0)
    assert "\n" not in str(e.value)

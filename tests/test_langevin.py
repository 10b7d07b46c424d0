"""The Langevin corrector: its step has NCSN's floor (no runaway when the chain lags), a chain without a
predictor refuses a grid it cannot keep up with before any evaluation, and with per-sample generators
(generate(), the CLI) a sample does not depend on the batch it is drawn in."""
import math

import pytest
import torch

import sdekit
from sdekit.core.errors import UserError
from sdekit.solvers.samplers import LAG, PC, Grid, check_keeps_up, langevin_step

DATA_MEAN, DATA_STD = 0.3, 0.2


def gaussian(d=64):
    return sdekit.GaussianMixture(torch.full((1, d), DATA_MEAN), torch.tensor([DATA_STD]))


class CountingScore:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


def var_ratio(x):
    return float(x.var() / DATA_STD ** 2)


def min_steps(sde, sampler, **options):
    """The smallest step count sample() accepts (bisection on the refusal)."""
    lo, hi = 2, 20000
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            check(sde, sampler, mid, **options)
            hi = mid
        except UserError:
            lo = mid + 1
    return lo


def check(sde, sampler, steps, **options):
    """Build the stepper sample() would build (its grid check runs in the constructor)."""
    from sdekit.solvers.registry import check_options, get_sampler
    from sdekit.solvers.loop import make_grid
    spec = get_sampler(sampler)
    opts = check_options(spec, options)
    grid = make_grid(sde, spec, steps, sde.T, sde.eps, True, opts.pop("schedule", None), opts.pop("rho", 7.0))
    spec(sdekit.core.denoisers.ScoreDenoiser(sde, lambda x, t: -x), grid, None, **opts)


@pytest.mark.parametrize("sigma_max", [50.0, 348.0])
def test_langevin_on_coarse_ve_grids_neither_runs_away_nor_returns_noise(sigma_max):
    """The reported case: N(0.3, 0.2^2), exact scores, langevin at 500 steps returned 1,928x the variance
    and at 300 steps 16,478x, without a word."""
    sde, gmm = sdekit.VESDE(sigma_max=sigma_max), gaussian()
    x = sdekit.sample(sde, gmm.score_fn(sde), (40, 64), sampler="langevin", steps=500,
                      generator=torch.Generator().manual_seed(0))
    assert 0.8 < var_ratio(x) < 1.25, var_ratio(x)
    assert abs(float(x.mean()) - DATA_MEAN) < 0.02
    score = CountingScore(gmm.score_fn(sde))
    with pytest.raises(UserError, match=r"^Langevin alone at 300 steps cannot keep up .* use at least \d+ steps"):
        sdekit.sample(sde, score, (40, 64), sampler="langevin", steps=300)
    assert score.calls == 0                                       # refused before any evaluation


@pytest.mark.parametrize("sampler,options", [("langevin", {}), ("ald", {}), ("langevin", {"n_corrector": 2}),
                                             ("pc", {"predictor": "none"}), ("langevin", {"snr": 0.3})])
def test_the_smallest_accepted_grid_keeps_the_lag_within_its_bound(sampler, options):
    """At the fewest steps accepted the chain holds at most LAG x the exact variance (floor alone: ald,
    the worst case), and a tenth fewer steps are refused."""
    sde, gmm = sdekit.VESDE(sigma_max=50.0), gaussian()
    n = min_steps(sde, sampler, **options)
    with pytest.raises(UserError, match="cannot keep up"):
        check(sde, sampler, int(n * 0.9), **options)
    x = sdekit.sample(sde, gmm.score_fn(sde), (40, 64), sampler=sampler, steps=n,
                      generator=torch.Generator().manual_seed(1), **options)
    assert var_ratio(x) < LAG * 1.1, (n, var_ratio(x))


def test_more_corrector_steps_or_a_larger_snr_need_fewer_levels():
    sde = sdekit.VESDE()
    base = min_steps(sde, "langevin")
    assert min_steps(sde, "langevin", n_corrector=2) < 0.6 * base
    assert min_steps(sde, "langevin", snr=0.3) < 0.4 * base
    assert min_steps(sde, "pc") == 2                          # a predictor anneals: no bound on its grid


def test_the_bound_is_the_gaussian_chain_in_closed_form():
    """check_keeps_up's fixed point c* = q (1 - a) / ((1 - r)(1 - q a)) is that of the recursion
    c <- q ((1 - 2r)^2 c + 4r) it states, iterated."""
    r, q = 0.16 ** 2, 1.04
    a = (1 - 2 * r) ** 2
    c = 1.0
    for _ in range(2000):
        c = q * (a * c + 4 * r)
    assert abs(c - q * (1 - a) / ((1 - r) * (1 - q * a))) < 1e-9


def test_the_step_has_ncsn_floor_when_the_state_is_too_wide():
    """A state 30x wider than p_t: the snr rule alone would take a step 900x too small; the floor is
    2 alpha (snr std(t))^2 (alpha = 1 for VE)."""
    sde = sdekit.VESDE()
    gmm = gaussian(256)
    stepper = PC(sdekit.core.denoisers.ScoreDenoiser(sde, gmm.score_fn(sde)), Grid(sde, ts=[0.5, 0.49]),
                 torch.Generator().manual_seed(0), predictor="none", corrector="none")
    t = torch.full((4,), 0.5)
    std = float(sde.marginal_std(t[:1]))
    x = DATA_MEAN + 30 * std * torch.randn(4, 256, generator=torch.Generator().manual_seed(2))
    _, x_mean = langevin_step(stepper, x, t, 0.01, 0.16, "sample")
    score = gmm.score_fn(sde)(x, t)
    step = ((x_mean - x) / score).flatten()
    assert torch.allclose(step, torch.full_like(step, 2 * (0.16 * std) ** 2), rtol=1e-4)


@pytest.mark.parametrize("sampler,steps", [("pc", 30), ("langevin", 130)])
def test_generate_does_not_depend_on_the_batch(sampler, steps):
    """The reported case: with the batch's norms, batch size 4 vs 1 changed 334 (pc) and 647 (langevin)
    of 1,024 pixels by up to 14/255."""
    model = sdekit.load("digits")
    opts = {"snr": 0.3} if sampler == "langevin" else {}
    a = sdekit.models.model.generate(model, 4, sampler, steps, seed=7, batch_size=4, **opts)
    b = sdekit.models.model.generate(model, 4, sampler, steps, seed=7, batch_size=1, **opts)
    assert (model.to_unit(a) - model.to_unit(b)).abs().max() < 1e-4
    c = sdekit.models.model.generate(model, 4, sampler, steps, seed=7, batch_size=4, norm="batch", **opts)
    assert (model.to_unit(a) - model.to_unit(c)).abs().max() > 1e-3        # the batch's norms do couple


def test_sample_with_one_generator_keeps_score_sde_batch_norms():
    sde, gmm = sdekit.VPSDE(), gaussian(2)
    grid = Grid(sde, ts=torch.linspace(1, 1e-3, 11, dtype=torch.float64))
    den = sdekit.core.denoisers.ScoreDenoiser(sde, gmm.score_fn(sde))
    assert PC(den, grid, torch.Generator()).norm == "batch"
    assert PC(den, grid, [torch.Generator(), torch.Generator()]).norm == "sample"
    assert PC(den, grid, [torch.Generator()], norm="batch").norm == "batch"


def test_inpaint_and_sdedit_with_a_chain_that_cannot_keep_up_refuse_before_work():
    sde = sdekit.VESDE()
    score = CountingScore(gaussian(16).score_fn(sde))
    image, mask = torch.zeros(2, 16), torch.ones(2, 16)
    mask[:, :8] = 0
    with pytest.raises(UserError, match="cannot keep up"):
        sdekit.inpaint(sde, score, image, mask, steps=100, sampler="langevin")
    with pytest.raises(UserError, match="cannot keep up"):
        sdekit.sdedit(sde, score, image, t0=1.0, steps=100, sampler="ald")
    assert score.calls == 0
    x = sdekit.sdedit(sde, score, image, t0=0.5, sampler="langevin", generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all() and float(x.abs().max()) < 3


def test_check_keeps_up_accepts_the_registry_defaults():
    from sdekit.solvers.registry import get_sampler
    for sde in (sdekit.VESDE(), sdekit.VESDE(sigma_max=348.0), sdekit.VPSDE(), sdekit.SubVPSDE()):
        for name in ("langevin", "ald"):
            check(sde, name, get_sampler(name).default_steps)
    assert math.isfinite(LAG) and check_keeps_up(sdekit.VPSDE(), Grid(sdekit.VPSDE(), ts=[1.0, 0.5]), 0.16, 1) is None

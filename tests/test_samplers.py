"""Samplers with exact mixture scores: distributions, convergence order, NFE, bad input."""
import math

import pytest
import torch

import sdekit
from sdekit.core.errors import UserError

from conftest import energy_distance

N = 1500


def mixture2d():
    return sdekit.GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -1.5]]),
                                  torch.tensor([0.3, 0.5, 0.4]), torch.tensor([0.3, 0.5, 0.2]))


def mixture64d():
    means = torch.zeros(2, 64)
    means[0, :2], means[1, :2] = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])
    return sdekit.GaussianMixture(means, torch.tensor([0.5, 0.5]), torch.tensor([0.3, 0.7]))


def noise_floor(gmm, n):
    """Energy distance between two independent exact sample sets (median of 3)."""
    vals = sorted(energy_distance(gmm.sample(n, generator=torch.Generator().manual_seed(100 + i)),
                                  gmm.sample(n, generator=torch.Generator().manual_seed(200 + i))) for i in range(3))
    return vals[1]


@pytest.fixture(scope="module")
def floor2d():
    return noise_floor(mixture2d(), N)


CASES = [  # sampler, steps, options
    ("em", 500, {}), ("reverse_diffusion", 500, {}), ("ancestral", 500, {}),
    ("ode", 1, {}), ("ddim", 100, {}), ("heun", 40, {}), ("dpm_solver", 40, {}),
    ("heun", 40, {"churn": 10.0}), ("ddim", 200, {"eta": 1.0}),
]


@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.VESDE()], ids=["vp", "ve"])
@pytest.mark.parametrize("sampler,steps,opts", CASES, ids=[f"{c[0]}{'-' + next(iter(c[2])) if c[2] else ''}" for c in CASES])
def test_sampler_reproduces_mixture(sde, sampler, steps, opts, floor2d):
    gmm = mixture2d()
    x, info = sdekit.sample(sde, gmm.score_fn(sde), (N, 2), sampler=sampler, steps=steps,
                            generator=torch.Generator().manual_seed(1), return_info=True, **opts)
    exact = gmm.sample(N, generator=torch.Generator().manual_seed(2))
    ed = energy_distance(x, exact)
    assert ed < 3 * floor2d + 2e-3, f"energy distance {ed:.4f}, noise floor {floor2d:.4f}"
    # mode weights within sampling noise
    right = float((x[:, 0] > 1.0).float().mean())
    assert abs(right - 0.5) < 4 * math.sqrt(0.25 / N) + 0.01


@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.SubVPSDE(), sdekit.VESDE()], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("sampler,opts", [("pc", {}), ("pc", {"predictor": "ancestral"}), ("pc", {"predictor": "em", "corrector": "ald"}),
                                          ("langevin", {"snr": 0.16}), ("langevin", {"norm": "sample"})],
                         ids=["pc-rd", "pc-anc", "pc-em-ald", "langevin", "langevin-sample"])
def test_pc_and_langevin_reproduce_64d_mixture(sde, sampler, opts):
    # Langevin's snr rule sets a per-sample step from ||z|| / ||score||; as ||score|| depends on x the
    # chain is biased by O(1/D) (std +13% at D=16, +3% at D=64), so test where the rule is meant for.
    gmm, n = mixture64d(), 1000
    steps = 1000 if sampler == "langevin" else 300
    x, info = sdekit.sample(sde, gmm.score_fn(sde), (n, 64), sampler=sampler, steps=steps,
                            generator=torch.Generator().manual_seed(3), return_info=True, **opts)
    right = float((x[:, 0] > 0).float().mean())
    assert abs(right - 0.7) < 0.06
    assert abs(float(x[x[:, 0] > 0, 0].mean()) - 2.0) < 0.1
    assert abs(float(x[:, 2:].std()) - 0.5) < 0.03                 # isotropic std of the components
    n_corr = 0 if sampler == "langevin" else 1
    assert info["nfe"] == (steps if sampler == "langevin" else steps * (1 + n_corr))


def reference(sde, score, xT):
    return sdekit.sample(sde, score, None, sampler="ode", x_T=xT, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.VESDE(), sdekit.EDMSDE()], ids=["vp", "ve", "edm"])
@pytest.mark.parametrize("sampler,order", [("ddim", 1), ("heun", 2), ("dpm_solver", 2)])
def test_fast_solvers_converge_at_their_order(sde, sampler, order):
    gmm = mixture2d()
    score = gmm.score_fn(sde)
    xT = sde.prior_sampling((100, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = reference(sde, score, xT)
    errs = []
    for n in (32, 64, 128):
        x = sdekit.sample(sde, score, None, sampler=sampler, steps=n, x_T=xT)
        errs.append(float((x - ref).pow(2).sum(1).mean().sqrt()))
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert errs[-1] < (0.05 if order == 2 else 0.35)
    assert rates[-1] > order - 0.35, f"errors {errs}, observed order {rates}"


@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.SubVPSDE(), sdekit.VESDE(), sdekit.EDMSDE()],
                         ids=["vp", "subvp", "ve", "edm"])
def test_ode_sampler_matches_closed_form_flow_of_a_gaussian(sde):
    # Data N(mu, v I): along the PF-ODE, y = x/s satisfies (y - mu)/sqrt(v + sigma^2) = const, and the
    # final Tweedie step gives mu + (y - mu) v / (v + sigma^2).
    mu, v = torch.tensor([1.0, -0.5, 0.3], dtype=torch.float64), 0.36
    gmm = sdekit.GaussianMixture(mu[None], v ** 0.5)
    xT = sde.prior_sampling((50, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tT, te = torch.tensor([sde.T], dtype=torch.float64), torch.tensor([sde.eps], dtype=torch.float64)
    sT, se = float(sde.sigma(tT)), float(sde.sigma(te))
    y = mu + (xT / float(sde.scale(tT)) - mu) * math.sqrt((v + se ** 2) / (v + sT ** 2))
    exact = mu + (y - mu) * v / (v + se ** 2)
    x, info = sdekit.sample(sde, gmm.score_fn(sde), None, sampler="ode", x_T=xT, rtol=1e-8, atol=1e-8, return_info=True)
    torch.testing.assert_close(x, exact, atol=1e-5, rtol=1e-5)
    assert info["nfe"] > 10
    x = sdekit.sample(sde, gmm.score_fn(sde), None, sampler="heun", steps=60, x_T=xT)
    torch.testing.assert_close(x, exact, atol=2e-2, rtol=0)


def test_nfe_counts():
    sde, gmm = sdekit.VPSDE(), mixture2d()
    score = gmm.score_fn(sde)
    counts = {s: sdekit.sample(sde, score, (4, 2), sampler=s, steps=10, return_info=True)[1]["nfe"]
              for s in ("em", "pc", "ddim", "heun", "dpm_solver")}
    assert counts == {"em": 10, "pc": 20, "ddim": 10, "heun": 19, "dpm_solver": 10}
    _, info = sdekit.sample(sde, score, (4, 2), sampler="pc", steps=10, n_corrector=3, return_info=True)
    assert info["nfe"] == 40


def test_generator_makes_runs_reproducible_and_x_T_is_used():
    sde, gmm = sdekit.VPSDE(), mixture2d()
    a = sdekit.sample(sde, gmm.score_fn(sde), (8, 2), sampler="em", steps=20, generator=torch.Generator().manual_seed(5))
    b = sdekit.sample(sde, gmm.score_fn(sde), (8, 2), sampler="em", steps=20, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    xT = torch.zeros(8, 2)
    c = sdekit.sample(sde, gmm.score_fn(sde), (8, 2), sampler="ddim", steps=20, x_T=xT)
    d = sdekit.sample(sde, gmm.score_fn(sde), None, sampler="ddim", steps=20, x_T=xT)
    assert torch.equal(c, d)


def test_clip_only_when_asked():
    sde = sdekit.VESDE()
    gmm = sdekit.GaussianMixture(torch.tensor([[3.0]]), 0.1)
    x = sdekit.sample(sde, gmm.score_fn(sde), (16, 1), sampler="heun", steps=20)
    assert float(x.min()) > 2.0
    x = sdekit.sample(sde, gmm.score_fn(sde), (16, 1), sampler="heun", steps=20, clip=(-1, 1))
    assert float(x.max()) == 1.0


def test_bad_input_gives_clear_errors():
    sde, gmm = sdekit.VPSDE(), mixture2d()
    score = gmm.score_fn(sde)
    with pytest.raises(UserError, match="unknown sampler"):
        sdekit.sample(sde, score, (4, 2), sampler="magic")
    with pytest.raises(UserError, match="shape"):
        sdekit.sample(sde, score, (4, 2), x_T=torch.zeros(3, 2))
    with pytest.raises(UserError, match="NaN"):
        sdekit.sample(sde, score, None, x_T=torch.full((2, 2), float("nan")))
    with pytest.raises(UserError, match="takes no option"):
        sdekit.sample(sde, score, (4, 2), sampler="heun", steps=3, snr=0.1)
    with pytest.raises(UserError, match="predictor must be one of"):
        sdekit.sample(sde, score, (4, 2), sampler="pc", steps=3, predictor="rk4")
    with pytest.raises(UserError, match="NaN/Inf"):
        sdekit.sample(sde, lambda x, t: x * float("nan"), (4, 2), sampler="ddim", steps=3)
    with pytest.raises(UserError, match="positive"):
        sdekit.sample(sde, score, (4, 2), steps=0)


@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.SubVPSDE(), sdekit.VESDE()], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("corrector", ["langevin", "ald"])
def test_every_corrector_is_right_in_two_dimensions(sde, corrector):
    """Predictor-corrector in 2-D: with each sample's own ||z|| / ||score|| the Langevin step exploded near
    the modes (energy distance 0.069, y-spread 0.85 against 0.39); score_sde's batch-averaged norms fix it."""
    gmm = sdekit.GaussianMixture(torch.tensor([[-1.5, 0.0], [1.5, 0.5]]), 0.3)
    n = 1000
    x = sdekit.sample(sde, gmm.score_fn(sde), (n, 2), sampler="pc", steps=300, corrector=corrector,
                      generator=torch.Generator().manual_seed(1))
    exact = gmm.sample(n, generator=torch.Generator().manual_seed(2))
    floor = noise_floor(gmm, n)
    assert energy_distance(x, exact) < 3 * floor + 2e-3
    assert abs(float(x[:, 1].std()) / float(exact[:, 1].std()) - 1) < 0.1


def test_readme_sampler_table_is_the_registry():
    """The README's table is written from the registry records (sdekit.solvers.registry.markdown_table)."""
    from pathlib import Path
    from sdekit.solvers.registry import markdown_table
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    flat = "\n".join(line.strip() for line in readme.splitlines())
    assert markdown_table() in flat


@pytest.mark.parametrize("name", list(sdekit.SAMPLERS))
def test_registry_counts_the_evaluations_each_sampler_takes(name):
    spec = sdekit.get_sampler(name)
    if spec.kind == "adaptive":
        return
    gmm, sde = mixture2d(), sdekit.VPSDE()
    steps = 400 if name in ("langevin", "ald") else 6        # Langevin alone refuses grids it cannot keep up with
    _, info = sdekit.sample(sde, gmm.score_fn(sde), (8, 2), sampler=name, steps=steps, return_info=True,
                            generator=torch.Generator().manual_seed(0))
    assert info["nfe"] == spec.evaluations(steps)


@pytest.mark.parametrize("sampler", ["langevin", "ald"])
def test_langevin_samplers_alone_reproduce_a_mixture_at_their_defaults(sampler, floor2d):
    """Langevin alone (the corrector without a predictor) and NCSN's annealed Langevin dynamics, at their
    registry defaults (steps, grid, snr, norms, the final Tweedie step), on NCSN's SDE (VE)."""
    sde, gmm = sdekit.VESDE(), mixture2d()
    x, info = sdekit.sample(sde, gmm.score_fn(sde), (N, 2), sampler=sampler,
                            generator=torch.Generator().manual_seed(1), return_info=True)
    assert info["nfe"] == sdekit.get_sampler(sampler).evaluations(sdekit.get_sampler(sampler).default_steps)
    exact = gmm.sample(N, generator=torch.Generator().manual_seed(2))
    ed = energy_distance(x, exact)
    assert ed < 3 * floor2d + 2e-3, f"energy distance {ed:.4f}, noise floor {floor2d:.4f}"
    right = float((x[:, 0] > 1.0).float().mean())
    assert abs(right - 0.5) < 4 * math.sqrt(0.25 / N) + 0.01
    for mean in gmm.means:                       # each mode's mean and spread, as in exact samples
        near, near_exact = x[(x - mean).norm(dim=1) < 1.0], exact[(exact - mean).norm(dim=1) < 1.0]
        assert (near.mean(0) - mean).norm() < 0.05
        assert abs(float(near.std(0).mean()) / float(near_exact.std(0).mean()) - 1) < 0.1


@pytest.mark.parametrize("sampler", ["langevin", "ald"])
def test_langevin_alone_ends_with_tweedies_denoising_step(sampler):
    """Data N(mu, 0.001^2 I): the chain's last level (sigma_min = 0.01 for VE) holds noise of std 0.01,
    which the mean of a Langevin move keeps (its output was off by ~0.01); Tweedie's estimate
    x + std^2 score at that level removes it (NCSNv2's denoise)."""
    sde, mu = sdekit.VESDE(), torch.tensor([1.0, -1.0])
    gmm = sdekit.GaussianMixture(mu[None], 0.001)
    x, info = sdekit.sample(sde, gmm.score_fn(sde), (500, 2), sampler=sampler,
                            generator=torch.Generator().manual_seed(0), return_info=True)
    assert info["nfe"] == sdekit.get_sampler(sampler).default_steps       # no extra evaluation
    assert float((x - mu).pow(2).mean().sqrt()) < 0.002
    noisy = sdekit.sample(sde, gmm.score_fn(sde), (500, 2), sampler=sampler, denoise=False,
                          generator=torch.Generator().manual_seed(0))
    assert float((noisy - mu).pow(2).mean().sqrt()) > 0.005


def test_langevin_norms_per_sample_make_a_sample_independent_of_its_batch():
    """norm="batch" (score_sde) sets one step from norms averaged over the batch, so a sample depends on
    the batch it is drawn in; norm="sample" uses each sample's own norms."""
    sde, gmm = sdekit.VPSDE(), mixture64d()
    xT = sde.prior_sampling((5, 64), generator=torch.Generator().manual_seed(0))

    def draw(rows, norm):
        gens = [torch.Generator().manual_seed(10 + r) for r in rows]
        return sdekit.sample(sde, gmm.score_fn(sde), None, sampler="langevin", steps=400, x_T=xT[rows],
                             generator=gens, norm=norm)
    for norm, same in (("sample", True), ("batch", False)):
        whole, part = draw([0, 1, 2, 3, 4], norm), draw([0, 1], norm)
        assert torch.allclose(whole[:2], part, atol=1e-5) == same, norm
    with pytest.raises(UserError, match="norm must be one of batch, sample"):
        sdekit.sample(sde, gmm.score_fn(sde), (4, 64), sampler="langevin", steps=3, norm="each")


@pytest.mark.parametrize("sampler", ["langevin", "ald"])
def test_an_edit_with_langevin_alone_finishes_at_the_default_steps(sampler):
    """SDEdit's default steps: a fifth of the default steps per unit of t0 suits a grid uniform in t; the
    Langevin samplers' geometric grid keeps its default spacing in log sigma (at 100 t0 steps their chains
    lag behind the annealing: langevin's output kept noise of 0.007 here)."""
    from sdekit.tasks.sdedit import sdedit_steps
    sde, mu = sdekit.VPSDE(), torch.tensor([1.0, -1.0])
    gmm = sdekit.GaussianMixture(mu[None], 0.001)
    guide = mu + torch.tensor([[0.3, 0.2]]).expand(200, 2)
    steps = sdedit_steps(sampler, 0.5)
    out = sdekit.sdedit(sde, gmm.score_fn(sde), guide, t0=0.5, steps=steps, sampler=sampler,
                        generator=torch.Generator().manual_seed(0))
    assert steps == sdekit.get_sampler(sampler).default_steps
    assert float((out - mu).pow(2).mean().sqrt()) < 0.003

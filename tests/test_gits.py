"""GITS grids (Chen et al. 2024): the dynamic programme against brute force, and the fitted grid against the
SDE's own grids on an exact-score mixture."""
import itertools

import numpy as np
import pytest
import torch

import sdekit
from sdekit.solvers.gits import cheapest_path, optimal_grids, teacher_costs


@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_the_cheapest_path_is_the_brute_force_minimum(steps):
    rng = np.random.default_rng(steps)
    m = 8
    cost = rng.random((m, m)) ** 2
    cost[np.tril_indices(m)] = np.inf
    best = min((sum(cost[a, b] for a, b in zip((0, *mid), (*mid, m - 1))), (0, *mid, m - 1))
               for mid in itertools.combinations(range(1, m - 1), steps - 1))
    path = cheapest_path(cost, steps)
    assert tuple(path) == best[1]
    assert sum(cost[a, b] for a, b in zip(path, path[1:])) == pytest.approx(best[0])


def test_a_path_longer_than_the_levels_is_refused():
    with pytest.raises(sdekit.UserError, match="levels"):
        cheapest_path(np.zeros((4, 4)), 4)


def mixture():
    gmm = sdekit.GaussianMixture(torch.tensor([[-1.5, 0.4], [1.0, -0.6], [0.2, 1.3]]), torch.tensor([0.25, 0.15, 0.3]))
    return sdekit.VPSDE(), gmm


def test_the_costs_are_the_teachers_one_step_errors():
    """cost(i, j) for adjacent teacher levels is small, for a jump over the whole range large, and the
    last column (to sigma = 0) of the first level is the error of D at sigma(T), about the data's spread."""
    sde, gmm = mixture()
    levels, cost = teacher_costs(sde, gmm.score_fn(sde), (64, 2), teacher_steps=40,
                                 generator=torch.Generator().manual_seed(0))
    assert levels[-1] == 0 and all(a > b for a, b in zip(levels, levels[1:]))
    assert np.isinf(cost[3, 2]) and np.isinf(cost[2, 2])
    adjacent = np.mean([cost[i, i + 1] for i in range(40)])
    assert adjacent < 0.05 * cost[0, 40]
    assert 0.3 < cost[0, 40] < 5.0


@pytest.mark.parametrize("sampler", ["ddim", "dpm_solver"])
def test_the_fitted_grid_beats_the_sdes_own_grids_on_a_mixture(sampler):
    """Error to the exact probability-flow endpoint (a 400-step solve) of N-step solves on fresh noise."""
    sde, gmm = mixture()
    score = gmm.score_fn(sde)
    grids = optimal_grids(sde, score, (256, 2), steps=(4, 6), teacher_steps=60, seed=1)
    x_T = torch.randn(512, 2, generator=torch.Generator().manual_seed(7)) * sde.prior_std
    exact = sdekit.sample(sde, score, x_T=x_T, sampler="dpm_solver", steps=400, schedule="logsnr")

    def err(**kw):
        x = sdekit.sample(sde, score, x_T=x_T, sampler=sampler, **kw)
        return float((x - exact).norm(dim=1).mean())
    for n, sigmas in grids.items():
        assert len(sigmas) == n + 1 and sigmas[-1] == 0
        fitted = err(sigmas=sigmas)
        for schedule in ("uniform", "logsnr", "karras"):
            assert fitted < err(steps=n, schedule=schedule), (n, schedule)


def test_a_model_samples_on_its_fitted_grid_unless_told_otherwise(tmp_path):
    """A bundle's "grids" record is the default grid of dpm_solver and ddim (Model.sample, generate and the
    CLI through them); a named schedule or sigmas, or a sampler without fitted grids, ignores it; it is
    saved and loaded with the bundle."""
    from sdekit.models.bundle import random_model, save_bundle
    model = random_model(shape=(1, 8, 8))
    fitted = optimal_grids(model.sde, model.score_fn, (8, 1, 8, 8), steps=(3, 4), teacher_steps=12, seed=0)
    save_bundle(tmp_path / "m", model.net, shape=(1, 8, 8),
                extra={"grids": {"method": "GITS", "sigmas": {str(k): v for k, v in fitted.items()}}})
    model = sdekit.load(tmp_path / "m")
    assert model.grids == fitted

    def draw(sampler="dpm_solver", steps=3, **kw):
        return model.sample(2, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0), **kw)

    def direct(**kw):
        return sdekit.sample(model.sde, model.score_fn, (2, 1, 8, 8), generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(draw(), direct(sampler="dpm_solver", sigmas=fitted[3]))
    assert torch.equal(draw("ddim", 4), direct(sampler="ddim", sigmas=fitted[4]))
    assert torch.equal(draw(schedule="logsnr"), direct(sampler="dpm_solver", steps=3, schedule="logsnr"))
    assert not torch.equal(draw(), direct(sampler="dpm_solver", steps=3))       # the default grid differs
    assert torch.equal(draw(steps=5), direct(sampler="dpm_solver", steps=5))      # no grid of 5 steps: the default
    assert torch.equal(draw("heun", 3), direct(sampler="heun", steps=3))
    x, info = sdekit.models.model.generate(model, 2, sampler="dpm_solver", steps=4, return_info=True)
    assert info["nfe"] == 4


def test_write_grids_fits_and_stores_them_in_the_bundle(tmp_path):
    from sdekit.models.bundle import random_model, save_bundle, write_grids
    model = random_model(shape=(1, 8, 8))
    save_bundle(tmp_path / "m", model.net, shape=(1, 8, 8))
    weights = (tmp_path / "m" / "model.safetensors").read_bytes()
    grids = write_grids(tmp_path / "m", trajectories=4, teacher_steps=10, steps=[2, 3])
    loaded = sdekit.load(tmp_path / "m")
    assert loaded.grids == grids and sorted(grids) == [2, 3]
    assert loaded.config["grids"]["trajectories"] == 4
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == weights
    with pytest.raises(sdekit.UserError, match="not a model bundle"):
        write_grids(tmp_path / "nothing")

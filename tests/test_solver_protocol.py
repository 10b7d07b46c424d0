"""The solver protocol: a sampler is one class registered with its traits. A tiny solver defined here is
registered, sampled with through sdekit.sample (checked against the exact flow of Gaussian data) and
removed; the evaluation path from a solver's step to the network is short and the same values come out of
a model prepared once per solve."""
import math
import os
import sys

import pytest
import torch

import sdekit
from sdekit.core.denoisers import Counted
from sdekit.models.bundle import random_model
from sdekit.solvers.registry import REGISTRY, get_sampler, markdown_table
from sdekit.solvers.samplers import FastSolver
from sdekit.solvers.solver import RHO, SCHEDULE, register, unregister

SD = 0.5      # the data's std: D(y; sigma) = SD^2 / (SD^2 + sigma^2) y, and the flow keeps y / sqrt(SD^2 + sigma^2)


class Midpoint(FastSolver):
    """Explicit midpoint on EDM's ODE dy/dsigma = (y - D(y; sigma)) / sigma: two evaluations per step."""
    name, summary, default_steps, schedule = "midpoint_test", "explicit midpoint (test)", 30, "karras"
    options = {"schedule": SCHEDULE, "rho": RHO}

    @classmethod
    def evals_per_step(cls, options):
        return 2

    def step_y(self, i, y):
        sig, sig_next = self.grid.sigmas[i], self.grid.sigmas[i + 1]
        mid = (sig + sig_next) / 2
        k1 = (y - self.model.denoise(y, sig)) / sig
        y_mid = y + (mid - sig) * k1
        self.denoised = self.model.denoise(y_mid, mid)
        y_next = y + (sig_next - sig) * (y_mid - self.denoised) / mid
        return y_next, y_next


@pytest.fixture
def midpoint():
    register(Midpoint)
    try:
        yield Midpoint
    finally:
        unregister(Midpoint.name)


def test_a_solver_class_registered_samples_through_sdekit_sample(midpoint):
    sde = sdekit.VPSDE()
    gmm = sdekit.GaussianMixture(torch.zeros(1, 3), torch.tensor([SD]))
    assert get_sampler("MIDPOINT_TEST") is Midpoint and "midpoint_test" in sdekit.solvers.registry.SAMPLERS
    assert "| `midpoint_test` | explicit midpoint (test) | 30 | 60 |" in markdown_table()
    x_T = torch.randn(500, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x, info = sdekit.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler="midpoint_test", return_info=True)
    assert info == {"nfe": 60, "sampler": "midpoint_test", "steps": 30} and Midpoint.evaluations(30) == 60
    sig_T, s_T = float(sde.sigma(torch.tensor(sde.T))), float(sde.scale(torch.tensor(sde.T)))
    exact = x_T / s_T * SD / math.hypot(SD, sig_T)              # the flow from sigma(T) to sigma = 0
    x15 = sdekit.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler="midpoint_test", steps=15)
    err, err15 = (x - exact).abs().max() / exact.abs().max(), (x15 - exact).abs().max() / exact.abs().max()
    assert err < 3e-3 and err15 / err > 3, (err, err15)     # second order (or better), to the exact end point
    with pytest.raises(sdekit.UserError, match="takes no option 'eta'"):
        sdekit.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler="midpoint_test", eta=1.0)
    with pytest.raises(sdekit.UserError, match="already"):
        register(Midpoint)


def test_an_unregistered_solver_is_unknown(midpoint):
    unregister(midpoint.name)
    try:
        with pytest.raises(sdekit.UserError, match="unknown sampler 'midpoint_test'"):
            get_sampler("midpoint_test")
        assert "midpoint_test" not in markdown_table()
    finally:
        register(midpoint)


def test_traits_replace_the_kind_tests():
    """The traits every caller reads: evaluations (Heun's last step is Euler's), adaptivity, grids."""
    assert get_sampler("heun").evaluations(20) == 39 and get_sampler("pc").evaluations(10) == 20
    assert get_sampler("pc").evaluations(10, {"n_corrector": 3}) == 40
    assert get_sampler("ode").adaptive and get_sampler("ode").evaluations(10) is None
    assert [n for n, s in REGISTRY.items() if s.steps_scale_with_span()] == ["em", "reverse_diffusion", "ancestral",
                                                                               "pc"]
    sde = sdekit.VPSDE()
    fast = get_sampler("ddim").grid(sde, 4, sde.T, sde.eps, True)
    assert len(fast) == 4 and fast.sigmas[-1] == 0
    slow = get_sampler("em").grid(sde, 4, sde.T, sde.eps, True)
    assert len(slow) == 4 and slow.ts[-1] == sde.eps


def frames_to_forward(model, sampler, **options):
    """sdekit's Python frames from the solver's step to the network's forward (torch's own call frames aside)."""
    seen, package = [], os.path.dirname(sdekit.__file__) + os.sep    # not a path that merely holds "sdekit"

    def hook(module, args):
        f, n = sys._getframe(1), 0
        while f is not None and not (f.f_code.co_name == "step" and "solvers" in f.f_code.co_filename):
            n += f.f_code.co_filename.startswith(package)
            f = f.f_back
        seen.append(n + 1)
    handle = model.net.net.register_forward_pre_hook(hook)
    try:
        sdekit.sample(model.sde, model.score_fn, (2, *model.shape), sampler=sampler, steps=2, **options)
    finally:
        handle.remove()
    return max(seen)


def test_the_evaluation_path_is_short():
    """heun: step, step_y, the counter, the network's denoiser (2 frames); pc adds the solver's score, the
    score from D (Tweedie) and, for its predictor, the reverse SDE's discretisation (9 and 11 frames before)."""
    model = random_model(shape=(1, 8, 8), ch=8)
    assert frames_to_forward(model, "heun") <= 5
    assert frames_to_forward(model, "pc") <= 8


@pytest.mark.parametrize("guidance", [0.0, 2.0])
def test_a_prepared_model_gives_the_values_of_the_checked_one(guidance):
    """Labels, guidance and the shape check are resolved once per solve (Denoiser.prepared); the values are
    those of the model checked at every call."""
    model = random_model(shape=(1, 8, 8), ch=8, num_classes=3)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, -1])
    fn = model.conditional(labels, guidance) if guidance else model.conditional(labels)
    den = fn.denoiser
    prepared = den.prepared(x)
    for sigma in (0.1, 3.0):
        assert torch.equal(prepared.denoise(x, sigma), den.denoise(x, sigma))
    t = torch.full((4,), 0.5)
    assert torch.allclose(prepared.score(x, t), fn(x, t), rtol=1e-5, atol=1e-5)
    with pytest.raises(sdekit.UserError, match=r"the model takes x of shape \[B, 1, 8, 8\]"):
        den.prepared(torch.zeros(4, 1, 4, 4))
    counted = Counted(prepared, eager=False)
    g = torch.Generator().manual_seed(0)
    a = sdekit.sample(model.sde, counted, x_T=x, sampler="ddim", steps=3)
    b = sdekit.sample(model.sde, fn, x_T=x, sampler="ddim", steps=3, generator=g)
    assert torch.equal(a, b)

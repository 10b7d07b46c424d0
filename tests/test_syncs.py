"""The solver loop reads the device back at most once per step (the NaN/Inf check of the step), never per
evaluation: counted by patching every torch.Tensor method that copies a tensor's values to the host."""
import contextlib

import pytest
import torch

import sdekit
from sdekit.models.bundle import random_model
from sdekit.core.noise import NonFiniteError

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu")


@contextlib.contextmanager
def counting_reads():
    """Yields a list that gets one entry per host read of a tensor's values while the block runs."""
    reads, saved = [], {name: getattr(torch.Tensor, name) for name in READS}

    def counted(name, fn):
        def read(self, *a, **k):
            reads.append(name)
            return fn(self, *a, **k)
        return read
    try:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, counted(name, fn))
        yield reads
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


@pytest.fixture(scope="module")
def models():
    gmm = sdekit.GaussianMixture(torch.tensor([[-1.0, 0.5], [1.0, 0.0]]), torch.tensor([0.3, 0.4]))
    sde = sdekit.VPSDE()
    net = random_model(shape=(1, 8, 8), ch=8)
    return {"mixture": (sde, gmm.score_fn(sde), (4, 2)), "network": (net.sde, net.score_fn, (2, 1, 8, 8))}


def reads_of(model, sampler, steps, **options):
    sde, score_fn, shape = model
    g = torch.Generator().manual_seed(0)
    with counting_reads() as reads:
        _, info = sdekit.sample(sde, score_fn, shape, sampler=sampler, steps=steps, generator=g, return_info=True,
                                **options)
    return len(reads), info["nfe"]


@pytest.mark.parametrize("which", ["mixture", "network"])
@pytest.mark.parametrize("sampler", ["ddim", "heun", "dpm_solver", "abm", "pc", "em", "reverse_diffusion",
                                     "ancestral"])
def test_a_10_step_sample_reads_the_device_every_8_steps(models, which, sampler):
    n10, nfe10 = reads_of(models[which], sampler, 10)
    n20, nfe20 = reads_of(models[which], sampler, 20)
    assert nfe20 > nfe10 >= 10
    assert n20 - n10 <= 2, (n10, n20)            # one read per READ_EVERY = 8 steps, none per evaluation
    assert n10 <= 2 + 12, n10                     # and a few for the set-up (CPU grids) and the output check


def test_the_per_step_check_still_names_the_noise_level(models):
    sde, _, shape = models["mixture"]
    with pytest.raises(NonFiniteError, match=r"the model's output is NaN/Inf at t=1 \(evaluation 1;"):
        sdekit.sample(sde, lambda x, t: x * float("nan"), shape, sampler="pc", steps=10)
    with pytest.raises(NonFiniteError, match=r"the model's output is NaN/Inf at sigma=152\.2 \(evaluation 1;"):
        sdekit.sample(sde, lambda x, t: x * float("nan"), shape, sampler="ddim", steps=10)


@pytest.mark.parametrize("which", ["mixture", "network"])
@pytest.mark.parametrize("tol", [1e-2, 1e-3])
def test_the_adaptive_ode_reads_the_device_once_per_try_and_step(models, which, tol):
    """RK45 reads its error norm once per try (its step control) and the NaN/Inf verdict once per accepted
    step, never per evaluation (each try takes 6 evaluations)."""
    steps = []
    n, nfe = reads_of(models[which], "ode", None, rtol=tol, atol=tol, callback=lambda st: steps.append(st.t))
    tries = (nfe - 3) // 6                    # 2 evaluations pick the first step, 1 is Tweedie's at the end
    assert tries >= len(steps) >= 2
    assert n <= tries + 2 * len(steps) + 8, (n, nfe, len(steps))   # the step's sigma is read from a CPU tensor
    assert n < nfe / 2 + 8


@pytest.mark.parametrize("solver", ["heun", "rk45", "rk45_logsigma"])
def test_the_likelihood_reads_the_device_once_per_step(models, solver):
    sde, score_fn, shape = models["mixture"]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))

    def reads(**kw):
        with counting_reads() as r:
            _, info = sdekit.likelihood(sde, score_fn, x, solver=solver, return_info=True, **kw)
        return len(r), info
    if solver == "heun":
        (n4, i4), (n8, i8) = reads(steps=4), reads(steps=8)
        assert i8["nfe"] - i4["nfe"] == 8
        assert n8 - n4 <= 4, (n4, n8)             # one verdict per step, none per evaluation
    else:
        n, info = reads(rtol=1e-3, atol=1e-3)
        assert n < info["nfe"] / 2 + 12, (n, info["nfe"])


def test_the_ode_names_the_noise_level_of_a_bad_evaluation(models):
    sde, _, shape = models["mixture"]
    with pytest.raises(NonFiniteError, match=r"the model's output is NaN/Inf at t=1 \(evaluation 1;"):
        sdekit.sample(sde, lambda x, t: x * float("nan"), shape, sampler="ode")


@pytest.mark.parametrize("sampler", ["ddim", "dpm_solver", "pc"])
def test_a_nan_between_two_reads_is_named_by_its_own_evaluation(models, sampler):
    """The flags are read every 8 steps, yet the error names the first evaluation that went bad (the 3rd),
    not the step where it was read."""
    sde, score_fn, shape = models["mixture"]
    calls = [0]

    def fails_third(x, t):
        calls[0] += 1
        out = score_fn(x, t)
        return out * float("nan") if calls[0] == 3 else out
    with pytest.raises(NonFiniteError, match=r"the model's output is NaN/Inf at (sigma|t)=[0-9.]+ \(evaluation 3;"):
        sdekit.sample(sde, fails_third, shape, sampler=sampler, steps=20)

"""Half-precision networks in the solvers: the state and every noise-level coefficient stay in float32, only
the network runs in float16 / bfloat16, so every sampler gives what the float32 network gives (to the
network's own rounding) on VP and VE models up to sigma_max = 348; a NaN/Inf names whose number it was."""
import pytest
import torch

import sdekit
from sdekit.models.bundle import random_model
from sdekit.core.denoisers import ClassifierFree, Counted, Denoiser, ScoreDenoiser
from sdekit.core.noise import NonFiniteError, solver_dtype
from sdekit.solvers.samplers import ddim_step
from sdekit.core.sde import VESDE

SAMPLERS = ["em", "reverse_diffusion", "ancestral", "langevin", "ald", "pc", "ode", "ddim", "heun",
            "dpm_solver", "abm"]
HALF = [torch.float16, torch.bfloat16]
TOL = {torch.float16: 0.03, torch.bfloat16: 0.15}      # relative rms: the network's rounding, carried along
SDES = {"vp": "vp", "ve348": VESDE(sigma_min=0.01, sigma_max=348.0)}


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def run(model, sampler, x_T, seed=0, **kw):
    steps = {"ode": None, "langevin": 100, "ald": 100, "em": 20, "reverse_diffusion": 20, "ancestral": 20,
             "pc": 20}.get(sampler, 6)
    opts = {"ode": {"rtol": 1e-3, "atol": 1e-3}, "langevin": {"snr": 0.4}, "ald": {"snr": 0.4}}.get(sampler, {})
    return sdekit.sample(model.sde, model.score_fn, sampler=sampler, steps=steps, x_T=x_T.clone(),
                         generator=torch.Generator().manual_seed(seed), **opts, **kw)


@pytest.fixture(scope="module")
def tiny():
    return {name: random_model(shape=(1, 8, 8), sde=sde, ch=8) for name, sde in SDES.items()}


@pytest.mark.parametrize("sde", list(SDES))
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_on_a_half_precision_sdekit_network(tiny, sde, dtype, sampler):
    model = tiny[sde]
    x_T = model.sde.prior_sampling((3, 1, 8, 8), torch.Generator().manual_seed(1))
    ref = run(model, sampler, x_T)
    half = model.to(dtype=dtype)
    try:
        out = run(half, sampler, x_T)
        out16 = run(half, sampler, x_T.to(dtype))          # a half-precision state in: the same solve
    finally:
        model.to(dtype=torch.float32)
    assert torch.isfinite(out).all()
    assert out16.dtype == dtype and out.dtype == torch.float32
    assert rel(out, ref) < TOL[dtype], rel(out, ref)
    assert rel(out16.float(), ref) < TOL[dtype] + 0.01


def test_the_state_is_float32_whatever_the_network_and_float64_when_given():
    seen = []

    class Probe(Denoiser):
        def denoise(self, y, sigma, class_labels=None):
            seen.append(y.dtype)
            return y * 0.5

    sde = VESDE(sigma_max=348.0)
    for x_dtype, expect in [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                            (torch.float64, torch.float64)]:
        seen.clear()
        x = sdekit.sample(sde, Probe(sde), x_T=torch.zeros(2, 3, dtype=x_dtype), sampler="heun", steps=3)
        assert x.dtype == x_dtype and set(seen) == {expect}


def test_ddim_noise_split_holds_no_overflowing_sigma_squared():
    """sig'^2 (sig^2 - sig'^2) overflowed float16 at sigma ~ 157 and eta * inf was NaN even at eta = 0."""
    y = torch.randn(2, 4).half()
    d = torch.zeros_like(y)
    z = torch.randn_like(y)
    for eta in (0.0, 0.5, 1.0):
        y_mean, y_next = ddim_step(y * 300, d, 300.0, 280.0, eta, z)
        ref_mean, ref_next = ddim_step(y.double() * 300, d.double(), 300.0, 280.0, eta, z.double())
        assert torch.isfinite(y_next).all() and y_next.dtype == torch.float16
        assert rel(y_next, ref_next) < 5e-3 and rel(y_mean, ref_mean) < 5e-3      # float16's own rounding
    up = 280.0 * (1 - (280 / 300) ** 2) ** 0.5                      # closed form of the split at eta = 1
    _, y_next = ddim_step(torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64), 300.0,
                          280.0, 1.0, torch.ones(1, 1, dtype=torch.float64))
    assert abs(float(y_next) - up) < 1e-9


def test_ve_discretisation_in_float16_equals_the_closed_form():
    sde = VESDE(sigma_min=0.01, sigma_max=348.0)
    x = torch.zeros(2, 3, dtype=torch.float16)
    _, G = sde.discretize(x, torch.tensor([1.0, 1.0], dtype=torch.float16), dt=0.1)
    exact = (348.0 ** 2 - float(sde.sigma(torch.tensor(0.9, dtype=torch.float64))) ** 2) ** 0.5
    assert torch.isfinite(G).all() and abs(float(G[0]) - exact) / exact < 5e-3        # float16 rounding of sigma


@pytest.mark.parametrize("prediction", ["score", "eps"])
def test_score_and_eps_adapters_in_float16_at_sigma_348(prediction):
    """y + sigma^2 s F with sigma^2 = 121104 (score_sde's VE networks): no overflow in a float16 call."""
    sde = VESDE(sigma_min=0.01, sigma_max=348.0)
    den = sdekit.core.denoisers.NetworkDenoiser(lambda inp, cond: -0.5 * inp / 348.0 ** 2, sde, prediction,
                                           sdekit.core.denoisers.ModelSpaceInput("sigma"))
    y = (torch.randn(2, 4) * 300).half()
    d = den.denoise(y, 348.0)
    ref = den.denoise(y.double(), 348.0)
    assert d.dtype == torch.float16 and torch.isfinite(d).all() and rel(d, ref) < 2e-3


# ---- diffusers folders in half precision ------------------------------------------------------------

pytest.importorskip("diffusers")
from tiny_unets import ddpm_folder, ve_folder  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("half")
    ddpm_folder(root / "ddpm")
    ve_folder(root / "ve", sigma_max=348.0)
    return {"ddpm": root / "ddpm", "ve": root / "ve"}


# One sampler of each family on each folder (every sampler runs on sdekit's own networks above, in both
# dtypes): the folder's part, the network in half precision, is the same for all of them; the time-grid
# samplers share one stepper (em, pc), the fast ones differ in their grids and histories.
FOLDER_CASES = ([(s, torch.float16) for s in ("em", "pc", "ode", "ddim", "heun", "dpm_solver", "abm")]
                + [(s, torch.bfloat16) for s in ("pc", "ddim", "heun", "abm")])


@pytest.mark.parametrize("kind", ["ddpm", "ve"])
@pytest.mark.parametrize("sampler,dtype", FOLDER_CASES, ids=lambda v: str(v))
def test_every_sampler_on_a_half_precision_diffusers_folder(folders, kind, dtype, sampler):
    ref_model = sdekit.load(folders[kind])
    half = sdekit.load(folders[kind], dtype=dtype)
    x_T = ref_model.sde.prior_sampling((2, *ref_model.shape), torch.Generator().manual_seed(2))
    ref = run(ref_model, sampler, x_T)
    out = run(half, sampler, x_T)
    assert torch.isfinite(out).all()
    assert rel(out, ref) < TOL[dtype], rel(out, ref)


def test_ddim_on_a_float16_ddpm_folder_at_the_default_steps(folders):
    """The reported case: DDIM's noise split overflowed and the error blamed the model at sigma=93.81."""
    model = sdekit.load(folders["ddpm"], dtype=torch.float16)
    x = model.sample(2, sampler="ddim", steps=50, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("sampler", ["heun", "dpm_solver", "reverse_diffusion"])
def test_score_sde_ve_folder_in_float16_at_sigma_348(folders, sampler):
    """The reported case: the score adapter's sigma^2 = 121104 overflowed at the first evaluation."""
    model = sdekit.load(folders["ve"], dtype=torch.float16)
    x = model.sample(2, sampler=sampler, steps=10, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()


def test_cli_samples_ddim_in_float16(folders, tmp_path, capsys):
    from sdekit.apps.cli import main
    out = tmp_path / "s.png"
    assert main(["sample", "--model", str(folders["ddpm"]), "--device", "cpu", "--dtype", "float16",
                 "--sampler", "ddim", "--steps", "50", "-n", "2", "--out", str(out)]) == 0, capsys.readouterr().err
    assert out.exists()


# ---- whose number went bad --------------------------------------------------------------------------

class Net(torch.nn.Module):
    """A network that returns NaN or a huge finite ``value`` below a noise level, or at call ``at_call`` only."""

    def __init__(self, below: float, value: float, at_call: int | None = None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.below, self.value, self.at_call, self.calls = below, value, at_call, 0

    def forward(self, inp, cond, class_labels=None):
        self.calls += 1
        bad = ((4 * cond).exp() < self.below).reshape(-1, *[1] * (inp.dim() - 1))     # EDM's c_noise = ln(sigma)/4
        if self.at_call is not None:
            bad = torch.full_like(bad, self.calls == self.at_call)
        return torch.where(bad, torch.full_like(inp, self.value), inp * 0.1 * self.w)


def test_a_network_nan_is_blamed_on_the_network_with_its_noise_level():
    den = sdekit.core.denoisers.NetworkDenoiser(Net(below=5.0, value=float("nan")), sdekit.VPSDE(), "edm")
    with pytest.raises(NonFiniteError, match=r"the network's output is NaN/Inf at sigma=[0-9.]+ \(evaluation \d+"):
        sdekit.sample(den.sde, den, (2, 3), sampler="ddim", steps=10)
    with pytest.raises(NonFiniteError, match=r"the network's output is NaN/Inf at t="):
        sdekit.sample(den.sde, den, (2, 3), sampler="pc", steps=10)


def test_a_score_function_nan_is_blamed_on_the_model():
    with pytest.raises(NonFiniteError, match="the model's output is NaN/Inf at t="):
        sdekit.sample(sdekit.VPSDE(), lambda x, t: x * float("nan"), (4, 2), sampler="em", steps=3)


def test_sdekit_arithmetic_is_blamed_on_sdekit():
    sde = sdekit.VPSDE()
    big = sdekit.core.denoisers.NetworkDenoiser(Net(below=5.0, value=3e38), sde, "x0")        # finite: below 3.4e38
    with pytest.raises(NonFiniteError, match="sdekit's solver step to sigma=.* produced NaN/Inf in its float32 state"):
        sdekit.sample(sde, big, (2, 3), sampler="dpm_solver", steps=10)   # its extrapolation 1.5 D overflows
    once = sdekit.core.denoisers.NetworkDenoiser(Net(below=0.0, value=3e38, at_call=15), sde, "x0")
    with pytest.raises(NonFiniteError, match="sdekit's solver state fed to the model is NaN/Inf at sigma=0.07546"):
        sdekit.sample(sde, once, (2, 3), sampler="heun", steps=10)    # (y - D) / 0.351 overflows: the 16th input
    fine = sdekit.core.denoisers.NetworkDenoiser(Net(below=5.0, value=1e37), sde, "x0")
    with pytest.raises(NonFiniteError, match="sdekit's conversion of the model's finite output"):
        sdekit.sample(sde, ClassifierFree(fine, 0, 1e3, batch=True), (2, 3), sampler="dpm_solver", steps=10)


def test_direct_counted_calls_still_refuse_at_once():
    c = Counted(ScoreDenoiser(sdekit.VPSDE(), lambda x, t: x * float("nan")))
    with pytest.raises(NonFiniteError, match="the model's output is NaN/Inf at t=0.5"):
        c.score(torch.ones(2, 2), 0.5)
    assert solver_dtype(torch.float16) == torch.float32 and solver_dtype(torch.float64, None) == torch.float64

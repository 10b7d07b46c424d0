"""sdekit.wrap: any network with any parametrisation and time input becomes the Model sdekit.load
returns; given the exact network for Gaussian data it yields the exact score."""
import pytest
import torch

import sdekit
from sdekit.models.model import Model
from sdekit.core.sde import DiscreteVPSDE

F64 = torch.float64
SD = 0.7                                               # data N(0, SD^2 I)
ABAR = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=F64), 0)


class Exact(torch.nn.Module):
    """The exact output of one parametrisation for data N(0, SD^2 I), from (x, c): c is the timestep,
    t or sigma (``time``), or EDM's (c_in y, ln(sigma) / 4)."""

    def __init__(self, sde, prediction, time):
        super().__init__()
        self.sde, self.prediction, self.time = sde, prediction, time

    def forward(self, x, c):
        sde = self.sde
        if self.prediction == "edm":
            sigma = (4 * c).exp()
            y = x * (sigma ** 2 + 0.25).sqrt().reshape(-1, 1)
        else:
            sigma = {"timestep": lambda: sde.sigma(c / (sde.N - 1)), "t": lambda: sde.sigma(c), "sigma": lambda: c}[self.time]()
            y = x / sde.scale(sde.sigma_inv(sigma)).reshape(-1, 1)
        sig = sigma.reshape(-1, 1)
        d = SD ** 2 / (SD ** 2 + sig ** 2) * y
        eps = (y - d) / sig
        a = (1 + sig ** 2).rsqrt()
        return {"eps": lambda: eps, "x0": lambda: d, "v": lambda: a * eps - sig * a * d,
                "score": lambda: (d - y) / (sde.scale(sde.sigma_inv(sigma)).reshape(-1, 1) * sig ** 2),
                "edm": lambda: (d - 0.25 / (sig ** 2 + 0.25) * y) / (sig * 0.5 / (sig ** 2 + 0.25).sqrt())}[self.prediction]()


CASES = [(p, "discrete", None) for p in ("eps", "x0", "v", "score", "edm")] + \
        [(p, s, ti) for p in ("eps", "x0", "v", "score") for s in ("vp", "ve") for ti in ("t", "sigma")] + \
        [("edm", "edm", None)]


@pytest.mark.parametrize("prediction,kind,time_input", CASES, ids=[f"{p}-{k}-{t}" for p, k, t in CASES])
def test_exact_network_gives_the_exact_score(prediction, kind, time_input):
    sde = {"discrete": DiscreteVPSDE(ABAR), "vp": sdekit.VPSDE(), "ve": sdekit.VESDE(0.01, 20.0),
           "edm": sdekit.EDMSDE()}[kind]
    time = "timestep" if kind == "discrete" else time_input
    net = Exact(sde, prediction, time).double()
    kw = {"alphas_cumprod": ABAR} if kind == "discrete" else {"sde": sde, "time_input": time_input}
    model = sdekit.wrap(net, prediction=prediction, shape=(4,), **kw)
    assert isinstance(model, Model) and model.shape == (4,)
    gmm = sdekit.GaussianMixture(torch.zeros(1, 4, dtype=F64), torch.tensor([SD], dtype=F64))
    t = torch.linspace(0.05, 0.95, 5, dtype=F64) * model.sde.T
    x = torch.randn(5, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.score_fn(x, t), gmm.score_fn(model.sde)(x, t), rtol=1e-7, atol=1e-9)


def test_wrap_of_a_diffusers_unet_is_the_loaded_folder(tmp_path):
    pytest.importorskip("diffusers")
    from tiny_unets import ddpm_folder
    unet, sched = ddpm_folder(tmp_path)
    wrapped = sdekit.wrap(unet, prediction="eps", alphas_cumprod=sched.alphas_cumprod, shape=(3, 8, 8))
    loaded = sdekit.load(tmp_path)
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([0.1, 0.7])
    torch.testing.assert_close(wrapped.score_fn(x, t), loaded.score_fn(x, t), rtol=1e-4, atol=1e-5)   # float32 vs float64 betas
    assert wrapped.data_range == loaded.data_range == (-1.0, 1.0)


def test_plain_functions_and_wrapped_outputs():
    sde = sdekit.VPSDE()
    model = sdekit.wrap(lambda x, t: (x * 0.5,), prediction="x0", sde=sde, shape=(2,), data_range=(0, 1))
    x = torch.randn(3, 2)
    d = model.denoise(x, 1.0)
    torch.testing.assert_close(d, x * (1 / 2 ** 0.5) * 0.5)       # model space x = s y at sigma = 1
    assert model.to_unit(torch.tensor([0.5])) == 0.5
    samples = model.sample(4, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, 2)


@pytest.mark.parametrize("kwargs,message", [
    ({"prediction": "noise"}, "unknown prediction"),
    ({}, "exactly one of"),
    ({"alphas_cumprod": ABAR, "sde": sdekit.VPSDE()}, "exactly one of"),
    ({"sde": "vp"}, "sdekit SDE"),
    ({"sde": sdekit.VPSDE(), "time_input": "step"}, "time_input"),
    ({"alphas_cumprod": ABAR, "time_input": "sigma"}, "time_input"),
    ({"sde": sdekit.VPSDE(), "prediction": "edm", "time_input": "t"}, "edm"),
    ({"sde": sdekit.VPSDE(), "shape": (0, 4)}, "shape"),
    ({"sde": sdekit.VPSDE(), "data_range": (1, -1)}, "data_range"),
    ({"sde": sdekit.VPSDE(), "num_classes": -1}, "num_classes"),
    ({"alphas_cumprod": [0.5, 0.9]}, "alphas_cumprod"),
])
def test_bad_arguments_are_user_errors(kwargs, message):
    args = {"prediction": "eps", "shape": (2,), **kwargs}
    with pytest.raises(sdekit.UserError, match=message):
        sdekit.wrap(lambda x, t: x, **args)
    with pytest.raises(sdekit.UserError, match="callable"):
        sdekit.wrap(3, prediction="eps", sde=sdekit.VPSDE(), shape=(2,))

"""Likelihoods of half-precision inputs and networks are integrated in float32 (the path and the
log-density), so they agree with float32's; float16 on a CPU is said to be slow, once."""
import warnings

import pytest
import torch

import sdekit
from sdekit.models.bundle import random_model
from sdekit.core.errors import SlowPrecisionWarning


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_data_give_the_closed_form_likelihood(dtype):
    """Exact mixture scores: bits/dim of data handed over in 16 bits equal the closed form at those values
    (the ODE and its divergence integral in float32; in 16 bits RK45 returned meaningless values)."""
    gmm = sdekit.GaussianMixture(torch.tensor([[0.5, -0.5], [-0.3, 0.2]]), torch.tensor([0.3, 0.2]))
    sde = sdekit.VPSDE()
    x = gmm.sample(16, generator=torch.Generator().manual_seed(0)).to(dtype)
    bpd, info = sdekit.likelihood(sde, gmm.score_fn(sde), x, return_info=True)
    exact = -gmm.log_prob(x.float()) / (2 * torch.log(torch.tensor(2.0)))
    assert info["z"].dtype == torch.float32
    assert (bpd - exact).abs().max() < 0.02, (bpd - exact).abs().max()


@pytest.mark.parametrize("dtype", [torch.float16], ids=str)    # bfloat16 takes the same path (the data test above)
def test_a_half_precision_network_integrates_in_float32(dtype):
    """The command line handed the data over in the network's dtype: now both the state and the integral
    stay in float32 and only the network's rounding remains."""
    model = random_model(shape=(1, 8, 8), ch=8)
    u = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    x = model.from_unit((u * 255).round() / 255)
    kw = dict(data_range=model.data_range, dequantize=True, rtol=1e-3, atol=1e-3)
    ref = sdekit.likelihood(model.sde, model.score_fn, x, generator=torch.Generator().manual_seed(2), **kw)
    model.to(dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowPrecisionWarning)
        half = sdekit.likelihood(model.sde, model.score_fn, x.to(dtype), generator=torch.Generator().manual_seed(2),
                                 **kw)
    assert half.dtype == torch.float32
    assert (half - ref).abs().max() < 0.05, (half, ref)


def test_float16_on_a_cpu_warns_once(monkeypatch):
    from sdekit.core import placement
    monkeypatch.setattr(placement, "_warned", set())
    model = random_model(shape=(1, 4, 4), ch=8)
    x = torch.zeros(2, 1, 4, 4)

    def run():
        sdekit.likelihood(model.sde, model.score_fn, x, solver="heun", steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()                                              # float32: no word
        model.to(dtype=torch.float16)
        run()
        run()
    slow = [w for w in caught if issubclass(w.category, SlowPrecisionWarning)]
    assert len(slow) == 1 and "float16 on a CPU runs much slower than float32" in str(slow[0].message)


def test_the_command_line_says_float16_is_slow_on_a_cpu_in_one_line(monkeypatch, tmp_path, capsys):
    from sdekit.core import placement
    from sdekit.apps.cli import main
    monkeypatch.setattr(placement, "_warned", set())
    out = tmp_path / "s.png"
    assert main(["sample", "--model", "digits", "--device", "cpu", "--dtype", "float16", "--sampler", "ddim",
                 "--steps", "2", "-n", "1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "much slower" in ln]
    assert lines == ["sdekit sample: warning: " + placement.SLOW[("cpu", torch.float16)]], err

"""The execution options of sdekit.models.accel (channels-last memory, autocast, torch.compile): the same
outputs as eager float32 within the dtype's tolerance, training runs that resume exactly, and
refusals before any work."""
import pytest
import torch
from safetensors.torch import load_file

import sdekit
from sdekit.models.accel import AUTOCAST, Accelerated, Acceleration, accelerate
from sdekit.apps.cli import main
from sdekit.apps.commands.common import AUTOCAST_CHOICES
from sdekit.data.datasets import load_dataset
from sdekit.core.errors import UserError
from sdekit.tasks.train import CKPT, EMA, TrainConfig, build_model, read_checkpoint, save_checkpoint, train
from sdekit.tasks.train.checkpoint import restore

TINY = dict(data="digits", sde="vp", loss="edm", class_cond=True, label_dropout=0.2, ch=8, ch_mult=(1, 2),
            num_res_blocks=1, attn=(8,), batch_size=8, warmup=2, log_every=1, sample_every=0, ckpt_every=0,
            progress=False, threads=1)


def _denoiser(seed=0):
    torch.manual_seed(seed)
    cfg = TrainConfig(**TINY)
    model = build_model(cfg, load_dataset("digits")).eval()
    with torch.no_grad():                     # non-trivial weights everywhere (some layers start at zero)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _inputs(B=6):
    g = torch.Generator().manual_seed(1)
    y = torch.randn(B, 1, 16, 16, generator=g)
    sigma = torch.exp(torch.randn(B, generator=g))
    labels = torch.tensor([0, 3, -1, 9, 5, -1])[:B]
    return y, sigma, labels


@torch.no_grad()
def _outputs(den):
    y, sigma, labels = _inputs()
    return den.denoise(y, sigma, labels)


def test_channels_last_gives_eager_outputs():
    den = _denoiser()
    ref, keys = _outputs(den), list(den.state_dict())
    fast = accelerate(den, Acceleration(channels_last=True))
    assert isinstance(fast.net, Accelerated) and fast is not den and den.net is not fast.net
    assert fast.net.net.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    out = _outputs(fast)
    assert out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert list(den.state_dict()) == keys                               # the plain module keeps its keys
    assert all(p is q for p, q in zip(den.parameters(), fast.parameters()))


def test_bf16_autocast_is_close_to_eager():
    den = _denoiser()
    ref = _outputs(den)
    out = _outputs(accelerate(den, Acceleration(autocast="bf16")))
    assert out.dtype == torch.float32
    assert not torch.equal(out, ref)                                    # it did run in bfloat16
    err = (out - ref).norm() / ref.norm()
    assert err < 3e-2, float(err)                                       # bfloat16 keeps 8 bits of mantissa


def test_no_option_is_the_denoiser_itself():
    den = _denoiser()
    assert accelerate(den, Acceleration()) is den


def test_autocast_choices_agree():
    assert tuple(AUTOCAST) == AUTOCAST_CHOICES


def test_sampling_runs_channels_last_by_default_from_256_pixels_a_side():
    import argparse
    from sdekit.apps.commands.common import acceleration, add_acceleration
    p = argparse.ArgumentParser()
    add_acceleration(p)
    default, on, off = (p.parse_args(a) for a in ([], ["--channels-last"], ["--no-channels-last"]))
    assert acceleration(default, (3, 256, 256)).channels_last and not acceleration(default, (1, 28, 28)).channels_last
    assert not acceleration(default).channels_last and not acceleration(default, (16,)).channels_last
    assert acceleration(on, (1, 28, 28)).channels_last and not acceleration(off, (3, 256, 256)).channels_last


def test_sample_cli_with_the_options(tmp_path):
    out = tmp_path / "s.png"
    assert main(["sample", "--model", "digits", "--channels-last", "--autocast", "bf16", "-n", "2", "--sampler",
                 "dpm_solver", "--steps", "2", "--out", str(out)]) == 0
    assert out.exists()


def test_refusals_before_any_work(tmp_path, capsys):
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        Acceleration(autocast="fp16").check("cpu")
    with pytest.raises(UserError, match="--autocast must be one of"):
        Acceleration(autocast="int8").check("cpu")
    gmm = sdekit.GaussianMixture(torch.zeros(1, 2), 1.0)
    from sdekit.core.denoisers import ScoreDenoiser
    with pytest.raises(UserError, match="has none"):
        accelerate(ScoreDenoiser(sdekit.VPSDE(), gmm.score_fn(sdekit.VPSDE())), Acceleration(channels_last=True))
    run = tmp_path / "run"
    for argv in (["train", "--data", "digits", "--steps", "1", "--autocast", "fp16", "--device", "cpu", "--out", str(run)],
                 ["sample", "--model", "digits", "--autocast", "fp16", "--out", str(tmp_path / "s.png")],
                 ["sample", "--model", "digits", "--autocast", "bf16", "--dtype", "float16", "--out", str(tmp_path / "s.png")],
                 ["edit", "--model", "digits", "--guide", "x.png", "--autocast", "fp16", "--out", str(tmp_path / "e.png")]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--autocast" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("options", [dict(channels_last=True), dict(autocast="bf16")], ids=["channels_last", "bf16"])
def test_training_with_an_option_resumes_exactly(tmp_path, options):
    whole = train(TrainConfig(**TINY, **options, steps=4, out=str(tmp_path / "whole")), device="cpu")
    half = train(TrainConfig(**TINY, **options, steps=2, out=str(tmp_path / "half")), device="cpu")
    resumed = train(TrainConfig(**TINY, **options, steps=4, out=str(tmp_path / "half"), resume=True), device="cpu")
    assert (whole["step"], half["step"], resumed["step"]) == (4, 2, 4)
    assert torch.isfinite(torch.tensor(resumed["loss"]))
    a, b = load_file(str(tmp_path / "whole" / CKPT)), load_file(str(tmp_path / "half" / CKPT))
    assert a.keys() == b.keys() and all(k.startswith(("model.", "ema.", "opt.", "rng.")) for k in a)
    for k in a:
        if not k.startswith("rng."):
            assert torch.equal(a[k], b[k]), k
    model = sdekit.load(tmp_path / "whole" / "model")                   # the bundle loads as usual
    eager = _outputs(model.net)
    torch.testing.assert_close(_outputs(model.accelerate(Acceleration(**options)).net), eager,
                               rtol=3e-2, atol=3e-2)


def test_loss_scaler_state_is_kept_by_the_checkpoint(tmp_path):
    """The float16 path's loss scale (CUDA in practice; the CPU scaler has the same state) survives a resume."""
    model = _denoiser()
    ema, opt = EMA(model, 0.9), torch.optim.Adam(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)             # a fresh one starts at 65536
    save_checkpoint(tmp_path / CKPT, model, ema, opt, 0, TrainConfig(**TINY), scaler=scaler)
    fresh = torch.amp.GradScaler("cpu")
    restore(read_checkpoint(tmp_path / CKPT), model, ema, opt, fresh)
    assert fresh.get_scale() == 256.0
    save_checkpoint(tmp_path / "plain.safetensors", model, ema, opt, 0, TrainConfig(**TINY))   # no scaler: no state
    assert "grad_scaler" not in read_checkpoint(tmp_path / "plain.safetensors").state


MLP = dict(data="toy:gmm8", sde="vp", loss="edm", hidden=32, depth=2, batch_size=16, warmup=2, log_every=1,
           sample_every=0, ckpt_every=0, progress=False, threads=1)


@pytest.mark.slow
def test_compile_gives_eager_outputs_and_trains(tmp_path):
    """The one torch.compile test, on a small MLP (compiling the U-Net takes minutes on a busy CPU;
    benchmarks/bench_compile.py compiles it and compares its samples with eager's)."""
    torch.manual_seed(0)
    den = build_model(TrainConfig(**MLP), load_dataset("toy:gmm8")).eval()
    g = torch.Generator().manual_seed(1)
    y, sigma = torch.randn(6, 2, generator=g), torch.exp(torch.randn(6, generator=g))
    fast = accelerate(den, Acceleration(compile=True))
    assert fast.net._compiled_call_impl is not None                     # nn.Module.compile: compiled in place
    with torch.no_grad():
        ref, out = den.denoise(y, sigma), fast.denoise(y, sigma)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    first = train(TrainConfig(**MLP, compile=True, steps=2, out=str(tmp_path / "run")), device="cpu")
    again = train(TrainConfig(**MLP, compile=True, steps=3, out=str(tmp_path / "run"), resume=True), device="cpu")
    assert (first["step"], again["step"]) == (2, 3) and torch.isfinite(torch.tensor(again["loss"]))
    assert read_checkpoint(tmp_path / "run" / CKPT).step == 3

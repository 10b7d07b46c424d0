"""sdekit export / sdekit.models.pretrained.export.to_diffusers: a model whose network is a diffusers UNet2DModel
is written as a diffusers folder that plain diffusers loads and samples with, predicting what sdekit's denoiser
says (eps / v by their closed-form relation to D), and that sdekit.load reads back as the same denoiser;
sdekit's own networks, which do not map onto a UNet2DModel, are refused on one line before anything is written."""
import json

import pytest
import torch

import sdekit
from sdekit.apps.cli import main
from sdekit.core.errors import UserError

pytest.importorskip("diffusers")
from diffusers import DDPMPipeline, DDPMScheduler, ScoreSdeVeScheduler, UNet2DModel  # noqa: E402

from sdekit.models.pretrained.export import to_diffusers  # noqa: E402
from tiny_unets import ddpm_folder, ve_folder  # noqa: E402

F64 = torch.float64
TIMESTEPS = (0, 100, 500, 999)


def same_denoiser(a, b, sigmas, shape, labels=None):
    """The denoisers of models a and b agree exactly on random inputs at each noise level."""
    g = torch.Generator().manual_seed(3)
    for s in sigmas:
        y = torch.randn(2, *shape, generator=g) * (1 + s)
        with torch.no_grad():
            torch.testing.assert_close(a.denoiser.denoise(y, s, labels), b.denoiser.denoise(y, s, labels), rtol=0, atol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_diffusers_predicts_what_the_sdekit_denoiser_says_and_sdekit_loads_it_back(tmp_path, prediction_type):
    ddpm_folder(tmp_path / "src", prediction_type=prediction_type)
    model = sdekit.load(tmp_path / "src")
    to_diffusers(model, tmp_path / "out")
    # plain diffusers: the network and the scheduler from the exported folder
    unet = UNet2DModel.from_pretrained(tmp_path / "out", subfolder="unet").double().eval()
    sched = DDPMScheduler.from_pretrained(tmp_path / "out", subfolder="scheduler")
    assert sched.config.prediction_type == prediction_type
    model.to(dtype=F64)
    g = torch.Generator().manual_seed(0)
    for t in TIMESTEPS:
        abar = sched.alphas_cumprod[t].double()                     # diffusers' own schedule, not sdekit's
        sigma = ((1 - abar) / abar).sqrt()
        x_t = torch.randn(2, 3, 8, 8, generator=g, dtype=F64)
        y = x_t / abar.sqrt()
        with torch.no_grad():
            out = unet(x_t, torch.full((2,), t)).sample
            d = model.denoiser.denoise(y, sigma.expand(2))
        eps = (y - d) / sigma                                       # y = x0 + sigma eps, x0 = D
        want = eps if prediction_type == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * d
        torch.testing.assert_close(out, want, rtol=1e-8, atol=1e-8)
    # sdekit reads the export as the same model, and diffusers' own pipeline samples with it
    back = sdekit.load(tmp_path / "out")
    assert back.config["scheduler"] == "DDPMScheduler" and back.shape == (3, 8, 8)
    same_denoiser(sdekit.load(tmp_path / "src"), back, (0.01, 1.0, 50.0), (3, 8, 8))
    index = json.loads((tmp_path / "out" / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline" and index["unet"] == ["diffusers", "UNet2DModel"]
    pipe = DDPMPipeline(unet=unet.float(), scheduler=sched)
    images = pipe(batch_size=2, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 8, 8, 3) and bool(torch.isfinite(torch.as_tensor(images)).all())


def test_loading_options_are_written_into_the_scheduler_config(tmp_path):
    """A VE folder loaded with --sigma-max, and a DDPM folder read as v-prediction, export as they were read."""
    ve_folder(tmp_path / "ve", sigma_max=348.0)
    model = sdekit.load(tmp_path / "ve", sigma_max=380.0)
    to_diffusers(model, tmp_path / "ve-out")
    sched = ScoreSdeVeScheduler.from_pretrained(tmp_path / "ve-out", subfolder="scheduler")
    assert sched.config.sigma_max == 380.0 and sched.config.sigma_min == 0.01
    back = sdekit.load(tmp_path / "ve-out")
    assert back.sde.sigma_max == 380.0
    same_denoiser(model, back, (0.05, 3.0, 300.0), (3, 16, 16))
    ddpm_folder(tmp_path / "eps")
    model = sdekit.load(tmp_path / "eps", prediction_type="v_prediction")
    to_diffusers(model, tmp_path / "v-out")
    assert DDPMScheduler.from_pretrained(tmp_path / "v-out", subfolder="scheduler").config.prediction_type == "v_prediction"
    same_denoiser(model, sdekit.load(tmp_path / "v-out"), (0.1, 2.0), (3, 8, 8))


def test_conditional_unet_exports_with_its_classes(tmp_path):
    from tiny_unets import ddpm_unet
    ddpm_folder(tmp_path / "src", unet=ddpm_unet(num_class_embeds=4))
    model = sdekit.load(tmp_path / "src")
    to_diffusers(model, tmp_path / "out")
    back = sdekit.load(tmp_path / "out")
    assert back.num_classes == 4 and not back.null_label
    same_denoiser(model, back, (0.1, 5.0), (3, 8, 8), labels=torch.tensor([0, 3]))


def test_sdekit_networks_are_refused_before_anything_is_written(tmp_path):
    for model in (sdekit.load("digits"), sdekit.models.bundle.random_model()):
        with pytest.raises(UserError, match="does not map onto diffusers' UNet2DModel"):
            to_diffusers(model, tmp_path / "out")
    wrapped = sdekit.wrap(torch.nn.Conv2d(1, 1, 3, padding=1), sde=sdekit.VPSDE(), shape=(1, 4, 4))
    with pytest.raises(UserError, match="not a diffusers UNet2DModel"):
        to_diffusers(wrapped, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_command_line(tmp_path, capsys):
    ddpm_folder(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["export", "--model", str(tmp_path / "src"), "--out", str(out)]) == 0
    assert "UNet2DModel.from_pretrained" in capsys.readouterr().out
    weights = out / "unet" / "diffusion_pytorch_model.safetensors"
    before = weights.stat().st_mtime_ns
    refused = [["--model", str(tmp_path / "src"), "--out", str(out)],                  # exists: no --overwrite
               ["--model", "digits", "--out", str(tmp_path / "b")],                     # sdekit's own network
               ["--out", str(tmp_path / "c")],                                          # no --model
               ["--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d")],    # no such model
               ["--model", str(tmp_path / "src"), "--out", str(weights)]]               # a file
    for args in refused:
        assert main(["export", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("sdekit export: error:") and len(err.strip().splitlines()) == 1, err
    assert not any((tmp_path / n).exists() for n in "bcd") and weights.stat().st_mtime_ns == before
    assert main(["export", "--model", str(tmp_path / "src"), "--out", str(out), "--overwrite"]) == 0
    same_denoiser(sdekit.load(tmp_path / "src"), sdekit.load(out), (0.5,), (3, 8, 8))

"""diffusers folders in sdekit.load: the loaded model computes what diffusers' own schedulers compute
(DDIM sampling and SDEdit equal diffusers' loops to float tolerance), and every defect of a folder is
one clear UserError."""
import copy
import json
import os
import pickle
import shutil
import sys

import pytest
import torch

import sdekit
from sdekit.core.sde import VESDE, DiscreteVPSDE

pytest.importorskip("diffusers")
from diffusers import DDIMScheduler  # noqa: E402

from tiny_unets import ddpm_folder, ddpm_unet, ncsnpp_unet, ve_folder  # noqa: E402

F64 = torch.float64


@pytest.fixture(scope="module")
def ddpm(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddpm") / "ddpm-tiny"
    unet, sched = ddpm_folder(path)
    return path, unet, sched


def ddim_loop(unet, scheduler_config, x, timesteps, **config):
    """diffusers' DDIM (eta = 0, no clipping) from x at timesteps[0] through the given timesteps."""
    ddim = DDIMScheduler.from_config(scheduler_config, clip_sample=False, **config)
    ddim.set_timesteps(config.pop("steps", 10))
    with torch.no_grad():
        for t in timesteps:
            x = ddim.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
    return x


def grid_sigmas(sde, timesteps):
    """sdekit's noise levels of diffusers' timesteps, then 0 (DDIM's last step to alpha_bar = 1)."""
    t = torch.as_tensor(timesteps, dtype=F64) / (sde.N - 1)
    return torch.cat([sde.sigma(t), torch.zeros(1, dtype=F64)])


def test_loads_as_a_discrete_vp_model(ddpm):
    path, unet, _ = ddpm
    model = sdekit.load(path)
    assert isinstance(model.sde, DiscreteVPSDE) and model.sde.N == 1000
    assert model.shape == (3, 8, 8) and model.data_range == (-1.0, 1.0) and model.name == "ddpm-tiny"
    assert model.num_classes == 0 and model.config["scheduler"] == "DDPMScheduler"
    # the score at a grid timestep is -eps / sqrt(1 - alpha_bar) of the network (float64: no cancellation)
    model.to(dtype=F64)
    unet = copy.deepcopy(unet).double()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    for i in (0, 250, 999):
        abar = float(model.sde.alphas_cumprod[i])
        with torch.no_grad():
            eps = unet(x, torch.tensor([float(i)] * 2, dtype=F64)).sample
        score = model.score_fn(x, torch.full((2,), i / 999, dtype=F64))
        torch.testing.assert_close(score, -eps / (1 - abar) ** 0.5, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddim_equals_diffusers_ddim(tmp_path, prediction_type):
    unet, sched = ddpm_folder(tmp_path, prediction_type=prediction_type)
    model = sdekit.load(tmp_path)
    ddim = DDIMScheduler.from_config(sched.config, clip_sample=False)
    ddim.set_timesteps(10)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ref = ddim_loop(unet, sched.config, noise.clone(), ddim.timesteps)
    x = sdekit.sample(model.sde, model.score_fn, x_T=noise, sampler="ddim", sigmas=grid_sigmas(model.sde, ddim.timesteps))
    scale = float(ref.abs().max())
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=2e-5 * scale)


def test_sdedit_with_ddim_equals_add_noise_and_ddim_from_the_matching_timestep(ddpm):
    path, unet, sched = ddpm
    model = sdekit.load(path)
    ddim = DDIMScheduler.from_config(sched.config, clip_sample=False)
    ddim.set_timesteps(20)                                   # 950, 900, ..., 0
    k = 500
    steps = ddim.timesteps[ddim.timesteps <= k]
    # t0 whose reference noise level is that of timestep k (sdekit.sdedit: t0 is a noise level)
    from sdekit.tasks.sdedit import REFERENCE_SDE
    sigma_k = model.sde.sigma(torch.tensor([k / 999], dtype=F64))
    t0 = float(REFERENCE_SDE.sigma_inv(sigma_k))
    guide = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    out = sdekit.sdedit(model.sde, model.score_fn, guide, t0=t0, sampler="ddim", sigmas=grid_sigmas(model.sde, steps),
                        generator=torch.Generator().manual_seed(7))
    noise = torch.randn(guide.shape, generator=torch.Generator().manual_seed(7))   # the same draw as sdekit's
    x = ddim.add_noise(guide, noise, torch.tensor([k]))
    ref = ddim_loop(unet, sched.config, x, steps, steps=20)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)


def test_every_entry_point_runs_on_a_loaded_folder(ddpm):
    path, _, _ = ddpm
    model = sdekit.load(path)
    g = torch.Generator().manual_seed(0)
    for sampler, steps in (("ddim", 3), ("dpm_solver", 3), ("heun", 2), ("ancestral", 3), ("pc", 2)):
        x = model.sample(2, sampler=sampler, steps=steps, generator=g)
        assert x.shape == (2, 3, 8, 8) and torch.isfinite(x).all()
    guide = torch.zeros(1, 3, 8, 8)
    mask = torch.ones(1, 1, 8, 8)
    mask[..., 4:] = 0
    out = sdekit.sdedit(model.sde, model.score_fn, guide, t0=0.4, steps=3, sampler="ddim", mask=mask, generator=g)
    assert torch.equal(out[..., :4], guide[..., :4])
    filled = sdekit.inpaint(model.sde, model.score_fn, guide, mask, steps=3, sampler="ddim", generator=g)
    assert torch.equal(filled[..., :4], guide[..., :4])
    rgb = sdekit.colorize(model.sde, model.score_fn, guide[:, :1], steps=3, sampler="ddim", generator=g)
    assert rgb.shape == (1, 3, 8, 8)
    bpd = sdekit.likelihood(model.sde, model.score_fn, guide, solver="heun", steps=4, generator=g)
    assert torch.isfinite(bpd).all()


def test_bare_model_folders_and_the_unet_subfolder(ddpm, tmp_path):
    path, _, _ = ddpm
    bare = tmp_path / "bare"
    shutil.copytree(path / "unet", bare)
    with pytest.raises(sdekit.UserError, match="no scheduler config"):
        sdekit.load(bare)
    shutil.copy(path / "scheduler" / "scheduler_config.json", bare / "scheduler_config.json")
    a, b, c = sdekit.load(bare), sdekit.load(path / "unet"), sdekit.load(path / "model_index.json")
    x = torch.randn(1, 3, 8, 8)
    assert b.name == "ddpm-tiny" and torch.equal(a.score_fn(x, 0.5), b.score_fn(x, 0.5))
    assert torch.equal(a.score_fn(x, 0.5), c.score_fn(x, 0.5))


def test_score_sde_ve_folder(tmp_path):
    unet, _ = ve_folder(tmp_path, sigma_max=348.0)
    model = sdekit.load(tmp_path)
    assert isinstance(model.sde, VESDE) and (model.sde.sigma_min, model.sde.sigma_max) == (0.01, 348.0)
    assert model.data_range == (0.0, 1.0) and model.shape == (3, 16, 16)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.8])
    sigma = model.sde.sigma(t)
    with torch.no_grad():
        ref = unet(x, sigma).sample                          # UNet2DModel returns the score (output / sigma)
    torch.testing.assert_close(model.score_fn(x, t), ref, rtol=1e-5, atol=1e-6)
    other = sdekit.load(tmp_path, sigma_max=380.0)           # published configs disagree with the papers
    assert other.sde.sigma_max == 380.0
    with pytest.raises(sdekit.UserError, match="prediction_type"):
        sdekit.load(tmp_path, prediction_type="epsilon")
    x = model.sample(1, sampler="dpm_solver", steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()


def test_learned_variance_and_class_conditional_networks(tmp_path):
    unet = ddpm_unet(out_channels=6, num_class_embeds=4)
    ddpm_folder(tmp_path, unet=unet, variance_type="learned_range")
    model = sdekit.load(tmp_path)
    assert model.num_classes == 4
    x = torch.randn(2, 3, 8, 8)
    labels = torch.tensor([1, 3])
    with torch.no_grad():
        eps = unet(x, 999, labels).sample[:, :3]
    abar = float(model.sde.alphas_cumprod[999])
    torch.testing.assert_close(model.net.score(x, torch.ones(2), labels), -eps / (1 - abar) ** 0.5, rtol=1e-4, atol=1e-5)
    y = model.sample(2, sampler="ddim", steps=2, class_labels=2, generator=torch.Generator().manual_seed(0))
    assert y.shape == (2, 3, 8, 8)


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    """A DDPM folder whose UNet2DModel has 10 class embeddings and no null label."""
    path = tmp_path_factory.mktemp("cond") / "ddpm-cond"
    unet, _ = ddpm_folder(path, unet=ddpm_unet(num_class_embeds=10))
    return path, unet


def test_class_conditional_unet_needs_a_class_and_takes_no_guidance(conditional):
    path, unet = conditional
    model = sdekit.load(path)
    assert model.num_classes == 10 and not model.null_label
    calls = []
    model.net.net.net.register_forward_pre_hook(lambda *a: calls.append(1))     # the UNet2DModel itself
    refused = [lambda: model.sample(2, sampler="ddim", steps=2),
               lambda: model.sample(2, sampler="ddim", steps=2, class_labels=-1),
               lambda: model.sample(2, sampler="ddim", steps=2, class_labels=3, guidance=1.0),
               lambda: sdekit.models.bundle.generate(model, 2, sampler="ddim", steps=2),
               lambda: sdekit.models.bundle.generate(model, 2, sampler="ddim", steps=2, class_labels=torch.tensor([3, -1])),
               lambda: model.conditional(3, guidance=1.0),
               lambda: sdekit.edit_condition(model, torch.zeros(1, 3, 8, 8)),
               lambda: sdekit.edit_condition(model, torch.zeros(1, 3, 8, 8), class_label=3, guidance=2.0)]
    for call in refused:                                       # before any network evaluation
        with pytest.raises(sdekit.UserError, match="needs a class label 0..9.*no null label.*guidance") as e:
            call()
        assert "\n" not in str(e.value)
    assert not calls
    x, t = torch.randn(2, 3, 8, 8), torch.full((2,), 0.5)
    for labels, w in ((None, 0.0), (torch.tensor([1, -1]), 0.0), (3, 1.0)):
        with pytest.raises(sdekit.UserError, match="no null label"):
            model.score_fn(x, t, labels, guidance=w)
    # with a class and no guidance it is the network's own conditional model
    with torch.no_grad():
        eps = unet(x, 499.5, torch.tensor([3, 3])).sample
    sigma = float(model.sde.sigma(torch.tensor([0.5], dtype=F64)))
    torch.testing.assert_close(model.denoise(x * (1 + sigma ** 2) ** 0.5, sigma, 3),
                               (x * (1 + sigma ** 2) ** 0.5 - sigma * eps), rtol=1e-4, atol=1e-5)
    y = sdekit.models.bundle.generate(model, 3, sampler="ddim", steps=2, class_labels=3)
    assert y.shape == (3, 3, 8, 8) and torch.isfinite(y).all()
    assert model.sample(2, sampler="ddim", steps=2, class_labels=torch.tensor([0, 9])).shape == (2, 3, 8, 8)


def test_bin_weights_are_read_without_unpickling_code(ddpm, tmp_path):
    path, unet, _ = ddpm
    folder = tmp_path / "bin"
    shutil.copytree(path, folder)
    os.remove(folder / "unet" / "diffusion_pytorch_model.safetensors")
    torch.save(unet.state_dict(), folder / "unet" / "diffusion_pytorch_model.bin")
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(sdekit.load(folder).score_fn(x, 0.5), sdekit.load(path).score_fn(x, 0.5))

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    with open(folder / "unet" / "diffusion_pytorch_model.bin", "wb") as f:
        pickle.dump({"conv_in.weight": Evil()}, f, protocol=2)
    with pytest.raises(sdekit.UserError, match="not a readable weights file"):
        sdekit.load(folder)
    assert not marker.exists()


def test_folder_defects_are_one_line_errors(ddpm, tmp_path):
    path, _, _ = ddpm
    f = tmp_path / "f"
    shutil.copytree(path, f)
    weights = f / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(sdekit.UserError, match="git lfs pull"):
        sdekit.load(f)
    shutil.copy(path / "unet" / "diffusion_pytorch_model.safetensors", weights)
    cfg_path = f / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    for change, message in (({"_class_name": "LCMScheduler"}, "not one sdekit reads"),
                            ({"rescale_betas_zero_snr": True}, "infinite"),
                            ({"prediction_type": "flow"}, "prediction_type"),
                            ({"beta_schedule": "sigmoid"}, "beta schedule")):
        cfg_path.write_text(json.dumps({**cfg, **change}))
        with pytest.raises(sdekit.UserError, match=message):
            sdekit.load(f)
    cfg_path.write_text(json.dumps(cfg))
    ucfg_path = f / "unet" / "config.json"
    ucfg = json.loads(ucfg_path.read_text())
    ucfg_path.write_text(json.dumps({**ucfg, "block_out_channels": [32, 64]}))
    with pytest.raises(sdekit.UserError, match="weights"):
        sdekit.load(f)
    ucfg_path.write_text("{not json")
    with pytest.raises(sdekit.UserError, match="invalid JSON"):
        sdekit.load(f)
    with pytest.raises(sdekit.UserError, match="diffusers folders"):
        sdekit.load("digits", sigma_max=3.0)


def test_the_ve_noise_range_can_be_overridden_on_ve_folders_only(ddpm, tmp_path):
    ve_folder(tmp_path, sigma_max=348.0)
    both = sdekit.load(tmp_path, sigma_min=0.02, sigma_max=380.0)
    assert (both.sde.sigma_min, both.sde.sigma_max) == (0.02, 380.0)
    assert sdekit.load(tmp_path, sigma_min=0.005).sde.sigma_max == 348.0          # the other from the config
    for bad, pattern in [({"sigma_max": -1.0}, "sigma_max must be a positive number"),
                         ({"sigma_max": float("nan")}, "sigma_max must be a positive number"),
                         ({"sigma_max": "380"}, "sigma_max must be a positive number"),
                         ({"sigma_min": 400.0}, "sigma_min 400 must be below sigma_max 348")]:
        with pytest.raises(sdekit.UserError, match=pattern) as e:
            sdekit.load(tmp_path, **bad)
        assert len(str(e.value).splitlines()) == 1
    path, _, _ = ddpm
    for model, what in [(path, "a DDPMScheduler model"), ("digits", "an sdekit bundle"), (None, "an sdekit bundle")]:
        for option in ("sigma_min", "sigma_max"):
            with pytest.raises(sdekit.models.pretrained.folder.OptionError) as e:
                sdekit.load(model, **{option: 380.0})
            assert str(e.value) == f"option {option!r} applies to score_sde VE diffusers folders " \
                                   f"(ScoreSdeVeScheduler), not to {what}"
    with pytest.raises(sdekit.UserError, match="'bogus' is not an option of sdekit.load"):
        sdekit.load(path, bogus=1)


def test_without_diffusers_loading_says_so(ddpm, monkeypatch):
    path, _, _ = ddpm
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(sdekit.UserError, match=r"sdekit\[diffusers\]"):
        sdekit.load(path)


def test_hub_names_only_from_the_local_cache(ddpm, tmp_path, monkeypatch):
    path, _, _ = ddpm
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(sdekit.UserError, match="not in the local Hugging Face cache"):
        sdekit.load("google/ddpm-tiny")
    repo = tmp_path / "hub" / "models--google--ddpm-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(path, repo / "snapshots" / ("0" * 40))
    model = sdekit.load("google/ddpm-tiny")
    assert model.shape == (3, 8, 8)


def test_dtype_and_device_at_load(ddpm):
    path, _, _ = ddpm
    model = sdekit.load(path, device="cpu", dtype=torch.float64)
    assert model.dtype == torch.float64
    x = model.sample(1, sampler="ddim", steps=2, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float64 and torch.isfinite(x).all()


def test_ncsnpp_unet_fixture_is_fourier():
    assert ncsnpp_unet().config.time_embedding_type == "fourier"

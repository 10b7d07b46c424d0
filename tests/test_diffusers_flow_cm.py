"""diffusers folders of flow-matching and consistency models: sdekit's samplers on the loaded model equal
diffusers' own FlowMatchEulerDiscreteScheduler and CMStochasticIterativeScheduler loops on the same tiny
random UNet2DModel and the same noise, to float tolerance."""
import numpy as np
import pytest
import torch

import sdekit

pytest.importorskip("diffusers")
from diffusers import CMStochasticIterativeScheduler, FlowMatchEulerDiscreteScheduler  # noqa: E402

from tiny_unets import ddpm_unet  # noqa: E402


def timed_unet(seed):
    """A tiny random UNet2DModel whose output depends on its timestep: 4 channels per normalisation group
    (with one channel a group, GroupNorm removes the per-channel time embedding) and a strong time embedding."""
    unet = ddpm_unet(seed=seed, norm_num_groups=8)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "time_emb" in name:
                p.add_(0.5 * torch.randn(p.shape, generator=g))
    return unet


def test_the_networks_depend_on_their_timestep():
    unet, x = timed_unet(1), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert (unet(x, torch.tensor(500.0)).sample - unet(x, torch.tensor(0.5)).sample).abs().max() > 0.1


def bare_folder(path, unet, scheduler):
    """A bare model folder: the UNet's config.json and weights with scheduler_config.json beside them."""
    unet.save_pretrained(path)
    scheduler.save_pretrained(path)
    return path


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_match_folder_euler_equals_diffusers_flow_match_euler(tmp_path, shift):
    unet = timed_unet(seed=1)
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    model = sdekit.load(bare_folder(tmp_path / "flow", unet, sched))
    assert isinstance(model.sde, sdekit.FlowSDE) and model.sde.shift == shift
    assert model.config["prediction"] == "velocity" and not model.consistency
    n = 12
    u = np.linspace(model.sde.T, 1 / n, n)                # diffusers' grid, from sdekit's T < 1 instead of 1
    sched.set_timesteps(sigmas=u.tolist())                 # shifted by the scheduler
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
    sde = sdekit.FlowSDE(shift=shift, eps=1 / n)           # its grid uniform in t: the same levels
    ours = sdekit.sample(sde, model.score_fn, x_T=x_T, sampler="ddim", steps=n, schedule="uniform")
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)
    assert (ours - x_T).abs().max() > 0.1                  # the network moved the state


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_consistency_folder_sampling_equals_diffusers_cm_loop(tmp_path, steps):
    unet = timed_unet(seed=2)
    sched = CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0, sigma_data=0.5,
                                           clip_denoised=False)
    model = sdekit.load(bare_folder(tmp_path / "cm", unet, sched))
    assert model.consistency and model.denoiser.sigma_min == 0.002 and isinstance(model.sde, sdekit.EDMSDE)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 8, generator=g) * sched.init_noise_sigma          # ConsistencyModelPipeline's loop
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x, generator=g).prev_sample
    sigmas = sched.sigmas[:-1].double().tolist() + [0.0]                      # its levels, then f itself
    ours, info = sdekit.sample(model.sde, model.score_fn, (2, 3, 8, 8), sampler="consistency", sigmas=sigmas,
                               generator=torch.Generator().manual_seed(3), return_info=True)
    assert info["nfe"] == steps
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)
    assert ours.std() > 0.05


def test_unsupported_flow_match_options_are_one_line_errors(tmp_path):
    unet = ddpm_unet(seed=1)
    sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    path = bare_folder(tmp_path / "dyn", unet, sched)
    with pytest.raises(sdekit.UserError, match="use_dynamic_shifting"):
        sdekit.load(path)

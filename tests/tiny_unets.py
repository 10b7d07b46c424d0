"""Tiny random diffusers UNet2DModels and the folders diffusers writes for them (for the tests of
sdekit.models.pretrained); nothing is downloaded."""
import math

import torch

DDPM_CONFIG = dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 32),
                   down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                   layers_per_block=1, attention_head_dim=None, norm_eps=1e-6, downsample_padding=0,
                   flip_sin_to_cos=False, freq_shift=1)
NCSNPP_CONFIG = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64),
                     down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D"),
                     up_block_types=("SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"), layers_per_block=1,
                     attention_head_dim=None, norm_eps=1e-6, norm_num_groups=None, time_embedding_type="fourier",
                     mid_block_scale_factor=math.sqrt(2.0), downsample_padding=1, center_input_sample=True)


def randomize(unet, seed=0, std=0.05):
    """Non-trivial weights everywhere (diffusers zero-initialises nothing here, but make sure)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    return unet.eval()


def ddpm_unet(seed=0, **changes):
    from diffusers import UNet2DModel
    torch.manual_seed(seed)
    return randomize(UNet2DModel(**{**DDPM_CONFIG, **changes}), seed)


def ncsnpp_unet(seed=0, **changes):
    from diffusers import UNet2DModel
    torch.manual_seed(seed)
    return randomize(UNet2DModel(**{**NCSNPP_CONFIG, **changes}), seed)


def ddpm_folder(path, prediction_type="epsilon", unet=None, **sched):
    """A DDPMPipeline folder (model_index.json, unet/, scheduler/) with linear betas."""
    from diffusers import DDPMPipeline, DDPMScheduler
    unet = unet if unet is not None else ddpm_unet()
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=sched.pop("beta_schedule", "linear"),
                              prediction_type=prediction_type, **sched)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(path)
    return unet, scheduler


def ve_folder(path, sigma_max=348.0, unet=None):
    """A ScoreSdeVePipeline folder with a tiny NCSN++."""
    from diffusers import ScoreSdeVePipeline, ScoreSdeVeScheduler
    unet = unet if unet is not None else ncsnpp_unet()
    scheduler = ScoreSdeVeScheduler(num_train_timesteps=2000, sigma_min=0.01, sigma_max=sigma_max)
    ScoreSdeVePipeline(unet=unet, scheduler=scheduler).save_pretrained(path)
    return unet, scheduler

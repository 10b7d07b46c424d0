"""Named architectures of the published original checkpoints, as diffusers UNet2DModel configs.

The original checkpoints hold weights only; their resolution and channel widths come from the
papers' configs, gathered here under a name (or given by the user, see :meth:`Arch.replace`):

* ``source="sdedit"``: DDPM networks (Ho et al. 2020) in the layout of SDEdit's repository (and of
  ``ermongroup/ddim``): 1000 linear betas 1e-4..0.02, data in [-1, 1], sinusoidal timestep embedding.
* ``source="score_sde"``: NCSN++ (Song et al. 2021, configs ``ve/*_ncsnpp_continuous.py``): VE SDE,
  Gaussian Fourier embedding of sigma, BigGAN residual blocks with FIR resampling, input_skip /
  output_skip pyramids, data in [0, 1] centred inside the network. Only this NCSN++ variant has a
  UNet2DModel counterpart (CIFAR-10's NCSN++ uses residual pyramids and has none).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from sdekit.core.errors import UserError

__all__ = ["Arch", "PRESETS", "SOURCES", "get_preset"]

SOURCES = ("sdedit", "score_sde")


@dataclass(frozen=True)
class Arch:
    """One network: ``source`` (the checkpoint layout), ``resolution`` (H = W), ``ch`` (base width),
    ``ch_mult`` (width multipliers per resolution level), ``num_res_blocks`` (residual blocks per level
    on the way down), ``attn_resolutions`` (resolutions with self-attention), ``channels`` (image
    channels), and for score_sde ``sigma_min``, ``sigma_max`` (the VE SDE the network was trained on).
    ``weights``: where the published checkpoint is (for the docs and error messages)."""
    source: str
    resolution: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    channels: int = 3
    sigma_min: float = 0.01
    sigma_max: float = 348.0
    weights: str = ""

    def replace(self, **changes) -> "Arch":
        """This architecture with the given fields changed (None values are ignored); UserError on
        an unknown field or an impossible network."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise UserError(f"unknown architecture field {unknown[0]!r}")
        arch = dataclasses.replace(self, **changes)
        arch.check()
        return arch

    def check(self) -> None:
        if self.source not in SOURCES:
            raise UserError(f"unknown checkpoint source {self.source!r}; choose one of {', '.join(SOURCES)}")
        levels = len(self.ch_mult)
        if not (self.ch_mult and self.resolution >= 1 and self.ch >= 1 and self.num_res_blocks >= 1
                and all(m >= 1 for m in self.ch_mult) and self.channels >= 1):
            raise UserError("resolution, ch, ch_mult, num_res_blocks and channels must be positive")
        if self.resolution % (2 ** (levels - 1)):
            raise UserError(f"resolution {self.resolution} is not divisible by 2^{levels - 1} ({levels} levels)")
        if self.source == "score_sde" and not 0 < self.sigma_min < self.sigma_max:
            raise UserError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def level_has_attention(self, i: int) -> bool:
        return self.resolution // 2 ** i in self.attn_resolutions

    def unet_config(self) -> dict:
        """The diffusers UNet2DModel config of this network."""
        levels = range(len(self.ch_mult))
        common = {"sample_size": self.resolution, "in_channels": self.channels, "out_channels": self.channels,
                  "block_out_channels": [self.ch * m for m in self.ch_mult], "layers_per_block": self.num_res_blocks,
                  "attention_head_dim": None, "act_fn": "silu", "norm_eps": 1e-6}
        if self.source == "sdedit":
            down = ["AttnDownBlock2D" if self.level_has_attention(i) else "DownBlock2D" for i in levels]
            up = ["AttnUpBlock2D" if self.level_has_attention(i) else "UpBlock2D" for i in reversed(levels)]
            return {**common, "down_block_types": down, "up_block_types": up, "norm_num_groups": 32,
                    "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1,
                    "time_embedding_type": "positional", "mid_block_scale_factor": 1, "center_input_sample": False}
        down = ["AttnSkipDownBlock2D" if self.level_has_attention(i) else "SkipDownBlock2D" for i in levels]
        up = ["AttnSkipUpBlock2D" if self.level_has_attention(i) else "SkipUpBlock2D" for i in reversed(levels)]
        return {**common, "down_block_types": down, "up_block_types": up, "norm_num_groups": None,
                "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 1, "time_embedding_type": "fourier",
                "mid_block_scale_factor": math.sqrt(2.0), "center_input_sample": True}

    def scheduler_config(self) -> dict:
        """The diffusers scheduler config of the noise process the network was trained on."""
        if self.source == "sdedit":
            return {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_start": 0.0001,
                    "beta_end": 0.02, "beta_schedule": "linear", "variance_type": "fixed_small",
                    "clip_sample": True, "prediction_type": "epsilon"}
        return {"_class_name": "ScoreSdeVeScheduler", "num_train_timesteps": 2000, "sigma_min": self.sigma_min,
                "sigma_max": self.sigma_max, "snr": 0.15, "sampling_eps": 1e-5, "correct_steps": 1}


_DDPM_256 = dict(source="sdedit", resolution=256, ch=128, ch_mult=(1, 1, 2, 2, 4, 4))
_SDEDIT = "https://image-editing-test-12345.s3-us-west-2.amazonaws.com/checkpoints/"
_NCSNPP_256 = dict(source="score_sde", resolution=256, ch=128, ch_mult=(1, 1, 2, 2, 2, 2, 2))
_SCORE_SDE = "score_sde_pytorch's checkpoints folder (Google Drive, linked from its README): "

PRESETS: dict[str, Arch] = {
    "ddpm-church-256": Arch(**_DDPM_256, weights=_SDEDIT + "church_outdoor.ckpt"),
    "ddpm-bedroom-256": Arch(**_DDPM_256, weights=_SDEDIT + "bedroom.ckpt"),
    "ddpm-celebahq-256": Arch(**_DDPM_256, weights=_SDEDIT + "celeba_hq.ckpt"),
    "ddpm-cifar10-32": Arch(source="sdedit", resolution=32, ch=128, ch_mult=(1, 2, 2, 2),
                            weights="ermongroup/ddim's converted DDPM CIFAR-10 (model-790000.ckpt)"),
    "ncsnpp-celebahq-256": Arch(**_NCSNPP_256, sigma_max=348.0, weights=_SCORE_SDE + "ve/celebahq_256_ncsnpp_continuous"),
    "ncsnpp-church-256": Arch(**_NCSNPP_256, sigma_max=380.0, weights=_SCORE_SDE + "ve/church_ncsnpp_continuous"),
    "ncsnpp-bedroom-256": Arch(**_NCSNPP_256, sigma_max=378.0, weights=_SCORE_SDE + "ve/bedroom_ncsnpp_continuous"),
    "ncsnpp-ffhq-256": Arch(**_NCSNPP_256, sigma_max=348.0, weights=_SCORE_SDE + "ve/ffhq_256_ncsnpp_continuous"),
    "ncsnpp-ffhq-1024": Arch(source="score_sde", resolution=1024, ch=16, ch_mult=(1, 2, 4, 8, 16, 32, 32, 32),
                             num_res_blocks=1, sigma_max=1348.0, weights=_SCORE_SDE + "ve/ffhq_ncsnpp_continuous"),
}


def get_preset(name: str) -> Arch:
    """The preset ``name`` (see :data:`PRESETS`); UserError listing them if unknown."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]

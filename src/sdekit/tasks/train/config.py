"""What a training run is told: the hyper-parameters, which a resumed run must keep, and the rest."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sdekit.core.errors import UserError
from sdekit.tasks.losses import get_loss
from sdekit.tasks.train.recipes import recipe
from sdekit.tasks.losses import TIME_DENSITIES

__all__ = ["TrainConfig", "HPARAMS_IGNORED", "hparams", "validate", "with_recipe"]


@dataclass
class TrainConfig:
    data: str = "digits"
    sde: str = "vp"
    out: str = "runs/run"
    steps: int = 10000
    batch_size: int = 128
    seed: int = 0
    lr: float = 5e-4
    warmup: int = 200              # linear learning-rate warm-up steps
    grad_clip: float = 1.0         # max gradient norm (0: off)
    ema: float = 0.999             # EMA decay, warmed up as min(ema, (1 + k) / (10 + k))
    loss: str | None = None        # dsm | edm | smld | ddpm | flow | cd; None: flow for --sde flow, else edm
    weighting: str = "sigma2"      # dsm: sigma2 | likelihood
    reduce: str = "mean"           # mean | sum over a sample's dimensions
    P_mean: float = -0.8           # edm loss: ln sigma ~ N(P_mean, P_std^2) (the shipped digit models')
    P_std: float = 1.4
    precond: str | None = None     # edm | eps | scaled_score | score | velocity; None: velocity for flow, else edm
    sigma_data: float = 0.5
    time_density: str = "uniform"  # flow loss: uniform | logit_normal (Esser et al. 2024)
    ln_mean: float = 0.0           # flow loss, logit_normal: logit tau ~ N(ln_mean, ln_std^2)
    ln_std: float = 1.0
    net: str = "auto"              # unet for images, mlp for toy data
    ch: int = 32
    ch_mult: tuple = (1, 2, 2)
    num_res_blocks: int = 2
    attn: tuple = (8,)
    dropout: float = 0.1
    embedding: str = "fourier"
    hidden: int = 128              # mlp
    depth: int = 3
    class_cond: bool = False
    label_dropout: float = 0.0     # probability of the null label (classifier-free guidance)
    init: str | None = None        # start from this sdekit bundle's weights (a name or folder), same network
    teacher: str | None = None     # cd loss: the model distilled (a bundle name or folder)
    cd_levels: int = 18            # cd loss: N noise levels of the Karras grid
    image_size: int | None = None
    channels: int | None = None
    recipe: str | None = None      # the named recipe the run started from (sdekit.tasks.train.recipes)
    # not hyper-parameters (may change on --resume):
    sample_every: int = 1000
    ckpt_every: int = 500
    log_every: int = 50
    max_minutes: float | None = None
    progress: bool = True
    resume: bool = False           # continue the run in out (or start it when out holds none yet)
    overwrite: bool = False        # start a new run in an out that holds one (its checkpoint is deleted)
    download: bool = False         # fetch MNIST / Fashion-MNIST / CIFAR-10 files missing from DIR
    threads: int | None = None     # torch CPU threads; None: sdekit.core.threads.default_threads (or the checkpoint's)
    compile: bool = False          # torch.compile the network's forward (sdekit.models.accel)
    channels_last: bool = False    # channels-last memory for the network's weights and inputs
    autocast: str = "none"         # none | bf16 | fp16 (CUDA only, with loss scaling)

    def __post_init__(self):
        if self.loss is None:
            self.loss = "flow" if self.sde == "flow" else "edm"
        if self.precond is None:
            self.precond = {"flow": "velocity", "cd": "consistency"}.get(self.loss, "edm")


HPARAMS_IGNORED = {"recipe", "out", "steps", "sample_every", "ckpt_every", "log_every", "max_minutes", "progress", "resume",
                   "overwrite", "download", "threads", "compile", "channels_last", "autocast"}


FLOW_ONLY = {"time_density", "ln_mean", "ln_std"}      # hyper-parameters of the flow loss alone


def hparams(cfg: TrainConfig) -> dict:
    """The hyper-parameters of ``cfg`` as JSON-able values (tuples as lists); the flow loss's own only
    for a run with that loss."""
    d = dataclasses.asdict(cfg)
    ignored = HPARAMS_IGNORED | (FLOW_ONLY if cfg.loss != "flow" else set())
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k not in ignored}


def with_recipe(given: dict) -> dict:
    """The fields ``given`` (field -> value, those set by the user) over those of the recipe ``given["recipe"]``
    names, if any (:func:`sdekit.tasks.train.recipes.recipe`; UserError for an unknown one)."""
    if given.get("recipe") is None:
        return dict(given)
    return {**recipe(given["recipe"]), **given}


def validate(cfg: TrainConfig) -> None:
    """UserError for a number out of its range or an unknown loss (the execution options
    compile / channels_last / autocast: :meth:`sdekit.models.accel.Acceleration.check`)."""
    checks = [(cfg.steps >= 1, "--steps must be >= 1"), (cfg.batch_size >= 1, "--batch-size must be >= 1"),
              (cfg.lr > 0, "--lr must be > 0"), (0 <= cfg.ema < 1, "--ema must lie in [0, 1)"),
              (0 <= cfg.label_dropout < 1, "--label-dropout must lie in [0, 1)"),
              (cfg.warmup >= 0 and cfg.grad_clip >= 0, "--warmup and --grad-clip must be >= 0"),
              (min(cfg.ckpt_every, cfg.log_every, cfg.sample_every) >= 0, "intervals must be >= 0"),
              (cfg.threads is None or cfg.threads >= 1, "--threads must be >= 1"),
              (not (cfg.resume and cfg.overwrite), "--resume continues a run, --overwrite replaces it: pass one"),
              ((cfg.loss == "cd") == (cfg.teacher is not None), "--loss cd and --teacher go together"),
              (cfg.cd_levels >= 2, "--cd-levels must be >= 2")]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)
    get_loss(cfg.loss)
    if cfg.loss == "flow":
        if cfg.time_density not in TIME_DENSITIES:
            raise UserError(f"--time-density must be one of {', '.join(TIME_DENSITIES)}, got {cfg.time_density!r}")
        if not cfg.ln_std > 0:
            raise UserError(f"--ln-std must be > 0, got {cfg.ln_std}")

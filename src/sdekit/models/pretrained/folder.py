"""diffusers folders holding a ``UNet2DModel``, loaded as sdekit models.

Recognised layouts (a folder path; or a Hugging Face hub name such as "google/ddpm-church-256" only
where the local Hugging Face cache already holds it: nothing is ever downloaded):

* a pipeline folder: ``model_index.json``, ``unet/`` (config.json + weights), ``scheduler/``
  (scheduler_config.json);
* a bare model folder: ``config.json`` of a UNet2DModel and its weights, with ``scheduler_config.json``
  beside it (or in ``../scheduler/``).

The scheduler's config says what the network computes (:data:`SCHEDULES`):

* DDPM/DDIM-style schedulers (betas, ``prediction_type`` epsilon / sample / v_prediction): the
  discrete VP schedule :class:`~sdekit.core.sde.DiscreteVPSDE`, the network called as unet(x, timestep)
  with a fractional timestep, predicting eps / x0 / v; model space = the network's [-1, 1].
* ``ScoreSdeVeScheduler`` (NCSN++ with a Fourier noise embedding, score_sde's VE models): the VE SDE
  with the config's sigma_min, sigma_max (overridable: published configs disagree with the papers'),
  the network called as unet(x, sigma) returning the score itself (UNet2DModel divides its output by
  sigma, as score_sde's ``scale_by_sigma``); model space [0, 1], as ScoreSdeVePipeline's.
* ``FlowMatchEulerDiscreteScheduler`` (flow matching / rectified flow): :class:`~sdekit.core.sde.FlowSDE` with
  the config's ``shift`` (a grid uniform in t is the scheduler's shifted grid), the network called as
  unet(x, 1000 tau) (tau the path time, the scheduler's "sigma") returning the velocity n - x0; model
  space [-1, 1]. sdekit's time ends at T = 0.999 < 1 (FlowSDE), where the scheduler starts at tau = 1.
* ``CMStochasticIterativeScheduler`` (consistency models, Song et al. 2023): the EDM SDE on the config's
  [sigma_min, sigma_max] with its sigma_data, the network fed c_in x and 250 ln(sigma) (the scheduler's
  timestep) and parametrised as prediction "consistency" with the config's sigma_min; model space [-1, 1].
  The scheduler's ``clip_denoised`` (clamping each f to [-1, 1]) is not applied.

A UNet2DModel with class embeddings (``num_class_embeds`` K) is a model of K classes without a null
label: it needs a class 0..K-1 for every sample and takes no classifier-free guidance (UserError).

Weights are read from safetensors, or from a ``.bin`` through ``torch.load(weights_only=True)`` only.
Every defect is one UserError line naming the file. Loading needs the optional dependency diffusers
(``pip install 'sdekit[diffusers]'``); recognising a folder does not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from sdekit.core.errors import UserError
from sdekit.core.persist import MAX_CONFIG_BYTES, expect, is_number, load_state, parse_json, read_tensors
from sdekit.core.sde import EDMSDE, VESDE, DiscreteVPSDE, FlowSDE
from sdekit.models.pretrained.wrap import TensorOutput, wrap

__all__ = ["DiffusersFolder", "find_diffusers", "load_diffusers", "read_json", "SCHEDULES", "DISCRETE_SCHEDULERS",
           "WEIGHT_FILES", "need_diffusers", "OPTIONS", "OptionError"]

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin")
INSTALL = "pip install 'sdekit[diffusers]'"
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

# Schedulers over one discrete VP (DDPM) noise schedule: betas from the config, one prediction_type.
DISCRETE_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler",
                       "DPMSolverSinglestepScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                       "LMSDiscreteScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler",
                       "DEISMultistepScheduler", "UniPCMultistepScheduler", "DDPMParallelScheduler",
                       "DDIMParallelScheduler")
PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


@dataclass(frozen=True)
class DiffusersFolder:
    """Where a diffusers UNet2DModel lives: its folder (config.json + weights), its scheduler config,
    and a name for the model (the pipeline folder's name)."""
    unet: Path
    scheduler: Path | None
    name: str


def read_json(path: Path, what: str) -> dict:
    """The JSON object in ``path`` (strict, size-limited); a defect is a UserError naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: no such file ({what})")
    expect(path.stat().st_size <= MAX_CONFIG_BYTES, path, f"too large for a {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as e:
        raise UserError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None
    cfg = parse_json(text, path)
    expect(isinstance(cfg, dict), path, f"not a {what} (not a JSON object)")
    return cfg


def _class_of(path: Path) -> str | None:
    """The ``_class_name`` of a diffusers config file, or None (missing, unreadable, another kind)."""
    try:
        cfg = read_json(path, "config")
    except UserError:
        return None
    name = cfg.get("_class_name")
    return name if isinstance(name, str) else None


def _cached_snapshot(name: str) -> Path | None:
    """The local Hugging Face cache's copy of hub repository ``name``, offline; None if it has none."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return Path(snapshot_download(repo_id=name, local_files_only=True))
    except Exception:                                   # not cached, or an invalid repository id
        return None


def find_diffusers(path) -> DiffusersFolder | None:
    """The diffusers UNet2DModel folder ``path`` names, or None when it is no diffusers folder (an sdekit
    bundle, say). A training run's folder whose ``model/`` is a diffusers pipeline folder means that one.
    A hub name ("owner/name") counts only if the local Hugging Face cache holds it; one that is neither a
    path nor cached is a UserError."""
    if path is None:
        return None
    p = Path(path)
    if p.is_file() and p.name in ("model_index.json", "config.json"):
        p = p.parent
    if not p.exists():
        if HUB_NAME.fullmatch(str(path)) and not str(path).startswith((".", "/")):
            snap = _cached_snapshot(str(path))
            if snap is None:
                raise UserError(f"{path}: no such folder, and not in the local Hugging Face cache (sdekit never "
                                f"downloads; on a machine with internet: huggingface-cli download {path} --local-dir DIR)")
            p = snap
        else:
            return None
    if not p.is_dir():
        return None
    name = p.name
    if not (p / "model_index.json").is_file() and (p / "model" / "model_index.json").is_file():
        p = p / "model"                     # a training run's folder (sdekit train --init DIFFUSERS_FOLDER)
    if (p / "model_index.json").is_file():
        index = read_json(p / "model_index.json", "diffusers pipeline index")
        unets = [k for k, v in index.items() if isinstance(v, list) and len(v) == 2 and v[1] == "UNet2DModel"]
        expect(len(unets) == 1, p / "model_index.json", "names no UNet2DModel component; sdekit loads pipelines "
               "whose network is a diffusers UNet2DModel (DDPM, DDIM, score_sde VE)")
        sched = [k for k, v in index.items() if isinstance(v, list) and len(v) == 2 and str(v[1]).endswith("Scheduler")]
        scheduler = p / sched[0] / "scheduler_config.json" if sched else None
        return DiffusersFolder(p / unets[0], scheduler, name)
    if _class_of(p / "config.json") == "UNet2DModel":
        for cand in (p / "scheduler_config.json", p.parent / "scheduler" / "scheduler_config.json"):
            if cand.is_file():
                return DiffusersFolder(p, cand, p.parent.name if p.name == "unet" else p.name)
        return DiffusersFolder(p, None, p.name)
    return None


def need_diffusers(what) -> None:
    """UserError (one line) unless the optional dependency diffusers is installed."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise UserError(f"{what} is a diffusers model; loading it needs the optional dependency diffusers "
                        f"({INSTALL})") from None


# ---- the scheduler's config: the noise process, the parametrisation, the data range --------------------

def _number(cfg: dict, key: str, default, source) -> float:
    v = cfg.get(key, default)
    expect(isinstance(v, (int, float)) and not isinstance(v, bool), source, f"{key} must be a number, got {v!r}")
    return float(v)


def _discrete(cfg: dict, source, overrides: dict) -> dict:
    """A DDPM-style scheduler: DiscreteVPSDE from the betas, prediction_type -> eps / x0 / v, data in [-1, 1]."""
    pred = overrides.pop("prediction_type", cfg.get("prediction_type", "epsilon"))
    expect(pred in PREDICTION_TYPES, source, f"prediction_type {pred!r} is not one of {', '.join(PREDICTION_TYPES)}")
    expect(not cfg.get("rescale_betas_zero_snr", False), source,
           "rescale_betas_zero_snr makes the last noise level infinite; sdekit needs a finite sigma_max")
    trained = cfg.get("trained_betas")
    if trained is not None:
        expect(isinstance(trained, list) and all(isinstance(b, (int, float)) for b in trained), source,
               "trained_betas must be a list of numbers")
        sde = DiscreteVPSDE(betas=trained)
    else:
        n = cfg.get("num_train_timesteps", 1000)
        expect(isinstance(n, int) and not isinstance(n, bool) and n >= 2, source,
               f"num_train_timesteps must be an integer >= 2, got {n!r}")
        try:
            sde = DiscreteVPSDE(schedule=cfg.get("beta_schedule", "linear"), N=n,
                                beta_start=_number(cfg, "beta_start", 1e-4, source),
                                beta_end=_number(cfg, "beta_end", 0.02, source))
        except UserError as e:
            raise UserError(f"{source}: {e}") from None
    return {"sde": sde, "prediction": PREDICTION_TYPES[pred], "time_input": None, "data_range": (-1.0, 1.0)}


def _score_sde_ve(cfg: dict, source, overrides: dict) -> dict:
    """ScoreSdeVeScheduler: the VE SDE on [sigma_min, sigma_max]; the network returns the score of sigma."""
    given = {k: overrides.pop(k) for k in ("sigma_min", "sigma_max") if k in overrides}
    for k, v in given.items():
        if not (is_number(v) and v > 0):
            raise UserError(f"{k} must be a positive number, got {v!r}")
    lo = float(given.get("sigma_min", _number(cfg, "sigma_min", 0.01, source)))
    hi = float(given.get("sigma_max", _number(cfg, "sigma_max", 1348.0, source)))
    if given and not lo < hi:
        raise UserError(f"sigma_min {lo:g} must be below sigma_max {hi:g} "
                        f"({' and '.join(given)} given, the rest from {source})")
    n = cfg.get("num_train_timesteps", 2000)
    try:
        sde = VESDE(lo, hi, N=int(n))
    except (ValueError, TypeError) as e:
        raise UserError(f"{source}: {e}") from None
    return {"sde": sde, "prediction": "score", "time_input": "sigma", "data_range": (0.0, 1.0)}


def _positive(cfg: dict, key: str, default, source) -> float:
    v = _number(cfg, key, default, source)
    expect(v > 0, source, f"{key} must be a positive number, got {v!r}")
    return v


def _flow_match(cfg: dict, source, overrides: dict) -> dict:
    """FlowMatchEulerDiscreteScheduler: the flow path with the config's shift; the network returns the velocity."""
    for key in ("use_dynamic_shifting", "invert_sigmas"):
        expect(not cfg.get(key, False), source, f"{key} is not supported: sdekit needs one fixed time shift")
    n = _positive(cfg, "num_train_timesteps", 1000, source)
    return {"sde": FlowSDE(shift=_positive(cfg, "shift", 1.0, source)), "prediction": "velocity", "time_input": "flow",
            "time_scale": n, "data_range": (-1.0, 1.0)}


def _consistency(cfg: dict, source, overrides: dict) -> dict:
    """CMStochasticIterativeScheduler: EDM's SDE; a consistency network fed c_in x and 250 ln(sigma)."""
    lo, hi = _positive(cfg, "sigma_min", 0.002, source), _positive(cfg, "sigma_max", 80.0, source)
    expect(lo < hi, source, f"sigma_min {lo:g} must be below sigma_max {hi:g}")
    sd = _positive(cfg, "sigma_data", 0.5, source)
    return {"sde": EDMSDE(lo, hi, sd), "prediction": "consistency", "time_input": None, "time_scale": 1000.0,
            "sigma_data": sd, "sigma_min": lo, "data_range": (-1.0, 1.0)}


# scheduler class -> (reader of its config, keyword overrides it takes)
SCHEDULES = {**{name: (_discrete, ("prediction_type",)) for name in DISCRETE_SCHEDULERS},
             "ScoreSdeVeScheduler": (_score_sde_ve, ("sigma_min", "sigma_max")),
             "FlowMatchEulerDiscreteScheduler": (_flow_match, ()),
             "CMStochasticIterativeScheduler": (_consistency, ())}


# the keyword options of load_diffusers -> the models they apply to
OPTIONS = {"prediction_type": "DDPM-style diffusers folders (DDPM, DDIM, ... schedulers)",
           "sigma_min": "score_sde VE diffusers folders (ScoreSdeVeScheduler)",
           "sigma_max": "score_sde VE diffusers folders (ScoreSdeVeScheduler)"}


class OptionError(UserError):
    """A loading option given for a model it does not apply to: ``option`` (a key of :data:`OPTIONS`, or an
    unknown name) and ``model``, what the model is ("an sdekit bundle", "a DDPMScheduler model").
    :meth:`naming` is the message with the option called otherwise (the command line names its flag)."""

    def __init__(self, option: str, model: str):
        self.option, self.model = option, model
        super().__init__(self.naming(f"option {option!r}"))

    def naming(self, name: str) -> str:
        if self.option not in OPTIONS:
            return f"{name} is not an option of sdekit.load; it takes {', '.join(OPTIONS)} (for diffusers folders)"
        return f"{name} applies to {OPTIONS[self.option]}, not to {self.model}"


# ---- the network ---------------------------------------------------------------------------------------

def _weights_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{folder}: no weights ({' or '.join(WEIGHT_FILES[:2])})")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: safetensors, or a .bin through torch.load(weights_only=True)."""
    with open(path, "rb") as f:
        head = f.read(200)
    expect(not head.startswith(b"version https://git-lfs"), path,
           "is a git-lfs pointer, not the weights; run `git lfs pull` in the downloaded folder")
    if path.suffix == ".safetensors":
        return read_tensors(path, "UNet2DModel weights")[0]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: not a readable weights file ({str(e).strip().splitlines()[0][:200]})") from None
    expect(isinstance(state, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()),
           path, "is not a state dict of tensors")
    return state


def load_unet(folder: Path):
    """The UNet2DModel of ``folder`` (config.json + weights) on the CPU in float32."""
    from diffusers import UNet2DModel
    cfg = read_json(folder / "config.json", "UNet2DModel config")
    expect(cfg.get("_class_name", "UNet2DModel") == "UNet2DModel", folder / "config.json",
           f"describes a {cfg.get('_class_name')}, not a UNet2DModel")
    try:
        with torch.device("meta"):                    # no memory until the weights are known to fit
            unet = UNet2DModel.from_config(cfg)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise UserError(f"{folder / 'config.json'}: invalid UNet2DModel config ({str(e).splitlines()[0]})") from None
    path = _weights_file(folder)
    state = _read_weights(path)
    need = sum(p.numel() for p in unet.state_dict().values())
    have = sum(v.numel() for v in state.values())
    expect(need == have, path, f"holds {have} weights where the config's network has {need}")
    unet = unet.to_empty(device="cpu").float()
    load_state(unet, state, path, "UNet2DModel weights")
    return unet.eval()


def _shape(cfg: dict, source) -> tuple[int, int, int]:
    size = cfg.get("sample_size")
    hw = [size, size] if isinstance(size, int) else size
    expect(isinstance(hw, list) and len(hw) == 2 and all(isinstance(v, int) and v > 0 for v in hw), source,
           f"sample_size must be a positive integer or [H, W], got {size!r}")
    c = cfg.get("in_channels", 3)
    expect(isinstance(c, int) and c > 0, source, f"in_channels must be a positive integer, got {c!r}")
    return c, hw[0], hw[1]


def load_diffusers(found: DiffusersFolder, device=None, dtype=None, **overrides):
    """The :class:`~sdekit.models.model.Model` of a diffusers folder (see the module docstring).

    overrides: for ScoreSdeVeScheduler ``sigma_min``, ``sigma_max`` (positive numbers, sigma_min < sigma_max,
    in the data's units: model space [0, 1]) instead of the scheduler config's; for DDPM-style schedulers
    ``prediction_type``. An option for another kind of model: :class:`OptionError`; a scheduler sdekit
    does not know, or a missing scheduler config: UserError."""
    need_diffusers(found.unet)
    if found.scheduler is None or not found.scheduler.is_file():
        raise UserError(f"{found.unet}: no scheduler config beside the network (scheduler_config.json, or "
                        f"../scheduler/scheduler_config.json); it says which noise schedule the network was trained on")
    sched = read_json(found.scheduler, "scheduler config")
    kind = sched.get("_class_name")
    if kind not in SCHEDULES:
        raise UserError(f"{found.scheduler}: scheduler {kind!r} is not one sdekit reads; it reads "
                        f"{', '.join(sorted(SCHEDULES))}")
    reader, allowed = SCHEDULES[kind]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise OptionError(unknown[0], f"a {kind} model")
    spec = reader(sched, found.scheduler, dict(overrides))
    ucfg = read_json(found.unet / "config.json", "UNet2DModel config")
    shape = _shape(ucfg, found.unet / "config.json")
    out_ch = ucfg.get("out_channels", shape[0])
    learned = str(sched.get("variance_type", "")).startswith("learned") and out_ch == 2 * shape[0]
    expect(out_ch == shape[0] or learned, found.unet / "config.json",
           f"out_channels {out_ch} is not in_channels {shape[0]} (nor twice it with a learned variance)")
    unet = load_unet(found.unet)
    classes = int(ucfg.get("num_class_embeds") or 0)
    net = TensorOutput(unet, keep_channels=shape[0] if learned else None)
    extra = {k: spec[k] for k in ("time_scale", "sigma_data", "sigma_min") if k in spec}
    model = wrap(net, prediction=spec["prediction"], sde=spec["sde"], time_input=spec["time_input"], shape=shape,
                 data_range=spec["data_range"], num_classes=classes, name=found.name, null_label=False, **extra)
    model.config.update({"format": "diffusers", "scheduler": kind, "source": str(found.unet),
                         "scheduler_config": {**sched, **overrides}})     # what it was read as (export writes it)
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model

"""A model bundle: a folder with ``config.json`` + ``model.safetensors`` that loads itself.

config.json holds everything needed to rebuild the model: the SDE's config, the network's config,
the preconditioning, the data shape, the number of classes and the data transform (model space
x = lo + (hi - lo) u for pixels u in [0, 1]). The weights are the EMA weights (optionally stored
in float16 and converted back to float32 on load). Reading and writing go through
:mod:`sdekit.core.persist` (nothing is ever unpickled), and :func:`load` checks every field of the config
against its type, its range and the weights before the model is built.
"""
from __future__ import annotations

from pathlib import Path

import torch

from sdekit.core.errors import UserError
from sdekit.models.model import Model, generate  # noqa: F401  (sdekit.models.bundle.Model / generate, as before)
from sdekit.models.nets import Preconditioned, build_net
from sdekit.core.persist import check_fields, folder_of, load_module, read_config, save_folder
from sdekit.core.persist import load_weights  # noqa: F401  (sdekit.models.bundle.load_weights, as before)
from sdekit.core.sde import SDE, get_sde
from sdekit.core.assets import ASSETS

__all__ = ["Model", "load", "load_bundle", "save_bundle", "random_model", "generate", "export_bundle", "installed", "BUNDLED", "FORMAT"]

FORMAT = "sdekit-bundle"
BUNDLED_MODELS = {"mnist": ASSETS / "mnist", "digits": ASSETS / "digits", "emoji": ASSETS / "emoji",
                  "mnist-cd": ASSETS / "mnist-cd"}   # name -> shipped bundle
DEFAULT_MODEL = "mnist"
BUNDLED = BUNDLED_MODELS["digits"]


def bundled(name: str | None = None) -> Path:
    """The folder of a shipped model: ``name`` in BUNDLED_MODELS, or None / "default" for the default
    model (MNIST, 28x28; the 16x16 digits model where MNIST is not installed)."""
    return BUNDLED_MODELS[default_name() if name in (None, "default") else name]


def default_name() -> str:
    """The default model's name: DEFAULT_MODEL (MNIST), or "digits" where MNIST is not installed."""
    return DEFAULT_MODEL if (BUNDLED_MODELS[DEFAULT_MODEL] / "config.json").is_file() else "digits"


def installed() -> list[str]:
    """The names of the shipped models this copy of sdekit has (those of BUNDLED_MODELS whose folder holds a
    config.json), the default model first."""
    have = [n for n, folder in BUNDLED_MODELS.items() if (folder / "config.json").is_file()]
    return sorted(have, key=lambda n: n != default_name())


def bundle_config(net: Preconditioned, shape, name: str = "model", data_range=(-1.0, 1.0),
                  data: str | None = None, extra: dict | None = None) -> dict:
    return {"format": FORMAT, "version": 1, "name": name, "shape": [int(s) for s in shape],
            "num_classes": net.num_classes, "data_range": [float(v) for v in data_range],
            "data": data, "sde": net.sde.config(), "network": net.net.config(),
            "precond": net.config(), **(extra or {})}


def save_bundle(folder, net: Preconditioned, sde: SDE | None = None, shape=(1, 16, 16), name: str = "model",
                data_range=(-1.0, 1.0), data: str | None = None, dtype=torch.float32,
                extra: dict | None = None) -> Path:
    """Write ``folder/config.json`` and ``folder/model.safetensors`` (each atomically).

    ``net`` is a :class:`Preconditioned` network (a bare network is wrapped with ``sde``,
    preconditioning "edm"); its state (EMA weights, if that is what it holds) is stored in ``dtype``."""
    if not isinstance(net, Preconditioned):
        if sde is None:
            raise ValueError("save_bundle needs the SDE for a bare network")
        net = Preconditioned(net, sde)
    cfg = bundle_config(net, shape, name, data_range, data, extra)
    cfg["dtype"] = str(dtype).replace("torch.", "")
    return save_folder(folder, cfg, net.state_dict(), dtype)


def build(config: dict) -> Preconditioned:
    """The (untrained) preconditioned network a config describes. An unknown SDE, network or
    preconditioning, a bad parameter, a data shape the network does not take or a num_classes unlike
    the network's: ValueError / TypeError / KeyError (:func:`load` turns them into a UserError)."""
    pre = config.get("precond", {"kind": "edm"})
    net = Preconditioned(build_net(config["network"]), get_sde(config["sde"]), pre.get("kind", "edm"),
                         pre.get("sigma_data", 0.5), pre.get("sigma_min"))
    net.net.check_shape(tuple(config["shape"]))
    num_classes = config.get("num_classes", 0)
    if num_classes != net.num_classes:
        raise ValueError(f"num_classes {num_classes} is not the network's {net.num_classes}")
    return net


def load(path=None, device=None, dtype=None, **options) -> Model:
    """Load a model bundle folder; no argument (or "default") loads the bundled default model (MNIST,
    28x28, class-conditional), "mnist" / "digits" / "emoji" (32x32 RGB, class = emoji category) /
    "mnist-cd" (the MNIST model distilled into a consistency student) a shipped model by name.

    ``path`` may also be a diffusers folder (a UNet2DModel with a DDPM/DDIM-style or ScoreSdeVe
    scheduler config, e.g. one written by ``sdekit convert``); ``options`` are that loader's
    (sdekit.models.pretrained.folder.load_diffusers: ``sigma_min``, ``sigma_max``, ``prediction_type``).
    ``device``, ``dtype``: where and in which precision the network runs: a device this machine has
    ("cpu", "cuda", "cuda:1", a torch.device), and float32, float16, bfloat16 or float64 (a torch dtype or
    its name); anything else, or a precision the device cannot run, is a UserError, as for the command line's
    ``--device`` / ``--dtype``.

    Every field of config.json is checked (:func:`sdekit.core.persist.check_fields`), then against the network it
    describes and the weights' names and shapes, before any real memory is spent: a defect is one
    UserError line naming the file.

    The formats are asked in turn (:mod:`sdekit.models.loaders`, the loader registry); a path none of them
    takes is one UserError listing the formats sdekit knows."""
    from sdekit.models.loaders import load as load_any
    return load_any(path, device, dtype, **options)


def bundled_name(path) -> bool:
    """Whether ``path`` names a shipped model (None, "default" or a key of BUNDLED_MODELS) rather than a folder."""
    return path is None or str(path) in ("default", *BUNDLED_MODELS)


def load_bundle(path=None, device=None, dtype=None) -> Model:
    """The sdekit bundle at ``path`` (a folder, its config.json or model.safetensors, a training run's folder)
    or the shipped model ``path`` names (:func:`bundled_name`), on ``device`` in ``dtype`` (already checked
    by :func:`sdekit.core.placement.placement`). Every field of config.json is checked, then against the
    network and the weights; a defect, or a shipped model this copy lacks, is one UserError line."""
    named = bundled_name(path)
    folder = bundled(None if path is None else str(path)) if named else folder_of(path, bundled())
    if named and not (folder / "config.json").is_file():
        raise UserError(f"the bundled model {folder.name!r} is not installed with this copy of sdekit")
    cfg = read_config(folder, FORMAT, "model bundle")
    check_fields(cfg, folder / "config.json", required=("shape", "sde", "network"))
    net = load_module(lambda: build(cfg), folder, "model")
    model = Model(net.float(), cfg, cfg.get("name", folder.name))
    if (folder / "classifier" / "config.json").is_file():
        from sdekit.models.nets.classifier import load_classifier
        clf = load_classifier(folder / "classifier", sde=model.sde)
        if clf.shape != model.shape or clf.num_classes != model.num_classes:
            raise UserError(f"{folder / 'classifier'}: a classifier of {clf.num_classes} classes of {clf.shape} "
                            f"images does not fit the model ({model.num_classes} classes of {model.shape})")
        model.classifier = clf
    return model.to(device, dtype) if device is not None or dtype is not None else model


def random_model(shape=(1, 16, 16), sde="vp", num_classes: int = 0, seed: int = 0, ch: int = 8) -> Model:
    """A tiny random-weight U-Net Model (for tests of code that only needs *a* model)."""
    C, H, W = shape
    sde = get_sde(sde) if not isinstance(sde, SDE) else sde
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        unet_cfg = {"type": "unet", "in_channels": C, "resolution": H, "ch": ch, "ch_mult": [1, 2],
                    "num_res_blocks": 1, "attn_resolutions": [H // 2], "dropout": 0.0, "num_classes": num_classes}
        net = Preconditioned(build_net(unet_cfg), sde)
        for p in net.parameters():                      # no zero output layer: a non-trivial score
            if p.dim() > 1 and not p.abs().sum():
                torch.nn.init.normal_(p, std=0.02)
    finally:
        torch.random.set_rng_state(torch_state)
    cfg = bundle_config(net, shape, name="random")
    return Model(net, cfg, "random")


def export_bundle(src, dst, dtype=torch.float16, name: str | None = None) -> Path:
    """Copy a bundle (e.g. a run's ``model/``) to ``dst``, storing the weights in ``dtype``."""
    m = load(src)
    keep = {k: v for k, v in m.config.items() if k not in ("format", "version", "name", "shape", "num_classes",
                                                           "data_range", "data", "sde", "network", "precond", "dtype")}
    return save_bundle(dst, m.net, shape=m.shape, name=name or m.name, data_range=m.data_range,
                       data=m.config.get("data"), dtype=dtype, extra=keep)


GITS_FIT = {"trajectories": 256, "teacher_steps": 100, "seed": 123, "steps": list(range(2, 21))}


def write_grids(folder, trajectories: int = GITS_FIT["trajectories"], teacher_steps: int = GITS_FIT["teacher_steps"],
                seed: int = GITS_FIT["seed"], steps=GITS_FIT["steps"], device=None) -> dict:
    """Fit the model's noise-level grids of ``steps`` steps (sdekit.solvers.gits: ``trajectories`` teacher
    trajectories of ``teacher_steps`` DPM-Solver++ steps from ``seed``) and store them in the bundle's
    config.json as "grids" (other fields kept, written atomically; the weights are not touched): from then on
    the default grid of dpm_solver and ddim at those step counts (:meth:`Model.grid_options`). Costs
    trajectories x teacher_steps evaluations. Returns the grids {N: levels}. UserError if ``folder`` is not
    a model bundle."""
    import json
    from sdekit.core.io import atomic_write_text
    from sdekit.solvers.gits import optimal_grids
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise UserError(f"{folder}: not a model bundle folder (no config.json)")
    cfg = read_config(path, FORMAT, "model bundle")
    model = load_bundle(folder, device=device)
    grids = optimal_grids(model.sde, model.score_fn, (int(trajectories), *model.shape), steps=steps,
                          teacher_steps=teacher_steps, seed=seed, device=model.device)
    cfg["grids"] = {"method": "GITS (Chen et al. 2024), sdekit.solvers.gits", "trajectories": int(trajectories),
                    "teacher_steps": int(teacher_steps), "seed": int(seed),
                    "sigmas": {str(k): [float(v) for v in g] for k, g in grids.items()}}
    atomic_write_text(path, json.dumps(cfg, indent=2) + "\n")
    return grids

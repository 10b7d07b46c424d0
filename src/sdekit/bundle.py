"""A model bundle: a folder with ``config.json`` + ``model.safetensors`` that loads itself.

config.json holds everything needed to rebuild the model: the SDE's config, the network's config,
the preconditioning, the data shape, the number of classes and the data transform (model space
x = lo + (hi - lo) u for pixels u in [0, 1]). The weights are the EMA weights (optionally stored
in float16 and converted back to float32 on load). Reading and writing go through
:mod:`sdekit.persist` (nothing is ever unpickled), and :func:`load` checks every field of the config
against its type, its range and the weights before the model is built.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import UserError
from .nets import Preconditioned, build_net
from .persist import check_fields, folder_of, load_module, read_config, save_folder
from .persist import load_weights  # noqa: F401  (sdekit.bundle.load_weights, as before)
from .sde import SDE, get_sde

__all__ = ["Model", "load", "save_bundle", "random_model", "generate", "export_bundle", "BUNDLED", "FORMAT"]

FORMAT = "sdekit-bundle"
BUNDLED = Path(__file__).parent / "assets" / "digits"


class Model:
    """A trained score model: ``score_fn(x, t)`` for ``sde``, plus the data transform.

    Conditional models (num_classes > 0) take ``class_labels=`` (int tensor [B] or an int; None or
    -1 means unconditional) and ``guidance=w`` for classifier-free guidance,
    score = (1 + w) score(x | y) - w score(x)  (Ho & Salimans 2022).
    """

    def __init__(self, net: Preconditioned, config: dict, name: str = "model"):
        self.net, self.config, self.name = net.eval(), config, name
        for p in self.net.parameters():          # a fixed model: gradients flow only to inputs (x)
            p.requires_grad_(False)
        self.sde: SDE = net.sde
        self.shape = tuple(config["shape"])
        self.num_classes = int(config.get("num_classes", 0))
        self.data_range = tuple(config.get("data_range", (-1.0, 1.0)))

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.net.parameters())
        return f"Model({self.name!r}, shape={self.shape}, sde={self.sde!r}, classes={self.num_classes}, params={n})"

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device) -> "Model":
        self.net.to(device)
        return self

    def _labels(self, class_labels, x):
        if class_labels is None:
            return None
        if self.num_classes == 0:
            raise UserError("this model is unconditional; it takes no class labels")
        y = torch.as_tensor(class_labels, device=x.device).long().reshape(-1).expand(x.shape[0])
        if ((y < -1) | (y >= self.num_classes)).any():
            raise UserError(f"class labels must lie in 0..{self.num_classes - 1} (or -1 for none)")
        return torch.where(y < 0, torch.full_like(y, self.num_classes), y)   # -1 -> the null label

    def score_fn(self, x: torch.Tensor, t, class_labels=None, guidance: float = 0.0) -> torch.Tensor:
        y = self._labels(class_labels, x)
        x = x.to(self.device)
        if y is None or guidance == 0:
            return self.net(x, t, y)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        null = torch.full_like(y, self.num_classes)
        both = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = both.chunk(2)
        return (1 + guidance) * cond - guidance * uncond

    def conditional(self, class_labels, guidance: float = 0.0):
        """A plain score_fn(x, t) for fixed labels, to hand to samplers and editors."""
        return lambda x, t: self.score_fn(x, t, class_labels=class_labels, guidance=guidance)

    def denoise(self, x: torch.Tensor, t, class_labels=None) -> torch.Tensor:
        """E[x0 | x_t = x] in model space."""
        return self.net.denoise(x, t, self._labels(class_labels, x))

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1], [B, C, H, W] -> model space."""
        lo, hi = self.data_range
        return lo + (hi - lo) * u

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Model space -> pixels in [0, 1] (clamped)."""
        lo, hi = self.data_range
        return ((x - lo) / (hi - lo)).clamp(0, 1)

    def sample(self, n: int, sampler: str = "heun", steps: int = 20, generator=None, class_labels=None,
               guidance: float = 0.0, **options) -> torch.Tensor:
        """n samples in model space, shape [n, C, H, W]."""
        from .samplers import sample
        fn = self.conditional(class_labels, guidance) if class_labels is not None else self.score_fn
        return sample(self.sde, fn, (n, *self.shape), sampler=sampler, steps=steps, generator=generator,
                      device=self.device, **options)


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
                         pre.get("sigma_data", 0.5))
    net.net.check_shape(tuple(config["shape"]))
    num_classes = config.get("num_classes", 0)
    if num_classes != net.num_classes:
        raise ValueError(f"num_classes {num_classes} is not the network's {net.num_classes}")
    return net


def load(path=None, device=None) -> Model:
    """Load a model bundle folder; no argument loads the bundled digits model.

    Every field of config.json is checked (:func:`sdekit.persist.check_fields`), then against the network it
    describes and the weights' names and shapes, before any real memory is spent: a defect is one
    UserError line naming the file."""
    folder = folder_of(path, BUNDLED)
    if folder == BUNDLED and not (folder / "config.json").is_file():
        raise UserError("the bundled digits model is not installed with this copy of sdekit")
    cfg = read_config(folder, FORMAT, "model bundle")
    check_fields(cfg, folder / "config.json", required=("shape", "sde", "network"))
    net = load_module(lambda: build(cfg), folder, "model")
    model = Model(net.float(), cfg, cfg.get("name", folder.name))
    return model.to(device) if device is not None else model


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


def generate(model: Model, n: int, sampler: str = "heun", steps: int = 20, seed: int = 0, class_labels=None,
             guidance: float = 0.0, batch_size: int = 256, progress: bool = False, **options) -> torch.Tensor:
    """n samples in model space, drawn in chunks of ``batch_size``; chunk c uses the generator seeded
    with (seed, c), so the result does not depend on how chunks are spread over processes. Under
    torchrun, rank r draws chunks r, r + K, ... and every rank returns the whole set (gathered).
    ``class_labels``: None, an int for all samples, or an int tensor [n]."""
    from tqdm.auto import tqdm
    import torch.distributed as dist
    from .samplers import sample
    if n < 1 or batch_size < 1:
        raise UserError(f"need n >= 1 and batch_size >= 1, got {n}, {batch_size}")
    if class_labels is not None and not torch.is_tensor(class_labels):
        class_labels = torch.full((n,), int(class_labels), dtype=torch.long)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank() if world > 1 else 0
    chunks = [(c, min(batch_size, n - c * batch_size)) for c in range((n + batch_size - 1) // batch_size)]
    mine = chunks[rank::world]
    per_rank = len(chunks[0::world])
    out = torch.zeros(per_rank * batch_size, *model.shape)
    for j, (c, size) in enumerate(tqdm(mine, disable=not (progress and rank == 0), desc="sampling", unit="batch")):
        g = torch.Generator().manual_seed(seed * 1_000_003 + c)
        fn = model.score_fn
        if class_labels is not None:
            fn = model.conditional(class_labels[c * batch_size: c * batch_size + size].to(model.device), guidance)
        x = sample(model.sde, fn, (size, *model.shape), sampler=sampler, steps=steps, generator=g, **options)
        out[j * batch_size: j * batch_size + size] = x.cpu()
    if world == 1:
        return out[:n]
    parts = [torch.zeros_like(out) for _ in range(world)]
    dist.all_gather(parts, out)
    res = torch.zeros(n, *model.shape)
    for r in range(world):
        for j, (c, size) in enumerate(chunks[r::world]):
            res[c * batch_size: c * batch_size + size] = parts[r][j * batch_size: j * batch_size + size]
    return res


def export_bundle(src, dst, dtype=torch.float16, name: str | None = None) -> Path:
    """Copy a bundle (e.g. a run's ``model/``) to ``dst``, storing the weights in ``dtype``."""
    m = load(src)
    keep = {k: v for k, v in m.config.items() if k not in ("format", "version", "name", "shape", "num_classes",
                                                           "data_range", "data", "sde", "network", "precond", "dtype")}
    return save_bundle(dst, m.net, shape=m.shape, name=name or m.name, data_range=m.data_range,
                       data=m.config.get("data"), dtype=dtype, extra=keep)

"""The training loop: Adam with warm-up and clipping, EMA, checkpoints with exact resume, DDP.

Determinism. Everything random in step k (the data order, the loss's t / sigma / noise draws, label
dropout, network dropout) comes from generators seeded by (seed, k) and, for the data order, by
(seed, epoch). The global batch of step k is drawn in full on every rank and each rank takes its
shard, so K processes compute exactly the gradient of one process on the union batch (up to the
order of floating-point sums), and a run resumed from a checkpoint at step k continues bitwise
identically on CPU. The checkpoint still records every RNG state (torch, numpy, python).

Checkpoints are one safetensors file (weights, EMA, Adam moments, RNG state; the rest as JSON in
its metadata) written atomically; nothing is ever unpickled.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .bundle import bundle_config, save_bundle
from .data import Dataset, load_dataset, save_grid
from .errors import UserError
from .io import atomic_path, atomic_write_text
from .losses import get_loss
from .nets import Preconditioned, build_net
from .sde import get_sde

__all__ = ["TrainConfig", "train", "EMA", "load_checkpoint", "save_checkpoint", "HPARAMS_IGNORED"]

CKPT = "checkpoint.safetensors"
CKPT_FORMAT = "sdekit-checkpoint"


@dataclass
class TrainConfig:
    data: str = "digits"
    sde: str = "vp"
    out: str = "runs/run"
    steps: int = 10000
    batch_size: int = 128
    seed: int = 0
    lr: float = 2e-4
    warmup: int = 500              # linear learning-rate warm-up steps
    grad_clip: float = 1.0         # max gradient norm (0: off)
    ema: float = 0.999             # EMA decay, warmed up as min(ema, (1 + k) / (10 + k))
    loss: str = "dsm"              # dsm | edm | smld | ddpm
    weighting: str = "sigma2"      # dsm: sigma2 | likelihood
    reduce: str = "mean"           # mean | sum over a sample's dimensions
    P_mean: float = -1.2           # edm loss: ln sigma ~ N(P_mean, P_std^2)
    P_std: float = 1.2
    precond: str = "edm"           # edm | eps | scaled_score | score
    sigma_data: float = 0.5
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
    image_size: int | None = None
    channels: int | None = None
    # not hyper-parameters (may change on --resume):
    sample_every: int = 1000
    ckpt_every: int = 500
    log_every: int = 50
    max_minutes: float | None = None
    progress: bool = True
    resume: bool = False
    download: bool = False         # fetch MNIST / Fashion-MNIST / CIFAR-10 files missing from DIR


HPARAMS_IGNORED = {"out", "steps", "sample_every", "ckpt_every", "log_every", "max_minutes", "progress", "resume", "download"}


def hparams(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k not in HPARAMS_IGNORED}


class EMA:
    """Exponential moving average of parameters (and copied buffers), decay warmed up as
    min(decay, (1 + k) / (10 + k)) (Tarvainen & Valpola 2017; score_sde)."""

    def __init__(self, model: nn.Module, decay: float):
        self.model, self.decay = copy.deepcopy(model).eval(), decay
        for p in self.model.parameters():
            p.requires_grad_(False)

    def rate(self, num_updates: int) -> float:
        return min(self.decay, (1 + num_updates) / (10 + num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        d = self.rate(num_updates)
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)                     # e <- d e + (1 - d) p
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


# ---- model -------------------------------------------------------------------------------------------

def build_model(cfg: TrainConfig, data: Dataset) -> Preconditioned:
    sde = get_sde(cfg.sde)
    num_classes = data.num_classes if cfg.class_cond else 0
    if cfg.class_cond and not data.num_classes:
        raise UserError(f"--class-cond needs labelled data; {data.name} has none")
    kind = cfg.net if cfg.net != "auto" else ("unet" if data.is_image else "mlp")
    if kind == "unet":
        if not data.is_image:
            raise UserError(f"the U-Net needs image data; {data.name} has shape {data.shape}")
        C, H, W = data.shape
        if H != W:
            raise UserError(f"images must be square, got {H}x{W}")
        net_cfg = {"type": "unet", "in_channels": C, "resolution": H, "ch": cfg.ch, "ch_mult": list(cfg.ch_mult),
                   "num_res_blocks": cfg.num_res_blocks, "attn_resolutions": list(cfg.attn), "dropout": cfg.dropout,
                   "embedding": cfg.embedding, "num_classes": num_classes}
    elif kind == "mlp":
        net_cfg = {"type": "mlp", "dim": int(np.prod(data.shape)), "hidden": cfg.hidden, "depth": cfg.depth,
                   "embedding": cfg.embedding, "num_classes": num_classes}
    else:
        raise UserError(f"unknown network {cfg.net!r}; choose auto, unet or mlp")
    try:
        return Preconditioned(build_net(net_cfg), sde, cfg.precond, cfg.sigma_data)
    except ValueError as e:
        raise UserError(str(e)) from None


class LossModule(nn.Module):
    """model + loss as one module, so DistributedDataParallel sees the whole forward pass."""

    def __init__(self, model: Preconditioned, cfg: TrainConfig):
        super().__init__()
        self.model, self.cfg, self.fn = model, cfg, get_loss(cfg.loss)

    def forward(self, x0, labels, draws):
        c, extra = self.cfg, {}
        if c.loss == "dsm":
            extra = {"weighting": c.weighting}
        elif c.loss == "edm":
            extra = {"sigma_data": c.sigma_data}
        return self.fn(self.model, self.model.sde, x0, labels, reduce=c.reduce, **draws, **extra)


def draw_randomness(cfg: TrainConfig, sde, B: int, shape, g: torch.Generator) -> dict:
    """The loss's random draws for a global batch of B, from the step's generator."""
    z = torch.randn((B, *shape), generator=g)
    if cfg.loss == "dsm":
        return {"t": sde.eps + (sde.T - sde.eps) * torch.rand(B, generator=g), "z": z}
    if cfg.loss == "edm":
        return {"sigma": (cfg.P_mean + cfg.P_std * torch.randn(B, generator=g)).exp(), "z": z}
    return {"index": torch.randint(sde.N, (B,), generator=g), "z": z}


def _step_seed(seed: int, step: int, salt: int = 0) -> int:
    return (seed * 1_000_003 + step * 7919 + salt * 104_729) % (2 ** 63 - 1)


class Batches:
    """Global batch k = positions kB .. kB+B-1 of the epoch-wise permutations of the data."""

    def __init__(self, n: int, B: int, seed: int):
        self.n, self.B, self.seed, self._perm = n, B, seed, {}

    def perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perm:
            self._perm = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(_step_seed(self.seed, epoch, 1)))}
        return self._perm[epoch]

    def indices(self, step: int) -> torch.Tensor:
        pos = step * self.B + torch.arange(self.B)
        return torch.cat([self.perm(int(e))[pos[(pos // self.n) == e] % self.n] for e in torch.unique(pos // self.n)])


# ---- checkpoints -------------------------------------------------------------------------------------

def _rng_states() -> tuple[dict, dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), *map(float, np_state[2:])]}
    return tensors, meta


def _set_rng_states(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    v, state, gauss = meta["python"]
    random.setstate((v, tuple(state), gauss))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), int(n[2]), int(n[3]), float(n[4])))


def save_checkpoint(path, model: nn.Module, ema: EMA, opt: torch.optim.Optimizer, step: int, cfg: TrainConfig,
                    extra: dict | None = None) -> None:
    from safetensors.torch import save_file
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().contiguous().clone() for k, v in ema.model.state_dict().items()})
    osd = opt.state_dict()
    scalars = {}
    for i, st in osd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{i}.{k}"] = v.contiguous().clone()
            else:
                scalars[f"{i}.{k}"] = v
    rng_t, rng_meta = _rng_states()
    tensors.update(rng_t)
    state = {"step": step, "hparams": hparams(cfg), "param_groups": osd["param_groups"], "opt_scalars": scalars,
             "rng": rng_meta, **(extra or {})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": CKPT_FORMAT, "state": json.dumps(state)})


def read_checkpoint(path) -> tuple[dict, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        if meta.get("format") != CKPT_FORMAT:
            raise ValueError("not an sdekit checkpoint")
        state = json.loads(meta["state"])
    except FileNotFoundError:
        raise UserError(f"{path}: no checkpoint to resume from") from None
    except Exception as e:                                     # safetensors raises its own error types
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: corrupt or truncated checkpoint ({msg})") from None
    return tensors, state


def load_checkpoint(path, model: nn.Module, ema: EMA, opt: torch.optim.Optimizer, cfg: TrainConfig) -> int:
    """Restore model, EMA, optimizer and RNG states; return the step. Refuses changed hyper-parameters."""
    tensors, state = read_checkpoint(path)
    old, new = state.get("hparams", {}), hparams(cfg)
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if changed:
        k = changed[0]
        raise UserError(f"--resume with changed hyper-parameters: {k} was {old.get(k)!r}, now {new.get(k)!r}"
                        + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""))
    for prefix, module in (("model.", model), ("ema.", ema.model)):
        sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        _load_state(module, sub, path)
    osd = {"state": {}, "param_groups": state["param_groups"]}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            osd["state"].setdefault(int(i), {})[name] = v
    for k, v in state["opt_scalars"].items():
        i, name = k.split(".", 1)
        osd["state"].setdefault(int(i), {})[name] = v
    try:
        opt.load_state_dict(osd)
    except (ValueError, KeyError) as e:
        raise UserError(f"{path}: optimizer state does not fit this model ({e})") from None
    _set_rng_states(tensors, state["rng"])
    return int(state["step"])


def _load_state(module: nn.Module, state: dict, path) -> None:
    own = module.state_dict()
    bad = sorted(set(own) ^ set(state)) + [k for k in own if k in state and state[k].shape != own[k].shape]
    if bad:
        raise UserError(f"{path}: checkpoint is of another architecture (e.g. {bad[0]!r})")
    module.load_state_dict(state)


# ---- distributed -------------------------------------------------------------------------------------

def dist_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when not distributed."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@contextlib.contextmanager
def distributed(device: torch.device):
    rank, world = dist_env()
    if world == 1:
        yield rank, world
        return
    import torch.distributed as dist
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield rank, world
    finally:
        dist.destroy_process_group()


def _all_mean(v: float, world: int) -> float:
    if world == 1:
        return v
    import torch.distributed as dist
    t = torch.tensor([v], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / world


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist
        dist.barrier()


# ---- pictures during training ------------------------------------------------------------------------

@torch.no_grad()
def sample_pictures(model: Preconditioned, data: Dataset, folder: Path, step: int, seed: int = 0) -> list[Path]:
    from .samplers import sample
    from .bundle import Model
    m = Model(model, bundle_config(model, data.shape, data_range=data.data_range or (-1, 1)))
    g = torch.Generator().manual_seed(seed)
    paths = []
    if data.is_image:
        n = 64
        x = sample(m.sde, m.score_fn, (n, *data.shape), sampler="heun", steps=20, generator=g)
        paths.append(save_grid(folder / f"step{step:07d}.png", m.to_unit(x), nrow=8))
        if m.num_classes:
            K = m.num_classes
            y = torch.arange(K).repeat(max(1, 80 // K))
            x = sample(m.sde, m.conditional(y), (len(y), *data.shape), sampler="heun", steps=20, generator=g)
            paths.append(save_grid(folder / f"step{step:07d}-class.png", m.to_unit(x), nrow=K))
    else:
        x = sample(m.sde, m.score_fn, (2000, *data.shape), sampler="heun", steps=20, generator=g)
        paths.append(scatter(folder / f"step{step:07d}.png", data.x[:2000], x))
    return paths


def scatter(path, data_x: torch.Tensor, x: torch.Tensor) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4, 4))
    if x.shape[1] == 1:
        bins = np.linspace(float(data_x.min()) - 1, float(data_x.max()) + 1, 80)
        ax.hist(data_x[:, 0].numpy(), bins, density=True, alpha=0.5, label="data")
        ax.hist(x[:, 0].clamp(bins[0], bins[-1]).numpy(), bins, density=True, alpha=0.5, label="samples")
        ax.legend()
    else:
        ax.scatter(*data_x[:, :2].T.numpy(), s=1, alpha=0.3, label="data")
        ax.scatter(*x[:, :2].T.numpy(), s=1, alpha=0.3, label="samples")
        ax.set_aspect("equal")
        ax.legend(markerscale=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return Path(path)


# ---- the loop ----------------------------------------------------------------------------------------

LOG_FIELDS = ["step", "loss", "lr", "grad_norm", "ema_decay", "img_per_s", "elapsed_s"]


def _prepare_log(path: Path, start: int) -> None:
    """Keep the rows of steps <= start (a resumed run rewrites what came after its checkpoint)."""
    rows = []
    if start and path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= start]
    text = io.StringIO()
    w = csv.DictWriter(text, LOG_FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, text.getvalue())


def _tensorboard(out: Path):
    """A TensorBoard writer when tensorboard is installed, else None (log.csv has the same numbers)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def validate(cfg: TrainConfig) -> None:
    checks = [(cfg.steps >= 1, "--steps must be >= 1"), (cfg.batch_size >= 1, "--batch-size must be >= 1"),
              (cfg.lr > 0, "--lr must be > 0"), (0 <= cfg.ema < 1, "--ema must lie in [0, 1)"),
              (0 <= cfg.label_dropout < 1, "--label-dropout must lie in [0, 1)"),
              (cfg.warmup >= 0 and cfg.grad_clip >= 0, "--warmup and --grad-clip must be >= 0"),
              (min(cfg.ckpt_every, cfg.log_every, cfg.sample_every) >= 0, "intervals must be >= 0")]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)
    get_loss(cfg.loss)


def train(cfg: TrainConfig, device=None) -> dict:
    """Train per ``cfg``; returns a summary {"step", "seconds", "img_per_s", "loss", "out"}."""
    validate(cfg)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(cfg.out)
    ckpt = out / CKPT
    if ckpt.exists() and not cfg.resume:
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if cfg.resume and not ckpt.exists():
        raise UserError(f"{ckpt}: no checkpoint to resume from")
    try:
        sde = get_sde(cfg.sde)
    except ValueError as e:
        raise UserError(str(e)) from None
    data = load_dataset(cfg.data, cfg.image_size, cfg.channels, seed=cfg.seed, download=cfg.download)
    if len(data) == 0:
        raise UserError(f"{cfg.data}: the dataset is empty")

    with distributed(device) as (rank, world):
        if cfg.batch_size % world:
            raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, data).to(device)
        ema = EMA(model, cfg.ema)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        start = load_checkpoint(ckpt, model, ema, opt, cfg) if cfg.resume else 0
        step_module = LossModule(model, cfg)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel
            step_module = DistributedDataParallel(step_module, device_ids=[device.index] if device.type == "cuda" else None)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.json", json.dumps({"hparams": hparams(cfg), "steps": cfg.steps}, indent=2) + "\n")
            _prepare_log(out / "log.csv", start)
        summary = _loop(cfg, data, sde, model, ema, opt, step_module, start, rank, world, device, out)
    return summary


def _loop(cfg, data, sde, model, ema, opt, step_module, start, rank, world, device, out) -> dict:
    from tqdm.auto import tqdm
    B, b = cfg.batch_size, cfg.batch_size // world
    batches = Batches(len(data), B, cfg.seed)
    null = model.num_classes
    bar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.progress and rank == 0), unit="step",
               mininterval=1.0 if os.isatty(2) else 30.0, dynamic_ncols=True)
    t0, seen, losses, step, stop = time.time(), 0, [], start, False
    log = open(out / "log.csv", "a", newline="") if rank == 0 else None
    writer = csv.DictWriter(log, LOG_FIELDS) if log else None
    tb = _tensorboard(out) if rank == 0 else None
    model.train()
    try:
        while step < cfg.steps and not stop:
            g = torch.Generator().manual_seed(_step_seed(cfg.seed, step))
            idx = batches.indices(step)
            x0 = data.x[idx]
            labels = None
            if null:
                labels = data.labels[idx].clone()
                labels[torch.rand(B, generator=g) < cfg.label_dropout] = null
            draws = draw_randomness(cfg, sde, B, data.shape, g)
            sl = slice(rank * b, (rank + 1) * b)                        # this rank's shard
            x0 = x0[sl].to(device)
            labels = labels[sl].to(device) if labels is not None else None
            draws = {k: v[sl].to(device) for k, v in draws.items()}
            torch.manual_seed(_step_seed(cfg.seed, step, 2 + rank))     # network dropout
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr
            for group in opt.param_groups:
                group["lr"] = lr
            loss = step_module(x0, labels, draws)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip else float("inf"))
            opt.step()
            ema.update(model, step)
            step += 1
            seen += B
            losses.append(loss.item())
            elapsed = time.time() - t0
            if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.steps):
                mean_loss = _all_mean(sum(losses) / len(losses), world)
                losses = []
                if rank == 0:
                    writer.writerow({"step": step, "loss": f"{mean_loss:.6g}", "lr": f"{lr:.3g}", "grad_norm": f"{float(gn):.4g}",
                                     "ema_decay": f"{ema.rate(step - 1):.6g}", "img_per_s": f"{seen / elapsed:.1f}",
                                     "elapsed_s": f"{elapsed:.1f}"})
                    log.flush()
                    if tb is not None:
                        tb.add_scalar("loss", mean_loss, step)
                        tb.add_scalar("img_per_s", seen / elapsed, step)
                    bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{seen / elapsed:.0f}")
            bar.update(1)
            if cfg.max_minutes is not None:
                stop = bool(_all_mean(float(elapsed > 60 * cfg.max_minutes), world) > 0)
            last = step == cfg.steps or stop
            if rank == 0 and ((cfg.ckpt_every and step % cfg.ckpt_every == 0) or last):
                save_checkpoint(out / CKPT, model, ema, opt, step, cfg)
                save_bundle(out / "model", ema.model, shape=data.shape, name=Path(cfg.out).name,
                            data_range=data.data_range or (-1.0, 1.0), data=cfg.data,
                            extra={"train": hparams(cfg), "step": step})
            if rank == 0 and cfg.sample_every and (step % cfg.sample_every == 0 or last):
                try:
                    sample_pictures(ema.model, data, out / "samples", step, cfg.seed)
                except (UserError, FloatingPointError) as e:      # a diverged model: keep training, say so
                    print(f"warning: no sample grid at step {step}: {e}", file=sys.stderr)
                model.train()
            _barrier(world) if last or (cfg.ckpt_every and step % cfg.ckpt_every == 0) else None
    finally:
        bar.close()
        if log:
            log.close()
        if tb is not None:
            tb.close()
    elapsed = time.time() - t0
    return {"step": step, "seconds": elapsed, "img_per_s": seen / max(elapsed, 1e-9), "out": str(out),
            "loss": loss.item() if step > start else float("nan")}

"""The training loop: Adam with warm-up and clipping, EMA, logs, checkpoints, pictures, DDP."""
from __future__ import annotations

import contextlib
import csv
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from sdekit.models.accel import Acceleration, accelerate, grad_scaler
from sdekit.data.datasets import load_dataset
from sdekit.core.errors import UserError
from sdekit.core.io import check_writable, remove_stale_temps, write_errors
from sdekit.core.sde import get_sde
from sdekit.core.threads import default_threads, torch_threads
from sdekit.tasks.train.checkpoint import CKPT, check_hparams, read_checkpoint, restore, save_checkpoint
from sdekit.tasks.train.config import TrainConfig, validate
from sdekit.tasks.train.distributed import all_mean, barrier, dist_env, distributed
from sdekit.tasks.train.ema import EMA
from sdekit.tasks.train.folder import holds_run, lock_run, write_run_config
from sdekit.tasks.train.log import LOG_FIELDS, prepare_log, tensorboard
from sdekit.tasks.train.model import LossModule, build_model, diffusers_init, init_from, load_teacher, save_model
from sdekit.tasks.train.pictures import sample_pictures
from sdekit.tasks.train.seeds import Batches, draw_randomness, step_seed
from sdekit.tasks.train.step import optimizer_step

__all__ = ["train"]


def train(cfg: TrainConfig, device=None) -> dict:
    """Train per ``cfg``; returns a summary {"step", "seconds", "img_per_s", "loss", "out", "threads",
    "removed", "complete", "signal"} ("removed": how many temporary files of killed writes were deleted
    from the run folder; "complete": True, and nothing else done, when ``cfg.resume`` finds the run at
    ``cfg.steps`` or beyond; "signal": the name of the signal, SIGINT or SIGTERM, that stopped the run
    early with a checkpoint of the step it had reached, else None).

    Everything is checked before any work (UserError): the numbers of ``cfg``, that ``cfg.out`` can be
    written and is used by no other run (:func:`sdekit.tasks.train.folder.lock_run`), that it holds no run
    unless ``cfg.resume`` or ``cfg.overwrite`` (which deletes the old checkpoint), a valid checkpoint
    if it has one on --resume, and that a resumed run keeps its hyper-parameters. ``cfg.resume`` on a
    folder without a checkpoint starts the run (with a note on stderr), so one command serves the first
    launch and every requeue. torch uses ``cfg.threads`` CPU threads while it trains; by default those of the
    checkpoint on --resume (the same count keeps a resumed run bitwise exact), else
    :func:`sdekit.core.threads.default_threads`.

    SIGINT and SIGTERM (what schedulers send before they kill) stop the run after its current step,
    with a checkpoint and the model bundle of that step; a second one of the same signal acts as usual."""
    validate(cfg)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    options = Acceleration(cfg.compile, cfg.channels_last, cfg.autocast)
    options.check(device)
    out = Path(cfg.out)
    if dist_env()[0] != 0:                      # under torchrun rank 0 alone writes, and holds the folder
        return _train(cfg, device, options, out, 1)
    check_writable(out)
    with lock_run(out):
        return _train(cfg, device, options, out, 0)


def _train(cfg: TrainConfig, device, options: Acceleration, out: Path, rank: int) -> dict:
    ckpt_path = out / CKPT
    there = holds_run(out) if rank == 0 else []
    if there and not (cfg.resume or cfg.overwrite):
        raise UserError(f"{out} already holds a run ({', '.join(there)}); pass --resume to continue it, "
                        "--overwrite to replace it, or choose another --out")
    saved = read_checkpoint(ckpt_path) if cfg.resume and ckpt_path.exists() else None
    try:
        sde = get_sde(cfg.sde)
    except ValueError as e:
        raise UserError(str(e)) from None
    if saved is not None:
        check_hparams(saved, cfg)
        if saved.step >= cfg.steps:                 # a requeued job whose run has finished
            return {"complete": True, "step": saved.step, "start": saved.step, "seconds": 0.0, "img_per_s": 0.0, "loss": float("nan"),
                    "out": str(out), "threads": saved.threads or 0, "removed": 0, "signal": None}
    data = load_dataset(cfg.data, cfg.image_size, cfg.channels, seed=cfg.seed, download=cfg.download)
    if len(data) == 0:
        raise UserError(f"{cfg.data}: the dataset is empty")
    threads = cfg.threads or (saved.threads if saved is not None else None) or default_threads(dist_env()[1])
    if cfg.resume and saved is None and rank == 0:
        print(f"note: {out} holds no checkpoint yet; starting the run at step 0", file=sys.stderr)

    with torch_threads(threads), distributed(device) as (rank, world):
        if cfg.batch_size % world:
            raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, data)
        if cfg.init is not None and saved is None and diffusers_init(cfg) is None:
            init_from(model, cfg.init)
        sde = model.sde                                 # get_sde(cfg.sde), or a diffusers --init's own
        model = model.to(device)
        ema = EMA(model, cfg.ema)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        scaler = grad_scaler(options, device)
        start = restore(saved, model, ema, opt, scaler) if saved is not None else 0
        teacher = load_teacher(cfg, data).to(device) if cfg.teacher is not None else None
        step_module = LossModule(accelerate(model, options, device), cfg, teacher)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel
            step_module = DistributedDataParallel(step_module, device_ids=[device.index] if device.type == "cuda" else None)
        removed = []
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            if saved is None:
                ckpt_path.unlink(missing_ok=True)         # --overwrite: the replaced run's checkpoint
            for folder in (out, out / "model", out / "model" / "unet", out / "model" / "scheduler",
                           out / "samples"):            # what killed writes left
                removed += remove_stale_temps(folder)
            write_run_config(out, cfg)
            prepare_log(out / "log.csv", start)
        if rank == 0:
            print(startup_line(cfg, data, model, start, threads, world, device), flush=True)
        with StopSignals() as signals:
            summary = _loop(cfg, data, sde, model, ema, opt, scaler, step_module, start, rank, world, device, out,
                            threads, signals)
    return {**summary, "threads": threads, "removed": len(removed), "complete": False, "signal": signals.name}


def startup_line(cfg: TrainConfig, data, model, start: int, threads: int, world: int, device) -> str:
    """What the run is about to do, in one line: the data (images found, channels x size, classes), the SDE,
    loss and network (parameters), the batch, threads and device, the steps and the recipe."""
    n = sum(p.numel() for p in model.parameters())
    shape = "x".join(map(str, data.shape))
    classes = f", {model.num_classes} classes" if model.num_classes else ""
    recipe = f"; recipe {cfg.recipe}" if cfg.recipe else ""
    limit = f", at most {cfg.max_minutes:g} min" if cfg.max_minutes is not None else ""
    procs = f" x {world} processes" if world > 1 else ""
    return (f"training on {cfg.data}: {len(data)} images {shape}{classes}; {cfg.sde} SDE, {cfg.loss} loss, "
            f"{type(model.net).__name__} {n / 1e6:.2f} M parameters; batch {cfg.batch_size}, {threads} thread"
            f"{'s' if threads > 1 else ''}{procs} on {device}; steps {start} -> {cfg.steps}{limit}{recipe}")


class StopSignals:
    """While active (in the main thread): SIGINT and SIGTERM are remembered (``received``, its ``name``)
    rather than acted on, so the loop can stop after its step with a checkpoint; a second signal of the
    same kind acts as it would have (KeyboardInterrupt, or the default: the end of the process)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received, self.previous = None, {}

    @property
    def name(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name

    def _on(self, signum, frame):
        if self.received == signum:
            signal.signal(signum, self.previous[signum])
            signal.raise_signal(signum)
        self.received = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():        # signals ignored (nohup) stay ignored
            self.previous = {s: signal.signal(s, self._on) for s in self.SIGNALS if signal.getsignal(s) != signal.SIG_IGN}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def _loop(cfg, data, sde, model, ema, opt, scaler, step_module, start, rank, world, device, out, threads,
          signals: StopSignals) -> dict:
    from sdekit.core.bars import progress_bar
    B, b = cfg.batch_size, cfg.batch_size // world
    batches = Batches(len(data), B, cfg.seed)
    conditional = model.num_classes > 0
    bar = progress_bar(total=cfg.steps, initial=start, disable=not (cfg.progress and rank == 0), unit="step",
               mininterval=1.0 if os.isatty(2) else 30.0, dynamic_ncols=True)
    t0, seen, losses, step, stop = time.time(), 0, [], start, False
    log = open(out / "log.csv", "a", newline="") if rank == 0 else None
    writer = csv.DictWriter(log, LOG_FIELDS) if log else None
    tb = tensorboard(out) if rank == 0 else None
    model.train()
    try:
        while step < cfg.steps and not stop:
            g = torch.Generator().manual_seed(step_seed(cfg.seed, step))
            idx = batches.indices(step)
            x0 = data.x[idx]
            labels = None
            if conditional:
                labels = data.labels[idx].clone()
                labels[torch.rand(B, generator=g) < cfg.label_dropout] = -1     # no label: the null embedding
            draws = draw_randomness(cfg, sde, B, data.shape, g)
            sl = slice(rank * b, (rank + 1) * b)                        # this rank's shard
            x0 = x0[sl].to(device)
            labels = labels[sl].to(device) if labels is not None else None
            draws = {k: v[sl].to(device) for k, v in draws.items()}
            torch.manual_seed(step_seed(cfg.seed, step, 2 + rank))      # network dropout
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr
            for group in opt.param_groups:
                group["lr"] = lr
            loss, gn = optimizer_step(step_module, model.parameters(), opt, scaler, cfg.grad_clip, x0, labels, draws)
            ema.update(model, step)
            step += 1
            seen += B
            losses.append(loss.item())
            elapsed = time.time() - t0
            if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.steps):
                mean_loss = all_mean(sum(losses) / len(losses), world)
                losses = []
                if rank == 0:
                    with write_errors(out / "log.csv"):           # a full disk: one line naming the log
                        writer.writerow({"step": step, "loss": f"{mean_loss:.6g}", "lr": f"{lr:.3g}",
                                         "grad_norm": f"{float(gn):.4g}", "ema_decay": f"{ema.rate(step - 1):.6g}",
                                         "img_per_s": f"{seen / elapsed:.1f}", "elapsed_s": f"{elapsed:.1f}"})
                        log.flush()
                    if tb is not None:
                        tb.add_scalar("loss", mean_loss, step)
                        tb.add_scalar("img_per_s", seen / elapsed, step)
                    post = {"loss": f"{mean_loss:.4f}", "img_s": f"{seen / elapsed:.0f}"}
                    if cfg.max_minutes is not None:          # the bar's ETA is for --steps; the limit may come first
                        left = 60 * cfg.max_minutes - elapsed
                        if left < (cfg.steps - step) * elapsed / max(step - start, 1):
                            post["stops_in"] = f"{max(left, 0) / 60:.0f} min (--max-minutes)"
                    bar.set_postfix(post)
            bar.update(1)
            halt = signals.received is not None or (cfg.max_minutes is not None and elapsed > 60 * cfg.max_minutes)
            stop = bool(all_mean(float(halt), world) > 0) if world > 1 else halt     # every rank stops at one step
            last = step == cfg.steps or stop
            if rank == 0 and ((cfg.ckpt_every and step % cfg.ckpt_every == 0) or last):
                save_checkpoint(out / CKPT, model, ema, opt, step, cfg, extra={"threads": threads}, scaler=scaler)
                save_model(out / "model", ema.model, cfg, data, step)
            if rank == 0 and cfg.sample_every and (step % cfg.sample_every == 0 or last) and signals.received is None:
                try:
                    sample_pictures(ema.model, data, out / "samples", step, cfg.seed)
                except (UserError, FloatingPointError) as e:      # a diverged model: keep training, say so
                    print(f"warning: no sample grid at step {step}: {e}", file=sys.stderr)
                model.train()
            barrier(world) if last or (cfg.ckpt_every and step % cfg.ckpt_every == 0) else None
    finally:
        bar.close()
        if log:
            with contextlib.suppress(OSError):                # a full disk was reported where it happened
                log.close()
        if tb is not None:
            tb.close()
    elapsed = time.time() - t0
    return {"step": step, "start": start, "seconds": elapsed, "img_per_s": seen / max(elapsed, 1e-9), "out": str(out),
            "loss": loss.item() if step > start else float("nan")}

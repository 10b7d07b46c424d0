"""One prepared script for a GPU lent for a few minutes, under one wall-clock budget.

It continues the colour model and the consistency student on the GPU and measures the few-step samplers and half
precision on the bundled MNIST network.

Steps, in one process, each timed and written to --out as soon as it completes (atomically):

1. ``env``: the device, torch / CUDA / cuDNN versions, GPU memory (env.json). ``--device cuda`` without a
   GPU stops here with one line and exit code 2.
2. ``train-emoji``: ``sdekit train --recipe emoji --init emoji --data emoji:DIR`` (the shipped colour model's
   recipe, from its weights) for its share of the budget (``--max-minutes``), checkpoints every --ckpt-every
   steps in RUNS/emoji-gpu (resumable anywhere: ``sdekit train --out RUNS/emoji-gpu --resume``).
3. ``distil``: the same for the consistency student, ``--recipe mnist-cd --init mnist-cd --data mnist:DIR``
   (teacher mnist), in RUNS/mnist-cd-gpu.
4. ``bench``: the few-step FID table of bench_fewstep_network.py on the bundled MNIST network (sdekit's
   dpm_solver, abm, heun, ddim at 3-10 evaluations beside diffusers' DPMSolverMultistep and DDIM, where diffusers
   imports), and the half-precision rows (the same samplers with the network in float16 and bfloat16 beside
   float32, from the same noise): bench.md and bench.json, rewritten after every cell.

steps.json holds every step's record (status, wall seconds, command, notes) and is rewritten after each step.

Batch. The runs train at --batch B (default 256 on a GPU) instead of the recipe's B0 = 64: a 1-2 M-parameter
U-Net at 28-32 pixels is expected to leave a GPU mostly idle at 64, so a larger batch should pass more images in
the same minutes (not measured yet: each run's last log row in steps.json gives its images/s). The optimiser
follows the batch (:func:`scaled`): lr * sqrt(B / B0) (Adam's square-root rule, Malladi et al. 2022), the EMA
decay ema ** (B / B0) and warmup * B0 / B warm-up steps, so the EMA's half-life and the warm-up stay the same
counted in images. The recipe's own 64 would not make the run bitwise comparable to the CPU runs anyway (GPU
kernels sum in another order); --batch 64 gives the recipe's values exactly.

Return channel. The device machine returns at most 8 files of at most 16 MiB each, two folders deep, and a
checkpoint is 18-25 MB: so the run folders live in --runs (default ./gpu-runs) and, after each training step,
are packed into --out as one gzipped tar in parts of --pack-mib MiB (runs.tar.gz.00, .01, ...; about 45 MiB
for both runs, 3 parts; ``cat runs.tar.gz.* | tar xz`` gives runs/emoji-gpu and runs/mnist-cd-gpu back).
Everything in --out: env.json, steps.json, bench.md, bench.json and the parts.

    pip install -q -e . && python benchmarks/gpu.py --device cuda --minutes 8 \\
        --emoji shared/data/emoji --mnist shared/data/mnist --out $OUT
    python benchmarks/gpu.py --quick --device cpu --out tmp --minutes 2 --emoji DIR --mnist DIR   # tiny sizes
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import platform
import subprocess
import sys
import tarfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

STEPS = ("env", "train-emoji", "distil", "bench")
SHARES = {"train-emoji": 0.35, "distil": 0.25, "bench": 0.40}   # of the budget; bench also gets what is left
RUN_NAMES = {"train-emoji": "emoji-gpu", "distil": "mnist-cd-gpu"}
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Sizes:
    """Everything that sets how much work a step does. FULL fits --minutes 8 on an H100; QUICK runs the same
    code in seconds on a CPU."""

    batch: int                  # training images per step (both runs)
    emoji_steps: int            # --steps of the emoji run (the limit is --max-minutes; a later --resume goes on)
    cd_steps: int               # --steps of the consistency run
    ckpt_every: int
    sample_every: int
    log_every: int
    n: int                      # samples per bench cell and seed
    ref: int | None             # reference images of the judge (None: all, 5000 of MNIST's test split)
    seeds: tuple
    nfes: tuple
    impls: tuple                # implementations of bench_fewstep_network.METHODS
    half: tuple                 # (sampler, evaluations) rows run in float32, float16 and bfloat16
    threads: int | None         # torch CPU threads of this process (None: torch's default)
    min_minutes: float          # a step with less budget left is skipped
    train_overhead_min: float   # of a training step's share: data loading, start-up, the last checkpoint


FULL = Sizes(batch=256, emoji_steps=60000, cd_steps=20000, ckpt_every=200, sample_every=1000, log_every=25,
             n=5000, ref=None, seeds=(0, 1, 2), nfes=(3, 4, 5, 6, 8, 10),
             impls=("sdekit dpm_solver GITS grid", "sdekit dpm_solver order 3 GITS grid", "diffusers DPM-Solver++(2M)",
                    "diffusers UniPC", "sdekit abm", "sdekit heun", "sdekit ddim GITS grid", "diffusers DDIM"),
             half=(("dpm_solver", 10), ("abm", 20)), threads=None, min_minutes=0.5, train_overhead_min=0.3)
QUICK = Sizes(batch=8, emoji_steps=2, cd_steps=2, ckpt_every=1, sample_every=0, log_every=1,
              n=16, ref=256, seeds=(0,), nfes=(3,), impls=("sdekit dpm_solver", "diffusers DPM-Solver++(2M)"),
              half=(("dpm_solver", 1),), threads=1, min_minutes=0.01, train_overhead_min=0.0)


def scaled(recipe: dict, batch: int) -> dict:
    """The optimiser settings of ``recipe`` (a TrainConfig dict with batch_size B0, lr, ema, warmup) for batch B:
    lr * sqrt(B / B0) (Adam's square-root scaling rule, Malladi et al. 2022, "On the SDEs and scaling rules for
    adaptive gradient algorithms"), ema ** (B / B0) and ceil(warmup * B0 / B) steps (the EMA's half-life and
    the warm-up unchanged in images). At B = B0 the recipe's own values."""
    k = batch / recipe["batch_size"]
    return {"batch_size": batch, "lr": recipe["lr"] * math.sqrt(k), "ema": recipe["ema"] ** k,
            "warmup": math.ceil(recipe["warmup"] / k)}


# ---- budget and output ---------------------------------------------------------------------------

class Budget:
    """One wall-clock budget of ``minutes`` from now."""

    def __init__(self, minutes: float):
        self.minutes, self.t0 = minutes, time.monotonic()

    def left(self) -> float:
        """Minutes left (negative when over)."""
        return self.minutes - (time.monotonic() - self.t0) / 60

    def share(self, name: str) -> float:
        """The minutes step ``name`` may use: its share of the budget, or what is left if less; the last
        step (bench) gets all that is left."""
        if name == STEPS[-1]:
            return self.left()
        return min(SHARES[name] * self.minutes, self.left())


class Out:
    """The results folder: every file written atomically (a temporary file renamed)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def json(self, name: str, data) -> Path:
        return self.text(name, json.dumps(data, indent=1, default=str))

    def text(self, name: str, text: str) -> Path:
        from sdekit.core.io import atomic_write_text
        atomic_write_text(self.path / name, text)
        return self.path / name

    def binary(self, name: str, data: bytes) -> Path:
        from sdekit.core.io import atomic_path
        with atomic_path(self.path / name) as tmp:
            tmp.write_bytes(data)
        return self.path / name


def say(*parts):
    print("gpu.py:", *parts, flush=True)


# ---- steps ---------------------------------------------------------------------------------------

def step_env(ctx) -> dict:
    """The machine: device name, torch / CUDA / cuDNN versions, GPU memory, the precision switches in force."""
    from common import load_diffusers, machine
    dev = torch.device(ctx.args.device)
    info = {"device": str(dev), "machine": machine(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
            else None, "cpus": os.cpu_count(), "argv": sys.argv[1:], "quick": ctx.args.quick,
            "sizes": dataclasses.asdict(ctx.sizes), "minutes": ctx.budget.minutes, "commit": _commit()}
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info(dev)
        p = torch.cuda.get_device_properties(dev)
        info.update({"gpu": torch.cuda.get_device_name(dev), "capability": f"{p.major}.{p.minor}",
                     "gpu_memory_gib": round(total / 2 ** 30, 2), "gpu_memory_free_gib": round(free / 2 ** 30, 2),
                     "multiprocessors": p.multi_processor_count, "bf16": torch.cuda.is_bf16_supported(),
                     "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32})
    diffusers, why = load_diffusers()
    info["diffusers"] = diffusers.__version__ if diffusers is not None else why
    ctx.out.json("env.json", info)
    say(f"{info.get('gpu', info['machine'])}; torch {info['torch']}, CUDA {info['cuda']}, "
        f"memory {info.get('gpu_memory_gib', '-')} GiB")
    return {"status": "ok", "gpu": info.get("gpu")}


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def train_step(ctx, name: str, recipe_name: str, data: str, steps: int) -> dict:
    """``sdekit train --recipe R --init R --data DATA`` with the batch of ctx.sizes (optimiser scaled to it),
    in RUNS/<run name>, for this step's share of the budget; resumes the run if the folder holds one."""
    from sdekit.apps.cli import main as sdekit_main
    from sdekit.tasks.train import read_checkpoint
    from sdekit.tasks.train.recipes import recipe
    sz, run = ctx.sizes, ctx.runs / RUN_NAMES[name]
    opt = scaled(recipe(recipe_name), sz.batch)
    minutes = max(ctx.budget.share(name) - sz.train_overhead_min, 0.01)
    argv = ["train", "--recipe", recipe_name, "--init", recipe_name, "--data", data, "--out", str(run), "--resume",
            "--batch-size", str(opt["batch_size"]), "--lr", f"{opt['lr']:.6g}", "--ema", f"{opt['ema']:.6g}",
            "--warmup", str(opt["warmup"]), "--steps", str(steps), "--max-minutes", f"{minutes:.3f}",
            "--ckpt-every", str(sz.ckpt_every), "--sample-every", str(sz.sample_every), "--log-every",
            str(sz.log_every), "--threads", "1", "--no-progress", "--device", ctx.args.device]
    say("sdekit " + " ".join(argv))
    rc = sdekit_main(argv)
    rec = {"command": "sdekit " + " ".join(argv), "exit_code": rc, "run": str(run), "optimiser": opt,
           "max_minutes": minutes,
           "resume": f"sdekit train --out {run} --resume (from a folder where the path in {data} resolves; after "
                     f"cat runs.tar.gz.* | tar xz the run is runs/{run.name})"}
    ckpt = run / "checkpoint.safetensors"
    if ckpt.exists():
        rec["step"] = read_checkpoint(ckpt).step
        rec["log"] = _last_row(run / "log.csv")
    rec["status"] = "ok" if rc == 0 and ckpt.exists() else "error"
    if rec["status"] == "error":
        rec["note"] = f"sdekit train exited with code {rc}" + ("" if ckpt.exists() else "; no checkpoint written")
    rec["signal"] = rc in (130, 143)          # SIGINT / SIGTERM stopped the run (with a checkpoint): stop here too
    if ctx.args.pack_mib > 0 and ctx.runs.exists():
        rec["packed"] = pack(ctx.runs, ctx.out, ctx.args.pack_mib)
    return rec


def _last_row(path: Path) -> dict | None:
    import csv
    if not path.exists():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[-1] if rows else None


def step_train_emoji(ctx) -> dict:
    if not ctx.args.emoji:
        return {"status": "skipped", "note": "no --emoji folder given"}
    return train_step(ctx, "train-emoji", "emoji", f"emoji:{ctx.args.emoji}", ctx.sizes.emoji_steps)


def step_distil(ctx) -> dict:
    if not ctx.args.mnist:
        return {"status": "skipped", "note": "no --mnist folder given"}
    return train_step(ctx, "distil", "mnist-cd", f"mnist:{ctx.args.mnist}", ctx.sizes.cd_steps)


def pack(runs: Path, out: Out, part_mib: float) -> list[str]:
    """``runs`` as one gzipped tar (top folder ``runs``, without lock files) in parts of at most ``part_mib`` MiB
    in ``out``: runs.tar.gz.00, .01, ... (older parts beyond the new count removed). Returns the part names."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        tar.add(runs, arcname="runs", filter=lambda ti: None if Path(ti.name).name == ".lock" else ti)
    data, size = buf.getvalue(), int(part_mib * 2 ** 20)
    names = [f"runs.tar.gz.{i:02d}" for i in range(max(1, math.ceil(len(data) / size)))]
    for i, name in enumerate(names):
        out.binary(name, data[i * size:(i + 1) * size])
    for old in out.path.glob("runs.tar.gz.*"):
        if old.name not in names:
            old.unlink()
    say(f"packed {runs} into {len(names)} part(s), {len(data) / 2 ** 20:.1f} MiB")
    return names


class JudgeOn(torch.nn.Module):
    """The judge's features (what FID and KID compare) computed on ``device`` and handed back on the CPU, where
    the metrics add them up; each distinct batch of images once (keyed by its bytes), so the reference's features
    are computed once for all cells, not once per cell."""

    def __init__(self, judge: torch.nn.Module, device):
        super().__init__()
        self.judge, self.device, self.seen = judge.to(device), device, {}
        self.num_features = getattr(judge, "num_features", 0)

    @torch.no_grad()
    def forward(self, u: torch.Tensor) -> torch.Tensor:
        import hashlib
        c = u.detach().cpu().contiguous()
        key = (tuple(c.shape), str(c.dtype), hashlib.blake2b(c.numpy().tobytes(), digest_size=16).hexdigest())
        if key not in self.seen:
            self.seen[key] = self.judge(c.to(self.device)).float().cpu()
        return self.seen[key]


def step_bench(ctx) -> dict:
    """The few-step FID table and the half-precision rows on the bundled MNIST network, on ctx's device."""
    import sdekit
    from bench_fewstep_network import METHODS, measure, score, table
    from common import load_diffusers, machine
    from sdekit.tasks.judge import held_out, load_judge
    from sdekit.tasks.metrics import fid, kid
    sz, args = ctx.sizes, ctx.args
    data = f"mnist:{args.mnist}" if args.mnist else "mnist"      # no folder: the shipped held-out subset
    nfes, seeds, n = sz.nfes, sz.seeds, sz.n
    model = sdekit.load("mnist", device=args.device)
    judge, held = JudgeOn(load_judge(data), args.device), held_out(data, model.shape[-1])
    ref = held.reference[:sz.ref]
    floor = {"fid": fid(ref, held.real[:n], judge), "kid": kid(ref, held.real[:n], judge, subsets=10).mean}
    runners = {impl: (method, r) for method, impls in METHODS.items() for impl, r in impls.items()}
    _, no_diffusers = load_diffusers()
    res = {"device": ctx.env_name, "machine": machine(), "command": "python benchmarks/gpu.py " + " ".join(sys.argv[1:]),
           "data": data, "note": held.note, "n": n, "seeds": list(seeds), "floor": floor, "rows": [], "half": [],
           "not_run": {}}
    with torch.no_grad():                                     # the first evaluation pays the device's start-up
        model.denoise(torch.zeros(2, *model.shape, device=model.device), 1.0)
    for impl in sz.impls:
        if impl not in runners:
            res["not_run"][impl] = f"unknown implementation (known: {', '.join(runners)})"
            continue
        if impl.startswith("diffusers") and no_diffusers:
            res["not_run"][impl] = no_diffusers
            continue
        method, runner = runners[impl]
        for nfe in nfes:
            if ctx.budget.left() < ctx.reserve:
                res["not_run"][f"{impl} NFE {nfe}"] = "the budget ran out"
                continue
            try:
                cell = measure(model, runner, nfe, seeds, n, ref, judge, chunk=0)
            except Exception as e:                            # one implementation's failure is a line in the table
                res["not_run"][f"{impl} NFE {nfe}"] = f"{type(e).__name__}: {e}"
                continue
            res["rows"].append({"method": method, "impl": impl, "nfe": nfe, **cell})
            say(f"{impl} NFE {nfe} ({cell['nfe_used']}): {score(cell)}, {np.mean(cell['sample_seconds']):.2f} s/seed")
            write_bench(ctx.out, res, nfes, table)
    for sampler, nfe in sz.half:
        half_rows(ctx, res, model, runners.get(f"sdekit {sampler}", (None, None))[1], sampler, nfe, seeds, n, ref, judge)
        write_bench(ctx.out, res, nfes, table)
    write_bench(ctx.out, res, nfes, table)
    return {"status": "ok" if res["rows"] else "error", "cells": len(res["rows"]), "half_rows": len(res["half"]),
            "not_run": res["not_run"]}


def half_rows(ctx, res, model, runner, sampler, nfe, seeds, n, ref, judge):
    """``runner`` (sdekit's ``sampler``) at ``nfe`` evaluations with the network in float32, float16 and bfloat16
    from the same noise: FID per seed, the relative RMS difference of the samples from float32's, and the
    sampling seconds."""
    from bench_fewstep_network import measure
    if runner is None:
        res["not_run"][f"{sampler} NFE {nfe} half precision"] = f"no runner 'sdekit {sampler}' in the bench"
        return
    base = None
    try:
        for dtype in DTYPES:
            name = str(dtype).removeprefix("torch.")
            if ctx.budget.left() < ctx.reserve:
                res["not_run"][f"{sampler} NFE {nfe} {name}"] = "the budget ran out"
                continue
            model.to(dtype=dtype)
            try:
                cell = measure(model, runner, nfe, seeds, n, ref, judge, keep=True, chunk=0)
            except Exception as e:
                res["not_run"][f"{sampler} NFE {nfe} {name}"] = f"{type(e).__name__}: {e}"
                continue
            samples = cell.pop("samples")
            base = samples if dtype is torch.float32 else base
            cell["rel_rms_vs_float32"] = None if base is None else [
                float((u.double() - b.double()).norm() / b.double().norm()) for u, b in zip(samples, base)]
            res["half"].append({"sampler": sampler, "nfe": nfe, "dtype": name, **cell})
            say(f"{sampler} NFE {nfe} {name}: FID {cell['fid']}, rel {cell['rel_rms_vs_float32']}")
    finally:
        model.to(dtype=torch.float32)


def write_bench(out: Out, res: dict, nfes, table) -> None:
    """bench.json and bench.md from the cells measured so far."""
    out.json("bench.json", res)
    lines = [f"{res['command']}", "", f"device: {res['device']}; {res['machine']}", "",
             f"Bundled MNIST network, {res['n']} samples per cell and seed, seeds {res['seeds']}, FID in the MNIST "
             f"judge against {res['data']}{'; ' + res['note'] if res['note'] else ''}.", ""]
    if res["rows"]:
        lines += [table(res["floor"], res["rows"], list(nfes)), ""]
        lines += ["sampling seconds per seed (mean):", "",
                  "| implementation | " + " | ".join(f"NFE {k}" for k in nfes) + " |", "|---|" + "---|" * len(nfes)]
        cell = {(r["impl"], r["nfe"]): r for r in res["rows"]}
        for impl in dict.fromkeys(r["impl"] for r in res["rows"]):
            lines.append(f"| {impl} | " + " | ".join(f"{np.mean(cell[(impl, k)]['sample_seconds']):.3f}"
                                                      if (impl, k) in cell else "-" for k in nfes) + " |")
    if res["half"]:
        lines += ["", "Half precision: the network in float16 / bfloat16, the solver's state in float32, from the "
                  "same noise as float32:", "",
                  "| sampler | NFE | network | FID [min, max] (KID where FID is undefined) | rel. RMS vs float32 "
                  "| sampling s/seed |", "|---|---|---|---|---|---|"]
        from bench_fewstep_network import score
        for r in res["half"]:
            rel = "-" if r["rel_rms_vs_float32"] is None else f"{np.mean(r['rel_rms_vs_float32']):.2e}"
            lines.append(f"| {r['sampler']} | {r['nfe']} | {r['dtype']} | {score(r)} | {rel} "
                         f"| {np.mean(r['sample_seconds']):.3f} |")
    if res["not_run"]:
        lines += ["", "not run:"] + [f"- {k}: {v}" for k, v in res["not_run"].items()]
    out.text("bench.md", "\n".join(lines) + "\n")


STEP_FUNCS = {"env": step_env, "train-emoji": step_train_emoji, "distil": step_distil, "bench": step_bench}


# ---- driver --------------------------------------------------------------------------------------

@dataclass
class Context:
    args: argparse.Namespace
    sizes: Sizes
    budget: Budget
    out: Out
    runs: Path
    reserve: float              # minutes kept for the last writes
    env_name: str = ""


def _ints(s):
    return tuple(int(v) for v in s.split(",") if v.strip())


def _strs(s):
    return tuple(v.strip() for v in s.split(",") if v.strip())


def _half(s):
    return tuple((a, int(b)) for a, b in (v.split(":") for v in _strs(s)))


def _show(v) -> str:
    """A size as its flag is written: 3,4,5 or dpm_solver:10,abm:20."""
    if isinstance(v, tuple):
        return ",".join(":".join(map(str, x)) if isinstance(x, tuple) else str(x) for x in v)
    return str(v)


SIZE_FLAGS = {   # Sizes field -> (type, help); the flag overrides FULL's (or QUICK's) value
    "batch": (int, "training batch of both runs"),
    "emoji_steps": (int, "--steps of the emoji run (--max-minutes stops it first)"),
    "cd_steps": (int, "--steps of the consistency run (--max-minutes stops it first)"),
    "ckpt_every": (int, "checkpoint interval of both runs"),
    "n": (int, "bench samples per cell and seed"),
    "seeds": (_ints, "bench seeds"),
    "nfes": (_ints, "bench evaluations"),
    "impls": (_strs, "bench implementations (names in bench_fewstep_network.METHODS)"),
    "half": (_half, "half-precision rows, sampler:evaluations (sdekit's samplers of bench_fewstep_network)"),
}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu; cuda without a GPU stops at once")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of all steps (default 8)")
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu-out", help="results folder (default $OUT or ./gpu-out)")
    p.add_argument("--runs", default="gpu-runs", help="where the training runs live (default ./gpu-runs)")
    p.add_argument("--pack-mib", type=float, default=15.5,
                   help="pack --runs into --out as runs.tar.gz.NN parts of at most this many MiB (0: do not)")
    p.add_argument("--emoji", default=None, help="the emoji data folder (emoji.json, twemoji-64/, noto-64/)")
    p.add_argument("--mnist", default=None, help="the MNIST idx files' folder (else the bench uses the shipped subset)")
    p.add_argument("--only", type=_strs, default=STEPS, help=f"steps to run, of {','.join(STEPS)}")
    p.add_argument("--quick", action="store_true", help="tiny sizes: the same code path in seconds on a CPU")
    for field, (kind, help_) in SIZE_FLAGS.items():
        p.add_argument("--" + field.replace("_", "-"), type=kind, default=None,
                       help=f"{help_} (default {_show(getattr(FULL, field))}; --quick: {_show(getattr(QUICK, field))})")
    args = p.parse_args(argv)
    unknown = [s for s in args.only if s not in STEPS]
    if unknown:
        p.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    base = QUICK if args.quick else FULL
    over = {k: getattr(args, k) for k in SIZE_FLAGS if getattr(args, k) is not None}
    return args, dataclasses.replace(base, **over)


def main(argv=None) -> int:
    args, sizes = parse(argv)
    budget = Budget(args.minutes)
    out = Out(args.out)
    from sdekit.core.errors import UserError
    from sdekit.core.placement import check_device
    try:
        check_device(args.device)
    except UserError as e:
        msg = f"--device: {e} (torch {torch.__version__}, built for CUDA {torch.version.cuda})"
        out.json("env.json", {"device": args.device, "error": msg, "torch": torch.__version__, "cuda": torch.version.cuda})
        print(f"gpu.py: error: {msg}", file=sys.stderr)
        return 2
    if sizes.threads:
        torch.set_num_threads(sizes.threads)
    ctx = Context(args, sizes, budget, out, Path(args.runs), reserve=0.1 if not args.quick else 0.0)
    ctx.env_name = torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else "cpu"
    records = {}
    for name in STEPS:
        if name not in args.only:
            continue
        allotted = budget.share(name) if name != "env" else budget.left()
        t = time.perf_counter()
        if allotted < sizes.min_minutes:
            rec = {"status": "skipped", "note": f"{budget.left():.2f} min left of {args.minutes:g}; the step needs "
                                                f"at least {sizes.min_minutes:g}"}
        else:
            try:
                rec = STEP_FUNCS[name](ctx)
            except Exception as e:                    # one step's failure is recorded; the others still run
                rec = {"status": "error", "note": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
        rec["wall_s"] = round(time.perf_counter() - t, 2)
        records[name] = rec
        out.json("steps.json", {"minutes": args.minutes, "left_min": round(budget.left(), 3), "steps": records})
        say(f"{name}: {rec['status']} in {rec['wall_s']:.1f} s" + (f" ({rec['note']})" if rec.get("note") else ""))
        if rec.get("signal"):
            break
    failed = [k for k, r in records.items() if r["status"] == "error"]
    say(f"done in {(args.minutes - budget.left()):.2f} min; results in {out.path}" +
        (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Compiled, channels-last and mixed-precision paths (sdekit.models.accel) against eager float32, in one process.

Two networks, each run eagerly in float32 and with each option of ``--compile``, ``--channels-last``
and ``--autocast`` (and combinations):

* (a) the default model's network (``sdekit.load()``: the 1.1 M-parameter U-Net, 28x28x1):
  training images/s (sdekit's training step: ``LossModule`` + ``optimizer_step``, the model's own
  recipe, batch 128, float16 with loss scaling) and sampling images/s (``model.sample``, batch 64,
  ``dpm_solver`` with ``--sample-steps`` evaluations per image);
* (b) a 256x256 ``diffusers.UNet2DModel`` with google/ddpm-church-256's configuration (random
  weights, as bench_pretrained.py builds it), loaded with ``sdekit.load``: denoiser evaluations/s at
  batch 1 (one evaluation is one sampling step of one image), and with ``--church-train`` (default on
  CUDA) training images/s of a denoising step (x0-MSE, Adam) at batch 1.

Every variant is built once and called once to warm up (that time, compilation included, is reported
as ``first_s``); then ``--repeats`` rounds call every variant in turn, starting at a different one
each round, so a background load slows all alike. Reported: the median rate, and the median over the
rounds of the rate divided by eager's of the same round (the ratio), plus the largest difference of
the outputs from eager's (relative to their RMS), the same inputs and noise.

On CUDA, TF32 is enabled for matrix products and convolutions (``torch.backends.cuda.matmul.allow_tf32``,
``torch.backends.cudnn.allow_tf32``; ``--no-tf32``: off), and the half-precision variants use float16
(training with a GradScaler) as well as bfloat16 where the GPU has it.

    python benchmarks/bench_compile.py [--device cuda] [--repeats 5] [--no-compile] [--no-church] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, md_table, median, save_json, save_text  # noqa: E402

import sdekit  # noqa: E402
from sdekit.models.accel import Acceleration, accelerate, grad_scaler  # noqa: E402


def variants(device: torch.device, with_compile: bool) -> list[Acceleration]:
    """Eager first, then each option alone and the combinations that make sense on ``device``."""
    halves = ["bf16"] if device.type == "cpu" else ["fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    out = [Acceleration(), Acceleration(channels_last=True)]
    out += [Acceleration(autocast=h) for h in halves] + [Acceleration(channels_last=True, autocast=h) for h in halves]
    if with_compile:
        out += [Acceleration(compile=True), Acceleration(compile=True, channels_last=True, autocast=halves[0])]
    return out


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- workloads: each builds, for one Acceleration, a function that runs once and returns (images, output) ----

def mnist_training(options, device, batch):
    from sdekit.tasks.train import LossModule, TrainConfig, draw_randomness
    from sdekit.tasks.train.step import optimizer_step
    base = sdekit.load()
    hp = {k: tuple(v) if isinstance(v, list) else v for k, v in base.config["train"].items()}
    cfg = TrainConfig(**hp)
    den = copy.deepcopy(base.net).to(device).train()
    for p in den.parameters():
        p.requires_grad_(True)
    step_module = LossModule(accelerate(den, options, device), cfg)
    opt, scaler = torch.optim.Adam(den.parameters(), lr=cfg.lr), grad_scaler(options, device)
    g = torch.Generator().manual_seed(0)
    x0 = (2 * torch.rand(batch, *base.shape, generator=g) - 1).to(device)
    labels = torch.randint(0, base.num_classes, (batch,), generator=g).to(device)
    draws = {k: v.to(device) for k, v in draw_randomness(cfg, den.sde, batch, base.shape, g).items()}

    def run():
        torch.manual_seed(0)                                      # the same dropout masks every call
        loss, _ = optimizer_step(step_module, den.parameters(), opt, scaler, cfg.grad_clip, x0, labels, draws)
        _sync(device)
        return batch, loss.detach()[None]
    return run


def mnist_sampling(options, device, batch, steps):
    model = sdekit.load(device=device).accelerate(options)

    @torch.no_grad()
    def run():
        x = model.sample(batch, sampler="dpm_solver", steps=steps, generator=torch.Generator().manual_seed(0))
        _sync(device)
        return batch, x
    return run


def church_folder(path: Path, quick: bool) -> Path:
    from bench_pretrained import CHURCH_256, QUICK, write_folder
    write_folder(path, QUICK if quick else CHURCH_256)
    return path


def church_sampling(options, device, folder):
    model = sdekit.load(folder, device=device).accelerate(options)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(1, *model.shape, generator=g).to(device)
    sigma = torch.tensor([1.0], device=device)

    @torch.no_grad()
    def run():
        out = model.denoise(y, sigma)
        _sync(device)
        return 1, out
    return run


def church_training(options, device, folder):
    model = sdekit.load(folder, device=device)
    den = model.net.train()
    for p in den.parameters():
        p.requires_grad_(True)
    fast = accelerate(den, options, device)
    opt, scaler = torch.optim.Adam(den.parameters(), lr=1e-5), grad_scaler(options, device)
    g = torch.Generator().manual_seed(0)
    x0 = (2 * torch.rand(1, *model.shape, generator=g) - 1).to(device)
    y = x0 + torch.randn(x0.shape, generator=g).to(device)
    sigma = torch.tensor([1.0], device=device)
    from sdekit.tasks.train.step import optimizer_step

    def run():
        loss, _ = optimizer_step(lambda: ((fast.denoise(y, sigma) - x0) ** 2).mean(), den.parameters(), opt, scaler, 0.0)
        _sync(device)
        return 1, loss.detach()[None]
    return run


# ---- measuring -------------------------------------------------------------------------------------

def measure(name: str, build, opts: list[Acceleration], repeats: int, compare: bool = True) -> list[dict]:
    """Build and warm up each variant, then ``repeats`` interleaved rounds (a rotated order each round)."""
    runs, first, outs = [], [], []
    for o in opts:
        fn = build(o)
        t0 = time.perf_counter()
        _, out = fn()
        first.append(time.perf_counter() - t0)
        runs.append(fn)
        outs.append(out.float().cpu())
        print(f"{name}: {o} ready (first call {first[-1]:.1f} s)", flush=True)
    rates = [[0.0] * repeats for _ in opts]
    for r in range(repeats):
        order = [(i + r) % len(opts) for i in range(len(opts))]
        for i in order:
            t0 = time.perf_counter()
            n, _ = runs[i]()
            rates[i][r] = n / (time.perf_counter() - t0)
        print(f"{name}: round {r + 1}/{repeats} " + " ".join(f"{opts[i]}={rates[i][r]:.3g}/s" for i in range(len(opts))),
              flush=True)
    rows = []
    ref = outs[0]
    scale = float(ref.pow(2).mean().sqrt()) or 1.0
    for o, f, rs, out in zip(opts, first, rates, outs):
        rows.append({"variant": str(o), "compile": o.compile, "channels_last": o.channels_last, "autocast": o.autocast,
                     "first_s": f, "rates": rs, "median": median(rs),
                     "ratio": median([a / b for a, b in zip(rs, rates[0])]),
                     "max_diff": float((out - ref).abs().max()) / scale if compare else None})
    return rows


def table(rows, unit: str, compare: bool) -> str:
    head = ["variant", f"{unit} (median)", "ratio to eager", "first call s"] + (["max diff / RMS"] if compare else [])
    body = [[r["variant"], f"{r['median']:.3g}", f"{r['ratio']:.2f}x", f"{r['first_s']:.1f}"]
            + ([f"{r['max_diff']:.1e}"] if compare else []) for r in rows]
    return md_table(head, body)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default: 5)")
    ap.add_argument("--train-batch", type=int, default=128)
    ap.add_argument("--sample-batch", type=int, default=64)
    ap.add_argument("--sample-steps", type=int, default=4, help="dpm_solver steps = evaluations per image (default: 4)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: sdekit's default)")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="leave out the torch.compile variants")
    ap.add_argument("--no-church", dest="church", action="store_false", help="leave out the 256x256 network")
    ap.add_argument("--church-train", action=argparse.BooleanOptionalAction, default=None,
                    help="also train the 256x256 network at batch 1 (default: on CUDA only)")
    ap.add_argument("--church-compile", action=argparse.BooleanOptionalAction, default=None,
                    help="compile variants for the 256x256 network too (default: on CUDA only; minutes on a CPU)")
    ap.add_argument("--no-tf32", dest="tf32", action="store_false", help="CUDA: keep float32 matrix products in float32")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test; results are not written)")
    ap.add_argument("--out", default="compile")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    from sdekit.core.threads import default_threads
    torch.set_num_threads(args.threads or default_threads())
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    if args.quick:
        args.train_batch, args.sample_batch, args.sample_steps, args.repeats = 8, 8, 2, 2
    cuda = device.type == "cuda"
    opts = variants(device, args.compile)
    results = {"machine": machine(), "device": str(device), "threads": torch.get_num_threads(),
               "tf32": cuda and args.tf32, "args": vars(args)}
    sections = [("mnist_sample", "mnist sample", lambda o: mnist_sampling(o, device, args.sample_batch, args.sample_steps),
                 opts, True),
                ("mnist_train", "mnist train", lambda o: mnist_training(o, device, args.train_batch), opts, False)]
    with tempfile.TemporaryDirectory() as tmp:
        if args.church:
            folder = church_folder(Path(tmp) / "church", args.quick)
            church_opts = variants(device, args.compile and (args.church_compile if args.church_compile is not None else cuda))
            sections.insert(1, ("church_sample", "church sample", lambda o: church_sampling(o, device, folder),
                                church_opts, True))
            if args.church_train if args.church_train is not None else cuda:
                sections.append(("church_train", "church train", lambda o: church_training(o, device, folder),
                                 church_opts, False))
        for key, name, build, variant_opts, compare in sections:
            results[key] = measure(name, build, variant_opts, args.repeats, compare)
            text = report(results, args)
            if not args.quick:                                   # what is measured so far, after each section
                save_json(args.out, results)
                save_text(f"{args.out}.md", text)
    print(text)


def report(res, args) -> str:
    """The markdown of what ``res`` holds so far."""
    what = {
        "mnist_train": (f"(a) the default model's network (1.1 M-parameter U-Net, 28x28x1), training at batch "
                        f"{args.train_batch} (sdekit's training step, the model's own recipe)", "images/s", False),
        "mnist_sample": (f"(a) sampling: `model.sample({args.sample_batch}, sampler='dpm_solver', steps={args.sample_steps})` "
                         f"({args.sample_steps} evaluations per image); max diff: the samples against eager's",
                         "images/s", True),
        "church_sample": ("(b) 256x256 UNet2DModel (google/ddpm-church-256 configuration, random weights), one denoiser "
                          "evaluation at batch 1", "evaluations/s", True),
        "church_train": ("(b) training step at batch 1 (x0-MSE, Adam)", "images/s", False),
    }
    parts = [f"Machine: {res['machine']}; device {res['device']}, {res['threads']} torch thread(s)"
             + (", TF32 on" if res["tf32"] else "") + f"; {args.repeats} interleaved rounds after a warm-up call."]
    for key, (title, unit, compare) in what.items():
        if key in res:
            parts += [f"\n{title}:\n", table(res[key], unit, compare)]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    main()

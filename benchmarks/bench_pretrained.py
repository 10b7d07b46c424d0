"""SDEdit on a 256x256 pixel-space DDPM: sdekit against the equivalent diffusers scheduler loop.

The network is a UNet2DModel with google/ddpm-church-256's configuration (written out below; random
weights, the cost does not depend on them), saved as a diffusers pipeline folder and loaded with
``sdekit.load``. One edit: the guide noised to DDIM timestep k, then DDIM (eta = 0) down to 0 through
the same timesteps, in both:

* sdekit: ``sdekit.sdedit(model.sde, model.score_fn, guide, t0, sampler="ddim", sigmas=...)``, t0 the
  noise level of timestep k, sigmas those of the DDIM timesteps then 0;
* diffusers: ``DDIMScheduler.add_noise`` then ``unet(x, t)`` and ``DDIMScheduler.step`` in a loop (no
  x0 clipping, as sdekit's DDIM), on the same UNet object and the same noise draw.

Reported: seconds per edit (median over interleaved repeats after one warm-up each), peak memory of
one edit above the loaded model (CUDA: max_memory_allocated; CPU: the peak resident set, each method
in a fresh process, Linux only), their ratio, and the largest difference between the two outputs.

    python benchmarks/bench_pretrained.py [--steps 5] [--repeats 3] [--device cuda] [--dtype float16] [--quick]
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_diffusers, machine, md_table, median, save_json, save_text  # noqa: E402

# google/ddpm-church-256's UNet2DModel configuration (Ho et al.'s LSUN church network).
CHURCH_256 = {
    "sample_size": 256, "in_channels": 3, "out_channels": 3, "layers_per_block": 2,
    "block_out_channels": [128, 128, 256, 256, 512, 512],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"],
    "act_fn": "silu", "attention_head_dim": None, "norm_num_groups": 32, "norm_eps": 1e-6, "downsample_padding": 0,
    "flip_sin_to_cos": False, "freq_shift": 1, "mid_block_scale_factor": 1, "center_input_sample": False,
    "time_embedding_type": "positional",
}
SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
             "variance_type": "fixed_small", "clip_sample": True}
QUICK = {**CHURCH_256, "sample_size": 32, "block_out_channels": [32, 32, 64, 64, 64, 64]}


def write_folder(path: Path, config: dict, seed: int = 0) -> None:
    """A DDPMPipeline folder with random weights (built on the meta device, then filled)."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    with torch.device("meta"):
        unet = UNet2DModel.from_config(config)
    unet = unet.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            p.copy_(0.02 * torch.randn(p.shape, generator=g))
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**SCHEDULER)).save_pretrained(path)


class Edit:
    """One SDEdit problem on a loaded folder: the guide, DDIM's last ``steps`` timesteps of
    ``total`` and both implementations as functions of a seed."""

    def __init__(self, folder: Path, steps: int, total: int, device: str, dtype: torch.dtype):
        import sdekit
        from diffusers import DDIMScheduler
        from sdekit.tasks.sdedit import REFERENCE_SDE
        self.model = sdekit.load(folder, device=device, dtype=dtype)
        self.unet = self.model.denoiser.net.net                     # the UNet2DModel itself
        self.ddim = DDIMScheduler.from_config(self.unet_scheduler(folder), clip_sample=False)
        self.ddim.set_timesteps(total)
        self.timesteps = self.ddim.timesteps[-steps:]
        sde = self.model.sde
        grid = self.timesteps.double() / (sde.N - 1)
        self.sigmas = torch.cat([sde.sigma(grid), torch.zeros(1, dtype=torch.float64)])
        self.t0 = float(REFERENCE_SDE.sigma_inv(self.sigmas[:1]))  # t0 of timestep k's noise level
        C, H, W = self.model.shape
        u = torch.linspace(0, 1, H * W).reshape(1, 1, H, W).expand(1, C, H, W)
        self.guide = self.model.from_unit(u).to(device=device, dtype=dtype)
        self.device = torch.device(device)
        self.net_seconds = 0.0                                      # time inside the UNet, by hooks
        self.unet.register_forward_pre_hook(self._enter)
        self.unet.register_forward_hook(self._leave)

    def _enter(self, *_):
        self.sync()
        self._t = time.perf_counter()

    def _leave(self, *_):
        self.sync()
        self.net_seconds += time.perf_counter() - self._t

    @staticmethod
    def unet_scheduler(folder: Path) -> dict:
        return json.loads((folder / "scheduler" / "scheduler_config.json").read_text())

    def sdekit(self, seed: int) -> torch.Tensor:
        import sdekit
        return sdekit.sdedit(self.model.sde, self.model.score_fn, self.guide, t0=self.t0, sampler="ddim",
                             sigmas=self.sigmas, generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def diffusers(self, seed: int) -> torch.Tensor:
        noise = torch.randn(self.guide.shape, generator=torch.Generator().manual_seed(seed), dtype=self.guide.dtype)
        x = self.ddim.add_noise(self.guide, noise.to(self.device), self.timesteps[:1])
        for t in self.timesteps:
            x = self.ddim.step(self.unet(x, t).sample, t, x, eta=0.0).prev_sample
        return x

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def seconds(self, method: str) -> tuple[float, float]:
        """(wall seconds of one edit, of which outside the network)."""
        self.sync()
        self.net_seconds, t0 = 0.0, time.perf_counter()
        getattr(self, method)(0)
        self.sync()
        total = time.perf_counter() - t0
        return total, total - self.net_seconds


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def peak_memory(edit: Edit, method: str) -> int:
    """Bytes above the loaded model at the peak of one edit (CUDA: allocated; CPU: resident)."""
    gc.collect()
    if edit.device.type == "cuda":
        torch.cuda.synchronize(edit.device)
        torch.cuda.reset_peak_memory_stats(edit.device)
        base = torch.cuda.memory_allocated(edit.device)
        getattr(edit, method)(0)
        torch.cuda.synchronize(edit.device)
        return torch.cuda.max_memory_allocated(edit.device) - base
    base = _rss("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")                  # reset the peak (VmHWM) to now
    getattr(edit, method)(0)
    return _rss("VmHWM") - base


def cpu_peak_in_child(args, folder: Path, method: str) -> int | None:
    """peak_memory of ``method`` measured in a fresh process (the allocator keeps what it freed)."""
    cmd = [sys.executable, __file__, "--child", method, "--folder", str(folder), "--steps", str(args.steps),
           "--total", str(args.total), "--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="DDIM steps of one edit (network evaluations)")
    ap.add_argument("--total", type=int, default=10, help="DDIM steps over the whole schedule; the edit takes the "
                                                          "last --steps of them (default 10: from timestep 400)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--quick", action="store_true", help="a 32x32 network, to check that everything runs")
    ap.add_argument("--out", default="pretrained")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if args.child:
        edit = Edit(Path(args.folder), args.steps, args.total, args.device, dtype)     # the first edit here
        print(json.dumps({"peak": peak_memory(edit, args.child)}))
        return None
    diffusers, why = load_diffusers()
    if diffusers is None:
        print(f"bench_pretrained needs diffusers ({why})")
        return None
    config = QUICK if args.quick else CHURCH_256
    with tempfile.TemporaryDirectory(prefix="sdekit-bench-") as tmp:
        folder = Path(tmp) / "ddpm-church-256"
        write_folder(folder, config)
        edit = Edit(folder, args.steps, args.total, args.device, dtype)
        a, b = edit.sdekit(0), edit.diffusers(0)                          # warm-up, and the same result
        diff = float((a.float() - b.float()).abs().max())
        start = int(edit.timesteps[0])
        times, outside = {"sdekit": [], "diffusers": []}, {"sdekit": [], "diffusers": []}
        for r in range(args.repeats):                                     # interleaved, alternating order
            for method in (("sdekit", "diffusers") if r % 2 == 0 else ("diffusers", "sdekit")):
                total, rest = edit.seconds(method)
                times[method].append(total)
                outside[method].append(rest)
        if edit.device.type == "cuda":
            peaks = {m: peak_memory(edit, m) for m in times}
        else:
            del edit
            gc.collect()
            peaks = {m: cpu_peak_in_child(args, folder, m) for m in times}
    sec = {m: median(v) for m, v in times.items()}
    rest = {m: median(v) for m, v in outside.items()}
    mib = {m: (None if p is None else p / 2 ** 20) for m, p in peaks.items()}
    size = config["sample_size"]
    title = f"SDEdit, one {size}x{size} image, {args.steps} DDIM steps from timestep {start}, {args.device} {args.dtype}"
    rows = [[m, f"{sec[m]:.3f}", f"{rest[m]:.4f}", "n/a" if mib[m] is None else f"{mib[m]:.1f}"]
            for m in ("sdekit", "diffusers")]
    ratio_mem = (f"{mib['sdekit'] / mib['diffusers']:.3f}" if None not in mib.values() and mib["diffusers"] > 0
                 else "n/a")
    rows.append(["sdekit / diffusers", f"{sec['sdekit'] / sec['diffusers']:.3f}", "", ratio_mem])
    spread = "; ".join(f"{m}: {min(v):.3f}..{max(v):.3f} s" for m, v in times.items())
    text = (f"{title}\n\n{md_table(['', 'seconds / edit', 'of which outside the network', 'peak memory (MiB)'], rows)}\n\n"
            f"Range of the timed runs: {spread}. "
            f"Largest difference between the two edits: {diff:.2e}. Machine: {machine()}. "
            f"Median of {args.repeats} interleaved runs each.\n")
    print(text)
    save_text(f"{args.out}.md", text)
    save_json(args.out, {"config": config, "steps": args.steps, "total": args.total, "device": args.device,
                         "dtype": args.dtype, "seconds": times, "median_seconds": sec, "seconds_outside_network": outside,
                         "peak_mib": mib,
                         "max_abs_diff": diff, "machine": machine()})
    return {"seconds": sec, "outside": rest, "peak_mib": mib, "diff": diff}


if __name__ == "__main__":
    main()

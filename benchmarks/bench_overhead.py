"""Sampler overhead on the bundled digits network: wall time / (NFE x one network forward).

The limit is 1.0 (all time in the network). Two measures: "in run" divides each run's wall time by
the time spent inside model.score_fn during that same run (robust to the machine's speed drifting);
"vs median forward" divides by NFE x the median time of one separate forward on the same batch,
measured between the runs. Each is the median over --repeats interleaved runs.
The same network drives diffusers' schedulers (VP models: eps = -std(t) score(x, t) at t = timestep/1000)
and k-diffusion's samplers (sdekit's Denoiser in sigma space), so their loop overhead is measured
the same way.

    python benchmarks/bench_overhead.py [--batch 32] [--nfe 20] [--repeats 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (fmt, load_diffusers, load_k_diffusion_sampling, machine, md_table, median,  # noqa: E402
                    save_json, save_text)

from sdekit import sample  # noqa: E402
from sdekit.core.denoisers import Counted, ScoreDenoiser  # noqa: E402
from sdekit.core.sde import VPSDE  # noqa: E402


def load_model(which: str):
    import sdekit.models.bundle as bundle
    if which == "random":
        return bundle.random_model(), "random_model()"
    try:
        return bundle.load(), "bundled digits model"
    except Exception as e:  # the bundle may be absent in a source checkout
        print(f"bundled model unavailable ({e}); using random_model()")
        return bundle.random_model(), "random_model()"


class TimedScore:
    """model.score_fn, timing every call (the network's share of a run)."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, x, t):
        t0 = time.perf_counter()
        out = self.fn(x, t)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def ours(model, batch, nfe, g):
    """name -> callable() returning NFE, for sdekit's samplers at about ``nfe`` evaluations."""
    shape = (batch, *model.shape)

    def run(sampler, steps, **options):
        def go(score):
            _, info = sample(model.sde, score, shape, sampler=sampler, steps=steps,
                             generator=g, return_info=True, **options)
            return info["nfe"]
        return go
    return {
        "sdekit em": run("em", nfe),
        "sdekit reverse_diffusion": run("reverse_diffusion", nfe),
        "sdekit ancestral": run("ancestral", nfe),
        "sdekit pc (reverse_diffusion + langevin)": run("pc", nfe // 2),
        "sdekit ddim": run("ddim", nfe),
        "sdekit heun": run("heun", (nfe + 1) // 2),
        "sdekit dpm_solver": run("dpm_solver", nfe),
        "sdekit ode (rk45, rtol=atol=1e-2)": run("ode", 1, rtol=1e-2, atol=1e-2),
    }


def peers(model, batch, nfe, g):
    out, notes = {}, []
    shape = (batch, *model.shape)
    d, why = load_diffusers()
    if d is None:
        notes.append(why)
    elif isinstance(model.sde, VPSDE):
        def eps_model(score, x, t):
            tc = torch.full((x.shape[0],), max(float(t) / 1000, model.sde.eps), dtype=x.dtype)
            return -model.sde.marginal_std(tc).reshape(-1, 1, 1, 1) * score(x, tc)

        def run(cls, **cfg):
            def go(score):
                sched = getattr(d, cls)(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                        beta_schedule="linear", **cfg)
                sched.set_timesteps(nfe if cls != "HeunDiscreteScheduler" else (nfe + 1) // 2)
                x = torch.randn(shape, generator=g) * sched.init_noise_sigma
                n = 0
                for t in sched.timesteps:
                    inp = sched.scale_model_input(x, t)
                    x = sched.step(eps_model(score, inp, t), t, x).prev_sample
                    n += 1
                return n
            return go
        out.update({
            "diffusers DDIM": run("DDIMScheduler", clip_sample=False),
            "diffusers Euler": run("EulerDiscreteScheduler"),
            "diffusers Heun": run("HeunDiscreteScheduler"),
            "diffusers DPM++2M": run("DPMSolverMultistepScheduler"),
            "diffusers UniPC": run("UniPCMultistepScheduler"),
        })
    else:
        notes.append("diffusers rows need a VP model")
    ks, why = load_k_diffusion_sampling()
    if ks is None:
        notes.append(why)
    else:
        sde = model.sde
        ends = sde.sigma(torch.tensor([sde.eps, sde.T], dtype=torch.float64)).tolist()

        def run(fn, steps):
            def go(score):
                den = Counted(ScoreDenoiser(sde, score))
                sigmas = ks.get_sigmas_karras(steps, ends[0], ends[1])
                x = torch.randn(shape, generator=g) * sigmas[0]
                getattr(ks, fn)(lambda y, s: den(y, float(s[0])), x, sigmas, disable=True)
                return den.nfe
            return go
        out.update({"k-diff euler": run("sample_euler", nfe), "k-diff heun": run("sample_heun", (nfe + 1) // 2),
                    "k-diff dpmpp_2m": run("sample_dpmpp_2m", nfe), "k-diff lms": run("sample_lms", nfe)})
    return out, notes


@torch.no_grad()
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--nfe", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", choices=["bundle", "random"], default="bundle")
    ap.add_argument("--out", default="overhead")
    args = ap.parse_args(argv)
    model, what = load_model(args.model)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, *model.shape, generator=g)
    ts = torch.linspace(model.sde.eps, model.sde.T, 7)

    def forward_time(k=7):
        out = []
        for t in ts[:k]:
            t0 = time.perf_counter()
            model.score_fn(x, torch.full((args.batch,), float(t)))
            out.append(time.perf_counter() - t0)
        return median(out)

    forward_time()                                       # warm-up
    runs = ours(model, args.batch, args.nfe, g)
    prs, notes = peers(model, args.batch, args.nfe, g)
    runs.update(prs)
    times = {k: [] for k in runs}
    inrun = {k: [] for k in runs}
    nfes = {}
    fwd = []
    for k, go in runs.items():
        nfes[k] = go(model.score_fn)                     # warm-up, and the NFE
    for _ in range(args.repeats):                        # interleaved, so drift hits all alike
        fwd.append(forward_time())
        for k, go in runs.items():
            score = TimedScore(model.score_fn)
            t0 = time.perf_counter()
            go(score)
            times[k].append(time.perf_counter() - t0)
            inrun[k].append(times[k][-1] / score.seconds)
    f = median(fwd)
    rows, data = [], []
    for k in runs:
        t = median(times[k])
        ratio, r_in = t / (nfes[k] * f), median(inrun[k])
        rows.append([("**" + k + "**") if k.startswith("sdekit") else k, nfes[k], f"{t:.3f}", f"{r_in:.3f}",
                     f"{ratio:.3f}"])
        data.append({"sampler": k, "nfe": nfes[k], "seconds": t, "ratio": ratio, "ratio_in_run": r_in,
                     "all": times[k]})
    command = "python benchmarks/bench_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        f"Command: `{command.strip()}`", "", f"Machine: {machine()}", "",
        f"Network: {what} ({sum(p.numel() for p in model.net.parameters())} parameters), batch {args.batch}, "
        f"one forward = {f * 1e3:.2f} ms (median; spread {fmt(min(fwd) * 1e3)}..{fmt(max(fwd) * 1e3)} ms)", ""]
        + [f"Note: {n}" for n in notes] + [
        md_table(["sampler", "NFE", "seconds (median)", "overhead in run: wall / network time",
                  "wall / (NFE x median forward)"], rows)]) + "\n"
    save_json(args.out, {"command": command, "machine": machine(), "forward": f, "forwards": fwd, "rows": data})
    save_text(f"{args.out}.md", text)
    print(text)


if __name__ == "__main__":
    main()

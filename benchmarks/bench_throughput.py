"""Batch throughput on the default model: sdekit's sampling and SDEdit beside a plain PyTorch loop.

On ``sdekit.load()`` (MNIST 28x28, EDM-preconditioned VP model) at the library's defaults:
  * sampling: ``Model.sample(n, sampler="heun")`` (Heun at its default 20 steps, 39 evaluations: the plain loop is Heun's);
  * SDEdit: ``sdekit.sdedit(model.sde, model.score_fn, guide)`` at the model's calibrated t0 and the
    library's steps (reverse diffusion);
against a plain loop over the same network module (``model.net.net``, the UNet behind the model's
denoiser) fed the same inputs: the same noise levels in the same order, the same number of calls,
EDM's preconditioning written inline with its coefficients computed before the loop, and the same
update arithmetic (Heun in y = x / s; reverse diffusion in x), no sdekit code inside the loop. The
noise levels are read from one recorded sdekit run. The Heun loop is checked to reproduce sdekit's
samples from the same x_T.

ratio = plain loop time / sdekit time (limit 1.0: sdekit adds nothing). Times are medians over
--repeats runs with sdekit and the loop interleaved (a background job shares the machine), after a
warm-up of each. The page's edit latency is one 28x28 edit through sdekit.apps.web.tasks (parse_task:
PNG data URL -> Task, then run_task), warm.

    python benchmarks/bench_throughput.py [--batches 1,16,64] [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import base64
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, md_table, median, save_json, save_text  # noqa: E402

import sdekit  # noqa: E402
from sdekit.core.denoisers import Preconditioned  # noqa: E402
from sdekit.tasks.sdedit import default_t0, sdedit_steps, sdedit_time  # noqa: E402
from sdekit.apps.web.tasks import parse_task, run_task  # noqa: E402
from sdekit.apps.web.uploads import png_bytes  # noqa: E402


class Recorder(torch.nn.Module):
    """The network, recording the noise level sigma = exp(4 c_noise) of every call."""

    def __init__(self, net):
        super().__init__()
        self.net, self.sigmas = net, []

    def forward(self, inp, c_noise, *labels):
        self.sigmas.append(float(torch.as_tensor(c_noise).reshape(-1)[0].mul(4).exp()))
        return self.net(inp, c_noise, *labels)


def recorded_sigmas(model, run) -> list[float]:
    """The noise levels the network sees, call by call, in one run of ``run()``."""
    den = model.net
    rec = Recorder(den.net)
    den.net = rec
    try:
        run()
    finally:
        den.net = rec.net
    return rec.sigmas


def edm_coefficients(sigma: float, sigma_data: float):
    """EDM's preconditioning (Karras et al. Table 1): c_skip, c_out, c_in, c_noise."""
    v = sigma ** 2 + sigma_data ** 2
    return sigma_data ** 2 / v, sigma * sigma_data / math.sqrt(v), 1 / math.sqrt(v), math.log(sigma) / 4


# ---- the plain loops: torch and the network only ------------------------------------------------------

def heun_plan(sigmas_called: list[float], sigma_data: float):
    """Heun's grid (sigma_0 > ... > sigma_{N-1} > 0) from the recorded calls, with the coefficients
    of each level: [(sigma, sigma_next, coefficients at sigma, coefficients at sigma_next or None)]."""
    grid = list(dict.fromkeys(sigmas_called)) + [0.0]
    return [(s, s1, edm_coefficients(s, sigma_data), edm_coefficients(s1, sigma_data) if s1 > 0 else None)
            for s, s1 in zip(grid[:-1], grid[1:])]


@torch.no_grad()
def plain_heun(net, y, plan):
    """EDM Algorithm 2 (no churn) in y, calling the network directly."""
    n = 0
    for sig, sig_next, (a, b, c, e), nxt in plan:
        c_noise = torch.full((y.shape[0],), e, dtype=y.dtype)
        d = (y - (a * y + b * net(c * y, c_noise))) / sig
        n += 1
        y_next = y + (sig_next - sig) * d
        if nxt is not None:
            a1, b1, c1, e1 = nxt
            c_noise = torch.full((y.shape[0],), e1, dtype=y.dtype)
            d1 = (y_next - (a1 * y_next + b1 * net(c1 * y_next, c_noise))) / sig_next
            n += 1
            y_next = y + (sig_next - sig) * 0.5 * (d + d1)
        y = y_next
    return y, n


def reverse_diffusion_plan(sde, sigmas_called: list[float], sigma_data: float):
    """Per call: (s, sigma, EDM coefficients, sqrt(1 - b), b, sqrt(b)) of the DDPM step x <- sqrt(1 - b) x
    + b score + sqrt(b) z with b = beta(t) dt (Song et al. eq. 47), t = t(sigma), dt to the next call (the
    last to sde.eps)."""
    sig = torch.tensor(sigmas_called, dtype=torch.float64)
    ts = sde.sigma_inv(sig)
    dts = torch.cat([ts[:-1] - ts[1:], (ts[-1:] - sde.eps).clamp_min(1e-12)])
    bs = (sde.beta(ts) * dts).clamp(max=1.0)
    return [(float(s), float(sg), edm_coefficients(float(sg), sigma_data), math.sqrt(1 - float(b)), float(b),
             math.sqrt(float(b))) for s, sg, b in zip(sde.scale(ts), sig, bs)]


@torch.no_grad()
def plain_sdedit(net, guide, s0, std0, plan, generator):
    """SDEdit (Meng et al. Alg. 1) with the reverse-diffusion predictor, calling the network directly."""
    x = s0 * guide + std0 * torch.randn(guide.shape, generator=generator, dtype=guide.dtype)
    n = 0
    for s, sig, (a, b_out, c, e), keep, b, g in plan:
        y = x / s
        c_noise = torch.full((x.shape[0],), e, dtype=x.dtype)
        d = a * y + b_out * net(c * y, c_noise)
        n += 1
        score = (d - y) / (s * sig ** 2)
        x_mean = keep * x + b * score
        x = x_mean + g * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x_mean, n


# ---- measurement ----------------------------------------------------------------------------------------

def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each fn() over ``repeats`` rounds, the order alternating round by round, after a
    warm-up call of each."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: median(v) for k, v in times.items()}


def guide_image(model, batch: int) -> torch.Tensor:
    """A stroke painting shipped with the package, at the model's resolution, in model space."""
    from importlib.resources import files
    from sdekit.data.images import load_image
    u = load_image(files("sdekit") / "assets" / "strokes" / "seven.png", model.shape).pixels
    return model.from_unit(u).expand(batch, *model.shape).contiguous()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one core is busy elsewhere)")
    ap.add_argument("--out", default="throughput")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = sdekit.load()
    den = model.net
    if not (isinstance(den, Preconditioned) and den.kind == "edm"):
        raise SystemExit(f"the plain loop is written for EDM preconditioning; the default model has {den!r}")
    net, sde, sd = den.net, model.sde, den.sigma_data
    t0 = default_t0(model)
    edit_steps = sdedit_steps("reverse_diffusion", t0)
    rows = []
    for B in (int(b) for b in args.batches.split(",")):
        g = torch.Generator().manual_seed(0)
        z = sde.prior_sampling((B, *model.shape), generator=g)
        guide = guide_image(model, B)

        # sampling: the network's inputs, recorded; the loop reproduces the samples
        sig_sample = recorded_sigmas(model, lambda: model.sample(B, sampler="heun", generator=torch.Generator().manual_seed(0)))
        plan = heun_plan(sig_sample, sd)
        s_T = float(sde.scale(torch.tensor([sde.T], dtype=torch.float64)))
        ref = sdekit.sample(sde, model.score_fn, x_T=z, sampler="heun")
        mine, n_loop = plain_heun(net, z / s_T, plan)
        agree = float((mine - ref).abs().max())
        assert n_loop == len(sig_sample), (n_loop, len(sig_sample))
        sample_t = interleaved({"sdekit": lambda: model.sample(B, sampler="heun", generator=torch.Generator().manual_seed(1)),
                                "loop": lambda: plain_heun(net, z / s_T, plan)}, args.repeats)

        # SDEdit at the model's t0 and the library's steps
        sig_edit = recorded_sigmas(model, lambda: sdekit.sdedit(sde, model.score_fn, guide,
                                                                generator=torch.Generator().manual_seed(0)))
        rplan = reverse_diffusion_plan(sde, sig_edit, sd)
        t_start = torch.tensor([sdedit_time(sde, t0)], dtype=torch.float64)
        s0, std0 = float(sde.scale(t_start)), float(sde.marginal_std(t_start))
        _, n_edit = plain_sdedit(net, guide, s0, std0, rplan, torch.Generator().manual_seed(0))
        assert n_edit == len(sig_edit), (n_edit, len(sig_edit))
        edit_t = interleaved({"sdekit": lambda: sdekit.sdedit(sde, model.score_fn, guide,
                                                              generator=torch.Generator().manual_seed(1)),
                              "loop": lambda: plain_sdedit(net, guide, s0, std0, rplan,
                                                           torch.Generator().manual_seed(1))}, args.repeats)
        for what, nfe, tm in (("sample", len(sig_sample), sample_t), ("sdedit", len(sig_edit), edit_t)):
            r = {"task": what, "batch": B, "nfe": nfe, "sdekit_s": tm["sdekit"], "loop_s": tm["loop"],
                 "sdekit_per_s": B / tm["sdekit"], "loop_per_s": B / tm["loop"], "ratio": tm["loop"] / tm["sdekit"]}
            if what == "sample":
                r["max_abs_diff_to_sdekit"] = agree
            rows.append(r)
            print(f"{what:6s} B={B:3d} nfe={nfe:3d} sdekit {r['sdekit_per_s']:8.2f}/s loop {r['loop_per_s']:8.2f}/s "
                  f"ratio {r['ratio']:.3f}", flush=True)

    # the page: one 28x28 edit through parse_task + run_task, warm
    u = model.to_unit(guide_image(model, 1))[0]
    body = {"kind": "edit", "n": 1, "seed": 0,
            "image": "data:image/png;base64," + base64.b64encode(png_bytes(u)).decode()}
    task = parse_task(model, body)
    guide1 = guide_image(model, 1)
    sig_page = recorded_sigmas(model, lambda: run_task(model, task))
    pplan = reverse_diffusion_plan(sde, sig_page, sd)
    page_t = interleaved({"page": lambda: run_task(model, parse_task(model, body)),
                          "loop": lambda: plain_sdedit(net, guide1, s0, std0, pplan, torch.Generator().manual_seed(1))},
                         args.repeats)
    page = {"seconds": page_t["page"], "loop_s": page_t["loop"], "nfe": len(sig_page), "t0": task.t0_frac,
            "steps": task.steps, "sampler": task.sampler, "ratio": page_t["loop"] / page_t["page"]}
    print(f"page edit: {page['seconds'] * 1000:.1f} ms ({page['nfe']} evaluations; loop {page['loop_s'] * 1000:.1f} ms)")

    command = "python benchmarks/bench_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = ["task", "batch", "NFE", "sdekit per s", "plain loop per s", "ratio (loop time / sdekit time)"]
    body_rows = [[r["task"], r["batch"], r["nfe"], f"{r['sdekit_per_s']:.2f}", f"{r['loop_per_s']:.2f}",
                  f"{r['ratio']:.3f}"] for r in rows]
    text = "\n".join([
        f"Command: `{command.strip()}`", "", f"Machine: {machine()}", "",
        f"Model: {model!r}; sampling: Model.sample (heun, default steps); SDEdit: t0 = {t0:g}, "
        f"reverse_diffusion, {edit_steps} steps. Medians of {args.repeats} interleaved runs.", "",
        md_table(header, body_rows), "",
        f"Heun loop vs sdekit from the same x_T: max |difference| "
        f"{max(r.get('max_abs_diff_to_sdekit', 0) for r in rows):.2e} (model space).", "",
        f"Page edit latency (one {model.shape[-2]}x{model.shape[-1]} edit, sdekit.apps.web.tasks parse_task + run_task, "
        f"warm): {page['seconds'] * 1000:.1f} ms for {page['nfe']} evaluations (t0 = {page['t0']:g}, "
        f"{page['steps']} steps, {page['sampler']}); the plain loop: {page['loop_s'] * 1000:.1f} ms "
        f"(ratio {page['ratio']:.3f})."]) + "\n"
    save_json(args.out, {"command": command, "machine": machine(), "threads": args.threads, "rows": rows, "page": page})
    save_text(f"{args.out}.md", text)
    print(text)


if __name__ == "__main__":
    main()

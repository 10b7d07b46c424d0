"""Few-step samplers on a real network: sdekit's fast solvers beside diffusers' implementations of the
same methods, driving the same bundled network from the same noise, FID in the project's judge.

Every solver starts from the same standard-normal noise z (seed s) and calls the same denoiser
D(y; sigma) of the model (unconditional). diffusers' schedulers use the DDPM discretisation (1000 steps,
linear betas 1e-4..0.02, i.e. the bundled models' VP SDE with beta_min = 0.1, beta_max = 20) with their
own recommended settings and are fed eps = (y - D(y; sigma_t)) / sigma_t of their own alpha_bar_t.
FID and KID are against the held-out reference of the model's data (:func:`sdekit.tasks.judge.held_out`);
the real-vs-real row (held-out real images against the same reference) is the floor. Each cell is the
mean over seeds with the spread (min..max); the ratio is ours / the peer's of the same method.

    python benchmarks/bench_fewstep_network.py [--model mnist] [--data mnist:../shared/data/mnist]
        [--n 1000] [--seeds 0,1] [--nfes 3,4,5,6,8,10] [--only dpm,abm]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_k_diffusion_sampling, machine, save_json, save_text  # noqa: E402

import sdekit  # noqa: E402
from sdekit.core.denoisers import as_denoiser  # noqa: E402
from sdekit.tasks.metrics import fid, kid  # noqa: E402


def denoiser_of(model):
    den = as_denoiser(model.sde, model.score_fn)
    return lambda y, sigma: den.denoise(y, torch.as_tensor(sigma, dtype=y.dtype).expand(y.shape[0]))


def sdekit_run(sampler, steps=lambda n: n, **options):
    def run(model, z, nfe):
        x, info = sdekit.sample(model.sde, model.score_fn, z.shape, x_T=z * model.sde.prior_std, sampler=sampler,
                                steps=steps(nfe), return_info=True, **options)
        return x, info["nfe"]
    return run


def diffusers_run(cls_name, steps=lambda n: n, **config):
    def run(model, z, nfe):
        import diffusers
        sched = getattr(diffusers, cls_name)(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                             beta_schedule="linear", **config)
        sched.set_timesteps(steps(nfe))
        ab = sched.alphas_cumprod.double().numpy()
        train_sigmas = np.sqrt((1 - ab) / ab)
        den, calls = denoiser_of(model), [0]
        x = z * float(sched.init_noise_sigma)
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t)
            sig = float(np.interp(float(t), np.arange(len(train_sigmas)), train_sigmas))
            y = inp * math.sqrt(1 + sig ** 2)
            eps = (y - den(y, sig)) / sig
            calls[0] += 1
            x = sched.step(eps, t, x).prev_sample
        return x, calls[0]
    return run


def k_diffusion_run(fn_name, steps=lambda n: n, rho=7.0):
    """k-diffusion's sampler ``fn_name`` on its Karras grid (rho 7) from sigma(T) to sigma(eps) of the model's
    SDE, then 0 (its recommended use), driving the same denoiser in y = x / s."""
    def run(model, z, nfe):
        kd, why = load_k_diffusion_sampling()
        if kd is None:
            raise ImportError(why)
        lo, hi = model.sde.sigma(torch.tensor([model.sde.eps, model.sde.T], dtype=torch.float64)).tolist()
        sigmas = kd.get_sigmas_karras(steps(nfe), lo, hi, rho=rho).to(z.dtype)
        den, calls = denoiser_of(model), [0]

        def model_fn(y, sigma):
            calls[0] += 1
            return den(y, sigma)
        y = kd.__dict__[fn_name](model_fn, z * sigmas[0], sigmas, disable=True)
        return y, calls[0]          # sigma = 0 at the end: y = x
    return run


GITS_GRIDS: dict = {}


def gits_run(sampler, **options):
    """sdekit's ``sampler`` on the model's GITS grid for the NFE: the bundle's own (``model.grids``, written by
    sdekit.models.bundle.write_grids), else fitted here once per model and run as write_grids does
    (sdekit.solvers.gits.optimal_grids: 256 teacher trajectories of 100 steps from seed 123, none of the
    evaluation seeds), its cost reported."""
    def run(model, z, nfe):
        from sdekit.solvers.gits import optimal_grids
        if model.name not in GITS_GRIDS and model.grids:
            GITS_GRIDS[model.name] = model.grids
        if model.name not in GITS_GRIDS:
            from sdekit.models.bundle import GITS_FIT
            t = time.time()
            GITS_GRIDS[model.name] = optimal_grids(model.sde, model.score_fn, (GITS_FIT["trajectories"], *model.shape),
                                                   steps=range(1, 21), teacher_steps=GITS_FIT["teacher_steps"],
                                                   seed=GITS_FIT["seed"], device=model.device)
            print(f"GITS grids of {model.name}: {time.time() - t:.0f} s", flush=True)
        x, info = sdekit.sample(model.sde, model.score_fn, z.shape, x_T=z * model.sde.prior_std, sampler=sampler,
                                sigmas=GITS_GRIDS[model.name][nfe], return_info=True, **options)
        return x, info["nfe"]
    return run


def heun_steps(nfe):
    return max(2, (nfe + 1) // 2)


METHODS = {   # method -> {implementation: runner}
    "dpm": {"diffusers DPM-Solver++(2M)": diffusers_run("DPMSolverMultistepScheduler", algorithm_type="dpmsolver++",
                                                         solver_order=2),
            "sdekit dpm_solver": sdekit_run("dpm_solver"),
            "sdekit dpm_solver logsnr grid": sdekit_run("dpm_solver", schedule="logsnr")},
    "kdpm": {"k-diffusion dpmpp_2m": k_diffusion_run("sample_dpmpp_2m"),
             "sdekit dpm_solver karras grid": sdekit_run("dpm_solver", schedule="karras")},
    "dpm3": {"diffusers DPM-Solver++(3M)": diffusers_run("DPMSolverMultistepScheduler", algorithm_type="dpmsolver++",
                                                          solver_order=3),
             "sdekit dpm_solver order 3": sdekit_run("dpm_solver", order=3)},
    "unipc": {"diffusers UniPC": diffusers_run("UniPCMultistepScheduler")},
    "deis": {"diffusers DEIS": diffusers_run("DEISMultistepScheduler")},
    "ddim": {"diffusers DDIM": diffusers_run("DDIMScheduler", set_alpha_to_one=True),
             "sdekit ddim": sdekit_run("ddim")},
    "abm": {"sdekit abm": sdekit_run("abm")},
    "gits": {"sdekit dpm_solver GITS grid": gits_run("dpm_solver"), "sdekit ddim GITS grid": gits_run("ddim"),
             "sdekit dpm_solver order 3 GITS grid": gits_run("dpm_solver", order=3),
             "sdekit abm GITS grid": gits_run("abm")},
    "lms": {"k-diffusion lms": k_diffusion_run("sample_lms")},
    "heun": {"k-diffusion heun": k_diffusion_run("sample_heun", steps=heun_steps),
             "sdekit heun": sdekit_run("heun", steps=heun_steps)},
}


def chunked(runner, model, z, nfe, chunk):
    """``runner`` on ``z`` in chunks of ``chunk`` samples (the deterministic solvers treat samples
    independently; a CPU network runs about twice as fast per image at batch 100 as at 1000)."""
    outs, used = [], None
    for part in z.split(chunk or len(z)):
        x, used = runner(model, part, nfe)
        outs.append(x)
    return torch.cat(outs), used


def measure(model, runner, nfe, seeds, n, ref, judge, keep=False, chunk=100):
    """One cell: ``runner``'s n samples at ``nfe`` evaluations for each seed, judged against ``ref``. The noise
    z of seed s is drawn on the CPU (the same on any device) and moved to the model's device; the samples are
    judged on the CPU. Returns {"nfe_used", "fid" (one per seed; None below the judge's minimum, see
    :func:`sdekit.tasks.metrics.fid`), "kid" (per seed), "seconds" (all of it), "sample_seconds" (sampling
    alone, per seed)} and, with ``keep``, also the samples in [0, 1] per seed under "samples" ([n, C, H, W])."""
    fids, kids, used, spent, kept, t = [], [], None, [], [], time.time()
    for s in seeds:
        z = torch.randn((n, *model.shape), generator=torch.Generator().manual_seed(s)).to(model.device)
        t_s = time.perf_counter()
        with torch.no_grad():
            x, used = chunked(runner, model, z, nfe, chunk)
        u = model.to_unit(x.float()).clamp(0, 1).cpu()          # .cpu() waits for the device
        spent.append(time.perf_counter() - t_s)
        fids.append(fid(ref, u, judge))
        kids.append(kid(ref, u, judge, subsets=10).mean)
        if keep:
            kept.append(u)
    row = {"nfe_used": used, "fid": fids, "kid": kids, "seconds": time.time() - t, "sample_seconds": spent}
    return {**row, "samples": kept} if keep else row


def run(model_name, data, n, seeds, nfes, only, impl_filter=()):
    from sdekit.tasks.judge import held_out, load_judge
    model = sdekit.load(model_name)
    judge = load_judge(data)
    held = held_out(data, model.shape[-1])
    ref = held.reference
    real = held.real[:n]
    floor = {"fid": fid(ref, real, judge), "kid": kid(ref, real, judge, subsets=50).mean}
    rows = []
    for method, impls in METHODS.items():
        if only and method not in only:
            continue
        for name, runner in impls.items():
            if impl_filter and not any(f in name for f in impl_filter):
                continue
            for nfe in nfes:
                cell = measure(model, runner, nfe, seeds, n, ref, judge)
                rows.append({"method": method, "impl": name, "nfe": nfe, **cell})
                print(f"{name:32s} NFE {nfe:2d} ({cell['nfe_used']:2d}): {score(cell)}", flush=True)
    return floor, rows


def score(cell) -> str:
    """A cell's mean FID with its spread over seeds [min, max]; KID where FID is undefined (too few samples)."""
    key, digits = ("fid", 2) if None not in cell["fid"] else ("kid", 4)
    v = cell[key]
    label = "" if key == "fid" else "KID "
    return f"{label}{np.mean(v):.{digits}f} [{min(v):.{digits}f}, {max(v):.{digits}f}]"


def table(floor, rows, nfes) -> str:
    """The markdown table (one row per implementation, one column per NFE: mean FID [min, max] over seeds, KID
    where FID is undefined) and the ratios ours / peer of the same method."""
    names = list(dict.fromkeys(r["impl"] for r in rows))
    cell = {(r["impl"], r["nfe"]): r for r in rows}
    floor_fid = "-" if floor["fid"] is None else f"{floor['fid']:.3f}"
    out = [f"real vs real: FID {floor_fid}, KID {floor['kid']:.4f}", "",
           "| implementation | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
           "|---|" + "---|" * len(nfes)]
    for name in names:
        vals = []
        for k in nfes:
            r = cell.get((name, k))
            if r is None:
                vals.append("-")
                continue
            nfe_note = f" ({r['nfe_used']})" if r["nfe_used"] != k else ""
            vals.append(score(r) + nfe_note)
        out.append(f"| {name} | " + " | ".join(vals) + " |")
    if any(None in r["fid"] for r in rows):
        out += ["", "FID needs more samples than twice the judge's 64 features; KID is shown where it is undefined."]
    out += ["", "ratio ours / peer (same method, same NFE, mean FID):"]
    for method in dict.fromkeys(r["method"] for r in rows):
        impls = [nm for nm in names if any(cell.get((nm, k), {}).get("method") == method for k in nfes)]
        peers = [nm for nm in impls if not nm.startswith("sdekit")]
        ours = [nm for nm in impls if nm.startswith("sdekit")]
        for o in ours:
            for p in peers:
                rs = [f"NFE {k}: {np.mean(cell[(o, k)]['fid']) / np.mean(cell[(p, k)]['fid']):.2f}x"
                      for k in nfes if (o, k) in cell and (p, k) in cell
                      and None not in cell[(o, k)]["fid"] + cell[(p, k)]["fid"]]
                out.append(f"- {o} / {p}: " + (", ".join(rs) or "-"))
    return "\n".join(out)


def merge(names, out_name):
    """One table from several runs' results (the same --n, seeds and reference; checked), saved as ``out_name``."""
    import json
    from common import RESULTS
    parts = [json.loads((RESULTS / f"{nm}.json").read_text()) for nm in names]
    floors = {round(p["floor"]["fid"], 6) for p in parts}
    if len(floors) != 1:
        raise SystemExit(f"the runs differ in their real-vs-real floor, so in their sets: {floors}")
    rows = [r for p in parts for r in p["rows"]]
    nfes = sorted({r["nfe"] for r in rows})
    text = table(parts[0]["floor"], rows, nfes)
    cmds = "\n".join(p["command"] for p in parts)
    print(text)
    save_json(out_name, {"machine": parts[0]["machine"], "command": cmds, "floor": parts[0]["floor"], "rows": rows})
    save_text(f"{out_name}.md", f"{cmds}\n\n{parts[0]['machine']}\n\n{text}\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mnist")
    p.add_argument("--data", default="mnist:../shared/data/mnist")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--nfes", default="3,4,5,6,8,10")
    p.add_argument("--only", default="", help="methods (keys of METHODS), comma-separated")
    p.add_argument("--impls", default="", help="only implementations whose name contains one of these, comma-separated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="fewstep_network", help="the results' file name under benchmarks/results")
    p.add_argument("--merge", default="", help="no run: one table from these results (names under "
                   "benchmarks/results, comma-separated: parts of one table run as parallel processes)")
    a = p.parse_args(argv)
    if a.merge:
        return merge([v for v in a.merge.split(",") if v], a.name)
    torch.set_num_threads(a.threads)
    nfes = [int(v) for v in a.nfes.split(",")]
    seeds = [int(v) for v in a.seeds.split(",")]
    only = [v for v in a.only.split(",") if v]
    floor, rows = run(a.model, a.data, a.n, seeds, nfes, only, [v for v in a.impls.split(",") if v])
    text = table(floor, rows, nfes)
    cmd = "python benchmarks/bench_fewstep_network.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(text)
    save_json(a.name, {"machine": machine(), "command": cmd, "floor": floor, "rows": rows})
    save_text(f"{a.name}.md", f"{cmd}\n\n{machine()}\n\n{text}\n")


if __name__ == "__main__":
    main()

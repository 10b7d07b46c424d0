"""Sampler accuracy per NFE on exact scores: sdekit vs diffusers schedulers vs k-diffusion samplers.

For each mixture (2-D, 64-D, 20 digit images at 16x16, and 2-D and 64-D mixtures of unequal widths
and weights; common.MIXTURES), SDE (VP, VE) and NFE budget, every
deterministic sampler starts from the same standard-normal noise z (mapped to its own initial state)
and is fed the same exact denoiser. Measured:
  * terminal error against the exact ODE endpoint from that sampler's own initial state (RK45 in
    log sigma, rtol = atol = 1e-9, to sigma = 0): per-sample ||x - x_ref|| / sqrt(dim), median and RMS;
  * energy distance to exact mixture samples, beside the two-sample floor (two exact sets).

Conventions (see BENCHMARKS.md): diffusers schedulers use the DDPM discretisation (1000 steps, linear
betas 1e-4..0.02, i.e. VP with beta_min = 0.1, beta_max = 20 as N beta_i) with its own alpha_bar;
the model they call returns eps = (y - D(y; sigma_t)) / sigma_t with sigma_t^2 = (1 - alpha_bar_t) /
alpha_bar_t, linearly interpolated in t for the fractional timesteps of Euler/Heun (their own rule).
So every peer gets the exact eps of its own schedule. diffusers has no deterministic VE scheduler
on this API: VE rows are sdekit and k-diffusion.

    python benchmarks/bench_samplers.py [--quick] [--problems 2d,64d,img16,uneq2d,uneq64d] [--sdes vp,ve]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import (F64, IMG, ExactDenoiser, Timer, energy_distance, fmt, load_diffusers,  # noqa: E402
                    load_k_diffusion_sampling, machine, md_table, mixture, per_sample_error, reference,
                    save_json, save_text)

from sdekit import sample  # noqa: E402
from sdekit.core.sde import VESDE, VPSDE  # noqa: E402

NFES = (5, 10, 20, 50, 100)


def heun_steps(nfe: int) -> int:
    """Second-order samplers with a final Euler step: NFE = 2 steps - 1 <= budget."""
    return max(2, (nfe + 1) // 2)


# ---- solvers: each returns (x0, nfe, y0, sigma0) -----------------------------------------------

def sdekit_solver(sampler, steps=lambda n: n, **options):
    def run(gmm, sde, z, nfe):
        x_T = z * sde.prior_std
        x, info = sample(sde, gmm.score_fn(sde), x_T=x_T, sampler=sampler, steps=steps(nfe),
                         return_info=True, **options)
        T = torch.tensor([sde.T], dtype=F64)
        return x, info["nfe"], x_T / sde.scale(T).item(), sde.sigma(T).item()
    return run


def diffusers_solver(cls_name, steps=lambda n: n, y_space=False, **config):
    """A diffusers scheduler driven through set_timesteps()/scale_model_input()/step()."""
    def run(gmm, sde, z, nfe):
        import diffusers
        sched = getattr(diffusers, cls_name)(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                             beta_schedule="linear", **config)
        sched.set_timesteps(steps(nfe))
        ab = sched.alphas_cumprod.double().numpy()
        train_sigmas = np.sqrt((1 - ab) / ab)
        den = ExactDenoiser(gmm)

        def sigma_of(t):
            return float(np.interp(float(t), np.arange(len(train_sigmas)), train_sigmas))

        x = z * float(sched.init_noise_sigma)
        sig0 = float(sched.sigmas[0]) if y_space else sigma_of(sched.timesteps[0])
        y0 = x if y_space else x * math.sqrt(1 + sig0 ** 2)
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t)            # always x_t = y / sqrt(1 + sigma^2)
            sig = sigma_of(t)
            y = inp.double() * math.sqrt(1 + sig ** 2)
            eps = ((y - den(y, sig)) / sig).to(inp.dtype)
            x = sched.step(eps, t, x).prev_sample
        return x, den.calls, y0, sig0
    return run


def kdiffusion_solver(fn_name, steps=lambda n: n, **options):
    """k-diffusion sampler in sigma space on Karras sigmas from sigma(T) to sigma(eps), then 0."""
    def run(gmm, sde, z, nfe):
        ks, _ = load_k_diffusion_sampling()
        ends = sde.sigma(torch.tensor([sde.eps, sde.T], dtype=F64)).tolist()
        sigmas = ks.get_sigmas_karras(steps(nfe), ends[0], ends[1]).double()
        den = ExactDenoiser(gmm)
        y0 = z * sigmas[0]
        x = getattr(ks, fn_name)(lambda y, s: den(y, s), y0.clone(), sigmas, disable=True, **options)
        return x, den.calls, y0, float(sigmas[0])
    return run


PARTS = {   # which half of abm does what (run only when named in --only): its grid under DPM-Solver++(2M),
    # its solver on DPM-Solver's log-SNR grid
    "sdekit dpm_solver cosine": ("dpm_solver", {"schedule": "cosine"}),
    "sdekit abm logsnr": ("abm", {"schedule": "logsnr"}),
}


def solvers() -> tuple[dict, dict, list]:
    """name -> (runner, sdes it runs on); 'sdekit' names are ours. Also returns notes on missing peers."""
    ours = {
        "sdekit ddim": (sdekit_solver("ddim"), ("vp", "ve")),
        "sdekit heun": (sdekit_solver("heun", heun_steps), ("vp", "ve")),
        "sdekit dpm_solver": (sdekit_solver("dpm_solver"), ("vp", "ve")),
        "sdekit dpm_solver karras": (sdekit_solver("dpm_solver", schedule="karras"), ("vp", "ve")),
        "sdekit dpm_solver order=3": (sdekit_solver("dpm_solver", order=3), ("vp", "ve")),
        "sdekit abm": (sdekit_solver("abm"), ("vp", "ve")),
        "sdekit abm order=2": (sdekit_solver("abm", order=2), ("vp", "ve")),
    }
    parts = {name: (sdekit_solver(sampler, **opts), ("vp", "ve")) for name, (sampler, opts) in PARTS.items()}
    peers, notes = {}, []
    d, why = load_diffusers()
    if d is None:
        notes.append(why)
    else:
        peers.update({
            "diffusers DDIM": (diffusers_solver("DDIMScheduler", clip_sample=False), ("vp",)),
            "diffusers DDIM trailing": (diffusers_solver("DDIMScheduler", clip_sample=False,
                                                         timestep_spacing="trailing"), ("vp",)),
            "diffusers Euler": (diffusers_solver("EulerDiscreteScheduler", y_space=True), ("vp",)),
            "diffusers Heun": (diffusers_solver("HeunDiscreteScheduler", heun_steps, y_space=True), ("vp",)),
            "diffusers DPM++2M": (diffusers_solver("DPMSolverMultistepScheduler"), ("vp",)),
            "diffusers DPM++2M karras": (diffusers_solver("DPMSolverMultistepScheduler",
                                                          use_karras_sigmas=True), ("vp",)),
            "diffusers UniPC": (diffusers_solver("UniPCMultistepScheduler"), ("vp",)),
            "diffusers DPM++3M": (diffusers_solver("DPMSolverMultistepScheduler", solver_order=3), ("vp",)),
            "diffusers UniPC order=3": (diffusers_solver("UniPCMultistepScheduler", solver_order=3), ("vp",)),
        })
    ks, why = load_k_diffusion_sampling()
    if ks is None:
        notes.append(why)
    else:
        peers.update({
            "k-diff euler": (kdiffusion_solver("sample_euler"), ("vp", "ve")),
            "k-diff heun": (kdiffusion_solver("sample_heun", heun_steps), ("vp", "ve")),
            "k-diff dpmpp_2m": (kdiffusion_solver("sample_dpmpp_2m"), ("vp", "ve")),
            "k-diff lms": (kdiffusion_solver("sample_lms"), ("vp", "ve")),
            "k-diff dpmpp_3m": (kdiffusion_solver("sample_dpmpp_3m_sde", eta=0.0), ("vp", "ve")),
        })
    return {**ours, **parts}, peers, notes


# ---- the benchmark -------------------------------------------------------------------------------

def run(problems, sdes, n_samples, nfes, seed=0, ref_rtol=1e-9, only=None):
    ours, peers, notes = solvers()
    allsolvers = {k: v for k, v in {**ours, **peers}.items() if (k not in PARTS if only is None else k in only)}
    results = []
    for pname in problems:
        gmm = mixture(pname)
        n = n_samples if pname != "img16" else max(8, n_samples // 2)
        g = torch.Generator().manual_seed(seed)
        exact = gmm.sample(n, generator=g, dtype=F64)
        floor = float(np.mean([energy_distance(gmm.sample(n, generator=g, dtype=F64), exact) for _ in range(3)]))
        z = torch.randn((n,) + gmm.event_shape, generator=g, dtype=F64)
        for sname in sdes:
            sde = VPSDE() if sname == "vp" else VESDE()
            refs = {}
            for name, (solver, ok) in allsolvers.items():
                if sname not in ok:
                    continue
                for nfe in nfes:
                    with Timer() as tm:
                        x, used, y0, sig0 = solver(gmm, sde, z, nfe)
                    # every start is y0 = c z, so the reference depends on (sigma0, c) alone
                    key = (round(sig0, 9), round(float(y0.flatten()[0] / z.flatten()[0]), 9))
                    if key not in refs:
                        refs[key] = reference(gmm, y0, sig0, rtol=ref_rtol)[0]
                    err = per_sample_error(x, refs[key])
                    row = {"problem": pname, "sde": sname, "sampler": name, "budget": nfe, "nfe": int(used),
                           "median": float(err.median()), "rms": float(err.pow(2).mean().sqrt()),
                           "energy": energy_distance(x, exact), "floor": floor, "seconds": tm.seconds,
                           "ours": name in ours}
                    results.append(row)
                    print(f"{pname:5s} {sname} {name:28s} nfe={used:3d} median={row['median']:.3e} "
                          f"rms={row['rms']:.3e} ED={row['energy']:.2e} (floor {floor:.1e})", flush=True)
    return results, notes


DEFAULT = "sdekit abm"     # sdekit's sampler for few evaluations, compared with the best peer in every column


def _ratio(ours: float, peer: float) -> str:
    """ours / peer, or "-" when the peer's value is not positive (an energy distance at or below its
    floor); ours below zero (below the floor) counts as zero."""
    return f"{max(ours, 0.0) / peer:.2f}" if peer > 0 else "-"


def summary(results) -> str:
    """One line per problem and SDE: DEFAULT / best peer at each NFE, median terminal error, then energy
    distance above the floor in parentheses, and the peer that is best by median."""
    keys = list(dict.fromkeys((r["problem"], r["sde"]) for r in results))
    budgets = sorted({r["budget"] for r in results})
    body = []
    for p, s in keys:
        cell = {(r["sampler"], r["budget"]): r for r in results if r["problem"] == p and r["sde"] == s}
        line = [f"{p}, {s.upper()}"]
        for b in budgets:
            peers = [r for (nm, bb), r in cell.items() if bb == b and not r["ours"]]
            ours = cell.get((DEFAULT, b))
            if not peers or ours is None:
                line.append("-")
                continue
            med = min(peers, key=lambda r: r["median"])
            ed = min(r["energy"] for r in peers) - ours["floor"]
            line.append(f"{_ratio(ours['median'], med['median'])} ({_ratio(ours['energy'] - ours['floor'], ed)}) "
                        f"{med['sampler'].replace('diffusers ', 'd: ').replace('k-diff ', 'k: ')}")
        body.append(line)
    return md_table(["problem"] + [f"NFE {b}" for b in budgets], body)


def tables(results, notes, command) -> str:
    out = [f"Command: `{command}`", "", f"Machine: {machine()}", ""]
    out += [f"Note: {n}" for n in notes]
    out += ["", f"{DEFAULT} / best peer: median terminal error (energy distance above the floor), best peer by median:",
            "", summary(results)]
    for (p, s) in dict.fromkeys((r["problem"], r["sde"]) for r in results):
        rows = [r for r in results if r["problem"] == p and r["sde"] == s]
        names = list(dict.fromkeys(r["sampler"] for r in rows))
        budgets = sorted({r["budget"] for r in rows})
        cell = {(r["sampler"], r["budget"]): r for r in rows}
        peers = [nm for nm in names if not cell[(nm, budgets[0])]["ours"]]
        out += ["", f"### {p}, {s.upper()}: median terminal error (RMS) at NFE; actual NFE when it differs", ""]
        body = []
        for nm in names:
            cells = []
            for b in budgets:
                r = cell[(nm, b)]
                extra = f" [{r['nfe']}]" if r["nfe"] != b else ""
                cells.append(f"{fmt(r['median'])} ({fmt(r['rms'])}){extra}")
            body.append([("**" + nm + "**") if rows and cell[(nm, budgets[0])]["ours"] else nm] + cells)
        if peers:
            best = [min(cell[(nm, b)]["median"] for nm in peers) for b in budgets]
            ours = [min(cell[(nm, b)]["median"] for nm in names if cell[(nm, b)]["ours"]) for b in budgets]
            body.append(["best sdekit / best peer (median; < 1: sdekit wins)"] + [_ratio(o, pe) for o, pe in zip(ours, best)])
            if DEFAULT in names:
                body.append([f"{DEFAULT} / best peer"] + [_ratio(cell[(DEFAULT, b)]["median"], pe) for b, pe in zip(budgets, best)])
        out.append(md_table(["sampler"] + [f"NFE {b}" for b in budgets], body))
        floor = rows[0]["floor"]
        out += ["", f"Energy distance to exact samples (two-sample floor {fmt(floor)}):", ""]
        body = [[nm] + [fmt(cell[(nm, b)]["energy"]) for b in budgets] for nm in names]
        if peers and DEFAULT in names:
            best = [min(cell[(nm, b)]["energy"] for nm in peers) - floor for b in budgets]
            body.append([f"{DEFAULT} / best peer, above the floor"]
                        + [_ratio(cell[(DEFAULT, b)]["energy"] - floor, pe) for b, pe in zip(budgets, best)])
        out.append(md_table(["sampler"] + [f"NFE {b}" for b in budgets], body))
    return "\n".join(out) + "\n"


def plot(results, path):
    """Median terminal error against NFE: one row per SDE, one column per problem; the colour of a sampler
    is the same in every panel, sdekit's samplers as solid lines, DEFAULT thick and black."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    problems = list(dict.fromkeys(r["problem"] for r in results))
    sdes = list(dict.fromkeys(r["sde"] for r in results))
    names = list(dict.fromkeys(r["sampler"] for r in results))
    colour = {nm: plt.get_cmap("tab20")(i % 20) for i, nm in enumerate(n for n in names if n != DEFAULT)}
    colour[DEFAULT] = "black"
    fig, axes = plt.subplots(len(sdes), len(problems), figsize=(4.2 * len(problems), 4.0 * len(sdes)),
                             squeeze=False)
    for i, s in enumerate(sdes):
        for j, p in enumerate(problems):
            ax, rows = axes[i][j], [r for r in results if r["problem"] == p and r["sde"] == s]
            for nm in dict.fromkeys(r["sampler"] for r in rows):
                rr = sorted((r for r in rows if r["sampler"] == nm), key=lambda r: r["nfe"])
                ours = rr[0]["ours"]
                ax.loglog([r["nfe"] for r in rr], [max(r["median"], 1e-12) for r in rr], "-o" if ours else "--",
                          ms=3, lw=3 if nm == DEFAULT else 1.5 if ours else 1, color=colour[nm], label=nm)
            ax.set_title(f"{p}, {s.upper()}")
            ax.set_xlabel("NFE")
            ax.grid(True, which="both", alpha=0.3)
        axes[i][0].set_ylabel("median terminal error vs exact ODE")
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_lines()}
    fig.legend(list(handles.values()), list(handles), fontsize=7, loc="lower center",
               ncol=min(6, len(handles)), frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.012 * (len(handles) // 6), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="2d,64d,img16")
    ap.add_argument("--sdes", default="vp,ve")
    ap.add_argument("--n", type=int, default=2000, help="samples per problem (half for img16)")
    ap.add_argument("--nfes", default=",".join(map(str, NFES)))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--out", default="samplers", help="name of the result files")
    ap.add_argument("--only", default=None, help="comma-separated sampler names to (re)run; their rows "
                    "replace those in an existing results/<out>.json, the other rows are kept (the PARTS "
                    "rows run only when named here)")
    ap.add_argument("--ref-rtol", type=float, default=1e-9, help="tolerance of the reference ODE solve")
    ap.add_argument("--combine", default=None, help="comma-separated result names: join their rows into "
                    "--out (tables and plot) without running anything")
    args = ap.parse_args(argv)
    only = None if args.only is None else set(args.only.split(","))
    if args.combine:
        parts = [json.loads((common.RESULTS / f"{nm}.json").read_text()) for nm in args.combine.split(",")]
        results = [r for p in parts for r in p["results"]]
        notes = list(dict.fromkeys(nt for p in parts for nt in p["notes"]))
        command = "; ".join(p["command"] for p in parts)
        save_json(args.out, {"command": command, "machine": machine(), "results": results, "notes": notes})
        save_text(f"{args.out}.md", tables(results, notes, command))
        plot(results, IMG / f"bench_{args.out}.png")
        return results
    n, nfes, rtol = args.n, [int(v) for v in args.nfes.split(",")], args.ref_rtol
    if args.quick:
        n, rtol = 64, 1e-6
    results, notes = run(args.problems.split(","), args.sdes.split(","), n, nfes, ref_rtol=rtol, only=only)
    command = "python benchmarks/bench_samplers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    old = common.RESULTS / f"{args.out}.json"
    if only is not None and old.exists():
        prev = json.loads(old.read_text())
        done = {(r["problem"], r["sde"], r["sampler"], r["budget"]) for r in results}
        results = [r for r in prev["results"] if (r["problem"], r["sde"], r["sampler"], r["budget"]) not in done] + results
        order = {nm: i for i, nm in enumerate({**solvers()[0], **solvers()[1]})}
        results.sort(key=lambda r: (r["problem"], {"vp": 0, "ve": 1}.get(r["sde"], 2), order.get(r["sampler"], 99), r["budget"]))
        command = prev["command"] + f"; then {command}"
    text = tables(results, notes, command.strip())
    save_json(args.out, {"command": command, "machine": machine(), "results": results, "notes": notes})
    save_text(f"{args.out}.md", text)
    if not args.quick:
        plot(results, IMG / f"bench_{args.out}.png")
    print(text)
    return results


if __name__ == "__main__":
    main()

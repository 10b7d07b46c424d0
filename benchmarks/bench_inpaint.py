"""Inpainting (imputation, Song et al. 2021 App. I.2) by every sampler, against the exact conditional.

For an isotropic Gaussian mixture the conditional of the unknown coordinates given the known ones is again a
mixture: component k keeps its mean and std on the unknown coordinates and is reweighted by
w_k N(x_known; mu_k,known, s_k^2 I). Each sampler imputes the unknown half of one point drawn from the mixture
``--n`` times (VP SDE, the exact mixture score, the known coordinates re-imposed after every step); the table
gives the energy distance of its imputations to ``--n`` exact conditional draws, beside the floor (two sets of
exact draws), the evaluations and the seconds. The peer: diffusers' RePaintScheduler (jump length 1, one
sample per jump: the same replacement method with DDPM's ancestral step), fed the same exact score as
eps = -sigma(t) s(t) score at its 1000 training steps (DDPM's linear betas are VP(0.1, 20) at N = 1000).

    python benchmarks/bench_inpaint.py [--n 1000] [--problems img16,64d]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import energy_distance, fmt, load_diffusers, machine, md_table, mixture, save_json, save_text  # noqa: E402

import sdekit.tasks.guidance  # noqa: E402
from sdekit.core.sde import VPSDE  # noqa: E402

F64 = torch.float64
SAMPLERS = [("pc", None), ("reverse_diffusion", None), ("em", None), ("ancestral", None), ("ddim", 50),
            ("ddim", 20), ("heun", 20), ("dpm_solver", 20), ("abm", 20), ("abm", 10)]


def conditional(gmm, x_known: torch.Tensor, known: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n exact draws of the unknown coordinates [n, d_unknown] given x_known on the coordinates ``known``."""
    mu_k, mu_u = gmm.means[:, known], gmm.means[:, ~known]
    var = gmm.stds ** 2
    logw = gmm.weights.log() - 0.5 * ((x_known[None] - mu_k) ** 2).sum(1) / var - 0.5 * known.sum() * var.log()
    k = torch.multinomial((logw - logw.logsumexp(0)).exp(), n, replacement=True, generator=g)
    return mu_u[k] + gmm.stds[k, None] * torch.randn(n, int((~known).sum()), generator=g, dtype=F64)


def repaint(gmm, sde, x_point, known, n, g):
    diffusers, why = load_diffusers()
    if diffusers is None:
        return None, why
    sched = diffusers.RePaintScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    sched.set_timesteps(1000, jump_length=1, jump_n_sample=1)
    score = gmm.score_fn(sde)
    abar = sched.alphas_cumprod.double()
    image = x_point[None].expand(n, -1).clone()
    mask = known.to(F64)[None].expand(n, -1)
    x = torch.randn(n, x_point.numel(), generator=g, dtype=F64)
    nfe, prev = 0, None
    for t in sched.timesteps:
        t = int(t)
        if prev is not None and t > prev:                 # a jump back (none with jump length 1)
            x = sched.undo_step(x, prev, g)
            prev = t
            continue
        sigma = ((1 - abar[t]) / abar[t]).sqrt()
        tc = sde.sigma_inv(sigma.reshape(1)).expand(n)
        eps = -(1 - abar[t]).sqrt() * score(x, tc)
        nfe += 1
        x = sched.step(eps, t, x, image, mask, generator=g).prev_sample
        prev = t
    return (x, nfe), None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--problems", default="img16,64d")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sde = VPSDE()
    rows, data = [], {"machine": machine(), "n": args.n, "problems": {}}
    for name in args.problems.split(","):
        gmm = mixture(name)
        g = torch.Generator().manual_seed(args.seed)
        x_point = gmm.sample(1, generator=g, dtype=F64).reshape(-1)
        d = x_point.numel()
        known = torch.zeros(d, dtype=torch.bool)
        known[: d // 2] = True                              # the first half known (the top of a 16x16 image)
        exact = conditional(gmm, x_point[known], known, args.n, g)
        floor = energy_distance(exact, conditional(gmm, x_point[known], known, args.n, g))
        image = x_point[None].expand(args.n, -1).clone().reshape(args.n, *gmm.event_shape)
        mask = known.to(F64).reshape(gmm.event_shape)[None]
        score = gmm.score_fn(sde)
        res = {"floor": floor, "samplers": []}
        rows.append([name, "exact vs exact (floor)", "-", "-", fmt(floor), "1.0", "-"])
        for sampler, steps in SAMPLERS:
            t0 = time.perf_counter()
            x, info = sdekit.tasks.guidance.impute(sde, score, image, mask, sampler=sampler, steps=steps,
                                                   generator=torch.Generator().manual_seed(args.seed + 1),
                                                   return_info=True)
            sec = time.perf_counter() - t0
            e = energy_distance(x.reshape(args.n, -1)[:, ~known], exact)
            res["samplers"].append({"sampler": sampler, "steps": info["steps"], "nfe": info["nfe"], "energy": e,
                                    "seconds": sec})
            rows.append([name, f"sdekit {sampler}", info["steps"], info["nfe"], fmt(e), f"{e / floor:.1f}", f"{sec:.2f}"])
            print(rows[-1], flush=True)
        t0 = time.perf_counter()
        out, why = repaint(gmm, sde, x_point, known, args.n, torch.Generator().manual_seed(args.seed + 1))
        if out is None:
            rows.append([name, f"diffusers RePaint: {why}", "-", "-", "-", "-", "-"])
        else:
            x, nfe = out
            sec = time.perf_counter() - t0
            e = energy_distance(x[:, ~known], exact)
            res["repaint"] = {"nfe": nfe, "energy": e, "seconds": sec}
            rows.append([name, "diffusers RePaint (jump 1)", 1000, nfe, fmt(e), f"{e / floor:.1f}", f"{sec:.2f}"])
        print(rows[-1], flush=True)
        data["problems"][name] = res
    table = md_table(["problem", "method", "steps", "evaluations", "energy distance to the exact conditional",
                      "x floor", "seconds"], rows)
    print(table)
    save_json("inpaint", data)
    save_text("inpaint.md", f"{machine()}\n\n{table}\n")


if __name__ == "__main__":
    main()

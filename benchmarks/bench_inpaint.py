"""Inpainting (imputation, Song et al. 2021 App. I.2) by every sampler, against the exact conditional.

For an isotropic Gaussian mixture the conditional of the unknown coordinates given the known ones is again a
mixture: component k keeps its mean and std on the unknown coordinates and is reweighted by
w_k N(x_known; mu_k,known, s_k^2 I). Each sampler imputes the unknown half of one point drawn from the mixture
``--n`` times (VP SDE, the exact mixture score, the known coordinates re-imposed after every step); the table
gives the energy distance of its imputations to ``--n`` exact conditional draws, beside the floor (two sets of
exact draws), the evaluations and the seconds. The peer: diffusers' RePaintScheduler (jump length 1, one
sample per jump: the same replacement method; eta 0, the pipeline's default, and eta 1, DDPM's ancestral step), fed the same exact score as
eps = -sigma(t) s(t) score at its 1000 training steps (DDPM's linear betas are VP(0.1, 20) at N = 1000).

    python benchmarks/bench_inpaint.py [--n 1000] [--problems img16,64d]
    python benchmarks/bench_inpaint.py --network mnist [--images 100]

``--network NAME``: the same samplers on a shipped model instead, filling the lower half of held-out real
images (the shipped held-out subset): how often the judge reads the true digit in the result (the upper half
decides it in most digits; the real images' own rate is the ceiling), the KID of the results against the
held-out reference, the L2 to the true lower halves, and the seconds per image.
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
SAMPLERS = [("pc", None, {}), ("pc", 200, {}), ("pc", 100, {}), ("pc", 50, {}), ("reverse_diffusion", None, {}),
            ("reverse_diffusion", 100, {}), ("ddim", 100, {"eta": 1.0}), ("ddim", 50, {}), ("heun", 20, {}),
            ("dpm_solver", 20, {}), ("abm", 20, {})]


def conditional(gmm, x_known: torch.Tensor, known: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n exact draws of the unknown coordinates [n, d_unknown] given x_known on the coordinates ``known``."""
    mu_k, mu_u = gmm.means[:, known], gmm.means[:, ~known]
    var = gmm.stds ** 2
    logw = gmm.weights.log() - 0.5 * ((x_known[None] - mu_k) ** 2).sum(1) / var - 0.5 * known.sum() * var.log()
    k = torch.multinomial((logw - logw.logsumexp(0)).exp(), n, replacement=True, generator=g)
    return mu_u[k] + gmm.stds[k, None] * torch.randn(n, int((~known).sum()), generator=g, dtype=F64)


def repaint(gmm, sde, x_point, known, n, g, eta=0.0):
    diffusers, why = load_diffusers()
    if diffusers is None:
        return None, why
    sched = diffusers.RePaintScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", eta=eta)
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


NETWORK_SAMPLERS = [("pc", None, {}), ("pc", 100, {}), ("reverse_diffusion", 100, {}), ("ddim", 100, {"eta": 1.0}),
                    ("ddim", 50, {}), ("dpm_solver", 20, {}), ("abm", 20, {})]


def network(name: str, images: int, seed: int):
    from sdekit.tasks.guidance import impute
    from sdekit.tasks.judge import held_out, load_judge, predict
    from sdekit.tasks.metrics import kid
    import sdekit
    model = sdekit.load(name)
    data = model.config.get("data") or name
    kind = str(data).partition(":")[0]
    held = held_out(kind)
    judge = load_judge(kind)
    real, labels = held.pick(images, seed)
    H = real.shape[-2]
    mask = torch.ones(1, 1, *real.shape[-2:])
    mask[..., H // 2:, :] = 0                                  # the lower half unknown
    rows = [[name, "real images (ceiling)", "-", "-", f"{float((predict(judge, real) == labels).float().mean()):.3f}",
             f"{kid(held.reference, real, judge).mean:.4f}", "0", "-"]]
    print(rows[-1], flush=True)
    res = []
    for sampler, steps, opts in NETWORK_SAMPLERS:
        t0 = time.perf_counter()
        x, info = impute(model.sde, model.score_fn, model.from_unit(real), mask, sampler=sampler, steps=steps,
                         generator=torch.Generator().manual_seed(seed), return_info=True, **opts)
        sec = (time.perf_counter() - t0) / images
        u = model.to_unit(x)
        acc = float((predict(judge, u) == labels).float().mean())
        k = kid(held.reference, u, judge).mean
        l2 = float((u - real)[..., H // 2:, :].flatten(1).norm(dim=1).mean())
        label = f"sdekit {sampler}" + "".join(f", {k_}={v:g}" for k_, v in opts.items())
        rows.append([name, label, info["steps"], info["nfe"], f"{acc:.3f}", f"{k:.4f}", f"{l2:.2f}", f"{sec:.3f}"])
        res.append({"sampler": sampler, "options": opts, "steps": info["steps"], "nfe": info["nfe"], "digit_kept": acc,
                    "kid": k, "l2": l2, "seconds_per_image": sec})
        print(rows[-1], flush=True)
    table = md_table(["model", "method", "steps", "evaluations", "judge reads the true class", "KID to held-out real",
                      "L2 to the true lower half", "seconds per image"], rows)
    print(table)
    save_json(f"inpaint_{name}", {"machine": machine(), "images": images, "rows": res})
    save_text(f"inpaint_{name}.md", f"{machine()}\n\n{table}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--network", default=None, help="a shipped model's name: inpaint held-out real images with it")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--problems", default="img16,64d")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.network:
        return network(args.network, args.images, args.seed)
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
        for sampler, steps, opts in SAMPLERS:
            t0 = time.perf_counter()
            x, info = sdekit.tasks.guidance.impute(sde, score, image, mask, sampler=sampler, steps=steps,
                                                   generator=torch.Generator().manual_seed(args.seed + 1),
                                                   return_info=True, **opts)
            sec = time.perf_counter() - t0
            e = energy_distance(x.reshape(args.n, -1)[:, ~known], exact)
            res["samplers"].append({"sampler": sampler, "options": opts, "steps": info["steps"], "nfe": info["nfe"], "energy": e,
                                    "seconds": sec})
            label = f"sdekit {sampler}" + "".join(f", {k}={v:g}" for k, v in opts.items())
            rows.append([name, label, info["steps"], info["nfe"], fmt(e), f"{e / floor:.1f}", f"{sec:.2f}"])
            print(rows[-1], flush=True)
        for eta in (0.0, 1.0):         # the pipeline's default eta 0 (DDIM-like steps), and 1 (DDPM's ancestral)
            t0 = time.perf_counter()
            out, why = repaint(gmm, sde, x_point, known, args.n, torch.Generator().manual_seed(args.seed + 1), eta)
            if out is None:
                rows.append([name, f"diffusers RePaint: {why}", "-", "-", "-", "-", "-"])
            else:
                x, nfe = out
                sec = time.perf_counter() - t0
                e = energy_distance(x[:, ~known], exact)
                res[f"repaint_eta{eta:g}"] = {"nfe": nfe, "energy": e, "seconds": sec}
                rows.append([name, f"diffusers RePaint (jump 1, eta {eta:g})", 1000, nfe, fmt(e), f"{e / floor:.1f}",
                             f"{sec:.2f}"])
            print(rows[-1], flush=True)
        data["problems"][name] = res
    table = md_table(["problem", "method", "steps", "evaluations", "energy distance to the exact conditional",
                      "x floor", "seconds"], rows)
    print(table)
    save_json("inpaint", data)
    save_text("inpaint.md", f"{machine()}\n\n{table}\n")


if __name__ == "__main__":
    main()

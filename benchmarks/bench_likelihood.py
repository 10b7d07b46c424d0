"""Likelihood cost on exact-score mixtures: NFE and wall time to reach |bpd - exact| < 0.01.

VP SDE, data = exact mixture samples, exact answer = -log2 p_eps(x) / D from the mixture's closed form
(eps = 1e-5 as in score_sde). Methods:
  * score_sde's setting: RK45 in t, rtol = atol = 1e-5, eps = 1e-5, the whole batch as one state
    (sdekit.likelihood solver="rk45", a faithful torch port of score_sde's scipy solve_ivp call);
  * sdekit's Heun in sigma (solver="heun") for steps = 2, 4, 8, ...: the first that meets the target;
  * k-diffusion's log_likelihood (dopri5 in sigma, its defaults rtol = atol = 1e-4, and 1e-5), which
    has only the one-probe Hutchinson estimator; sdekit with the same estimator is shown beside it.
  * sdekit's RK45 at looser tolerances (1e-2, 1e-3, 1e-4).
The divergence is exact (D vector-Jacobian products) for the solver comparison, so the error is the
solver's alone. Criterion: max over the batch of |bpd - exact| < 0.01 ("max"), and the batch mean
("mean", what papers report).

    python benchmarks/bench_likelihood.py [--problems 2d,64d] [--n 128]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import F64, Timer, fmt, load_k_diffusion_sampling, machine, md_table, mixture, save_json, save_text  # noqa: E402

from sdekit.likelihood import likelihood  # noqa: E402
from sdekit.denoisers import ScoreDenoiser as Denoiser  # noqa: E402
from sdekit.sde import VPSDE  # noqa: E402

EPS = 1e-5
TARGET = 0.01


def run_sdekit(sde, gmm, x, **kw):
    with Timer() as tm:
        bpd, info = likelihood(sde, gmm.score_fn(sde), x, eps=EPS, return_info=True,
                               generator=torch.Generator().manual_seed(1), **kw)
    return bpd, info["nfe"], tm.seconds


def run_kdiffusion(ks, sde, gmm, x, rtol):
    """k-diffusion's log_likelihood in y = x / s(eps) with sdekit's Denoiser (sigma space);
    log p_x = log p_y - D log s(eps)."""
    den = Denoiser(sde, gmm.score_fn(sde))
    t = torch.tensor([EPS, sde.T], dtype=F64)
    s_eps = float(sde.scale(t[:1]))
    smin, smax = sde.sigma(t).tolist()
    torch.manual_seed(1)                        # its Rademacher probe uses the global generator
    with Timer() as tm:
        ll, info = ks.log_likelihood(lambda y, s: den(y, float(s[0])), x / s_eps, smin, smax, atol=rtol, rtol=rtol)
    D = x[0].numel()
    logp = ll - D * math.log(s_eps)
    return -logp / (D * math.log(2)), info["fevals"], tm.seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="2d,64d")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--max-steps", type=int, default=256)
    ap.add_argument("--out", default="likelihood")
    args = ap.parse_args(argv)
    sde = VPSDE()
    ks, why = load_k_diffusion_sampling()
    out, rows = [], []
    for pname in args.problems.split(","):
        gmm = mixture(pname)
        x = gmm.sample(args.n, generator=torch.Generator().manual_seed(0), dtype=F64)
        D = x[0].numel()
        exact = -gmm.log_prob_t(sde, x, EPS) / (D * math.log(2))

        def add(method, div, bpd, nfe, sec):
            err = (bpd - exact).abs()
            r = {"problem": pname, "method": method, "divergence": div, "nfe": int(nfe), "seconds": sec,
                 "max_err": float(err.max()), "mean_err": float((bpd.mean() - exact.mean()).abs()),
                 "mean_se": float((bpd - exact).std() / math.sqrt(len(bpd))),
                 "ok_max": bool(err.max() < TARGET), "ok_mean": bool((bpd.mean() - exact.mean()).abs() < TARGET)}
            out.append(r)
            print(f"{pname} {method:40s} {div:10s} nfe={nfe:5d} {sec:7.2f}s max|err|={r['max_err']:.2e} "
                  f"mean err={r['mean_err']:.2e}", flush=True)
            return r

        add("score_sde: RK45 rtol=atol=1e-5", "exact", *run_sdekit(sde, gmm, x, probes="exact", solver="rk45"))
        for tol in (1e-2, 1e-3, 1e-4):
            add(f"sdekit rk45, rtol=atol={tol:g}", "exact",
                *run_sdekit(sde, gmm, x, probes="exact", solver="rk45", rtol=tol, atol=tol))
        steps, first_max = 2, None
        while steps <= args.max_steps and first_max is None:
            r = add(f"sdekit heun, {steps} steps", "exact",
                    *run_sdekit(sde, gmm, x, probes="exact", solver="heun", steps=steps))
            first_max = r if r["ok_max"] else None
            steps *= 2
        add("score_sde: RK45 rtol=atol=1e-5", "Hutchinson", *run_sdekit(sde, gmm, x, probes="rademacher", solver="rk45"))
        add("sdekit rk45, rtol=atol=1e-4", "Hutchinson",
            *run_sdekit(sde, gmm, x, probes="rademacher", solver="rk45", rtol=1e-4, atol=1e-4))
        if ks is not None:
            for tol in (1e-4, 1e-5):
                add(f"k-diffusion log_likelihood dopri5 tol={tol:g}", "Hutchinson", *run_kdiffusion(ks, sde, gmm, x, tol))
    header = ["problem", "method", "divergence", "NFE", "seconds", "max abs bpd err", "|mean bpd err|",
              "standard error of the mean"]
    body = [[r["problem"], ("**" + r["method"] + "**") if r["method"].startswith("sdekit") else r["method"],
             r["divergence"], r["nfe"], f"{r['seconds']:.2f}", fmt(r["max_err"]) + (" ok" if r["ok_max"] else ""),
             fmt(r["mean_err"]) + (" ok" if r["ok_mean"] else ""), fmt(r["mean_se"])] for r in out]
    summary = []
    for pname in dict.fromkeys(r["problem"] for r in out):
        ref = next(r for r in out if r["problem"] == pname and r["method"].startswith("score_sde") and r["divergence"] == "exact")
        ours = [r for r in out if r["problem"] == pname and r["method"].startswith("sdekit") and r["divergence"] == "exact"]
        for crit in ("ok_max", "ok_mean"):
            hit = min((r for r in ours if r[crit]), key=lambda r: r["nfe"], default=None)
            if hit is not None:
                summary.append([pname, crit[3:], hit["method"], hit["nfe"], ref["nfe"], f"{hit['nfe'] / ref['nfe']:.3f}",
                                f"{hit['seconds'] / ref['seconds']:.3f}"])
    command = "python benchmarks/bench_likelihood.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([f"Command: `{command.strip()}`", "", f"Machine: {machine()}", ""]
                     + ([f"Note: {why}", ""] if ks is None else [])
                     + [md_table(header, body), "",
                        f"Cheapest sdekit setting meeting |bpd - exact| < {TARGET} vs score_sde's RK45 (exact divergence):", "",
                        md_table(["problem", "criterion", "sdekit", "NFE", "score_sde NFE", "NFE ratio", "time ratio"],
                                 summary)]) + "\n"
    save_json(args.out, {"command": command, "machine": machine(), "rows": out})
    save_text(f"{args.out}.md", text)
    print(text)


if __name__ == "__main__":
    main()

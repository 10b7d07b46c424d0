"""Sample quality after equal CPU minutes: four training recipes, the same small U-Net, the same
wall-clock budget, the same sampler, scored by KID / FID against the held-out digits.

Recipes (all through sdekit.tasks.train.train, the loop `sdekit train` runs; unconditional):
  (a) sdekit   VP SDE (beta 0.1..20), EDM loss (ln sigma ~ N(-0.8, 1.4^2)), EDM preconditioning
               (the bundled digits model's recipe without the class conditioning)
  (b) ve-dsm   score_sde's VE recipe: VE SDE (sigma 0.01..50), continuous DSM with lambda = sigma^2,
               network output scaled by 1 / sigma (precond "scaled_score": score = F / std)
  (c) vp-dsm   score_sde's VP recipe: VP SDE (beta 0.1..20), continuous DSM with lambda = sigma^2,
               eps-parametrisation (precond "eps": score = -F / std)
  (d) flow     rectified flow / flow matching: the path x = (1 - t) x0 + t n, velocity loss and network,
               logit-normal times (Esser et al. 2024)
Same network (U-Net ch 16, ch_mult 1,2, one res block per level, no attention, no dropout), batch,
lr, warm-up, clipping and EMA for all. Each recipe trains for --minutes of wall time; the EMA weights
then draw --n images with one sampler budget (default Heun, 20 steps = 39 network calls, for every
SDE), and KID (subsets of --n / 2) and FID are measured with the shipped digits feature network
against the held-out 20 % of the digits (sdekit.apps.evaluation.reference_data). Training uses the whole
digits set for every recipe alike.

    python benchmarks/bench_recipes.py [--minutes 3] [--n 500] [--sampler heun --steps 20]
    python benchmarks/bench_recipes.py --only 0,3 --train-steps 800 --seeds 0,1,2,3,4   # equal steps, 5 seeds

--train-steps gives every recipe the same number of optimisation steps instead of the same wall time: the recipes
run at the same speed (one network evaluation per image per step), so equal steps are equal CPU minutes, and the
comparison does not drift with the machine's load. With several --seeds each recipe trains and samples once per
seed (recipes interleaved within a seed) and the table gives the mean with a 95 % t-interval over seeds, and the
paired difference to the first recipe (the same seed draws the initial weights and the batches).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, machine, md_table, save_json, save_text  # noqa: E402

NET = dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn=(), dropout=0.0)
COMMON = dict(data="digits", batch_size=128, lr=5e-4, warmup=200, grad_clip=1.0, ema=0.999, class_cond=False, **NET)
RECIPES = {
    "sdekit (VP, EDM loss + precond)": dict(sde="vp", loss="edm", P_mean=-0.8, P_std=1.4, precond="edm", sigma_data=0.5),
    "score_sde VE (DSM, F/sigma)": dict(sde="ve", loss="dsm", weighting="sigma2", precond="scaled_score"),
    "score_sde VP (DSM, -eps/sigma)": dict(sde="vp", loss="dsm", weighting="sigma2", precond="eps"),
    "flow matching (velocity, logit-normal t)": dict(sde="flow", loss="flow", precond="velocity",
                                                     time_density="logit_normal"),
}


def run_recipe(name, recipe, args, tmp, real, seed):
    from sdekit import load
    from sdekit.tasks.metrics import fid, kid
    from sdekit.tasks.train import TrainConfig, train
    out = Path(tmp) / f"recipe{list(RECIPES).index(name)}-seed{seed}"
    budget = dict(steps=args.train_steps, max_minutes=None) if args.train_steps else dict(steps=10 ** 7,
                                                                                           max_minutes=args.minutes)
    cfg = TrainConfig(out=str(out), **budget, seed=seed, sample_every=0,
                      ckpt_every=0, log_every=100, progress=False, threads=torch.get_num_threads(), **COMMON, **recipe)
    summary = train(cfg)
    model = load(out / "model")
    g = torch.Generator().manual_seed(seed)
    with Timer() as ts, torch.no_grad():
        x = torch.cat([model.sample(len(c), sampler=args.sampler, steps=args.steps, generator=g)
                       for c in torch.arange(args.n).split(250)])
    u = model.to_unit(x)
    k = kid(real, u, subsets=100)
    f = fid(real, u)
    row = {"recipe": name, "seed": seed, "steps": int(summary["step"]), "seconds": float(summary["seconds"]),
           "img_per_s": float(summary["img_per_s"]), "loss": summary.get("loss"), "kid": k.mean, "kid_std": k.std,
           "kid_subset": k.subset_size, "fid": f, "sample_seconds": ts.seconds}
    print(f"{name}: {row}", flush=True)
    return row


def interval(values):
    """Mean and the half-width of its 95 % t-interval over seeds (nan for one value)."""
    from scipy.stats import t as student_t
    v = torch.tensor(values, dtype=torch.float64)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(student_t.ppf(0.975, len(v) - 1) * v.std() / len(v) ** 0.5)


def cell(values, digits):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean, half = interval(values)
    return f"{mean:.{digits}f}" if half != half else f"{mean:.{digits}f} ± {half:.{digits}f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget per recipe")
    ap.add_argument("--train-steps", type=int, default=None,
                    help="train every recipe this many steps instead of --minutes of wall time")
    ap.add_argument("--n", type=int, default=500, help="images sampled per recipe")
    ap.add_argument("--sampler", default="heun")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seeds", default="0", help="comma-separated training and sampling seeds")
    ap.add_argument("--only", default=None, help="comma-separated recipe indices (0, 1, 2, 3)")
    ap.add_argument("--out", default="recipes")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    from sdekit.apps.evaluation import reference_data
    _, real = reference_data("digits", (1, 16, 16))
    names = list(RECIPES)
    if args.only:
        names = [names[int(i)] for i in args.only.split(",")]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for name in names:
                runs.append(run_recipe(name, RECIPES[name], args, tmp, real, seed))
    rows = []
    for name in names:
        mine = [r for r in runs if r["recipe"] == name]
        first = [r for r in runs if r["recipe"] == names[0]]
        rows.append({"recipe": name, "seeds": seeds, "steps": [r["steps"] for r in mine],
                     "img_per_s": sum(r["img_per_s"] for r in mine) / len(mine),
                     "kid": [r["kid"] for r in mine], "fid": [r["fid"] for r in mine],
                     "kid_minus_first": [a["kid"] - b["kid"] for a, b in zip(mine, first)],
                     "fid_minus_first": [a["fid"] - b["fid"] for a, b in zip(mine, first)
                                         if a["fid"] is not None and b["fid"] is not None]})
    budget = f"{args.train_steps} steps" if args.train_steps else f"{args.minutes:g} min"
    command = "python benchmarks/bench_recipes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    first = names[0].split(" (")[0]
    table = md_table(["recipe", "training steps", "images / s", "KID", "FID", f"KID - {first}", f"FID - {first}"],
                     [[r["recipe"], "/".join(str(s) for s in sorted(set(r["steps"]))), f"{r['img_per_s']:.0f}",
                       cell(r["kid"], 4), cell(r["fid"], 2), cell(r["kid_minus_first"], 4),
                       cell(r["fid_minus_first"], 2)] for r in rows])
    text = "\n".join([f"Command: `{command.strip()}`", "", f"Machine: {machine()}", "",
                      f"Each recipe: {budget} of training (U-Net ch 16, ch_mult 1,2, 1 res block, batch 128, "
                      f"lr 5e-4, warm-up 200, EMA 0.999, unconditional), then {args.n} images with {args.sampler} "
                      f"{args.steps} steps from the EMA weights; KID (subsets of {runs[0]['kid_subset']}) and FID in "
                      f"the shipped digits feature space against the {len(real)} held-out digits. Seeds {args.seeds}: "
                      "mean ± the half-width of the 95 % t-interval over seeds; the last two columns are the paired "
                      "differences (same seed) to the first recipe.", "", table]) + "\n"
    save_json(args.out, {"command": command, "machine": machine(), "minutes": args.minutes,
                         "train_steps": args.train_steps, "n": args.n, "sampler": args.sampler, "steps": args.steps,
                         "network": {k: list(v) if isinstance(v, tuple) else v for k, v in NET.items()},
                         "runs": runs, "rows": rows})
    save_text(f"{args.out}.md", text)
    print(text)


if __name__ == "__main__":
    main()

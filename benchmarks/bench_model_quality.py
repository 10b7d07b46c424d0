"""Sample quality of a model bundle, judged by the shipped judge of its data (MNIST or digits).

* class fidelity: class-conditional samples (each digit in turn) judged the intended class, with a
  95% binomial interval, for each sampler;
* realism: KID and FID of unconditional samples against the held-out reference split, beside the
  same figures for real images the model never saw (real-vs-real, the floor), computed the same way,
  for each of the fast solvers at about 20 network evaluations (``--samplers``; EDM's Heun deterministic and
  with churn, DPM-Solver++(2M), ABM);
  the same figures for the class-conditional samples (each digit equally often, as in the test split);
* latency: seconds for one warm SDEdit edit at the model's default settings (the page's case: the
  class read from the guide and a class-guided edit where the bundle says so), and for a plain edit.

    python benchmarks/bench_model_quality.py --model src/sdekit/assets/mnist --data mnist:../shared/data/mnist \
        [--n 1000] [--samplers heun:10,heun:10:churn=5,dpm_solver:20,abm:20] [--out benchmarks/results/model_quality.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import sdekit  # noqa: E402
from sdekit.models.bundle import generate  # noqa: E402
from sdekit.tasks.judge import held_out, load_judge, predict  # noqa: E402
from sdekit.tasks.metrics import binomial_ci, fid, kid  # noqa: E402
from sdekit.tasks.sdedit import default_t0  # noqa: E402


def parse_samplers(text: str):
    """"name:steps[:key=value...],..." -> [(name, steps, {key: float})], e.g. "heun:10:churn=5,abm:20"."""
    out = []
    for item in text.split(","):
        name, steps, *opts = item.split(":")
        out.append((name, int(steps), {k: float(v) for k, v in (o.split("=") for o in opts)}))
    return out


def label(name, steps, opts):
    return ":".join([name, str(steps), *(f"{k}={v:g}" for k, v in opts.items())])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--data", required=True, help="the judge's data spec, e.g. mnist:DIR or digits")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--samplers", default="heun:10,heun:10:churn=5,dpm_solver:20,abm:20",
                   help="sampler:steps[:option=value],... (heun's 10 steps are 19 evaluations; churn: EDM's S_churn)")
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance of the conditional samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    samplers = parse_samplers(args.samplers)
    torch.set_num_threads(1)

    model = sdekit.load(args.model)
    judge = load_judge(args.data)
    held = held_out(args.data, size=model.shape[-1])
    n = args.n
    ref = held.reference[:n]
    real, _ = held.pick(min(n, len(held.real)), seed=1)
    k_real, f_real = kid(ref, real, judge), fid(ref, real, judge)
    ratio = lambda f: (f / f_real) if f and f_real else None  # noqa: E731
    labels = torch.arange(n) % model.num_classes
    t = time.perf_counter()
    rows = []
    for name, steps, opts in samplers:
        cond, info = generate(model, n, name, steps, seed=args.seed, class_labels=labels, guidance=args.guidance,
                              batch_size=250, progress=True, return_info=True, **opts)
        cond = model.to_unit(cond)
        hits = int((predict(judge, cond) == labels).sum())
        fidelity = binomial_ci(hits, n)
        k_cond, f_cond = kid(ref, cond, judge), fid(ref, cond, judge)
        x = model.to_unit(generate(model, n, name, steps, seed=args.seed + 1, batch_size=250, progress=True, **opts))
        k, f = kid(ref, x, judge), fid(ref, x, judge)
        rows.append({"sampler": label(name, steps, opts), "nfe_per_sample": info["nfe"] / -(-n // 250),
                     "class_fidelity": {"hits": hits, "rate": fidelity[0], "ci95": fidelity[1:]},
                     "unconditional": {"kid": [k.mean, k.std], "fid": f, "fid_ratio": ratio(f)},
                     "class_conditional_realism": {"kid": [k_cond.mean, k_cond.std], "fid": f_cond,
                                                   "fid_ratio": ratio(f_cond)}})
    seconds = time.perf_counter() - t

    guide = model.from_unit(held.pick(1, seed=2)[0])
    lat, plain = [], []
    for i in range(6):
        a = time.perf_counter()                      # the default edit: class read (if the bundle says so) and edit
        g = torch.Generator().manual_seed(i)
        fn = sdekit.edit_condition(model, guide, generator=g)[0]
        sdekit.sdedit(model.sde, fn, guide, generator=g, model=model)
        lat.append(time.perf_counter() - a)
        a = time.perf_counter()
        sdekit.sdedit(model.sde, model.score_fn, guide, generator=torch.Generator().manual_seed(i), model=model)
        plain.append(time.perf_counter() - a)
    res = {
        "command": "python benchmarks/bench_model_quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": model.name, "step": model.config.get("step"), "n": n, "seed": args.seed, "guidance": args.guidance,
        "real_vs_real": {"kid": [k_real.mean, k_real.std], "fid": f_real},
        "samplers": rows,
        "edit_latency_s_median": statistics.median(lat[1:]), "t0_default": default_t0(model),
        "plain_edit_latency_s_median": statistics.median(plain[1:]), "t0_plain": default_t0(model, False),
        "sampling_seconds": seconds,
    }
    print(json.dumps(res, indent=2))
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"real vs real: FID {fmt(f_real)}")
    print("sampler | NFE | class fidelity [95% CI] | unconditional FID (x real) | class-conditional FID (x real)")
    for r in rows:
        c, u, cc = r["class_fidelity"], r["unconditional"], r["class_conditional_realism"]
        print(f"{r['sampler']} | {r['nfe_per_sample']:.0f} | {c['rate']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}] | "
              f"{fmt(u['fid'])} ({fmt(u['fid_ratio'])}x) | {fmt(cc['fid'])} ({fmt(cc['fid_ratio'])}x)")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()

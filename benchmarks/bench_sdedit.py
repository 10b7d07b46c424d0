"""SDEdit cost and quality on the digits model: seconds per edit vs t0 and sampler, L2 to the guide
and KID to real digits (the shipped digits feature network).

Guides are stroke paintings of held-out digits (sdekit.tasks.sdedit.simulate_strokes). For each t0 the
steps scale with t0 (steps = ceil(t0 * full)), as in Meng et al.'s Delta t = t0 / N.

    python benchmarks/bench_sdedit.py [--n 32] [--t0 0.3,0.5,0.7] [--quick]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, machine, md_table, save_json, save_text  # noqa: E402

SAMPLERS = {  # name -> (sampler, steps over the full [eps, T], options)
    "reverse_diffusion (Alg. 1)": ("reverse_diffusion", 100, {}),
    "ddim": ("ddim", 20, {}),
    "heun": ("heun", 10, {}),
    "dpm_solver": ("dpm_solver", 20, {}),
}


@torch.no_grad()
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="edits per setting (one batch)")
    ap.add_argument("--t0", default="0.3,0.5,0.7")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="sdedit")
    args = ap.parse_args(argv)
    import sdekit
    from sdekit.data.datasets import digits
    from sdekit.tasks.metrics import kid, l2
    from sdekit.tasks.sdedit import sdedit, simulate_strokes
    try:
        model, what = sdekit.load(), "bundled digits model"
    except Exception as e:
        from sdekit.models.bundle import random_model
        model, what = random_model(), f"random_model() (bundle unavailable: {e})"
    n, t0s = (4, [0.5]) if args.quick else (args.n, [float(v) for v in args.t0.split(",")])
    data = digits(model.shape[-1])
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data), generator=g)
    real, held = data.x[idx[:512]], data.x[idx[-n:]]
    guides = simulate_strokes(held)
    rows, out = [], []
    samplers = dict(list(SAMPLERS.items())[:2]) if args.quick else SAMPLERS
    for t0 in t0s:
        for name, (sampler, full, opts) in samplers.items():
            steps = max(2, math.ceil(t0 * (full if not args.quick else 4)))
            gen = torch.Generator().manual_seed(1)
            with Timer() as tm:
                x = sdedit(model.sde, model.score_fn, guides, t0=t0, steps=steps, sampler=sampler, generator=gen, **opts)
            u = model.to_unit(x)
            d_l2 = float(l2(u, model.to_unit(guides)).mean())
            k = kid(model.to_unit(real), u, subsets=20) if not args.quick else None
            r = {"t0": t0, "sampler": name, "steps": steps, "seconds_per_edit": tm.seconds / n,
                 "l2_to_guide": d_l2, "kid": None if k is None else k.mean, "kid_std": None if k is None else k.std}
            out.append(r)
            rows.append([t0, name, steps, f"{r['seconds_per_edit']:.3f}", f"{d_l2:.3f}",
                         "-" if k is None else f"{k.mean:.4f} ± {k.std:.4f}"])
            print(rows[-1], flush=True)
    command = "python benchmarks/bench_sdedit.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([f"Command: `{command.strip()}`", "", f"Machine: {machine()}", "",
                      f"Network: {what}; {n} stroke-painting guides in one batch; KID vs 512 real digits "
                      "(mean ± std over subsets).", "",
                      md_table(["t0", "sampler", "steps", "seconds / edit", "L2 to guide (pixels in [0,1])", "KID"],
                               rows)]) + "\n"
    save_json(args.out, {"command": command, "machine": machine(), "rows": out})
    save_text(f"{args.out}.md", text)
    print(text)


if __name__ == "__main__":
    main()

"""Masked colour editing and compositing with the bundled colour model (emoji), measured on held-out emoji.

Masked editing (SDEdit's stroke-based editing): a held-out emoji whose central square (half the side) is
replaced by its own simulated stroke painting (the paper's simulation: median filter, then a few flat colours,
sdekit.tasks.strokes.simulate_from); SDEdit regenerates that square from t0 and keeps the rest exactly
(sdekit.sdedit with a mask). Compositing: the central square of another held-out emoji pasted onto one, then
harmonised (sdekit.tasks.sdedit.composite: the source kept exactly outside the square grown by one pixel).

For each t0: realism (KID against the held-out reference in the emoji judge's features, mean and a 95 %
interval of +/- 1.96 std over subsets), faithfulness (L2 to the guide inside the square, pixels in [0, 1]),
the category the judge reads (masked edits: the emoji's own; composites: the source's), and the largest change
outside the edited region (0: kept exactly). Beside them the raw guides (the pasted squares, not edited) and
real vs real. Unconditional edits with the model's default edit sampler and steps.

    python benchmarks/bench_colour_edits.py [--n 200] [--t0 0.2,0.3,0.4,0.5,0.6] [--data emoji:../shared/data/emoji]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, md_table, save_json, save_text  # noqa: E402


def square(size: int) -> torch.Tensor:
    """[1, 1, size, size]: 1 inside the central square of half the side (the edited region), else 0."""
    r = torch.zeros(1, 1, size, size)
    a = size // 4
    r[..., a:size - a, a:size - a] = 1
    return r


def main(argv=None):
    import sdekit
    from sdekit.tasks.judge import held_out, load_judge, predict
    from sdekit.tasks.metrics import kid
    from sdekit.tasks.sdedit import composite
    from sdekit.tasks.strokes import simulate_from
    from sdekit.core.bars import progress_bar
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--data", default="emoji:../shared/data/emoji")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--t0", default="0.2,0.3,0.4,0.5,0.6")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--out", default="colour_edits")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    model = sdekit.load(args.model)
    C, H, W = model.shape
    judge = load_judge(args.data)
    h = held_out(args.data, H)
    real, labels = h.pick(args.n, args.seed)
    other, _ = h.pick(args.n, args.seed + 1)
    region = square(H)
    inside = region.bool().expand(args.n, C, H, W)

    grown = torch.nn.functional.max_pool2d(region, 3, 1, 1).bool().expand(args.n, C, H, W)

    def measure(name, t0, out, guide, allowed, seconds=None):
        """One row: ``out`` against the reference, the ``guide`` inside the square, ``real`` where ``allowed`` is
        False (the pixels that must be kept), and the emoji's own category."""
        k = kid(h.reference, out, judge, subsets=100)
        d = (out - guide).masked_fill(~inside, 0).flatten(1).norm(dim=1).double()
        outside = (out - real).abs().masked_fill(allowed, 0).amax().item()
        read = (predict(judge, out) == labels).double()
        row = {"task": name, "t0": t0, "kid": k.mean, "kid_lo": k.mean - 1.96 * k.std, "kid_hi": k.mean + 1.96 * k.std,
               "l2_in_region": d.mean().item(), "l2_ci": 1.96 * d.std().item() / len(d) ** 0.5,
               "category_kept": read.mean().item(), "max_change_outside": outside, "seconds": seconds}
        print(row, flush=True)
        return row

    def timed(edit, t0):
        """``edit(batch index, generator)`` over the batches at ``t0``: (outputs in [0, 1], seconds)."""
        g = torch.Generator().manual_seed(args.seed)
        start = time.perf_counter()
        out = torch.cat([model.to_unit(edit(i, g)).clamp(0, 1) for i in range(0, args.n, args.batch)])
        return out, time.perf_counter() - start

    # masked edit: the square regenerated, the rest kept; composite: the source kept outside the grown square
    masked_guide = region * simulate_from(real, data=args.data) + (1 - region) * real
    comp_guide = region * other + (1 - region) * real
    keep = 1 - region
    t0s = [float(t) for t in args.t0.split(",")]
    rows = [measure("masked edit", None, masked_guide, masked_guide, inside)]
    for t0 in progress_bar(t0s, desc="t0"):
        out, sec = timed(lambda i, g: sdekit.sdedit(model.sde, model.score_fn,
                                                    model.from_unit(masked_guide[i:i + args.batch]), t0=t0,
                                                    mask=keep.expand(len(masked_guide[i:i + args.batch]), 1, H, W),
                                                    generator=g), t0)
        rows.append(measure("masked edit", t0, out, masked_guide, inside, sec))
    rows.append(measure("composite", None, comp_guide, comp_guide, grown))
    for t0 in progress_bar(t0s, desc="t0"):
        out, sec = timed(lambda i, g: composite(model.sde, model.score_fn, model.from_unit(real[i:i + args.batch]),
                                                model.from_unit(other[i:i + args.batch]), region, t0=t0,
                                                generator=g)[0], t0)
        rows.append(measure("composite", t0, out, comp_guide, grown, sec))
    rr = measure("real vs real", None, real, real, torch.zeros_like(inside))
    rows.append(rr)
    command = "python benchmarks/bench_colour_edits.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = md_table(["task", "t0", "KID [95 % over subsets]", "L2 to the guide in the square", "category kept",
                      "largest change outside", "seconds"],
                     [[r["task"] if r["t0"] is not None or r["task"] == "real vs real" else f"{r['task']}: raw guide",
                       "-" if r["t0"] is None else f"{r['t0']:g}", f"{r['kid']:.3f} [{r['kid_lo']:.3f}, {r['kid_hi']:.3f}]",
                       f"{r['l2_in_region']:.2f} ± {r['l2_ci']:.2f}", f"{r['category_kept']:.1%}",
                       f"{r['max_change_outside']:.1e}", "-" if r["seconds"] is None else f"{r['seconds']:.0f}"]
                      for r in rows])
    text = "\n".join([f"Command: `{command.strip()}`", "", f"Machine: {machine()}", "",
                      f"Model {model.name} (step {model.config.get('step')}), {args.n} held-out emoji, seed {args.seed}; "
                      f"the judge reads held-out real emoji as their category {rr['category_kept']:.1%} here.", "",
                      table]) + "\n"
    save_json(args.out, {"command": command, "machine": machine(), "n": args.n, "model": str(args.model),
                         "step": model.config.get("step"), "rows": rows})
    save_text(f"{args.out}.md", text)
    print(text)


if __name__ == "__main__":
    main()

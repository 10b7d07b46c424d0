"""SDEdit with a t0 map (per-pixel t0) vs plain SDEdit: evaluations and wall time per edit.

The map is the demo's gradient from keep (t0 = 0, top row) to change (t0 = the map's largest, bottom
row); plain SDEdit runs at that largest t0. Both use the library's default sampler and steps rule,
so the solver's grid is the same; the map adds the step hook's work (a draw of the forward kernel per
step while any pixel is held) and the check of the map.

    python benchmarks/bench_t0map.py [--n 16] [--t0 0.4] [--repeats 5] [--model default|random] [--quick]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, md_table, median, save_json, save_text  # noqa: E402


@torch.no_grad()
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="edits per call (one batch)")
    ap.add_argument("--t0", type=float, default=0.4, help="plain SDEdit's t0 and the map's largest")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per setting (median; after one warm-up each)")
    ap.add_argument("--model", default="default", choices=["default", "random"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="t0map")
    args = ap.parse_args(argv)
    import sdekit
    from sdekit.models.bundle import random_model
    from sdekit.tasks.sdedit import sdedit
    if args.quick:
        args.n, args.repeats, args.model = 2, 1, "random"
    model, what = (random_model(), "random_model()") if args.model == "random" else (sdekit.load(), "the default model")
    C, H, W = model.shape
    g = torch.Generator().manual_seed(0)
    guides = model.from_unit(torch.rand(args.n, C, H, W, generator=g))
    ramp = args.t0 * torch.linspace(0, 1, H, dtype=torch.float64).view(1, 1, H, 1).expand(1, 1, H, W)
    settings = {"plain SDEdit": args.t0, "t0 map (gradient 0..t0)": ramp}

    def edit(t0):
        return sdedit(model.sde, model.score_fn, guides, t0=t0, generator=torch.Generator().manual_seed(1),
                      return_info=True)[1]

    infos = {name: edit(t0) for name, t0 in settings.items()}          # also the warm-up
    wall, cpu = {name: [] for name in settings}, {name: [] for name in settings}
    for _ in range(args.repeats):            # interleaved, so a busy machine slows both alike
        for name, t0 in settings.items():
            w, c = time.perf_counter(), time.process_time()
            edit(t0)
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    rows, out = [], {}
    for name, info in infos.items():
        seconds, cpu_s = median(wall[name]), median(cpu[name])
        out[name] = {"nfe": info["nfe"], "steps": info["steps"], "sampler": info["sampler"], "seconds": seconds,
                     "cpu_seconds": cpu_s, "seconds_per_edit": seconds / args.n}
        rows.append([name, info["sampler"], info["steps"], info["nfe"], f"{seconds:.3f}", f"{cpu_s:.3f}",
                     f"{seconds / args.n:.4f}"])
        print(rows[-1], flush=True)
    plain, mapped = out["plain SDEdit"], out["t0 map (gradient 0..t0)"]
    ratio = {k: mapped[k] / plain[k] for k in ("nfe", "seconds", "cpu_seconds")}
    rows.append(["ratio map / plain", "", "", f"{ratio['nfe']:.2f}", f"{ratio['seconds']:.2f}",
                 f"{ratio['cpu_seconds']:.2f}", ""])
    command = "python benchmarks/bench_t0map.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([f"Command: `{command.strip()}`", "", f"Machine: {machine()}", "",
                      f"Network: {what} ({W}x{H}x{C}); {args.n} random guides in one batch; t0 = {args.t0:g}; "
                      f"median of {args.repeats} calls each, interleaved.", "",
                      md_table(["edit", "sampler", "steps", "evaluations", "wall s / call", "CPU s / call",
                                "wall s / edit"], rows)]) + "\n"
    save_json(args.out, {"command": command, "machine": machine(), "n": args.n, "t0": args.t0, "results": out,
                         "ratio": ratio})
    save_text(f"{args.out}.md", text)
    print(text)


if __name__ == "__main__":
    main()

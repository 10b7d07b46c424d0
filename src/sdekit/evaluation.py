"""The t0 sweep: realism (KID) against faithfulness (L2) of SDEdit on simulated stroke paintings.

Pairs (real, stroke) come from the training split: the stroke is :func:`simulate_strokes` of the
real image. For every t0, SDEdit turns each stroke into an output; faithfulness is the L2 between output
and stroke (pixels in [0, 1], full and 4x downsampled resolution, mean with a 95% CI over guides),
realism the KID between the outputs and the held-out split, unseen by the feature network (mean and
std over 100 random subsets of size min(n, n_ref)).
Baselines on the same strokes: the stroke itself, its nearest neighbour in the training images
(pixel L2), plain samples (no guide), and the hidden real image (the ideal answer).
"""
from __future__ import annotations

import csv
import html
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .errors import UserError
from .io import atomic_path, atomic_write_text
from .metrics import fid, kid, l2, l2_downsampled, mean_ci
from .sdedit import sdedit, simulate_strokes

__all__ = ["evaluate", "EvalResult", "parse_t0s", "reference_data"]

T0S = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass
class EvalResult:
    method: str
    t0: float | None
    kid: float
    kid_std: float
    fid: float | None
    l2: float
    l2_ci: float
    l2_down: float
    l2_down_ci: float
    l2_real: float            # L2 to the hidden real image the stroke was made from
    nfe: int = 0
    extra: dict = field(default_factory=dict)


def parse_t0s(spec) -> tuple[float, ...]:
    """'0.1,0.2,...' -> floats in (0, 1]."""
    if isinstance(spec, (tuple, list)):
        vals = [float(v) for v in spec]
    else:
        try:
            vals = [float(v) for v in str(spec).split(",") if v.strip()]
        except ValueError:
            raise UserError(f"--t0 must be a comma-separated list of numbers, got {spec!r}") from None
    if not vals or any(not 0 < v <= 1 for v in vals):
        raise UserError(f"every t0 must lie in (0, 1], got {spec!r}")
    return tuple(sorted(set(vals)))


def reference_data(spec: str, shape, seed: int = 0):
    """(train_u, test_u): pixels in [0, 1] at the model's shape, split 80/20 by a seeded permutation
    (for digits: the feature network's own split, so its test images are unseen by it)."""
    from .nets.features import split_digits
    C, H, W = shape
    if C != 1:
        raise UserError(f"the shipped feature network measures 1-channel images; this model has {C} channels")
    if spec == "digits" and (H, W) == (16, 16):
        tr, _, te, _ = split_digits(seed)
        return tr, te
    from .data import load_dataset
    d = load_dataset(spec, size=H, channels=C)
    if not d.is_image or d.shape != tuple(shape):
        raise UserError(f"data {spec!r} has shape {d.shape}, the model {tuple(shape)}")
    lo, hi = d.data_range
    u = ((d.x - lo) / (hi - lo)).clamp(0, 1)
    perm = torch.randperm(len(u), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(0.2 * len(u)))
    return u[perm[n_test:]], u[perm[:n_test]]


def _nearest(train: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return train[torch.cdist(q.flatten(1), train.flatten(1)).argmin(1)]


def _row(method, t0, out, strokes, real, ref, feats, nfe=0) -> EvalResult:
    k = kid(ref, out, feature=feats, subsets=100, subset_size=min(len(out), len(ref)))
    d, dd, dr = l2(out, strokes), l2_downsampled(out, strokes, 4), l2(out, real)
    (m, h), (md, hd) = mean_ci(d), mean_ci(dd)
    return EvalResult(method, t0, k.mean, k.std, fid(ref, out, feats), m, h, md, hd, float(dr.mean()), nfe)


def evaluate(model, data: str = "digits", t0s=T0S, n: int = 200, sampler: str = "reverse_diffusion",
             steps_per_unit: int = 50, seed: int = 0, out="sdekit-eval", batch_size: int = 200,
             progress: bool = True) -> tuple[list[EvalResult], Path]:
    """Run the sweep and write results.csv, results.md, tradeoff.png, grid.png and index.html into
    ``out``; returns (rows, path of index.html). SDEdit uses max(4, round(steps_per_unit * t0))
    steps of ``sampler``."""
    from .bundle import generate
    from .nets.features import load_features
    t_begin = time.time()
    t0s = parse_t0s(t0s)
    if n < 4:
        raise UserError(f"-n must be at least 4, got {n}")
    train, test = reference_data(data, model.shape, seed)
    if n > len(train):
        raise UserError(f"-n {n} is more than the {len(train)} training images")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 1))[:n]
    real, ref = train[pick], test
    train = train[torch.ones(len(train), dtype=torch.bool).index_fill_(0, pick, False)]   # NN baseline excludes the guide's own image
    strokes = simulate_strokes(real)
    feats = load_features()
    g = torch.Generator().manual_seed(seed)
    X, U = model.from_unit, model.to_unit
    rows: list[EvalResult] = []
    outputs = {}
    for t0 in tqdm(t0s, desc="t0 sweep", disable=not progress):
        steps = max(4, round(steps_per_unit * t0))
        res = torch.cat([U(sdedit(model.sde, model.score_fn, X(b), t0=t0, steps=steps, sampler=sampler, generator=g))
                         for b in strokes.split(batch_size)])
        outputs[t0] = res
        rows.append(_row("SDEdit", t0, res, strokes, real, ref, feats, nfe=steps))
    samples = U(generate(model, n, "dpm_solver", 20, seed=seed))
    near = _nearest(train, strokes)
    rows += [_row("stroke itself", None, strokes, strokes, real, ref, feats),
             _row("nearest training image", None, near, strokes, real, ref, feats),
             _row("plain samples (no guide)", None, samples, strokes, real, ref, feats, nfe=20),
             _row("hidden real image", None, real, strokes, real, ref, feats)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": getattr(model, "name", "model"), "data": data, "n_guides": n, "n_reference": len(ref),
            "sampler": sampler, "steps_per_unit": steps_per_unit, "seed": seed,
            "seconds": round(time.time() - t_begin, 1), "feature_test_accuracy": getattr(feats, "test_accuracy", None)}
    _write_csv(out / "results.csv", rows)
    md = _markdown(rows, meta)
    atomic_write_text(out / "results.md", md)
    atomic_write_text(out / "results.json", json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1))
    _plot(out / "tradeoff.png", rows)
    from .images import save_labelled_grid
    k = min(8, n)
    cols = [real[:k], strokes[:k]] + [outputs[t][:k] for t in t0s] + [near[:k]]
    save_labelled_grid(out / "grid.png", torch.stack(cols, 1), [f"guide {i + 1}" for i in range(k)],
                       ["real", "stroke"] + [f"t0={t:g}" for t in t0s] + ["nearest"])
    index = _html(out, md, meta)
    return rows, index


def _fmt(v, nd=4):
    return "" if v is None else f"{v:.{nd}f}"


def _write_csv(path, rows):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "t0", "kid", "kid_std", "fid", "l2", "l2_ci95", "l2_down4", "l2_down4_ci95", "l2_to_real", "nfe"])
    for r in rows:
        w.writerow([r.method, "" if r.t0 is None else r.t0, _fmt(r.kid, 5), _fmt(r.kid_std, 5), _fmt(r.fid, 3),
                    _fmt(r.l2), _fmt(r.l2_ci), _fmt(r.l2_down), _fmt(r.l2_down_ci), _fmt(r.l2_real), r.nfe])
    atomic_write_text(path, buf.getvalue())


def _markdown(rows, meta) -> str:
    lines = ["| method | t0 | KID (± std over subsets) | FID | L2 to stroke (± 95% CI) | L2 4x down (± 95% CI) | L2 to real | NFE |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {'' if r.t0 is None else f'{r.t0:g}'} | {r.kid:.4f} ± {r.kid_std:.4f} | "
                     f"{'—' if r.fid is None else f'{r.fid:.2f}'} | {r.l2:.3f} ± {r.l2_ci:.3f} | "
                     f"{r.l2_down:.3f} ± {r.l2_down_ci:.3f} | {r.l2_real:.3f} | {r.nfe} |")
    lines.append("")
    lines.append(f"{meta['n_guides']} guides (strokes simulated from {meta['data']} training images), KID against "
                 f"{meta['n_reference']} held-out images; sampler {meta['sampler']}, "
                 f"{meta['steps_per_unit']} x t0 steps; seed {meta['seed']}; {meta['seconds']} s.")
    return "\n".join(lines) + "\n"


def _plot(path, rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sw = [r for r in rows if r.t0 is not None]
    base = [r for r in rows if r.t0 is None]
    t = [r.t0 for r in sw]
    fig, (a1, a3) = plt.subplots(1, 2, figsize=(11, 4))
    a1.errorbar(t, [r.l2 for r in sw], yerr=[r.l2_ci for r in sw], color="C0", marker="o", capsize=3, label="L2 to stroke")
    a1.set_xlabel("t0")
    a1.set_ylabel("L2 to the stroke (pixels in [0,1]) — faithfulness", color="C0")
    a2 = a1.twinx()
    a2.errorbar(t, [r.kid for r in sw], yerr=[r.kid_std for r in sw], color="C3", marker="s", capsize=3, label="KID")
    a2.set_ylabel("KID vs held-out real — realism", color="C3")
    a1.set_title("SDEdit: faithful (small t0) vs realistic (large t0)")
    a3.errorbar([r.l2 for r in sw], [r.kid for r in sw], xerr=[r.l2_ci for r in sw], yerr=[r.kid_std for r in sw],
                marker="o", color="C0", capsize=2, label="SDEdit")
    for r in sw:
        a3.annotate(f"{r.t0:g}", (r.l2, r.kid), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for i, r in enumerate(base):
        a3.errorbar([r.l2], [r.kid], xerr=[r.l2_ci], yerr=[r.kid_std], marker="^", ls="none", color=f"C{i + 4}",
                    capsize=2, label=r.method)
    a3.set_xlabel("L2 to the stroke (lower = more faithful)")
    a3.set_ylabel("KID (lower = more realistic)")
    a3.set_title("trade-off (labels: t0)")
    a3.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _html(out: Path, md: str, meta: dict) -> Path:
    table_rows = [line.strip("|").split("|") for line in md.splitlines() if line.startswith("|")]
    head, body = table_rows[0], table_rows[2:]
    table = "<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in body) + "</table>"
    note = md.splitlines()[-1]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>SDEdit evaluation</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>SDEdit on {html.escape(str(meta['data']))}: realism vs faithfulness</h1>
<p>Model {html.escape(str(meta['model']))}. {html.escape(note)} KID and FID are measured in the feature space of a
small classifier trained on the digits (test accuracy {meta.get('feature_test_accuracy')}), not Inception: compare
them within this report only.</p>
{table}
<p><a href="results.csv">results.csv</a> · <a href="results.json">results.json</a></p>
<h2>Trade-off</h2><img src="tradeoff.png" alt="KID and L2 against t0">
<h2>Outputs (rows: guides; columns: the hidden real image, its simulated stroke, SDEdit per t0, nearest training image)</h2>
<img src="grid.png" alt="grid of outputs">
</body></html>
"""
    atomic_write_text(out / "index.html", page)
    return out / "index.html"

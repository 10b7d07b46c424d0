"""The demo: samples and every SDEdit task on the bundled digits model, in one HTML report.

Sections: samples; stroke painting -> image from the hand-made guides shipped in
``sdekit/assets/strokes/``; the same from strokes simulated from held-out digits; stroke-based
editing with a mask; image compositing; the t0 strip (realism vs faithfulness); the toy pictures.
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .images import SCALE, load_image, save_labelled_grid
from .io import atomic_write_text
from .sdedit import composite, sdedit, simulate_strokes

__all__ = ["demo", "stroke_guides", "STROKES_DIR"]

STROKES_DIR = Path(__file__).resolve().parent / "assets" / "strokes"


@dataclass
class Settings:
    n_samples: int = 64
    sample_steps: int = 20             # dpm_solver steps for plain samples
    steps_per_unit: int = 60           # SDEdit steps = steps_per_unit * t0 (>= 4)
    t0: float = 0.3                    # VP: s(0.3) = 0.63, noise std 0.78 -- the strokes survive coarsely
    seeds_per_guide: int = 3
    n_real: int = 8
    strip_t0: tuple = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
    toy_n: int = 1000


SMALL = Settings(n_samples=16, sample_steps=4, steps_per_unit=8, seeds_per_guide=2, n_real=4,
                 strip_t0=(0.2, 0.6, 1.0), toy_n=100)


def stroke_guides(shape) -> tuple[list[str], torch.Tensor]:
    """The shipped stroke paintings as pixels [G, C, H, W] in [0, 1] at the model's resolution."""
    files = sorted(STROKES_DIR.glob("*.png"))
    return [f.stem for f in files], torch.cat([load_image(f, shape).pixels for f in files])


def _steps(s: Settings, t0: float) -> int:
    return max(4, round(s.steps_per_unit * t0))


def demo(out="sdekit-demo", seed: int = 0, model=None, small: bool = False, toy: bool = True,
         progress: bool = True, scale: int = SCALE) -> Path:
    """Write the demo report into folder ``out``; returns the path of its index.html.
    model: a :class:`sdekit.Model` (default: the bundled digits model); small: a quick version;
    scale: enlargement of the pictures (nearest neighbour)."""
    from .bundle import generate, load
    from .nets.features import split_digits
    t_start = time.time()
    s = SMALL if small else Settings()
    model = load() if model is None else model
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sde, score, shape = model.sde, model.score_fn, model.shape
    g = torch.Generator().manual_seed(seed)
    U, X = model.to_unit, model.from_unit
    figs: list[tuple[str, str, str]] = []               # (section, png, caption)
    bar = tqdm(total=6, desc="demo", disable=not progress)

    def edit(guide_u, t0, **kw):
        return U(sdedit(sde, score, X(guide_u), t0=t0, steps=_steps(s, t0), generator=g, **kw))

    # 1. samples
    x = generate(model, s.n_samples, "dpm_solver", s.sample_steps, seed=seed)
    from .data import save_grid
    save_grid(out / "samples.png", U(x), scale=scale)
    figs.append(("Samples", "samples.png", f"{s.n_samples} samples, DPM-Solver++(2M), {s.sample_steps} steps"))
    bar.update()

    # 2. stroke painting -> image, from the shipped guides
    names, guides = stroke_guides(shape)
    k = s.seeds_per_guide
    res = edit(guides.repeat_interleave(k, 0), s.t0).reshape(len(names), k, *shape)
    save_labelled_grid(out / "strokes.png", torch.cat([guides[:, None], res], 1), names,
                       ["guide"] + [f"seed {i + 1}" for i in range(k)], scale=scale)
    figs.append(("Stroke painting to image", "strokes.png",
                 f"hand-made stroke paintings (sdekit/assets/strokes) and SDEdit outputs at t0 = {s.t0}"))
    bar.update()

    # 3. simulated strokes from held-out digits
    _, _, test_u, _ = split_digits()
    real = test_u[: s.n_real].to(guides)
    if real.shape[1:] != shape:
        real = torch.nn.functional.interpolate(real, size=shape[-2:], mode="bilinear").expand(-1, shape[0], -1, -1)
    strokes = simulate_strokes(real)
    res = edit(strokes, s.t0)
    save_labelled_grid(out / "simulated.png", torch.stack([real, strokes, res]), ["real", "stroke", "SDEdit"],
                       scale=scale)
    figs.append(("Stroke painting to image", "simulated.png",
                 "strokes simulated from held-out digits (median filter + 3-colour quantisation), then SDEdit "
                 f"at t0 = {s.t0}: the output follows the stroke, not the hidden real image"))
    bar.update()

    # 4. stroke-based editing with a mask: keep the top half, repaint the bottom half from a stroke
    H = shape[-2]
    n = s.n_real
    donors = strokes.roll(1, 0)
    guide = real.clone()
    guide[..., H // 2:, :] = donors[..., H // 2:, :]
    mask = torch.zeros(1, 1, *shape[-2:])
    mask[..., : H // 2, :] = 1
    res = edit(guide, s.t0, mask=mask)
    save_labelled_grid(out / "masked.png", torch.stack([real, guide, mask.expand(n, *shape), res]),
                       ["source", "guide", "mask (white = keep)", "SDEdit"], scale=scale)
    figs.append(("Stroke-based editing", "masked.png",
                 f"the bottom half is painted over with strokes and regenerated at t0 = {s.t0}; "
                 "the top half (mask = 1) is kept exactly"))
    bar.update()

    # 5. image compositing: paste the right half of one digit onto another and harmonise
    W = shape[-1]
    region = torch.zeros(1, 1, *shape[-2:])
    region[..., W // 2:] = 1
    patch = real.roll(2, 0)
    res, pasted = composite(sde, score, X(real), X(patch), region, t0=0.4, border=1, steps=_steps(s, 0.4), generator=g)
    save_labelled_grid(out / "composite.png", torch.stack([real, patch, U(pasted), U(res)]),
                       ["source", "patch", "pasted", "harmonised"], scale=scale)
    figs.append(("Image compositing", "composite.png",
                 "the right half of another digit pasted onto the source; SDEdit at t0 = 0.4 regenerates the "
                 "pasted half and a 1-pixel seam, the rest of the source is kept"))
    bar.update()

    # 6. the t0 strip
    rows = torch.cat([guides[:2], strokes[:1]])
    cols = [rows] + [edit(rows, t0) for t0 in s.strip_t0]
    save_labelled_grid(out / "t0_strip.png", torch.stack(cols, 1), [names[0], names[1], "simulated"],
                       ["guide"] + [f"t0={t0:g}" for t0 in s.strip_t0], scale=scale)
    figs.append(("Realism vs faithfulness: the choice of t0", "t0_strip.png",
                 "small t0 stays faithful to the guide (and as unrealistic as it), t0 near 1 forgets it"))
    bar.update()
    bar.close()

    toy_link = ""
    if toy:
        try:
            from .toy import toy_report
        except ImportError:
            toy_report = None
        if toy_report is not None:
            idx = toy_report(out / "toy", seed=seed, n=s.toy_n)
            toy_link = f'<p><a href="{html.escape(str(Path(idx).relative_to(out)))}">The toy pictures</a>: ' \
                       "forward and reverse SDE and ODE flow on 1-D and 2-D data with exact scores.</p>"

    seconds = time.time() - t_start
    _write_index(out, model, figs, toy_link, seconds, seed, s)
    return out / "index.html"


def _write_index(out: Path, model, figs, toy_link: str, seconds: float, seed: int, s: Settings) -> None:
    body, last = [], None
    for section, png, caption in figs:
        if section != last:
            body.append(f"<h2>{html.escape(section)}</h2>")
            last = section
        body.append(f'<figure><img src="{html.escape(png)}" alt="{html.escape(caption)}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>sdekit demo</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;line-height:1.4}}figure{{margin:1em 0}}
img{{max-width:100%;image-rendering:pixelated}}figcaption{{color:#444}}code{{background:#f4f4f4}}</style></head><body>
<h1>sdekit demo: SDEdit on the digits model</h1>
<p>Model: <code>{html.escape(repr(model))}</code>. SDEdit perturbs a guide with the SDE's kernel to time t0 and
solves the reverse SDE back to 0 (reverse-diffusion predictor, {s.steps_per_unit} steps per unit of time).
Seed {seed}; written in {seconds:.0f} s.</p>
{chr(10).join(body)}
<h2>Toy pictures</h2>
{toy_link or "<p>(not generated)</p>"}
<p>Reproduce: <code>sdekit demo --seed {seed}</code>; edit your own painting:
<code>sdekit edit --guide painting.png --t0 0.5 --out edited.png</code>.</p>
</body></html>
"""
    atomic_write_text(out / "index.html", page)

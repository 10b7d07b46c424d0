"""The demo: samples and the SDEdit tasks of a model (default: the default model) in one HTML report.

Sections: a model card; class-conditional samples, one column per digit; stroke painting -> image
from the stroke paintings shipped in ``sdekit/assets/strokes`` and from pen-drawn strokes
(:func:`sdekit.tasks.strokes.pen`); a masked edit beside an edit with a graded t0 map; a composite; the t0
strip with its measurements; the t0 trade-off plot of an ``sdekit evaluate`` report when one is given; the toy pictures.

Every caption says what its picture shows and measures it where it can: the judge of the model's data
(:mod:`sdekit.tasks.judge`; none for a model of other data) reads the digits, and L2 distances are per
image on pixels in [0, 1] (:func:`sdekit.tasks.metrics.l2`). SDEdit's t0 and steps are the library's
policy: the model's calibrated t0 (:func:`sdekit.tasks.sdedit.default_t0`) and the steps rule
(:func:`sdekit.tasks.sdedit.sdedit_steps`) of the solver used.
"""
from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from sdekit.core.bars import progress_bar

from sdekit.core.errors import UserError
from sdekit.data.images import SCALE, save_labelled_grid
from sdekit.core.io import atomic_write_bytes, atomic_write_text
from sdekit.tasks.metrics import l2
from sdekit.policy import Calibration, DEMO_SAMPLE, EDIT
from sdekit.tasks.strokes import NUMBERS, STROKES_DIR

__all__ = ["demo", "Settings", "SMALL", "model_card", "stroke_guides", "mask_overlay", "find_evaluation",
           "STROKES_DIR", "KEEP_COLOUR", "REDO_COLOUR", "LOOK_WORDS"]

LOOK_WORDS = {"light-on-dark": "light strokes on a dark background", "on-white": "colour strokes on white",
              "natural": "any colours, over a photograph or on grey"}      # how to paint for each polarity
KEEP_COLOUR = (0.2, 0.5, 1.0)        # mask overlay: kept from the guide (mask = 1), blue
REDO_COLOUR = (1.0, 0.5, 0.1)        # regenerated (mask = 0), orange


@dataclass(frozen=True)
class Settings:
    """How much the demo draws. ``sampler``: SDEdit's solver (default the library's; its steps: the
    library's rule, :func:`sdekit.tasks.sdedit.sdedit_steps`); ``sample_sampler``/``sample_steps``: plain
    samples (steps None: the sampler's default)."""
    rows: int = 4                                   # samples per digit
    sample_sampler: str = DEMO_SAMPLE.sampler
    sample_steps: int | None = None
    sampler: str = EDIT.sampler
    pen: int = 10                                   # pen strokes: the digits 0..pen-1
    seeds: int = 2                                  # SDEdit outputs per stroke guide
    edits: int = 6                                  # masked edits and composites
    strip_rows: int = 8
    strip_t0: tuple = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    toy_n: int = 500                                # samples per 2-D toy panel


SMALL = Settings(rows=1, sample_steps=4, pen=3, seeds=1, edits=2, strip_rows=3, strip_t0=(0.2, 1.0), toy_n=100)


@dataclass
class Figure:
    section: str
    png: str
    caption: str
    legend: tuple = ()              # (css colour, text) pairs, drawn as swatches under the caption
    table: tuple = ()               # (header, rows) of a small table under the caption


# ---- inputs ---------------------------------------------------------------------------------------

def _fit(u: torch.Tensor, shape) -> torch.Tensor:
    """Grey images [N, 1, h, w] in [0, 1] at the model's shape (C, H, W): bilinear resize, channels copied."""
    C, H, W = shape
    if u.shape[-2:] != (H, W):
        u = F.interpolate(u, size=(H, W), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return u.expand(-1, C, -1, -1).contiguous()


def stroke_guides(shape, data: str = "mnist") -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The shipped stroke paintings of ``data`` (:data:`sdekit.tasks.strokes.PACKAGED`): (names, pixels [G, C, H, W]
    in [0, 1] at ``shape``, classes [G])."""
    from sdekit.tasks.strokes import PACKAGED, package
    folder = PACKAGED[data][0]
    names = [f.stem for f in sorted(folder.glob("*.png"))]
    u, labels = package(size=max(shape[-2:]), data=data)
    return names, _fit(u, shape), labels


def _data_kind(model) -> str:
    """The kind of the model's data spec ("mnist", "digits", "emoji", ...; "" if not recorded)."""
    from sdekit.data.datasets import data_kind
    return data_kind((getattr(model, "config", None) or {}).get("data"))


def _class_names(model) -> list[str]:
    """A short name per class of the model's data: the digits, or the first word of each emoji category."""
    from sdekit.tasks.strokes import CATEGORY_WORDS
    return list(CATEGORY_WORDS) if _data_kind(model) == "emoji" else [str(c) for c in range(model.num_classes)]


def model_card(model) -> list[tuple[str, str]]:
    """(field, value) lines describing ``model`` for a reader: name, data, shape, SDE, network size,
    classes, training steps and the SDEdit t0 it uses (calibrated or the library's default)."""
    from sdekit.tasks.sdedit import default_class, default_t0
    cfg = getattr(model, "config", None) or {}
    sde = cfg.get("sde") or model.sde.config()
    params = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in sde.items()
                       if k != "name" and not isinstance(v, (list, dict)))
    C, H, W = model.shape
    n = sum(p.numel() for p in model.net.parameters())
    calibrated = isinstance(cfg.get("sdedit"), dict) and cfg["sdedit"].get("t0") is not None
    t0 = default_t0(model)
    lo, hi = model.data_range
    lines = [("name", str(model.name)),
             ("data", _data_name(cfg.get("data"))),
             ("images", f"{H}x{W}, {C} channel{'s' if C > 1 else ''}, pixels [0, 1] -> model space [{lo:g}, {hi:g}]"),
             ("SDE", f"{str(sde.get('name', type(model.sde).__name__)).upper()} ({params})"),
             ("network", f"{n / 1e6:.2f} M parameters"
                         + (f", {cfg['network'].get('type', '')} with {cfg.get('precond', {}).get('kind', 'no')} "
                            "preconditioning" if isinstance(cfg.get("network"), dict) else "")),
             ("classes", f"{model.num_classes} (class-conditional)" if model.num_classes else "none (unconditional)")]
    if isinstance(cfg.get("step"), int):
        lines.append(("training steps", str(cfg["step"])))
    lines.append(("SDEdit t0", f"{t0:g} (calibrated by sdekit evaluate)" if calibrated
                  else f"{t0:g} (not calibrated: the library's default)"))
    if default_class(model) == "auto":
        w = (cfg.get("sdedit") or {}).get("guidance", 0)
        lines.append(("SDEdit class", f"read from the strokes by the bundle's noise-conditional classifier; "
                                      f"classifier-free guidance w = {w:g} (plain edits: t0 = {default_t0(model, False):g})"))
    return lines


def _data_name(spec) -> str:
    if not spec:
        return "not recorded"
    from sdekit.tasks.judge import JUDGED
    kind = str(spec).partition(":")[0].lower()
    return JUDGED[kind].credit if kind in JUDGED else str(spec)


# ---- measuring ------------------------------------------------------------------------------------

class _Reader:
    """The judge of the model's data (:data:`sdekit.tasks.judge.JUDGED`, by the kind of its data spec: "mnist"
    or "mnist:DIR", "digits"), or nothing for data without one or a judge that is not installed."""

    def __init__(self, model):
        from sdekit.tasks.judge import JUDGED
        from sdekit.models.nets.features import load_features
        data = (getattr(model, "config", None) or {}).get("data")
        spec = JUDGED.get(str(data).partition(":")[0].lower()) if data else None
        installed = spec is not None and (spec.weights / "config.json").is_file()
        self.net = load_features(spec.weights) if installed and model.shape[0] == spec.channels else None

    def count(self, u: torch.Tensor, labels: torch.Tensor) -> int | None:
        """How many images u [N, 1, H, W] in [0, 1] the judge reads as ``labels``; None without a judge."""
        if self.net is None:
            return None
        from sdekit.tasks.judge import predict
        return int((predict(self.net, u) == labels.to(torch.long)).sum())

    def says(self, u, labels, what: str) -> str:
        """'the judge reads the <what> in k of n' (empty without a judge)."""
        k = self.count(u, labels)
        return "" if k is None else f"the judge reads the {what} in {k} of {len(u)}"


def _mean_l2(u, v) -> float:
    return float(l2(u, v).mean())


def _diff(d: float) -> str:
    """A largest difference in model space, for a caption."""
    return "0 (identical)" if d == 0 else f"{d:.1g} (in model space)"


def mask_overlay(u: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Images u [B, C, H, W] in [0, 1] tinted by a mask (1 = keep): half grey image, half colour,
    KEEP_COLOUR where kept and REDO_COLOUR where regenerated; [B, 3, H, W] in [0, 1]."""
    grey = u.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    keep = torch.tensor(KEEP_COLOUR).view(1, 3, 1, 1)
    redo = torch.tensor(REDO_COLOUR).view(1, 3, 1, 1)
    m = mask.to(u.dtype).mean(1, keepdim=True).expand(u.shape[0], 1, -1, -1)
    return 0.5 * grey + 0.5 * (m * keep + (1 - m) * redo)


def _rgb(u: torch.Tensor) -> torch.Tensor:
    return u.expand(-1, 3, -1, -1) if u.shape[1] == 1 else u


def _css(colour) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in colour)


def find_evaluation(folder) -> Path | None:
    """``folder`` if it holds an ``sdekit evaluate`` report (results.json and tradeoff.png), else None."""
    if folder is None:
        return None
    folder = Path(folder)
    return folder if (folder / "results.json").is_file() and (folder / "tradeoff.png").is_file() else None


# ---- the demo ------------------------------------------------------------------------------------

@dataclass
class _Run:
    """What every section of one demo run shares."""
    model: object
    s: Settings
    out: Path
    scale: int
    t0: float
    judge: _Reader
    g: torch.Generator
    noun: str = "digit"             # what a class is called in captions ("digit", "category")

    def edit(self, guide_u, t: float | None = None, **kw):
        """SDEdit of pixels [B, C, H, W] in [0, 1] from t (default the model's t0) with the library's steps for
        (sampler, t): (output in model space, info)."""
        from sdekit.tasks.sdedit import edit_condition, sdedit
        m = self.model
        x = m.from_unit(guide_u)
        fn = edit_condition(m, x, generator=self.g)[0]          # the model's default edit (class read or none)
        return sdedit(m.sde, fn, x, t0=self.t0 if t is None else t, sampler=self.s.sampler,
                      generator=self.g, return_info=True, **kw)

    def save(self, name: str, cells, rows=None, cols=None) -> str:
        save_labelled_grid(self.out / name, cells, rows, cols, scale=self.scale)
        return name


def demo(out="sdekit-demo", seed: int = 0, model=None, small: bool = False, toy: bool = True,
         progress: bool = True, scale: int = SCALE, evaluation=None, settings: Settings | None = None,
         colour: bool | None = None) -> Path:
    """Write the demo report into folder ``out``; returns the path of its index.html.

    model: a :class:`sdekit.Model` (default: the default model, ``sdekit.load()``); small: the quick
    :data:`SMALL` settings (or give ``settings``); scale: enlargement of the pictures (nearest
    neighbour); evaluation: a folder written by ``sdekit evaluate`` whose t0 trade-off plot the report
    shows; colour: also the report of the bundled colour model in ``out/colour`` (default: with the default
    model, when the colour model is installed). Raises UserError on bad input (an unknown sampler, a folder
    that holds no evaluation) before any work."""
    from sdekit.models.bundle import load
    from sdekit.solvers.registry import get_sampler
    from sdekit.tasks.sdedit import default_t0
    t_start = time.time()
    s = settings or (SMALL if small else Settings())
    get_sampler(s.sampler), get_sampler(s.sample_sampler)
    if evaluation is not None and find_evaluation(evaluation) is None:
        raise UserError(f"{evaluation}: not an sdekit evaluate report (needs results.json and tradeoff.png)")
    from sdekit.models.bundle import BUNDLED_MODELS
    colour_installed = (BUNDLED_MODELS["emoji"] / "config.json").is_file()
    if colour is None:
        colour = model is None and colour_installed
    if colour and not colour_installed:
        raise UserError("the bundled colour model 'emoji' is not installed with this copy of sdekit")
    model = load() if model is None else model
    colour_model = load("emoji") if colour and _data_kind(model) != "emoji" else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    colour = _data_kind(model) == "emoji"
    run = _Run(model, s, out, scale, default_t0(model), _Reader(model), torch.Generator().manual_seed(seed),
               "category" if colour else "digit")
    t0s = _strip_t0s(s, run.t0)
    with progress_bar(total=4 + len(t0s), desc="demo", unit="stage", disable=not progress) as bar:
        def section(name, make, *args):
            bar.set_postfix_str(name)
            result = make(*args)
            bar.update()
            return result
        samples_fig, samples, labels = section("samples", _samples, run, seed)
        strokes_fig, guides = section("strokes", _strokes, run, samples, labels, seed)
        figs = [samples_fig, strokes_fig, section("masked edit", _masked, run, samples, seed, guides),
                section("composite", _composite, run, samples), _strip(run, guides, t0s, section)]
    colour_link = ""
    if colour_model is not None:
        sub_index = demo(out / "colour", seed, colour_model, small, toy=False, progress=progress, scale=scale,
                         settings=settings, colour=False)
        colour_link = (f'<p><a href="{html.escape(str(sub_index.relative_to(out)))}">The same report on the bundled '
                       f"colour model ({html.escape(str(colour_model.name))}: 32x32 RGB emoji)</a>: samples per category, "
                       "colour stroke paintings to images, a masked edit, a composite and the t0 strip.</p>")
    if evaluation is not None:
        figs.append(_evaluation_figure(Path(evaluation), out, model))
    toy_link = ""
    if toy:
        from sdekit.apps.toy import toy_report
        idx = toy_report(out / "toy", seed=seed, n=s.toy_n, progress=progress)
        toy_link = (f'<p><a href="{html.escape(str(Path(idx).relative_to(out)))}">The toy pictures</a>: forward and '
                    "reverse SDE and probability-flow ODE on 1-D data, every sampler on 2-D data, all with exact "
                    "scores.</p>")
    _write_index(out, model, figs, toy_link, time.time() - t_start, seed, s, run.t0, evaluation is not None,
                 colour_link)
    return out / "index.html"


def _samples(run: _Run, seed: int):
    """Samples, one column per digit (class-conditional models): (Figure, pixels [N, C, H, W], labels [N])."""
    from sdekit.models.bundle import generate
    from sdekit.solvers.registry import get_sampler
    m, s = run.model, run.s
    conditional = m.num_classes > 0
    k = min(10, m.num_classes) if conditional else 10
    labels = torch.arange(k).repeat(s.rows)
    x, info = generate(m, len(labels), s.sample_sampler, s.sample_steps, seed=seed,
                       class_labels=labels if conditional else None, return_info=True)
    samples = m.to_unit(x)
    png = run.save("samples.png", samples.reshape(s.rows, k, *m.shape), None,
                   _class_names(m)[:k] if conditional else None)
    how = f"{get_sampler(s.sample_sampler).summary}, {info['steps']} steps"
    if not conditional:
        return Figure("Samples", png, f"{len(samples)} samples of this unconditional model; {how}."), samples, None
    read = run.judge.says(samples, labels, f"{run.noun} asked for")
    return Figure("Samples", png, f"{len(samples)} class-conditional samples, {s.rows} per {run.noun}: column c asked "
                  f"for the {run.noun} c (no guidance); {how}." + (f" Measured: {read}." if read else "")), samples, labels


@dataclass
class _Guides:
    u: torch.Tensor          # [G, C, H, W] in [0, 1]: the package's paintings, then the pen strokes
    labels: torch.Tensor     # [G] the digit drawn
    names: list
    painted: int             # how many of them are the package's paintings


def _strokes(run: _Run, samples, labels, seed: int):
    """Stroke painting -> image from the package's paintings and pen strokes: (Figure, _Guides)."""
    from sdekit.tasks.strokes import pen
    m, s = run.model, run.s
    C, H, W = m.shape
    kind = _data_kind(m)
    names, painted, painted_y = stroke_guides(m.shape, "emoji" if kind == "emoji" else "mnist")
    if kind == "emoji":                                                    # pen strokes are digits
        pen_u, pen_y = torch.zeros(0, 1, H, W), torch.zeros(0, dtype=torch.long)
    else:
        pen_u, pen_y = pen(s.pen, seed, size=max(H, W))
    gd = _Guides(torch.cat([painted, _fit(pen_u, m.shape)]), torch.cat([painted_y, pen_y]),
                 names + [f"pen {NUMBERS[int(y)]}" for y in pen_y], len(painted))
    x, info = run.edit(gd.u.repeat_interleave(s.seeds, 0))
    res = m.to_unit(x)
    png = run.save("strokes.png", torch.cat([gd.u[:, None], res.reshape(len(gd.u), s.seeds, *m.shape)], 1), gd.names,
                   ["guide"] + [f"seed {i + 1}" for i in range(s.seeds)])
    res_y, n_paint = gd.labels.repeat_interleave(s.seeds), gd.painted * s.seeds
    measured = [f"mean L2 to the guide {_mean_l2(res, gd.u.repeat_interleave(s.seeds, 0)):.2f}"]
    like = _same_digit(samples, labels, gd.labels) if labels is not None else None
    if like is not None:
        measured.append(f"an unguided sample of the same {run.noun} is at {_mean_l2(like, gd.u):.2f}")
    reads = [run.judge.count(res[:n_paint], res_y[:n_paint]), run.judge.count(res[n_paint:], res_y[n_paint:]),
             run.judge.count(gd.u, gd.labels)]
    if reads[0] is not None:
        pens = f" and {reads[1]} of {len(res) - n_paint} edits of the pen strokes" if len(res) > n_paint else ""
        measured.insert(0, f"the judge reads the drawn {run.noun} in {reads[0]} of {n_paint} edits of the paintings"
                           f"{pens} (in the guides themselves: {reads[2]} of {len(gd.u)})")
    return Figure(
        "Stroke painting to image", png,
        f"Rows: the {gd.painted} stroke paintings shipped in sdekit/assets/strokes"
        + (f" and {len(pen_u)} pen-drawn strokes (sdekit.tasks.strokes.pen, held out)" if len(pen_u) else "")
        + f"; columns: the guide, then SDEdit from t0 = {run.t0:g} with "
        f"{s.seeds} seed{'s' if s.seeds > 1 else ''} ({info['sampler']}, {info['steps']} steps). "
        f"Measured: {'; '.join(measured)} (pixels in [0, 1])."), gd


def _masked(run: _Run, samples, seed: int, gd: _Guides | None = None) -> Figure:
    """Stroke-based editing: keep the top half of a sample, repaint the bottom half with a pen stroke (digits)
    or with one of the colour stroke paintings."""
    from sdekit.tasks.strokes import pen
    m = run.model
    C, H, W = m.shape
    source = samples[: min(run.s.edits, len(samples))]
    n = len(source)
    if run.noun == "digit":
        donors = _fit(pen(n + 1, seed + 1, size=max(H, W))[0][1:], m.shape)
    else:
        donors = gd.u[(torch.arange(n) + 1) % len(gd.u)]
    guide = source.clone()
    guide[..., H // 2:, :] = donors[..., H // 2:, :]
    mask = torch.zeros(1, 1, H, W)
    mask[..., : H // 2, :] = 1
    x, info = run.edit(guide, mask=mask)
    kept = float((x - m.from_unit(guide))[..., : H // 2, :].abs().max())       # model space: exact where kept
    res = m.to_unit(x)
    ramp = torch.linspace(0, 1, H, dtype=torch.float64).view(1, 1, H, 1).expand(1, 1, H, W)   # float64: t0 exact
    y, graded = run.edit(guide, t=run.t0 * ramp)          # a t0 map: keep the top row .. the model's t0 at the bottom
    top = float((y - m.from_unit(guide))[..., 0, :].abs().max())
    res_map = m.to_unit(y)
    change = [float((res_map - guide)[..., q * H // 4:(q + 1) * H // 4, :].abs().mean()) for q in range(4)]
    png = run.save("masked.png", torch.stack([_rgb(source), _rgb(guide), mask_overlay(guide, mask), _rgb(res),
                                              mask_overlay(guide, 1 - ramp.float()), _rgb(res_map)], 1),
                   None, ["source", "guide", "mask", "SDEdit", "t0 map", "SDEdit (map)"])
    return Figure(
        "Stroke-based editing", png,
        f"Rows: {n} samples from above; columns: the sample, the guide (its bottom half painted over with the "
        f"bottom half of a {'pen stroke' if run.noun == 'digit' else 'stroke painting'}), the mask over the guide, and SDEdit from t0 = {run.t0:g} ({info['sampler']}, "
        f"{info['steps']} steps) with that mask; then a graded t0 map over the guide (a per-pixel t0 rising from 0, "
        f"kept, at the top row to {run.t0:g} at the bottom; blue to orange) and SDEdit with it. Measured: in the kept "
        f"top half the masked output differs from the guide by at most {_diff(kept)}; in the bottom half its mean L2 "
        f"to the painted strokes is {_mean_l2(res[..., H // 2:, :], guide[..., H // 2:, :]):.2f} (pixels in [0, 1]). "
        f"With the map, the top row differs from the guide by at most {_diff(top)}; the mean change per pixel in the "
        f"quarters of the image from the top down is {', '.join(f'{c:.3f}' for c in change)}; "
        f"{graded['nfe']} evaluations, as the masked edit's {info['nfe']}.",
        legend=((_css(KEEP_COLOUR), "kept from the guide (mask = 1)"), (_css(REDO_COLOUR), "regenerated (mask = 0)")))


def _composite(run: _Run, samples, border: int = 1) -> Figure:
    """Image compositing: paste the right half of another sample and harmonise."""
    from sdekit.tasks.sdedit import composite
    m = run.model
    C, H, W = m.shape
    source = samples[: min(run.s.edits, len(samples))]
    patch = source.roll(1, 0)
    region = torch.zeros(1, 1, H, W)
    region[..., W // 2:] = 1
    from sdekit.tasks.sdedit import default_t0
    t0 = default_t0(m, conditioned=False)                  # two digits pasted together: a plain edit
    x, pasted = composite(m.sde, m.score_fn, m.from_unit(source), m.from_unit(patch), region, t0=t0,
                          border=border, sampler=run.s.sampler, generator=run.g)
    cut = W // 2 - border
    kept = float((x - m.from_unit(source))[..., :cut].abs().max())             # model space: exact where kept
    res, pasted = m.to_unit(x), m.to_unit(pasted)
    png = run.save("composite.png", torch.stack([source, patch, pasted, res], 1), None,
                   ["source", "patch", "pasted", "harmonised"])
    return Figure(
        "Image compositing", png,
        f"Rows: {len(source)} samples from above; columns: the source, the patch (another sample), the right half of "
        f"the patch pasted onto the source, and SDEdit from t0 = {t0:g}, which regenerates the pasted half and a "
        f"{border}-pixel seam and keeps the rest of the source. Measured: outside them the output differs from the "
        f"source by at most {_diff(kept)}; in them its mean L2 to the pasted image is "
        f"{_mean_l2(res[..., cut:], pasted[..., cut:]):.2f} (pixels in [0, 1]).")


def _strip(run: _Run, gd: _Guides, t0s, section) -> Figure:
    """The t0 strip: some guides edited from each t0 (each a ``section(name, work, *args)`` of the
    progress bar), with a table measuring each column."""
    m = run.model
    rows = _strip_rows(run.s.strip_rows, gd.painted, len(gd.u))
    strip, strip_y, cols, table = gd.u[rows], gd.labels[rows], [gd.u[rows]], []
    for t in t0s:
        x, info = section(f"t0 = {t:g}", run.edit, strip, t)
        res = m.to_unit(x)
        cols.append(res)
        k = run.judge.count(res, strip_y)
        table.append([f"{t:g}" + (" (default)" if t == run.t0 else ""), str(info["steps"]), f"{_mean_l2(res, strip):.2f}",
                      "—" if k is None else f"{k} of {len(res)}"])
    png = run.save("t0_strip.png", torch.stack(cols, 1), [gd.names[i] for i in rows],
                   ["guide"] + [f"t0={t:g}" for t in t0s])
    return Figure(
        "Realism against faithfulness: the choice of t0", png,
        f"Rows: {len(rows)} of the guides above; columns: the guide, then SDEdit from each t0 ({run.s.sampler}, steps "
        "by the library's rule). The table measures each column: the mean L2 from the outputs to their guides "
        "(faithfulness: 0 is the guide itself)"
        + ("" if run.judge.net is None else f", and how many outputs the judge reads as the {run.noun} drawn") + "."
        + (f" This model's default edit reads the drawn {run.noun} and guides towards it (its bundle's calibrated "
           f"edit), so the {run.noun} is kept up to large t0 by design; the trade-off shows in how far the outputs move "
           "from the guides (L2)." if Calibration.from_config(getattr(m, "config", None)).read_class else ""),
        table=(("t0", "steps", "mean L2 to the guide", f"judge reads the drawn {run.noun}"), tuple(table)))


def _strip_t0s(s: Settings, t0: float) -> list[float]:
    return sorted(set(s.strip_t0) | {t0})


def _strip_rows(n: int, painted: int, total: int) -> list[int]:
    """Up to n guide indices, alternating between the paintings [0, painted) and the pen strokes."""
    a, b = list(range(painted)), list(range(painted, total))
    mixed = [i for pair in zip(a, b) for i in pair] + a[len(b):] + b[len(a):]
    return mixed[:n]


def _same_digit(samples, labels, wanted) -> torch.Tensor | None:
    """One sample of each wanted digit (cycling through those drawn), or None if a digit has none."""
    out = []
    for j, y in enumerate(wanted.tolist()):
        have = (labels == y).nonzero().flatten()
        if not len(have):
            return None
        out.append(samples[have[j % len(have)]])
    return torch.stack(out)


def _evaluation_figure(folder: Path, out: Path, model) -> Figure:
    """The trade-off plot of an ``sdekit evaluate`` report, copied into the demo, with what it measured."""
    try:
        report = json.loads((folder / "results.json").read_text())
        meta, best = report["meta"], report.get("default_t0")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{folder / 'results.json'}: not readable as an sdekit evaluate report ({e})") from None
    atomic_write_bytes(out / "tradeoff.png", (folder / "tradeoff.png").read_bytes())
    other = "" if meta.get("model") == model.name else f" (measured on the model {meta.get('model')!r}, not this one)"
    return Figure(
        "The choice of t0, measured", "tradeoff.png",
        f"sdekit evaluate{other}: SDEdit on {meta.get('n')} held-out {meta.get('strokes')} strokes per t0 "
        f"({meta.get('sampler')}{_conditioning(meta)}), with 95% intervals: class fidelity (the fraction the judge reads as the digit "
        "drawn), KID to held-out real images and L2 to the stroke; bands are the baselines. "
        + (f"The default t0 (it keeps the drawn digit in {meta.get('fidelity_level', 0.95):.1%} of edits; the least "
           f"noise whose edits are as realistic as the model's samples, where there is one): {best:g}."
           if best is not None else f"No swept t0 kept the drawn digit in {meta.get('fidelity_level', 0.95):.1%} of edits."))


def _conditioning(meta: dict) -> str:
    if meta.get("class", "none") == "none":
        return ""
    what = "the class the model's classifier reads in each stroke" if meta["class"] == "auto" else "the given class"
    return f"; each edit guided toward {what}, w = {meta.get('guidance', 0):g}"


def _write_index(out: Path, model, figs, toy_link: str, seconds: float, seed: int, s: Settings, t0: float,
                 evaluated: bool, colour_link: str = "") -> None:
    from sdekit.solvers.registry import get_sampler
    from sdekit.tasks.sdedit import sdedit_steps
    body, last = [], None
    for f in figs:
        if f.section != last:
            body.append(f"<h2>{html.escape(f.section)}</h2>")
            last = f.section
        extra = "".join(f'<span class="sw" style="background:{c}"></span>{html.escape(t)} ' for c, t in f.legend)
        if f.table:
            head, rows = f.table
            extra += ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                      + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                      + "</table>")
        body.append(f'<figure><img src="{html.escape(f.png)}" alt="{html.escape(f.caption)}">'
                    f"<figcaption>{html.escape(f.caption)}{'<br>' + extra if extra else ''}</figcaption></figure>")
    if not evaluated:
        body.append("<h2>The choice of t0, measured</h2><p>No evaluation report given: <code>sdekit evaluate --out "
                    "EVAL</code> measures class fidelity, realism and faithfulness against t0 on held-out strokes; "
                    "<code>sdekit demo --evaluation EVAL</code> then shows its plot here.</p>")
    card = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in model_card(model))
    from sdekit.apps.web.app import polarity
    from sdekit.models.bundle import BUNDLED_MODELS, default_name
    name = str(model.name)
    model_flag = ("" if name == default_name() else f" --model {name}" if name in BUNDLED_MODELS
                  else " --model MODEL")
    spec = get_sampler(s.sampler)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>sdekit demo: {html.escape(str(model.name))}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;line-height:1.4}}figure{{margin:1em 0}}
img{{max-width:100%;image-rendering:pixelated}}figcaption{{color:#333}}code{{background:#f4f4f4}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}
.sw{{display:inline-block;width:1em;height:1em;border:1px solid #333;vertical-align:middle;margin:0 .3em 0 .8em}}</style>
</head><body>
<h1>sdekit demo: {html.escape(str(model.name))}</h1>
<table>{card}</table>
<p>SDEdit perturbs a guide with the SDE's own kernel to the noise level of t0 and solves back to time 0. Here from
t0 = {t0:g} (the model's) with {html.escape(spec.summary)}, {sdedit_steps(spec.name, t0)} steps (the library's rule
for this sampler and t0). L2 distances are per image on pixels in [0, 1].
Seed {seed}; written in {seconds:.0f} s.</p>
{chr(10).join(body)}
{"<h2>In colour</h2>" + colour_link if colour_link else ""}
<h2>Toy pictures</h2>
{toy_link or "<p>(not generated)</p>"}
<p>Reproduce: <code>sdekit demo --seed {seed}{html.escape(model_flag)}</code>; edit your own painting ({LOOK_WORDS[polarity(model)]}):
<code>sdekit edit{html.escape(model_flag)} --guide painting.png --sampler {html.escape(spec.name)} --out edited.png</code>.</p>
</body></html>
"""
    atomic_write_text(out / "index.html", page)

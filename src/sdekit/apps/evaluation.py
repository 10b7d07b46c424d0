"""SDEdit's t0 sweep on held-out stroke paintings: class fidelity, realism and faithfulness per t0.

For every t0, SDEdit (one call, :func:`edit_strokes`) turns each of n held-out strokes
(:mod:`sdekit.tasks.strokes`, never used in training) into an output, measured three ways, each with a
95% confidence interval:

* **class fidelity**: the fraction of outputs the judge (:mod:`sdekit.tasks.judge`, chosen by the model's
  data) reads as the digit drawn; Wilson binomial interval.
* **realism**: KID (torchmetrics, kernel (x.y / d + 1)^3) between the judge's features of the
  outputs and of the held-out reference images; mean over 100 random subsets of half of each set,
  interval mean -/+ 1.96 std over subsets (:meth:`sdekit.tasks.metrics.KIDResult.ci`). Beside it, measured
  the same way on as many images: real held-out images (real vs real, the floor) and the raw strokes.
  FID (torchmetrics, same features) when every set has more than 2 x 64 images.
* **faithfulness**: the L2 distance between output and stroke on pixels in [0, 1], per image; mean
  with a percentile-bootstrap interval. Also after 4x average pooling (the coarse layout).

Baselines on the same strokes: the raw strokes, real images of the drawn digits (for simulated
strokes: the very images they were made from), the nearest training image to each stroke (pixel L2;
left out, with a note, where only the shipped held-out subset of the data is at hand,
:mod:`sdekit.data.heldout`) and plain samples (no guide).

A model of data sdekit ships no judge for (a folder of RGB images, ...) is judged by one trained with
``sdekit train-features --data SPEC`` and given as ``judge`` (that folder): KID, FID and L2 against its
own held-out split, and class fidelity only where its classes are the model's (the same data).

The default t0 (:func:`pick_t0`) keeps the drawn class in at least 95% of edits, or 5 points less than the
judge reads on real held-out images where that is lower (:func:`fidelity_level`: the emoji judge reads 85%): the smallest such t0 whose edits are as realistic (KID) as the model's own samples, else the
largest such t0; ``write_t0`` stores it in a bundle's config.json as "sdedit": {"t0": ...}.

The edits are conditioned as :func:`sdekit.tasks.sdedit.edit_condition` says (``class_label``, ``guidance``:
the model's default edit unless given): with "auto", each stroke's class is read once by the bundle's
classifier and every t0 edits towards it; the report gives the reading's accuracy.
"""
from __future__ import annotations

import csv
import html
import io
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from sdekit.core.bars import progress_bar

from sdekit.core.errors import UserError
from sdekit.core.io import atomic_path, atomic_write_text
from sdekit.data.datasets import class_words
from sdekit.policy import DEMO_SAMPLE, EDIT, EDIT_STEPS, default_sampler
from sdekit.tasks.metrics import binomial_ci, bootstrap_ci, features, fid, kid, l2, l2_downsampled

__all__ = ["evaluate", "Evaluation", "EvalResult", "Estimate", "parse_t0s", "pick_t0", "fidelity_level", "write_t0", "edit_strokes",
           "sample_warnings", "reference_data", "bundle_config", "check_outputs", "T0S", "FIDELITY", "KID_MIN_N", "OUTPUTS"]

T0S = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
FIDELITY = 0.95           # the default t0 keeps the drawn class in at least this fraction of edits ...
FIDELITY_MARGIN = 0.05    # ... or in this much less than the judge's accuracy on real held-out images, if lower
KID_MIN_N = 100           # below this many images per set KID says little
OUTPUTS = ("results.json", "results.md", "results.csv", "tradeoff.png", "grid.png", "index.html")


@dataclass
class Estimate:
    """A value with its 95% confidence interval [lo, hi]."""

    value: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


@dataclass
class EvalResult:
    """One row of the report: SDEdit at one t0, or a baseline (t0 None)."""

    method: str
    t0: float | None
    fidelity: Estimate | None     # fraction judged the drawn digit, in [0, 1]; None: the judge has other classes
    kid: Estimate                 # KID to the reference (feature units; 0 = indistinguishable)
    fid: float | None             # None: too few images (see the report's notes)
    l2: Estimate                  # L2 to the stroke, pixels in [0, 1]
    l2_down: Estimate | None      # the same after 4x average pooling (None if 4 does not divide the size)
    steps: int = 0                # solver steps per image (0: no sampling)


@dataclass
class Evaluation:
    """What :func:`evaluate` found and wrote."""

    rows: list[EvalResult]
    default_t0: float | None      # pick_t0 of the rows; None if no t0 keeps the class
    warnings: list[str]
    meta: dict
    index: Path                   # the HTML report
    outputs: dict = field(default_factory=dict, repr=False)   # t0 -> SDEdit outputs [n, C, H, W] in [0, 1]


def parse_t0s(spec) -> tuple[float, ...]:
    """'0.1,0.2,...' (or a sequence of numbers) -> sorted distinct floats in (0, 1]; UserError otherwise."""
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
    """(train_u, reference_u) of a judged dataset at the model's shape (C, H, W), pixels in [0, 1]
    (:func:`sdekit.tasks.judge.held_out`: for digits the judge's own 80/20 split; ``seed`` is ignored;
    train_u is None for "mnist" or "emoji" without a folder, the shipped held-out subsets)."""
    from sdekit.tasks.judge import held_out, judged
    h = held_out(spec, _size(shape, judged(spec, folder=False), spec))
    return h.train, h.reference


def _size(shape, judge, data) -> int:
    """The side of the model's square images, if ``judge`` (a :class:`sdekit.tasks.judge.Judged`)
    measures their channels; else UserError saying how to train one that does for ``data``."""
    C, H, W = shape
    if C != judge.channels or H != W:
        how = (f"train one for this model's data (sdekit train-features --data {data} --size {H} --channels {C} "
               "--out DIR) and pass --judge DIR" if H == W else "sdekit judges square images only")
        raise UserError(f"the {judge.name} judge measures square {judge.channels}-channel images; this model makes "
                        f"{tuple(shape)}: {how}")
    return H


def _judge_and_data(model, data, judge):
    """(the Judged entry, the data spec its held-out images come from, whether its classes are the
    model's) for ``data`` and a judge folder ``judge`` (None: the shipped judge of ``data``)."""
    from sdekit.data.datasets import data_kind
    from sdekit.tasks.judge import JUDGED, judged, judged_folder
    own = (getattr(model, "config", None) or {}).get("data")
    if judge is None:
        return judged(data, folder=False), data, True
    spec = judged_folder(judge)
    if spec.name in JUDGED:                       # a judge of a shipped kind: its held-out images are data's
        if data_kind(data) != spec.name:
            raise UserError(f"the judge in {judge} reads {spec.name} data, not {data}")
        same = data_kind(own) == spec.name
    else:                                         # other data: the judge's own held-out split
        same = _same_data(own, spec.name)
    model_classes = int(getattr(model, "num_classes", 0) or 0)
    return spec, (data if spec.name in JUDGED else spec.name), same and model_classes in (0, spec.num_classes)


def _same_data(a, b) -> bool:
    """Whether two data specs name the same data (kind and folder)."""
    (ka, _, pa), (kb, _, pb) = str(a or "").partition(":"), str(b or "").partition(":")
    return ka.lower() == kb.lower() and (pa == pb or bool(pa and pb) and Path(pa).resolve() == Path(pb).resolve())


def sample_warnings(n: int) -> list[str]:
    """What a sample of n images per set cannot tell (KID noise, no FID); one line each."""
    from sdekit.models.nets.features import DigitsFeatures
    d = DigitsFeatures().num_features
    out = []
    if n < KID_MIN_N:
        out.append(f"KID from n = {n} < {KID_MIN_N} images per set is mostly noise (its interval is wide): "
                   f"read it against the real-vs-real row, or use -n {KID_MIN_N} or more")
    if n <= 2 * d:
        out.append(f"no FID: it needs more than {2 * d} images per set (2 x the judge's {d} features, for their "
                   f"covariance); n = {n}")
    return out


SAMPLES = "plain samples (no guide)"


def fidelity_level(judge_accuracy: float | None) -> float:
    """The class fidelity the default t0 must keep: FIDELITY, or judge_accuracy - FIDELITY_MARGIN where that is
    lower. An edit cannot be read as its class more often than a real image is, so a judge that reads 84.9% of
    real held-out emoji right asks 79.9% of the edits (MNIST's, at 99.4%: 94.4%). ``judge_accuracy`` in [0, 1]
    (None: unknown, FIDELITY)."""
    return FIDELITY if judge_accuracy is None else min(FIDELITY, float(judge_accuracy) - FIDELITY_MARGIN)


def pick_t0(rows, level: float = FIDELITY) -> float | None:
    """The default t0 of a sweep: among the swept t0 whose SDEdit class fidelity is at least ``level``,
    the smallest whose edits are as realistic as the model's own samples (KID at most the plain samples'
    row's, when ``rows`` has one): more noise buys no more realism, only less faithfulness; if none is,
    the largest (the most realistic edits that keep the class). None if no t0 keeps the class. A row
    without class fidelity (None: the judge's classes are not the model's) counts as keeping it."""
    ok = [r for r in rows if r.t0 is not None and (r.fidelity is None or r.fidelity.value >= level)]
    if not ok:
        return None
    samples = next((r for r in rows if r.method == SAMPLES), None)
    real = [r.t0 for r in ok if samples is not None and r.kid.value <= samples.kid.value]
    return min(real) if real else max(r.t0 for r in ok)


def bundle_config(folder) -> tuple[Path, dict]:
    """(path, content) of a model bundle's config.json; ``folder`` a bundle folder or a shipped model's name
    ("mnist", "emoji", ...: its folder inside the package). UserError if ``folder`` is not a bundle."""
    from sdekit.models.bundle import BUNDLED_MODELS, FORMAT, read_config
    if not Path(folder).exists() and str(folder) in BUNDLED_MODELS:
        folder = BUNDLED_MODELS[str(folder)]
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise UserError(f"{folder}: not a model bundle folder (no config.json)")
    return path, read_config(path, FORMAT, "model bundle")


def write_t0(folder, t0: float, class_label=None, guidance: float = 0.0) -> Path:
    """Store ``t0`` as the bundle's calibrated SDEdit t0, other fields kept, written atomically; the
    weights are not touched. For a plain edit (``class_label`` None or -1): config.json's "sdedit":
    {"t0": t0}, or {"t0_unconditional": t0} when the bundle's default edit is class-guided; for
    ``class_label`` "auto": {"t0": t0, "class": "auto", "guidance": guidance}, the bundle's default edit
    from now on (a plain edit's "t0" written before becomes "t0_unconditional") (:func:`sdekit.tasks.sdedit.edit_condition`). UserError if ``folder`` is not a model bundle,
    t0 is not in (0, 1] or the class is another."""
    if not 0 < float(t0) <= 1:
        raise UserError(f"t0 must lie in (0, 1], got {t0}")
    if class_label not in (None, -1, "auto"):
        raise UserError(f"a default t0 is written for class 'auto' or none, not {class_label!r}")
    path, cfg = bundle_config(folder)
    sd = dict(cfg.get("sdedit") or {})
    if class_label == "auto":
        if sd.get("class") != "auto" and "t0" in sd:          # the plain edit's t0 stays the plain edit's
            sd["t0_unconditional"] = sd["t0"]
        sd.update({"t0": float(t0), "class": "auto", "guidance": float(guidance)})
    else:
        sd["t0_unconditional" if sd.get("class") == "auto" else "t0"] = float(t0)
    cfg["sdedit"] = sd
    atomic_write_text(path, json.dumps(cfg, indent=2) + "\n")
    return path


def edit_strokes(model, strokes: torch.Tensor, t0: float, steps: int, sampler: str, generator,
                 score_fn=None) -> torch.Tensor:
    """The one SDEdit call of the evaluation: strokes and result are pixels in [0, 1], [B, C, H, W];
    ``score_fn`` (default the model's plain one) as :func:`sdekit.tasks.sdedit.edit_condition` gives it."""
    from sdekit.tasks.sdedit import sdedit
    out = sdedit(model.sde, model.score_fn if score_fn is None else score_fn, model.from_unit(strokes), t0=t0,
                 steps=steps, sampler=sampler, generator=generator)
    return model.to_unit(out).cpu()


def _guides(kind: str, n: int, seed: int, size: int, held, data: str):
    """(strokes, labels, real images of the same classes): [n, C, size, size] in [0, 1] and int64 [n]."""
    from sdekit.tasks import strokes as sets
    if kind == "simulated":
        real, labels = held.pick(n, seed)
        return _simulate(real, data), labels, real
    if kind == "pen" and held.real.shape[1] != 1:
        raise UserError("pen strokes are grey digits; for a colour model use --strokes simulated or package")
    u, labels = sets.pen(n, seed, size) if kind == "pen" else sets.package(size, data=data)
    if len(u) < n:                                     # the package's few paintings, each edited repeatedly
        reps = -(-n // len(u))
        u, labels = u.repeat(reps, 1, 1, 1)[:n], labels.repeat(reps)[:n]
    return u, labels, held.pick_like(labels, seed)


def _simulate(real, data):
    """Simulated strokes of real images [N, C, H, W]: the data's own simulation, else the grey or colour one."""
    from sdekit.data.datasets import data_kind
    from sdekit.tasks.strokes import SIMULATION, SIMULATION_BY_CHANNELS, simulate_from
    m, k = SIMULATION.get(data_kind(data)) or SIMULATION_BY_CHANNELS[real.shape[1]]
    return simulate_from(real, m, k, data)


class _Scorer:
    """Measures image sets against the strokes, their labels (None: no class fidelity) and the
    reference, all the same way."""

    def __init__(self, judge, reference, strokes, labels, seed):
        self.judge, self.strokes, self.labels, self.seed = judge, strokes, labels, seed
        self.ref = features(reference, judge)
        self.pool = strokes.shape[-1] % 4 == 0

    def __call__(self, method: str, t0, out: torch.Tensor, steps: int = 0) -> EvalResult:
        from sdekit.tasks.judge import predict
        f = features(out, self.judge)
        k = kid(self.ref, f, feature=nn.Identity(), subsets=100, seed=self.seed)
        right = None if self.labels is None else int((predict(self.judge, out) == self.labels).sum())
        down = Estimate(*bootstrap_ci(l2_downsampled(out, self.strokes, 4), seed=self.seed)) if self.pool else None
        return EvalResult(method, t0, None if right is None else Estimate(*binomial_ci(right, len(out))),
                          Estimate(k.mean, *k.ci()),
                          fid(self.ref, f, nn.Identity()), Estimate(*bootstrap_ci(l2(out, self.strokes), seed=self.seed)),
                          down, steps)


def check_outputs(out, overwrite: bool) -> Path:
    """The output folder, refused (UserError) if it holds a report and ``overwrite`` is False, or if it
    cannot be written (:func:`sdekit.core.io.check_writable`)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if not overwrite:
        there = [f for f in OUTPUTS if (out / f).exists()]
        if there:
            raise UserError(f"{out / there[0]} exists; pass --overwrite to replace the report")
    from sdekit.core.io import check_writable
    return check_writable(out)                   # a full disk or read-only folder: refused before the work


def evaluate(model, data: str | None = None, t0s=T0S, n: int = 200, strokes: str | None = None,
             sampler: str = EDIT.sampler, steps_per_unit: int | None = None, seed: int = 0, out="sdekit-eval",
             batch_size: int = 100, overwrite: bool = False, progress: bool = True,
             n_reference: int | None = None, class_label=None, guidance: float | None = None,
             judge=None) -> Evaluation:
    """Sweep t0 over ``t0s`` on n held-out strokes of the set ``strokes`` ("pen", "simulated" or
    "package", :mod:`sdekit.tasks.strokes`; None: "pen" for a grey model, "simulated" for a colour one) and write results.json, results.md, results.csv, tradeoff.png,
    grid.png and index.html into ``out``.

    ``data``: the model's dataset spec ("digits", "mnist:DIR"; "mnist" or "emoji" without a folder: the
    shipped held-out subset, without the nearest-training-image baseline), which picks the judge and the
    reference; default the model config's "data". ``judge``: a features folder written by
    :func:`sdekit.tasks.judge.train_features` instead of the shipped judge (for a model of other data:
    the reference is the judge's own held-out split, class fidelity only if its classes are the model's).
    SDEdit runs max(4, round(steps_per_unit * t0)) steps (default: the library's rule, sdekit.tasks.sdedit.sdedit_steps) of
    ``sampler`` in batches of ``batch_size``. ``n_reference``: use only the first that many reference
    images (default all: 5000 for MNIST). ``class_label``, ``guidance``: how the edits are conditioned
    (module docstring; default the model's default edit). Warnings (small n, no FID) go into the report and, with
    ``progress``, to stderr with a tqdm bar per batch. Bad input raises UserError before any work."""
    from sdekit.data.datasets import data_kind
    from sdekit.tasks.judge import held_out
    from sdekit.models.bundle import generate
    from sdekit.tasks.strokes import STROKE_SETS
    t_begin = time.time()
    t0s = parse_t0s(t0s)
    data = data or (getattr(model, "config", None) or {}).get("data") or "digits"
    if strokes is None:
        strokes = "pen" if model.shape[0] == 1 else "simulated"
    if strokes not in STROKE_SETS:
        raise UserError(f"unknown stroke set {strokes!r}; choose one of {', '.join(STROKE_SETS)}")
    if int(n) != n or n < 4:
        raise UserError(f"-n must be an integer of at least 4, got {n}")
    if batch_size < 1 or (steps_per_unit is not None and steps_per_unit < 1) or (n_reference is not None and n_reference < 4):
        raise UserError("batch size and steps per unit of t0 must be positive, and n_reference at least 4")
    spec, data, classes = _judge_and_data(model, data, judge)
    size = _size(model.shape, spec, data)
    out = check_outputs(out, overwrite)
    from sdekit.tasks.sdedit import edit_condition, resolve_condition
    resolve_condition(model, class_label, guidance)
    net = spec.load()
    held = held_out(data, size, spec)
    reference = held.reference[:n_reference]
    facts = [held.note] if held.note else []          # what was measured against, beside the warnings
    if held.train is None:
        facts.append(f"no nearest-training-image baseline: the shipped held-out subset holds no training images "
                     f"(give --data {data_kind(data)}:DIR)")
    if not classes:
        facts.append(f"no class fidelity: the judge's {spec.num_classes} classes of {spec.name} are not the model's")
    guides, labels, real = _guides(strokes, n, seed, size, held, data)
    if strokes == "package":
        unique = len(torch.unique(guides.flatten(1), dim=0))
        facts.append(f"the package holds {unique} paintings: each is edited about {n / unique:.0f} times, so the "
                     "intervals are over edits of these paintings, not over paintings; the real-images row pairs "
                     "each painting with a held-out image of its class")
    notes = sample_warnings(min(n, len(reference)))
    for kind, lines in (("note", facts), ("warning", notes)) if progress else ():
        for line in lines:
            print(f"{kind}: {line}", file=sys.stderr)
    _, read, w = edit_condition(model, model.from_unit(guides).to(model.device), class_label, guidance,
                                torch.Generator().manual_seed(seed))
    read = None if read is None else read.cpu()
    first = _conditioned(model, None if read is None else read[:1], w)
    for t0 in t0s:                  # one step on one stroke per t0: SDEdit refuses what it cannot do now
        edit_strokes(model, guides[:1], t0, 1, sampler, torch.Generator().manual_seed(0), first)
    score = _Scorer(net, reference, guides, labels if classes else None, seed)

    from sdekit.tasks.sdedit import sdedit_steps
    steps = {t0: sdedit_steps(sampler, t0) if steps_per_unit is None else
             max(EDIT_STEPS.min_steps, round(steps_per_unit * t0))
             for t0 in t0s}
    outputs = _sweep(model, guides, steps, sampler, seed, batch_size, progress, read, w)
    rows = [score("SDEdit", t0, outputs[t0], steps[t0]) for t0 in t0s]
    near = None if held.train is None else _nearest(held.train, guides)
    plain_sampler = default_sampler(DEMO_SAMPLE, model)          # a consistency model: its own sampler
    plain, plain_info = generate(model, n, plain_sampler, None, seed=seed, batch_size=batch_size, return_info=True)
    plain = model.to_unit(plain)
    rows += [score("raw strokes", None, guides),
             score("real images (real vs real)", None, real)]
    rows += [] if near is None else [score("nearest training image", None, near)]
    rows += [score(SAMPLES, None, plain, plain_info["steps"])]
    level = fidelity_level(getattr(net, "test_accuracy", None))
    best = pick_t0(rows, level)
    if best is None:
        notes.append(f"no swept t0 keeps the drawn {class_words(data)[0]} in {level:.1%} of edits: no default t0")
    meta = {"model": getattr(model, "name", "model"), "data": data, "strokes": strokes, "n": n,
            "class_noun": class_words(data)[0], "classes": class_words(data)[1],
            "n_reference": len(score.ref), "sampler": sampler, "steps_per_unit": steps_per_unit, "seed": seed,
            "judge_test_accuracy": getattr(net, "test_accuracy", None), "fidelity_level": level,
            "judge": None if judge is None else str(judge), "notes": facts,
            "nearest_baseline": near is not None,
            "class": _mode(model, class_label, read), "guidance": w, "class_read_accuracy": None if read is None else float((read == labels).float().mean()),
            "seconds": round(time.time() - t_begin, 1)}
    extra = [("real", real)] + ([] if near is None else [("nearest", near)])
    index = _report(out, rows, meta, best, notes, [guides, *outputs.values(), *(u for _, u in extra)], labels,
                    ["stroke"] + [f"t0={t:g}" for t in t0s] + [name for name, _ in extra])
    return Evaluation(rows, best, notes, meta, index, outputs)


def _mode(model, class_label, read) -> str:
    """How the edits were conditioned: "none", "auto" (classes read from the strokes) or "given"."""
    if read is None:
        return "none"
    from sdekit.tasks.sdedit import default_class
    if class_label is None:
        class_label = default_class(model)
    return "auto" if class_label == "auto" else "given"


def _conditioned(model, labels, w):
    """The score of edits toward ``labels`` [B] with guidance w; None (the plain score) without labels."""
    return None if labels is None else model.conditional(labels.to(model.device), w)


def _sweep(model, guides, steps: dict, sampler, seed, batch_size, progress, read=None, w=0.0) -> dict:
    """t0 -> SDEdit outputs of all guides with steps[t0] steps, in batches (a tqdm bar per batch);
    conditioned on the labels ``read`` [N] with guidance w, or unconditional (None)."""
    batches = guides.split(batch_size)
    fns = [None] * len(batches) if read is None else [_conditioned(model, r, w) for r in read.split(batch_size)]
    outputs = {}
    with progress_bar(total=len(steps) * len(batches), desc="SDEdit", unit="batch", disable=not progress) as bar:
        for j, (t0, k) in enumerate(steps.items()):
            g = torch.Generator().manual_seed(seed * 1_000_003 + j)
            bar.set_postfix(t0=t0)
            res = []
            for b, fn in zip(batches, fns):
                res.append(edit_strokes(model, b, t0, k, sampler, g, fn))
                bar.update()
            outputs[t0] = torch.cat(res)
    return outputs


def _nearest(train: torch.Tensor, q: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """The training image nearest to each query in pixel L2 (queries in chunks, to bound memory)."""
    flat = train.flatten(1)
    return train[torch.cat([torch.cdist(c.flatten(1), flat).argmin(1) for c in q.split(chunk)])]


# ---- the report ---------------------------------------------------------------------------------

def _report(out: Path, rows, meta, best, notes, columns, labels, names) -> Path:
    """Write results.{md,json,csv}, tradeoff.png, grid.png (the first 8 guides; ``columns``: image
    sets [n, C, H, W] named ``names``) and index.html into ``out``; return index.html's path."""
    from sdekit.data.images import save_labelled_grid
    out.mkdir(parents=True, exist_ok=True)
    md = _markdown(rows, meta, best, notes)
    atomic_write_text(out / "results.md", md)
    atomic_write_text(out / "results.json", json.dumps({"meta": meta, "default_t0": best, "warnings": notes,
                                                        "rows": [asdict(r) for r in rows]}, indent=1) + "\n")
    _write_csv(out / "results.csv", rows)
    _plot(out / "tradeoff.png", rows, best, meta.get("class_noun", "digit"), meta.get("fidelity_level", FIDELITY))
    save_labelled_grid(out / "grid.png", torch.stack([c[:8] for c in columns], 1),
                       [row_label(int(y), meta.get("data")) for y in labels[:8]], names)
    return _html(out, md, meta)


def _ci(e: Estimate | None, nd: int = 3) -> str:
    return "" if e is None else f"{e.value:.{nd}f} [{e.lo:.{nd}f}, {e.hi:.{nd}f}]"


def row_label(k: int, data) -> str:
    """A grid row's label for class ``k`` of the dataset spec ``data``: "3 food" where the classes have names
    (the first word of :data:`sdekit.data.datasets.CLASS_NAMES`, as ``--class`` accepts it), else "3"."""
    from sdekit.data.datasets import CLASS_NAMES, data_kind, short_name
    names = CLASS_NAMES.get(data_kind(data))
    return f"{k} {short_name(names[k])}" if names and 0 <= k < len(names) else str(k)


def _write_csv(path, rows):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "t0", "fidelity", "fidelity_lo", "fidelity_hi", "kid", "kid_lo", "kid_hi", "fid",
                "l2", "l2_lo", "l2_hi", "l2_down4", "l2_down4_lo", "l2_down4_hi", "steps"])
    for r in rows:
        cells = ["", "", ""] if r.fidelity is None else [f"{v:.5f}" for v in (r.fidelity.value, r.fidelity.lo, r.fidelity.hi)]
        cells += [f"{v:.5f}" for v in (r.kid.value, r.kid.lo, r.kid.hi)]
        cells.append("" if r.fid is None else f"{r.fid:.4f}")
        cells += [f"{v:.5f}" for v in (r.l2.value, r.l2.lo, r.l2.hi)]
        cells += ["", "", ""] if r.l2_down is None else [f"{v:.5f}" for v in (r.l2_down.value, r.l2_down.lo, r.l2_down.hi)]
        w.writerow([r.method, "" if r.t0 is None else r.t0, *cells, r.steps])
    atomic_write_text(path, buf.getvalue())


def _markdown(rows, meta, best, notes) -> str:
    spu = meta["steps_per_unit"]
    noun, classes = meta.get("class_noun", "digit"), meta.get("classes", "the digits 0-9")
    rule = f"max(4, {spu} x t0)" if spu else "the library's default"
    lines = ["| method | t0 | class fidelity [95% CI] | KID [95% CI] | FID | L2 to stroke [95% CI] | "
             "L2 4x down [95% CI] | steps |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {'' if r.t0 is None else f'{r.t0:g}'} | {_ci(r.fidelity)} | {_ci(r.kid, 4)} | "
                     f"{'—' if r.fid is None else f'{r.fid:.2f}'} | {_ci(r.l2)} | {_ci(r.l2_down)} | {r.steps} |")
    lines += ["", f"{meta['n']} {meta['strokes']} strokes of {classes} (held out, never trained on); judge and "
              f"KID/FID reference: {meta['data']} ({meta['n_reference']} held-out images; judge test accuracy "
              f"{meta['judge_test_accuracy']}); SDEdit with {meta['sampler']}, {rule} "
              f"steps; seed {meta['seed']}; {meta['seconds']} s.", ""]
    if meta.get("class", "none") != "none":
        read = meta.get("class_read_accuracy")
        how = "the class the model's classifier reads in each stroke" if meta["class"] == "auto" else "the given class"
        lines += [f"Edits conditioned on {how}, classifier-free guidance w = {meta['guidance']:g}"
                  + (f"; the reading agrees with the drawn {noun} for {read:.1%} of the strokes." if read is not None
                     and meta["class"] == "auto" else "."), ""]
    lines.append(f"Default t0 (among the swept t0 whose class fidelity is at least {meta.get('fidelity_level', FIDELITY):.1%}"
                 ", the smallest whose KID is "
                 "at most the plain samples', else the largest): "
                 + ("none" if best is None else f"**{best:g}**" if meta.get("n", KID_MIN_N) >= KID_MIN_N else
                    f"{best:g} (tentative: n = {meta['n']} < {KID_MIN_N}, where KID is mostly noise)"))
    lines += ["", f"Class fidelity: the fraction of images the judge reads as the drawn {noun} (Wilson interval). "
              "KID: mean over 100 subsets of half of each set, interval -/+ 1.96 std over subsets; compare it with "
              f"the real-vs-real row (held-out real images of the drawn {noun}), measured the same way. "
              "L2: pixels in [0, 1], percentile-bootstrap interval."]
    if meta.get("notes"):
        lines += [""] + [f"Note: {w}" for w in meta["notes"]]
    if notes:
        lines += [""] + [f"Warning: {w}" for w in notes]
    return "\n".join(lines) + "\n"


def _errbar(ax, xs, ests, **kw):
    ys = [e.value for e in ests]
    err = [[y - e.lo for y, e in zip(ys, ests)], [e.hi - y for y, e in zip(ys, ests)]]
    ax.errorbar(xs, ys, yerr=err, capsize=3, marker="o", **kw)


def _band(ax, e: Estimate, color, label):
    ax.axhspan(e.lo, e.hi, color=color, alpha=0.15)
    ax.axhline(e.value, color=color, ls="--", lw=1, label=label)


def _plot(path, rows, best, noun: str = "digit", level: float = FIDELITY):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sw = [r for r in rows if r.t0 is not None]
    base = {r.method: r for r in rows if r.t0 is None}
    t = [r.t0 for r in sw]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [(f"class fidelity (judged the drawn {noun})", "fidelity"), ("KID to held-out real (realism)", "kid"),
              ("L2 to the stroke (faithfulness)", "l2")]
    for ax, (title, attr) in zip(axes, panels):
        if any(getattr(r, attr) is None for r in rows):          # class fidelity with a judge of other classes
            ax.set_title(f"{title}: not measured", fontsize=10)
            continue
        _errbar(ax, t, [getattr(r, attr) for r in sw], color="C0", label="SDEdit")
        for i, (name, r) in enumerate(base.items()):
            _band(ax, getattr(r, attr), f"C{i + 1}", name)
        if best is not None:
            ax.axvline(best, color="k", lw=0.8, ls=":", label=f"default t0 = {best:g}")
        ax.set_xlabel("t0")
        ax.set_title(title, fontsize=10)
    axes[0].axhline(level, color="C3", lw=0.8)
    axes[0].set_ylim(0, 1.02)
    axes[0 if sw and sw[0].fidelity is not None else 1].legend(fontsize=7, loc="lower left")
    fig.suptitle("SDEdit on held-out strokes: 95% intervals (bars: SDEdit; bands: baselines)", fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _html(out: Path, md: str, meta: dict) -> Path:
    table_rows = [line.strip("|").split("|") for line in md.splitlines() if line.startswith("|")]
    head, body = table_rows[0], table_rows[2:]
    table = "<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in body) + "</table>"
    notes = "".join(f"<p>{html.escape(line.replace('**', ''))}</p>" for line in md.splitlines()
                    if line and not line.startswith("|"))
    nearest = ", the nearest training image" if meta.get("nearest_baseline", True) else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>SDEdit evaluation</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>SDEdit on {html.escape(str(meta['strokes']))} strokes: class fidelity, realism, faithfulness</h1>
<p>Model {html.escape(str(meta['model']))}. KID and FID are measured in the feature space of a small classifier
trained on {html.escape(str(meta['data']))}'s training split, not Inception: compare them within this report.</p>
{table}
{notes}
<p><a href="results.csv">results.csv</a> · <a href="results.json">results.json</a> · <a href="results.md">results.md</a></p>
<h2>Against t0</h2><img src="tradeoff.png" alt="class fidelity, KID and L2 against t0 with 95% intervals">
<h2>Outputs (rows: strokes, by the {html.escape(str(meta.get('class_noun', 'digit')))} drawn; columns: the stroke, SDEdit per t0, a real image of it{nearest})</h2>
<img src="grid.png" alt="grid of outputs">
</body></html>
"""
    atomic_write_text(out / "index.html", page)
    return out / "index.html"

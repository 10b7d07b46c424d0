"""The page's work without HTTP: a job request (decoded JSON) -> a validated :class:`Task` -> images.

* ``parse_task(model, body)``: parameters and images (data URLs) -> a :class:`Task`; every problem is a
  :class:`UserError` whose one-line message the page shows;
* ``run_task(model, task, on_step)``: SDEdit, inpainting or sampling on ``model``.

Masks follow the library's convention throughout: 1 = keep the guide, 0 = regenerate.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from sdekit.core.errors import UserError
from sdekit.data.datasets import background, class_index
from sdekit.policy import EDIT, INPAINT, MODEL_SAMPLE, T0, default_sampler
from sdekit.apps.web.limits import Limits
from sdekit.apps.web.uploads import data_url_bytes, keep_mask, load_canvas, strength_map

KINDS = ("edit", "inpaint", "sample")
FIELDS = ("kind", "n", "seed", "label", "guidance", "sampler", "steps", "t0", "repeats", "image", "mask", "t0_map")


@dataclass
class Task:
    """One request, validated. Images are in [0, 1] at the model's resolution, batch 1.

    edit: SDEdit of ``image`` from t0_frac * T (mask [1, 1, H, W]: 1 = keep the guide, 0 = regenerate;
    None = regenerate everything), or with a per-pixel t0 (t0_map [1, 1, H, W] in [0, 1], the strength
    layer where painted and t0_frac elsewhere; None = t0_frac everywhere); inpaint: fill the pixels of
    ``image`` where ``mask`` is 0; sample: n images from the prior."""
    kind: str
    n: int = 4
    steps: int | None = None          # None until parse_task sets the policy's steps for the sampler
    sampler: str = EDIT.sampler
    seed: int = 0
    t0_frac: float = T0.default
    repeats: int = 1
    label: int | str | None = -1     # a class K, -1 (none), "auto" (read from the image) or None (the model's default edit)
    guidance: float | None = None    # classifier-free guidance w towards the label (None: an edit's default, else 0)
    image: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    t0_map: torch.Tensor | None = None

    def expected_nfe(self) -> int:
        """Model evaluations a run should take, for the progress bar (the sampler registry's count; the
        adaptive ODE solver's is a guess, so the bar is capped at 99%)."""
        from sdekit.solvers.registry import get_sampler
        n = get_sampler(self.sampler).evaluations(self.steps) or 200
        return n * (self.repeats if self.kind == "edit" else 1)


def _show(v) -> str:
    """A request's value for a one-line message: its repr, shortened."""
    try:
        s = repr(v)
    except ValueError:                       # an int too long to print
        s = type(v).__name__
    return s if len(s) <= 24 else s[:20] + "..."


def _label(body: dict, model, kind: str):
    """The request's class: K in 0..num_classes-1 or its name, -1 (none), "auto" (edits only: the class the model's
    classifier reads in the image); absent: the model's default edit for an edit (None), else -1."""
    v = body.get("label")
    if v is None or v == "":
        return None if kind == "edit" else -1
    if v == "auto":
        if kind != "edit":
            raise UserError("label 'auto' reads the class of a drawing: it applies to edits only")
        if getattr(model, "classifier", None) is None:
            raise UserError("this model has no classifier to read the drawn class: choose the class")
        return "auto"
    if isinstance(v, str) and not v.strip().lstrip("-").isdigit():           # a class name
        v = class_index(model.config, v, ", -1 (none) or 'auto'")
    return _int({"label": v}, "label", -1, -1, max(model.num_classes - 1, -1))


def _int(body: dict, key: str, default: int, lo: int, hi: int) -> int:
    v = body.get(key, default)
    if v is None or v == "":
        return default
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        f = math.nan
    if not math.isfinite(f) or f != int(f):
        raise UserError(f"{key} must be a whole number, got {_show(v)}")
    if not lo <= f <= hi:
        raise UserError(f"{key} must lie in {lo}..{hi}, got {int(f)}")
    return int(f)


def _float(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key, default)
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        f = math.nan
    if not (math.isfinite(f) and lo < f <= hi):
        raise UserError(f"{key} must lie in ({lo}, {hi}], got {_show(v)}")
    return f


POLICY = {"edit": EDIT, "inpaint": INPAINT, "sample": MODEL_SAMPLE}   # each tab's task in sdekit.policy


def samplers_for(kind: str, model=None) -> tuple[str, ...]:
    """Sampler names a job kind accepts (the registry's samplers that finish on image models), its
    default first: the policy's for the kind's task on ``model`` (:func:`sdekit.policy.default_sampler`: the
    consistency sampler for a consistency model)."""
    from sdekit.solvers.registry import REGISTRY
    first = default_sampler(POLICY[kind], model)
    return (first,) + tuple(s.name for s in REGISTRY.values() if s.finishes and s.name != first)


def default_steps(model, kind: str, sampler: str, t0: float) -> int:
    """The library's default steps: the sampler's own, scaled by t0 for an edit (sdekit.sdedit policy)."""
    from sdekit.solvers.registry import get_sampler
    from sdekit.tasks.sdedit import sdedit_steps
    return sdedit_steps(sampler, t0) if kind == "edit" else get_sampler(sampler).default_steps


def parse_task(model, body: dict, limits: Limits = Limits()) -> Task:
    """Validate a job request (the decoded JSON object) into a Task; UserError with a one-line message
    for anything out of range, of the wrong type, or an image that does not decode."""
    if not isinstance(body, dict):
        raise UserError("the request body must be a JSON object")
    unknown = sorted(str(k) for k in body if k not in FIELDS)
    if unknown:
        raise UserError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(_show, unknown))}; "
                        f"a job takes {', '.join(FIELDS)}")
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise UserError(f"kind must be one of {', '.join(KINDS)}, got {_show(kind)}")
    n_max = limits.samples if kind == "sample" else limits.results
    from sdekit.tasks.sdedit import default_class, default_t0
    t = Task(kind=kind,
             n=_int(body, "n", Task.n, 1, n_max),
             seed=_int(body, "seed", int(time.time_ns() % 2**31), 0, 2**63 - 1),
             label=_label(body, model, kind))
    if body.get("guidance") not in (None, ""):
        t.guidance = _float(body, "guidance", 0.0, -math.inf, math.inf)
    if kind == "inpaint" and t.guidance:
        raise UserError("guidance applies to edits and samples")
    if kind == "edit":
        from sdekit.tasks.sdedit import resolve_condition
        resolve_condition(model, t.label, t.guidance)                # what the run will refuse, refused now
    elif kind == "sample":
        model.check_labels(None if t.label == -1 else t.label, t.guidance or 0.0)
    samplers = samplers_for(kind, model)
    t.sampler = str(body.get("sampler") or samplers[0]).lower()
    if t.sampler not in samplers:
        raise UserError(f"sampler must be one of {', '.join(samplers)}, got {_show(t.sampler)}")
    if kind == "edit":
        conditioned = (default_class(model) if t.label is None else t.label) != -1
        t.t0_frac = _float(body, "t0", default_t0(model, conditioned), T0.low, T0.high)
        t.repeats = _int(body, "repeats", Task.repeats, 1, limits.repeats)
    image = None
    if kind in ("edit", "inpaint"):
        if not body.get("image"):
            raise UserError("paint something or upload an image first")
        image = load_canvas(data_url_bytes(body["image"], "image"), model.shape, limits,
                            background=background(model.config))
    if kind == "edit" and body.get("t0_map"):
        t.t0_map = strength_map(data_url_bytes(body["t0_map"], "t0_map"), model.shape, t.t0_frac, limits, image.size)
        if t.t0_map is not None and t.t0_map.max() == 0:
            raise UserError("the strength layer keeps everything (t0 0 everywhere): nothing to edit")
    t0 = t.t0_frac if t.t0_map is None else float(t.t0_map.max())          # the solver starts at the largest
    t.steps = _int(body, "steps", default_steps(model, kind, t.sampler, t0), 1, limits.steps)
    if image is not None:
        t.image = image.pixels
        if body.get("mask"):
            t.mask = keep_mask(data_url_bytes(body["mask"], "mask"), model.shape, limits, image.size)
            if t.mask.all():                 # nothing painted on the mask layer: no mask
                t.mask = None
        if kind == "inpaint" and t.mask is None:
            raise UserError("paint the region to fill on the mask layer first")
    return t


def run_task(model, task: Task, on_step=None) -> dict:
    """Run one task on ``model``. ``on_step(nfe)`` is called after every solver step with the evaluations so far (it may
    raise to stop the run). Returns {"results": [n, C, H, W] in [0, 1], "guide": [1, C, H, W] or None,
    "mask": [1, 1, H, W] (1 = kept) or None, "t0_map": the task's t0_map, "condition": an edit's class or
    None (:func:`condition`)}."""
    import sdekit
    w = task.guidance or 0.0
    labelled = isinstance(task.label, int) and task.label >= 0
    score_fn = model.conditional(task.label, w) if labelled else model.score_fn
    done = 0                                              # evaluations of earlier rounds (repeats)

    def hook(state):                                      # a step hook: progress after every solver step
        nonlocal done
        if on_step is not None:
            on_step(done + state.nfe)
        if state.i == state.n - 1:
            done += state.nfe

    g = torch.Generator(device="cpu").manual_seed(task.seed)
    sde, n = model.sde, task.n
    if task.kind == "sample":
        out = sdekit.sample(sde, score_fn, (n, *model.shape), sampler=task.sampler, steps=task.steps,
                            generator=g, device=model.device, callback=hook)
        cond = condition(model, torch.tensor([task.label]), task.label, w) if labelled else None
        return {"results": model.to_unit(out), "guide": None, "mask": None, "t0_map": None, "condition": cond}
    x = model.from_unit(task.image).to(model.device).expand(n, *model.shape).contiguous()
    keep = None if task.mask is None else task.mask.to(x.device).expand(n, 1, *model.shape[1:])
    cond = None
    if task.kind == "edit":
        score_fn, labels, w = sdekit.edit_condition(model, x[:1], task.label, task.guidance, g)   # one reading, n results
        cond = condition(model, labels, task.label, w)
        t0 = task.t0_frac if task.t0_map is None else task.t0_map.to(x.device)
        out = sdekit.sdedit(sde, score_fn, x, t0=t0, steps=task.steps, mask=keep,
                            repeats=task.repeats, sampler=task.sampler, generator=g, callback=hook)
    else:
        out = sdekit.inpaint(sde, score_fn, x, keep, steps=task.steps, sampler=task.sampler, generator=g,
                             callback=hook)
    return {"results": model.to_unit(out), "guide": task.image, "mask": task.mask, "t0_map": task.t0_map,
            "condition": cond}


def condition(model, labels, label, w: float) -> dict | None:
    """An edit's class as the page reports it: None for a plain edit, else {"label": K, "name": the data's
    name of class K or None, "read": whether it was read from the drawing (``label`` "auto" or the default
    edit's None), "guidance": w, "text": the words ``sdekit edit`` prints (:func:`sdekit.tasks.sdedit.describe_condition`)}."""
    if labels is None:
        return None
    from sdekit.data.datasets import class_names
    from sdekit.tasks.sdedit import describe_condition
    names = class_names(model.config)
    k = int(labels.reshape(-1)[0])
    return {"label": k, "name": None if names is None else names[k], "read": label in (None, "auto"),
            "guidance": float(w), "text": describe_condition(labels, label, w, names)}

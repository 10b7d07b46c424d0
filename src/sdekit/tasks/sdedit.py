"""SDEdit (Meng et al. 2022): guided synthesis and editing by perturbing and denoising.

A guide x^(g) (a stroke painting, an edited or a composited image) is perturbed with the SDE's own
kernel to an intermediate time t(t0),

    x(t) = s(t) x^(g) + s(t) sigma(t) z,    z ~ N(0, I)                      (perturbation kernel)

and the reverse-time SDE (or any solver of :func:`sdekit.sample`) is run from t back to 0. Noise
at time t washes out the details of the guide while the coarse layout survives: small t0 keeps the
output faithful to the guide, t0 = 1 forgets it and samples the data distribution (realism).

The policy (its numbers and reasons are the records of :mod:`sdekit.policy`, read by the CLI, the page,
the demo and ``evaluate``):

* **t0 means a noise level, the same for every SDE**: the noise-to-signal ratio sigma that the
  standard VP SDE (beta from 0.1 to 20, DDPM's linear schedule) reaches at time t0,
  sigma_ref(t0) = sqrt(exp(0.1 t0 + 9.95 t0^2) - 1) (0.32 at t0 = 0.1, 1.2 at 0.3, 3.4 at 0.5, 152 at 1).
  Each SDE starts from the time where its own sigma(t) equals it (:func:`sdedit_time`), clamped to
  [eps, T]; for the VP SDE that is t0 itself (DDPM: timestep t0 N), for EDM sigma_ref(t0).
* **default t0**: the model bundle's calibrated value (``config.json`` "sdedit": {"t0": ...}, written by
  ``sdekit evaluate --write-t0``; :class:`sdekit.policy.Calibration`, declared on the model's score views),
  else :data:`DEFAULT_T0` (``sdekit.policy.T0``).
* **default class** of a class-conditional bundle (:func:`edit_condition`): "sdedit": {"class": "auto",
  "guidance": w} makes an edit read the drawn class with the bundle's noise-conditional classifier
  (``classifier/`` in the bundle, :func:`sdekit.tasks.guidance.read_class`) and edit under classifier-free
  guidance w toward it; noise from a larger t0 can then not turn the drawing into another class.
  Such a bundle keeps the plain (unconditional) edit's calibrated t0 as "t0_unconditional".
* **default sampler**: ``sdekit.policy.EDIT`` (reverse diffusion, Algorithm 1's update).
* **default steps** (:func:`sdedit_steps`, ``sdekit.policy.EDIT_STEPS``): for the stochastic SDE samplers, a
  fifth of the sampler's default steps (sdekit.solvers.registry) per unit of t0, i.e. 100 t0 for reverse
  diffusion (Algorithm 1's Delta t = t0 / N), at least :data:`MIN_STEPS`; the fast solvers keep their default
  steps, which their accuracy depends on more than the span, and so do the samplers on a geometric grid
  (Langevin alone), whose chains keep up with the annealing only at their default spacing in log sigma.

With a mask (1 = keep the guide, 0 = regenerate), the kept region of the state is replaced after
every solver step by the guide perturbed to the new time (the replacement trick of Song et al. 2021,
App. I), inside one solver call that keeps its grid and history; the output equals the guide where
mask = 1.

**A t0 map** (per-pixel t0, a "strength map"; soft masks and differential editing) generalises both:
each pixel has its own t0 in [0, 1] and with it its own start time tau = sdedit_time(t0) (0 for t0 = 0).
The solver starts from the map's largest t0; a pixel is held at the guide perturbed to the solver's
current time t (the kernel above, a fresh draw at every step, as the kept region of a masked edit) for
as long as t >= tau, and released to the solver once t falls below tau. On the solver's grid a pixel
therefore starts from the last grid time at or above its own tau: at most one step early. A constant map
is plain SDEdit at that t0; t0 = 0 is a kept pixel (a map with values 0 and t0 is masked SDEdit), as is
a t0 whose noise level lies below the smallest the SDE reaches. Differential Diffusion (Levin & Fried
2023, "Differential Diffusion: Giving Each Pixel Its Strength") injects the noised original the same
way, but reads a pixel's strength as a fraction of the run's own timesteps (released when the fraction
of the schedule still to go falls to its strength), so its effect depends on the run's overall strength
and on the scheduler; here a pixel's t0 is a noise level with the same meaning as a single t0 (module
docstring above), whatever the map's other values, the SDE or the sampler.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sdekit.core.checks import check_broadcasts, check_count, check_guidance, check_t0
from sdekit.core.denoisers import ScoreView, as_denoiser
from sdekit.core.errors import UserError
from sdekit.core.sde import SDE, VPSDE
from sdekit.policy import EDIT, EDIT_STEPS, T0, Calibration, default_sampler
from sdekit.solvers.registry import get_sampler
from sdekit.tasks.guidance import Impute
from sdekit.tasks.plans import EditPlan, SolverConfig
from sdekit.tasks.guidance import read_class

__all__ = ["sdedit", "perturb", "composite", "simulate_strokes", "median_filter", "quantize_colors",
           "sdedit_time", "sdedit_steps", "default_t0", "default_class", "edit_condition", "describe_condition", "DEFAULT_T0", "MIN_STEPS",
           "DEFAULT_SAMPLER", "start_times", "Release", "plan_edit", "EditPlan"]

DEFAULT_T0 = T0.default                # for a model without a calibrated value (sdekit.policy)
MIN_STEPS = EDIT_STEPS.min_steps
DEFAULT_SAMPLER = EDIT.sampler         # Algorithm 1's stochastic update (sdekit.policy)
REFERENCE_SDE = VPSDE(0.1, 20.0)       # t0's scale: DDPM's linear schedule


def _reference_schedule(sde: SDE) -> bool:
    """Whether ``sde`` has the reference SDE's noise schedule (its config, the discretisation N aside)."""
    return {**sde.config(), "N": None} == {**REFERENCE_SDE.config(), "N": None}


def start_times(sde: SDE, t0: torch.Tensor) -> torch.Tensor:
    """The time of ``sde`` at which SDEdit starts for each element of ``t0`` (values in (0, 1], any shape):
    sigma(t) = sigma_ref(t0) (module docstring), clamped to [eps, T]; NaN where that noise level lies at
    or below the SDE's smallest, sigma(eps). On the reference SDE's own schedule that time is t0 itself
    (exactly, without the round trip through sigma and its inverse). Returns float64, t0's shape."""
    t0 = torch.as_tensor(t0, dtype=torch.float64)
    if _reference_schedule(sde):
        return t0 * sde.T
    ref = REFERENCE_SDE.sigma(t0)
    lo, hi = sde.sigma(torch.tensor([sde.eps, sde.T], dtype=torch.float64)).tolist()
    t = torch.where(ref >= hi, sde.T, sde.sigma_inv(ref).clamp(sde.eps, sde.T))
    return torch.where(ref <= lo, math.nan, t)


def sdedit_time(sde: SDE, t0: float) -> float:
    """The time of ``sde`` at which SDEdit starts for t0 in (0, 1]: sigma(t) = sigma_ref(t0) (module
    docstring), clamped to T. Raises UserError when that noise level lies below the SDE's eps."""
    t = float(start_times(sde, torch.tensor([float(t0)], dtype=torch.float64))[0])
    if math.isnan(t):
        ref = float(REFERENCE_SDE.sigma(torch.tensor([float(t0)], dtype=torch.float64)))
        lo = float(sde.sigma(torch.tensor([sde.eps], dtype=torch.float64)))
        raise UserError(f"t0 = {t0} is a noise level (sigma {ref:.3g}) below this SDE's smallest ({lo:.3g})")
    return t


def _calibration(model) -> Calibration:
    """The calibrated SDEdit settings of ``model`` (a Model or anything with a ``config``; None: none)."""
    cal = getattr(model, "calibration", None)
    return cal if isinstance(cal, Calibration) else Calibration.from_config(getattr(model, "config", None))


def default_t0(model=None, conditioned: bool = True) -> float:
    """The calibrated t0 of a bundle (``model.config["sdedit"]["t0"]``) or DEFAULT_T0. With
    ``conditioned=False``, the plain edit's ("t0_unconditional") where the bundle's default edit is
    class-guided (module docstring; :meth:`sdekit.policy.Calibration.default_t0`)."""
    return _calibration(model).default_t0(conditioned)


def default_class(model) -> int | str:
    """The class a bundle's default edit is conditioned on: "auto" (read from the guide, "sdedit":
    {"class": "auto"} in config.json) or -1 (none: a plain edit)."""
    return "auto" if _calibration(model).read_class else -1


def resolve_condition(model, class_label=None, guidance: float | None = None):
    """The (class_label, w) an edit by ``model`` uses, checked without any work (arguments as
    :func:`edit_condition`): class_label an int K, an int tensor, -1 or "auto"; w a float >= 0.
    UserError for what edit_condition refuses."""
    if class_label is None:
        class_label = default_class(model)
    w = check_guidance(_calibration(model).guidance if guidance is None else guidance)
    if isinstance(class_label, str):
        if class_label != "auto":
            raise UserError(f"class must be an integer class, -1 (none) or 'auto', got {class_label!r}")
        if getattr(model, "classifier", None) is None:
            raise UserError(f"{getattr(model, 'name', 'the model')} has no classifier to read the drawn class "
                            "('auto'): give the class")
        return class_label, w
    if not torch.is_tensor(class_label):
        class_label = int(class_label)
    if torch.is_tensor(class_label) or class_label != -1:
        model.check_labels(class_label, w)
        return class_label, w
    if guidance:
        raise UserError(f"guidance w = {w:g} needs a class to guide towards (a class K or 'auto'); "
                        "this edit is unconditional")
    model.check_labels(None)                  # a model without a null label has no unconditional edit
    return -1, 0.0


def edit_condition(model, guide: torch.Tensor, class_label=None, guidance: float | None = None,
                   generator: torch.Generator | None = None):
    """What an edit of ``guide`` [B, C, H, W] (model space) by ``model`` is conditioned on.

    class_label: an int K or an int tensor [B] (those classes), -1 (none: an unconditional edit),
    "auto" (each guide's class as the bundle's classifier reads it, :func:`sdekit.tasks.guidance.read_class`),
    or None: the bundle's default ("sdedit": {"class": ...}), else -1. guidance: classifier-free guidance
    weight w >= 0 toward the labels (Ho & Salimans 2022); None: the bundle's "sdedit" "guidance" (else 0).
    Returns (score_fn, labels int64 [B] or None, w). UserError, before any work: "auto" on a model
    without a classifier, labels outside 0..K-1 or on an unconditional model, w < 0 or not finite, a
    given w > 0 for an unconditional edit (nothing to guide towards), no class or w > 0 for a model without
    a null label (:meth:`sdekit.models.model.Model.check_labels`)."""
    class_label, w = resolve_condition(model, class_label, guidance)
    if isinstance(class_label, str):
        labels = read_class(model.classifier, guide, generator=generator)[0]
    elif torch.is_tensor(class_label) or class_label != -1:
        labels = torch.as_tensor(class_label, dtype=torch.long).expand(len(guide)).clone()
    else:
        return model.score_fn, None, 0.0
    model.check_labels(labels)
    return model.conditional(labels.to(guide.device), w), labels, w



def describe_condition(labels, class_label=None, w: float = 0.0, names=None) -> str:
    """How an edit was conditioned, in words, as ``sdekit edit`` and the web page report it: "" for a plain
    edit (``labels`` None), else "class K" (with its name from ``names``, e.g. the data's
    :func:`sdekit.data.datasets.class_names`), "(read)" when the class was read from the guide (``class_label``
    None or "auto", as given to :func:`edit_condition`) and "guidance w" when w > 0. ``labels``: the
    int tensor edit_condition returned (its first entry is described)."""
    if labels is None:
        return ""
    k = int(labels.reshape(-1)[0])
    name = f" {names[k]}" if names is not None and 0 <= k < len(names) else ""
    return (f"class {k}{name}" + (" (read)" if class_label in (None, "auto") else "")
            + (f" guidance {w:g}" if w else ""))

STEPS_PER_UNIT_FRACTION = EDIT_STEPS.fraction    # SDE samplers: steps per unit of t0 = this x the sampler's default steps


def sdedit_steps(sampler: str, t0: float) -> int:
    """Default solver steps for an edit from t0 (module docstring, ``sdekit.policy.EDIT_STEPS``): 100 t0 for
    reverse diffusion, the default steps of a fast solver or of a sampler on a geometric grid; at least
    MIN_STEPS. UserError for an unknown sampler."""
    spec = get_sampler(sampler)
    return EDIT_STEPS.steps(spec.steps_scale_with_span(), spec.default_steps, t0)


def perturb(sde: SDE, x0: torch.Tensor, t: float, generator=None) -> torch.Tensor:
    """A draw of x(t) ~ p_0t(. | x0) = N(s(t) x0, s(t)^2 sigma(t)^2 I) (sde.perturb)."""
    return sde.perturb(x0, t, generator)


def _check(guide, t0, steps, mask, repeats):
    """The edit's inputs checked (sdekit.core.checks), in the order the messages come: the guide, t0 (a
    number or a map), steps (None: the default), repeats, the mask. Returns (t0 as a float or a float64
    map, steps, repeats)."""
    if not torch.is_tensor(guide) or guide.dim() < 2:
        raise UserError("guide must be a tensor [B, ...] in the model's space")
    if not guide.is_floating_point():
        raise UserError(f"guide must be a floating-point tensor, got {guide.dtype}")
    if not torch.isfinite(guide).all():
        raise UserError("guide contains NaN or Inf")
    t0 = check_t0(t0, guide)
    steps = None if steps is None else check_count(steps, "steps")
    repeats = check_count(repeats, "repeats")
    if mask is not None:
        if not torch.is_tensor(mask):
            raise UserError("mask must be a tensor")
        if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
            raise UserError("mask values must lie in [0, 1] (1 = keep the guide)")
        check_broadcasts("mask", mask, guide)
    return t0, steps, repeats


class Release(Impute):
    """The step hook of a t0 map (module docstring): after each step to time t the state keeps the guide,
    perturbed to t, where t >= tau (not yet released) or ``mask`` = 1, as :class:`Impute` does for a
    fixed mask. tau: per-pixel start times (0 = always kept), broadcasting to the guide; mask: None or as
    :func:`sdedit`'s. ``t_last``: the last time it was offered."""

    def __init__(self, sde: SDE, guide: torch.Tensor, tau: torch.Tensor, mask=None, generator=None, then=None):
        super().__init__(sde, guide, mask, generator, then=then)
        self.tau, self.keep, self.t_last = tau.to(guide.device), mask, None

    def kept(self, t: float) -> torch.Tensor | None:
        """Where the state is the guide's at time t: 1 (held or masked), the mask's value elsewhere; None
        when nothing is (no draw of the kernel then)."""
        held = self.tau <= t
        if self.keep is None:
            return held.to(self.known.dtype) if held.any() else None
        return torch.where(held, torch.ones_like(self.keep), self.keep)

    def project(self, x: torch.Tensor, t, held_at: float | None = None) -> torch.Tensor:
        """x with the guide perturbed to t where :meth:`kept` at time ``held_at`` (default t) says so."""
        self.t_last = float(t)
        self.mask = self.kept(float(t) if held_at is None else held_at)
        return x if self.mask is None else super().project(x, t)

    def __call__(self, state):
        x = super().__call__(state)
        return None if x is state.x else x            # nothing held: the state as the solver left it

    def start(self, x: torch.Tensor, t) -> torch.Tensor:
        """The state at the start time t, x being the guide perturbed to t: the region kept throughout
        (t0 = 0 or mask) imposed as a masked edit does; every other pixel is already held there."""
        return self.project(x, t, held_at=0.0)


def plan_edit(sde: SDE, score_fn, guide: torch.Tensor, t0=None, steps: int | None = None, mask=None, repeats: int = 1,
              sampler: str | None = None, eps: float | None = None, denoise: bool = True, model=None,
              options: dict | None = None) -> EditPlan:
    """The :class:`~sdekit.tasks.plans.EditPlan` of an edit (arguments as :func:`sdedit`), every default
    read once: t0 from the calibration that ``model`` or the score function's view declares
    (:attr:`sdekit.core.denoisers.ScoreView.calibration`; a conditioned view's default edit, a plain one's
    plain edit), else the policy's; the sampler from the policy (:data:`sdekit.policy.EDIT`, "consistency"
    on a consistency model); the steps from :func:`sdedit_steps`. UserError for bad input, before any work."""
    view = score_fn if isinstance(score_fn, ScoreView) else None
    class_label, w = (view.class_labels, view.guidance) if view is not None else (None, 0.0)
    if t0 is None:
        cal = _calibration(model) if model is not None else (view.calibration if view is not None else None)
        t0 = (cal or Calibration()).default_t0(class_label is not None)
    sampler = default_sampler(EDIT, as_denoiser(sde, score_fn)) if sampler is None else sampler
    get_sampler(sampler)
    t0, steps, repeats = _check(guide, t0, steps, mask, repeats)
    t0_map = t0 if torch.is_tensor(t0) else None
    if t0_map is not None:
        t0 = float(t0_map.max())
    steps = sdedit_steps(sampler, t0) if steps is None else steps
    t = sdedit_time(sde, t0)
    eps = sde.eps if eps is None else float(eps)
    if not 0 <= eps < t:
        raise UserError(f"t0 = {t0} starts at t = {t:.3g}, at or below the SDE's smallest time eps = {eps:g}")
    solver = SolverConfig(sampler, steps, dict(options or {}), eps, denoise)
    return EditPlan(t0, t, repeats, solver, t0_map, class_label, w)


def sdedit(sde: SDE, score_fn, guide: torch.Tensor, t0: float | None = None, steps: int | None = None, mask=None,
           repeats: int = 1, sampler: str | None = None, generator: torch.Generator | None = None,
           denoise: bool = True, eps: float | None = None, progress: bool = False, return_info: bool = False,
           callback=None, model=None, **options):
    """SDEdit: perturb ``guide`` to the noise level of t0 and solve the reverse SDE back to time 0.

    guide: [B, ...] in the model's space (any floating dtype; the output has the guide's dtype).
    t0 in (0, 1]: the noise level to go back from, the same for every SDE (module docstring; for the
    VP SDE the time t0); default: the calibrated value of ``model`` or of the model whose score view
    ``score_fn`` is (:attr:`sdekit.core.denoisers.ScoreView.calibration`), else DEFAULT_T0. Or a t0 map: a tensor
    (at least one dimension) broadcasting to the guide, values in [0, 1], 0 = keep the guide exactly:
    each pixel released to the solver at its own t0 (module docstring, after Levin & Fried 2023), the
    solver starting from the map's largest. steps: solver steps
    from there to eps (default :func:`sdedit_steps`). mask: 1 = keep the guide exactly, 0 = regenerate;
    any shape broadcasting to the guide's. repeats: K rounds of perturb-and-denoise, each from the
    previous output (Meng et al. Alg. 3). sampler, options: any sampler of :func:`sdekit.sample`
    (default: the policy's, reverse diffusion, Algorithm 1's update for VE, ancestral DDPM for VP; the
    consistency sampler for a consistency model, whose first level is sigma(t0)). callback: a step
    hook (sdekit.solvers.loop.solve). model: a bundle, for its calibrated t0 (its plain edit's for a plain
    score_fn, its class-guided edit's for a conditional one: :func:`default_t0`). The choices are made once,
    before any work, into an :class:`~sdekit.tasks.plans.EditPlan` (:func:`plan_edit`).
    Returns the edits [B, ...], or (edits, info) with info["nfe"], ["t"], ["t0"] (a map's largest),
    ["steps"], ["sampler"]. Raises UserError on bad input (before any work): among it a t0 map of a shape
    that does not broadcast to the guide's, with values outside [0, 1] or NaN, or 0 everywhere.
    """
    plan = plan_edit(sde, score_fn, guide, t0, steps, mask, repeats, sampler, eps, denoise, model, options)
    den = as_denoiser(sde, score_fn)
    hook = callback
    if mask is not None:
        mask = mask.to(guide.dtype).to(guide.device)
    t0_map, t = plan.t0_map, plan.t
    if t0_map is not None:                 # t0 = 0 and noise levels below the SDE's range: kept (tau = 0)
        hook = Release(sde, guide, start_times(sde, t0_map).nan_to_num(0.0).masked_fill(t0_map == 0, 0.0),
                       mask, generator, then=callback)
    elif mask is not None:
        hook = Impute(sde, guide, mask, generator, then=callback)
    x, nfe = guide, 0
    for _ in range(plan.repeats):
        xt = sde.perturb(x, t, generator)
        if t0_map is not None:
            xt = hook.start(xt, t)
        elif mask is not None:
            xt = hook.project(xt, t)
        x, info = plan.solver.run(sde, den, xt, t, generator, hook, progress)
        nfe += info["nfe"]
        keep = hook.kept(hook.t_last) if t0_map is not None else mask     # never released: the guide itself
        if keep is not None:
            x = keep * guide + (1 - keep) * x
    if not return_info:
        return x
    return x, {"nfe": nfe, "t": t, "t0": plan.t0, "steps": plan.steps, "sampler": get_sampler(plan.sampler).name}


def _dilate(m: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a [B, 1|C, H, W] mask by a (2r+1)^2 square."""
    if radius <= 0:
        return m
    return F.max_pool2d(m, 2 * radius + 1, stride=1, padding=radius)


def composite(sde: SDE, score_fn, source: torch.Tensor, patch: torch.Tensor, region: torch.Tensor,
              t0: float = 0.4, border: int = 1, keep_source: bool = True, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Image compositing: paste ``patch`` onto ``source`` where ``region`` = 1 and harmonise.

    The guide is region * patch + (1 - region) * source. With ``keep_source`` the source is kept
    exactly outside the region grown by ``border`` pixels, and SDEdit regenerates the pasted region
    and its seam; without it the whole image is re-synthesised. Images [B, C, H, W] in model space;
    region [B|1, 1|C, H, W] in [0, 1]. Returns (output, guide)."""
    if source.shape != patch.shape:
        raise UserError(f"patch {tuple(patch.shape)} and source {tuple(source.shape)} differ in shape")
    if source.dim() != 4:
        raise UserError("composite works on images [B, C, H, W]")
    if region.dim() != 4 or region.shape[-2:] != source.shape[-2:]:
        raise UserError(f"region {tuple(region.shape)} does not match the images' size {tuple(source.shape[-2:])}")
    region = region.to(source.dtype)
    guide = region * patch + (1 - region) * source
    mask = None
    if keep_source:
        mask = 1 - _dilate((region > 0).to(source.dtype), int(border))
        mask = mask.expand(source.shape[0], -1, -1, -1)
    return sdedit(sde, score_fn, guide, t0=t0, mask=mask, **kwargs), guide


# ---- stroke simulation (Meng et al. App. D: median filter, then colour quantisation) --------------

def median_filter(u: torch.Tensor, size: int = 3) -> torch.Tensor:
    """Per-channel median over a size x size window (reflect padding), images [B, C, H, W]."""
    if size <= 1:
        return u
    r = size // 2
    p = F.pad(u, (r, size - 1 - r, r, size - 1 - r), mode="reflect" if min(u.shape[-2:]) > r else "replicate")
    win = p.unfold(2, size, 1).unfold(3, size, 1)              # [B, C, H, W, size, size]
    return win.reshape(*win.shape[:4], -1).median(-1).values


def quantize_colors(u: torch.Tensor, k: int = 3, iters: int = 10) -> torch.Tensor:
    """Per image, replace every pixel's colour by the nearest of k colours found by k-means (Lloyd,
    initialised at the quantiles of brightness): the 'adaptive palette' of a stroke painting."""
    B, C, H, W = u.shape
    out = torch.empty_like(u)
    q = torch.linspace(0, 1, k, dtype=u.dtype)
    for b in range(B):
        px = u[b].reshape(C, -1).T                                # [HW, C]
        lum = px.mean(1)
        order = lum.argsort()
        centres = px[order[(q * (len(order) - 1)).round().long()]].clone()
        for _ in range(iters):
            lab = torch.cdist(px, centres).argmin(1)
            for j in range(k):
                sel = lab == j
                if sel.any():
                    centres[j] = px[sel].mean(0)
        lab = torch.cdist(px, centres).argmin(1)
        out[b] = centres[lab].T.reshape(C, H, W)
    return out


def simulate_strokes(images: torch.Tensor, median: int | None = None, colors: int = 3,
                     blur: float = 0.0) -> torch.Tensor:
    """Stroke paintings from real images, the paper's way: a median filter removes detail and
    colour quantisation to a few flat colours (``colors``) gives the blocky look of a painting.

    images: [B, C, H, W], any value range (both operations commute with affine maps of the values).
    median: window size, default max(3, H // 5) rounded to odd (the paper uses 23 at 256 px).
    blur: optional Gaussian blur std in pixels applied before filtering (0 = none)."""
    if images.dim() != 4:
        raise UserError(f"simulate_strokes takes images [B, C, H, W], got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise UserError("images contain NaN or Inf")
    x = images.float()
    if blur > 0:
        r = max(1, int(math.ceil(2 * blur)))
        k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * blur ** 2))
        k = (k / k.sum()).to(x.device)
        C = x.shape[1]
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.reshape(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.reshape(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)
    if median is None:
        median = max(3, images.shape[-1] // 5) | 1
    return quantize_colors(median_filter(x, int(median)), int(colors)).to(images.dtype)

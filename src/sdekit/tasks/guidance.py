"""Controllable generation: imputation / inpainting, colorization, classifier and classifier-free guidance.

Imputation (Song et al. 2021, sec. 5 and App. I.2). Known coordinates Omega (mask = 1) of x(0) are
given. After every solver step to t_i the known part of the state is replaced by a fresh sample of
the forward kernel,  x_Omega(t_i) ~ N(s(t_i) x_Omega, s(t_i)^2 sigma(t_i)^2 I),  and the solver goes
on from there: the replacement is a step hook (:class:`Impute`, sdekit.solvers.loop), so every SDE and
every sampler runs on its own grid in one call, keeping its multistep history and its count of
evaluations; at the end the known part is the data itself.

Resampling (RePaint, Lugmayr et al. 2022, jump length 1): after the step to t_{i+1} the state is
sent back to t_i with the forward transition (sde.transition), re-imputed and the step is redone,
``resample`` extra times; this lets the unknown part harmonise with the known one.

Colorization: imputation after an orthogonal change of colour coordinates whose first channel is the
grey level, (r + g + b)/sqrt(3) = sqrt(3) grey (score_sde's decoupling matrix). An orthogonal map
commutes with the isotropic forward kernel, so imputing there is exact in the same sense.

Guidance (Song et al. eq. 14; Dhariwal & Nichol 2021; Ho & Salimans 2022), as denoisers in
sdekit.core.denoisers (ClassifierGuided, ClassifierFree):
    classifier:       grad log p_t(x | y) ~ score(x, t) + w grad_x log p_t(y | x)
    classifier-free:  (1 + w) score(x, t | y) - w score(x, t | null)

Reading the class of a drawing (:func:`read_class`): a noise-conditional classifier p_t(y | x_t)
applied to the drawing perturbed to a few small times, its log-probabilities averaged. The noise
hides the flat look of a painted stroke, which the classifier never saw, and keeps its shape.
"""
from __future__ import annotations

import math

import torch

from sdekit.core.checks import check_count
from sdekit.core.denoisers import ClassifierFree, ClassifierGuided, ScoreView, as_denoiser
from sdekit.core.errors import UserError
from sdekit.core.sde import SDE
from sdekit.policy import COLORIZE, INPAINT, default_sampler
from sdekit.solvers.registry import get_sampler
from sdekit.solvers.loop import Rewind
from sdekit.tasks.plans import SolverConfig

__all__ = ["inpaint", "colorize", "impute", "classifier_guided_score", "classifier_free_score", "read_class",
           "DECOUPLE", "decouple", "couple", "renoise", "Impute"]

# Orthogonal colour transform: columns (1,1,1)/sqrt3 (grey), (-2,1,1)/sqrt6, (0,1,-1)/sqrt2.
DECOUPLE = torch.tensor([[1 / math.sqrt(3), -2 / math.sqrt(6), 0.0],
                         [1 / math.sqrt(3), 1 / math.sqrt(6), 1 / math.sqrt(2)],
                         [1 / math.sqrt(3), 1 / math.sqrt(6), -1 / math.sqrt(2)]], dtype=torch.float64)


def decouple(x: torch.Tensor) -> torch.Tensor:
    """RGB [B, 3, ...] -> decoupled colour space (channel 0 = sqrt(3) x grey)."""
    return torch.einsum("bi...,ij->bj...", x, DECOUPLE.to(x))


def couple(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`decouple` (its transpose)."""
    return torch.einsum("bi...,ji->bj...", x, DECOUPLE.to(x))


def renoise(sde: SDE, x: torch.Tensor, t_from: float, t_to: float, generator=None) -> torch.Tensor:
    """Forward transition p(x(t_to) | x(t_from)), t_to > t_from (sde.transition)."""
    return sde.transition(x, t_from, t_to, generator)


def _identity(v):
    return v


class Impute:
    """Step hook that keeps the known part: after each step to time t the state becomes
    back(mask * to(x_known(t)) + (1 - mask) * to(x)), x_known(t) ~ p_0t(. | known) (sde.perturb).
    ``to``/``back``: an orthogonal change of coordinates and its inverse (identity by default).
    ``resample``: RePaint rounds per step (jump length 1). ``then``: a further hook (progress)."""

    def __init__(self, sde: SDE, known: torch.Tensor, mask: torch.Tensor, generator=None, resample: int = 0,
                 to=_identity, back=_identity, then=None):
        self.sde, self.known, self.mask, self.generator = sde, known, mask, generator
        self.resample, self.to, self.back, self.then = int(resample), to, back, then
        self.rounds = {}

    def project(self, x: torch.Tensor, t) -> torch.Tensor:
        known, mask = self.known.to(x), self.mask.to(x)
        xk = self.sde.perturb(known, t, self.generator)
        return self.back(mask * self.to(xk) + (1 - mask) * self.to(x))

    def __call__(self, state):
        if self.then is not None:
            self.then(state)
        last = state.i == state.n - 1
        if self.resample and not last and state.i >= 0:
            done = self.rounds.get(state.i, 0)
            if done < self.resample:
                self.rounds[state.i] = done + 1
                back = self.sde.transition(state.x, state.t, state.t_prev, self.generator)
                return Rewind(self.project(back, state.t_prev))
        return self.project(state.x, state.t)


def _check_mask(known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = torch.as_tensor(mask, dtype=known.dtype, device=known.device)
    try:
        mask = torch.broadcast_to(mask, known.shape)
    except RuntimeError:
        raise UserError(f"mask of shape {tuple(mask.shape)} does not fit the image {tuple(known.shape)}") from None
    if not torch.isfinite(mask).all() or (mask < 0).any() or (mask > 1).any():
        raise UserError("mask values must lie in [0, 1] (1 = known)")
    return mask


@torch.no_grad()
def impute(sde: SDE, score_fn, known: torch.Tensor, mask: torch.Tensor, sampler: str | None = None,
           steps: int | None = None, resample: int = 0, generator: torch.Generator | None = None,
           transform: str | None = None, eps: float | None = None, progress: bool = False, return_info: bool = False,
           callback=None, **options):
    """Sample x with x = known where mask = 1 (in the coordinates ``transform``: None or "decouple").

    known: [B, ...] model space (any floating dtype; the output has its dtype); mask: broadcastable,
    1 = known. sampler, steps, options: as :func:`sdekit.sample` (default sampler: the policy's for
    inpainting, :data:`sdekit.policy.INPAINT`; the consistency sampler for a consistency model). resample:
    RePaint rounds per step.
    Returns x [B, ...] in the original coordinates (or (x, info) with info["nfe"])."""
    spec = get_sampler(default_sampler(INPAINT, as_denoiser(sde, score_fn)) if sampler is None else sampler)
    if steps is not None:
        check_count(steps, "steps")
    resample = check_count(resample, "resample", minimum=0)
    if resample and spec.adaptive:
        raise UserError("RePaint resampling needs a sampler with a fixed grid, not the adaptive 'ode'")
    if not torch.is_tensor(known) or not known.is_floating_point():
        raise UserError("the known image must be a floating-point tensor")
    if not torch.isfinite(known).all():
        raise UserError("the known image contains NaN or Inf")
    mask = _check_mask(known, mask)
    to, back = (decouple, couple) if transform == "decouple" else (_identity, _identity)
    hook = Impute(sde, known, mask, generator, int(resample), to, back, then=callback)
    x = sde.prior_sampling(known.shape, generator=generator, device=known.device, dtype=known.dtype)
    solver = SolverConfig(spec.name, steps, options, eps)
    x, info = solver.run(sde, as_denoiser(sde, score_fn), hook.project(x, sde.T), None, generator, hook, progress)
    x = back(mask * to(known) + (1 - mask) * to(x))
    return (x, info) if return_info else x


def inpaint(sde: SDE, score_fn, image: torch.Tensor, mask: torch.Tensor, steps: int | None = None,
            sampler: str | None = None, resample: int = 0, generator: torch.Generator | None = None,
            **options) -> torch.Tensor:
    """Fill the pixels where mask = 0 given those where mask = 1 (image in model space, [B, ...]). Default
    sampler: :data:`sdekit.policy.INPAINT`'s (the consistency sampler for a consistency model)."""
    sampler = default_sampler(INPAINT, as_denoiser(sde, score_fn)) if sampler is None else sampler
    return impute(sde, score_fn, image, mask, sampler=sampler, steps=steps, resample=resample,
                  generator=generator, **options)


def colorize(sde: SDE, score_fn, gray: torch.Tensor, steps: int | None = None, sampler: str | None = None,
             resample: int = 0, generator: torch.Generator | None = None, **options) -> torch.Tensor:
    """RGB [B, 3, H, W] whose channel mean is ``gray`` ([B, 1, H, W] grey, or [B, 3, H, W] averaged);
    model space. The score must be that of a 3-channel model. Default sampler: :data:`sdekit.policy.COLORIZE`'s
    (the consistency sampler for a consistency model)."""
    if gray.dim() < 3 or gray.shape[1] not in (1, 3):
        raise UserError(f"colorize needs a grey image [B, 1, H, W] (or [B, 3, H, W]), got {tuple(gray.shape)}")
    g = gray.mean(1, keepdim=True)
    known = torch.cat([math.sqrt(3) * g, torch.zeros_like(g), torch.zeros_like(g)], 1)    # decoupled grey
    mask = torch.cat([torch.ones_like(g), torch.zeros_like(g), torch.zeros_like(g)], 1)
    sampler = default_sampler(COLORIZE, as_denoiser(sde, score_fn)) if sampler is None else sampler
    return impute(sde, score_fn, couple(known), mask, sampler=sampler, steps=steps, resample=resample,
                  generator=generator, transform="decouple", **options)


def classifier_guided_score(score_fn, classifier, y, scale: float = 1.0, sde: SDE | None = None):
    """score(x, t) + scale grad_x log p_t(y | x); classifier(x, t) -> logits [B, K]; y an int or [B]."""
    return _view(ClassifierGuided(as_denoiser(sde, score_fn), classifier, y, scale), y)


READ_TIMES = (0.05, 0.1, 0.2)     # VP times (noise-to-signal 0.25-0.55) at which read_class looks


@torch.no_grad()
def read_class(classifier, x: torch.Tensor, times=READ_TIMES, draws: int = 4,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The class a noise-conditional classifier reads in each image of x [B, C, H, W] (model space).

    classifier(x_t, t) -> logits [B, K] (:class:`sdekit.models.nets.classifier.NoiseClassifier`, whose SDE
    perturbs): log p_t(y | x_t) averaged over ``draws`` samples x_t ~ p_0t(x_t | x) at each time of
    ``times``. Returns (labels int64 [B], probabilities [B, K] of the averaged log-probabilities).
    UserError unless x is a non-empty batch of the classifier's shape."""
    shape = tuple(getattr(classifier, "shape", x.shape[1:]))
    if x.dim() != 4 or tuple(x.shape[1:]) != shape or len(x) == 0:
        raise UserError(f"the classifier reads images [B, {', '.join(map(str, shape))}], got {tuple(x.shape)}")
    if draws < 1 or not times:
        raise UserError("read_class needs at least one time and one draw")
    logp = 0
    for t in times:
        tt = torch.full((len(x),), float(t), dtype=x.dtype, device=x.device)
        for _ in range(draws):
            logp = logp + classifier(classifier.sde.perturb(x, tt, generator), tt).float().log_softmax(1)
    probs = (logp / (len(times) * draws)).softmax(1)
    return probs.argmax(1), probs


def classifier_free_score(score_fn, y, scale: float = 1.0, null_label=-1, sde: SDE | None = None):
    """(1 + scale) score(x, t | y) - scale score(x, t | null) for score_fn(x, t, class_labels=...)."""
    return _view(ClassifierFree(as_denoiser(sde, score_fn), y, scale, null_label), y, scale)


def _view(den, class_labels=None, guidance: float = 0.0):
    """A score function of ``den``, conditioned on ``class_labels`` (guidance w); it carries the denoiser
    (and declares its labels) only when it knows its SDE."""
    return ScoreView(den, None, class_labels, guidance) if den.sde is not None else (lambda x, t: den.score(x, t))

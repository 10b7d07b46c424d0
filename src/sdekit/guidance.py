"""Controllable generation: imputation / inpainting, colorization, classifier and classifier-free guidance.

Imputation (Song et al. 2021, sec. 5 and App. I.2). Known coordinates Omega (mask = 1) of x(0) are
given. At every time t_i of the sampler's grid the known part of the state is replaced by a fresh
sample of the forward kernel,  x_Omega(t_i) ~ N(s(t_i) x_Omega, s(t_i)^2 sigma(t_i)^2 I),  and the solver
then steps the whole state from t_i to t_{i+1}; at the end the known part is the data itself.
Any sampler of sdekit.sample does one interval at a time (sample(..., t_start=t_i, eps=t_{i+1})),
so every SDE and every sampler works; a multistep solver (dpm_solver) restarts each step, i.e.
runs its first-order step, because the replaced state has no consistent history.

Resampling (RePaint, Lugmayr et al. 2022, jump length 1): after the step to t_{i+1} the state is
sent back to t_i with the forward transition  x(t_i) = s_i/s_{i+1} x(t_{i+1}) + s_i sqrt(sigma_i^2 -
sigma_{i+1}^2) z,  re-imputed and stepped again, ``resample`` extra times; this lets the unknown part
harmonise with the known one.

Colorization: imputation after an orthogonal change of colour coordinates whose first channel is the
grey level, (r + g + b)/sqrt(3) = sqrt(3) grey (score_sde's decoupling matrix). An orthogonal map
commutes with the isotropic forward kernel, so imputing there is exact in the same sense.

Guidance (Song et al. eq. 14; Dhariwal & Nichol 2021; Ho & Salimans 2022):
    classifier:       grad log p_t(x | y) ~ score(x, t) + w grad_x log p_t(y | x)
    classifier-free:  (1 + w) score(x, t | y) - w score(x, t | null)
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .errors import UserError
from .samplers import FAST, SAMPLERS, _noise, sample, sigma_schedule
from .sde import SDE, _bcast

__all__ = ["inpaint", "colorize", "impute", "classifier_guided_score", "classifier_free_score",
           "DECOUPLE", "decouple", "couple", "renoise", "time_grid"]

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


def time_grid(sde: SDE, sampler: str, steps: int, eps: float | None = None, schedule: str | None = None,
              rho: float = 7.0) -> list[float]:
    """The times sample() visits: uniform t for the SDE samplers and "ode", the sampler's noise schedule
    (ending at sigma = 0, i.e. t = 0) for the fast solvers."""
    eps = sde.eps if eps is None else float(eps)
    if sampler in FAST:
        sig = sigma_schedule(sde, steps, schedule or FAST[sampler][1], eps, rho)
        ts = sde.sigma_inv(sig).clamp(0, sde.T).tolist()
        return [sde.T] + ts[1:] + [0.0]
    return torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64).tolist()


def renoise(sde: SDE, x: torch.Tensor, t_from: float, t_to: float, generator=None) -> torch.Tensor:
    """Forward transition p(x(t_to) | x(t_from)), t_to > t_from: s_to/s_from x + s_to sqrt(sig_to^2 - sig_from^2) z."""
    t = torch.tensor([t_from, t_to], dtype=torch.float64)
    s, sig = sde.scale(t).tolist(), sde.sigma(t).tolist()
    return s[1] / s[0] * x + s[1] * math.sqrt(max(sig[1] ** 2 - sig[0] ** 2, 0.0)) * _noise(x, generator)


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
def impute(sde: SDE, score_fn, known: torch.Tensor, mask: torch.Tensor, sampler: str = "pc", steps: int = 1000,
           resample: int = 0, generator: torch.Generator | None = None, transform: str | None = None,
           eps: float | None = None, progress: bool = False, **options) -> torch.Tensor:
    """Sample x with x = known where mask = 1 (in the coordinates ``transform``: None or "decouple").

    known, mask: [B, ...] (mask broadcastable). Returns x [B, ...] in the original coordinates."""
    sampler = str(sampler).lower()
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if int(steps) < 1 or int(resample) < 0:
        raise UserError(f"steps must be positive and resample non-negative, got {steps}, {resample}")
    if not torch.isfinite(known).all():
        raise UserError("the known image contains NaN or Inf")
    mask = _check_mask(known, mask)
    to, back = (decouple, couple) if transform == "decouple" else (lambda v: v, lambda v: v)
    schedule, rho = options.pop("schedule", None), options.pop("rho", 7.0)
    ts = time_grid(sde, sampler, int(steps), eps, schedule, rho)

    def project(x, t):                                   # replace the known part by a forward sample at t
        mean, std = sde.marginal_prob(known, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device))
        xk = mean + _bcast(std, known) * _noise(known, generator)
        return back(mask * to(xk) + (1 - mask) * to(x))

    x = sde.prior_sampling(known.shape, generator=generator, device=known.device, dtype=known.dtype)
    n = len(ts) - 1
    for i in tqdm(range(n), disable=not progress, desc=f"imputation ({sampler})"):
        last = i == n - 1
        for r in range(int(resample) + 1 if not last else 1):
            if r > 0:
                x = renoise(sde, x, ts[i + 1], ts[i], generator)
            x = sample(sde, score_fn, x_T=project(x, ts[i]), sampler=sampler, steps=1, t_start=ts[i],
                       eps=ts[i + 1], denoise=last, generator=generator, **options)
    return back(mask * to(known) + (1 - mask) * to(x))


def inpaint(sde: SDE, score_fn, image: torch.Tensor, mask: torch.Tensor, steps: int = 1000, sampler: str = "pc",
            resample: int = 0, generator: torch.Generator | None = None, **options) -> torch.Tensor:
    """Fill the pixels where mask = 0 given those where mask = 1 (image in model space, [B, ...])."""
    return impute(sde, score_fn, image, mask, sampler=sampler, steps=steps, resample=resample,
                  generator=generator, **options)


def colorize(sde: SDE, score_fn, gray: torch.Tensor, steps: int = 1000, sampler: str = "pc", resample: int = 0,
             generator: torch.Generator | None = None, **options) -> torch.Tensor:
    """RGB [B, 3, H, W] whose channel mean is ``gray`` ([B, 1, H, W] grey, or [B, 3, H, W] averaged);
    model space. The score must be that of a 3-channel model."""
    if gray.dim() < 3 or gray.shape[1] not in (1, 3):
        raise UserError(f"colorize needs a grey image [B, 1, H, W] (or [B, 3, H, W]), got {tuple(gray.shape)}")
    g = gray.mean(1, keepdim=True)
    known = torch.cat([math.sqrt(3) * g, torch.zeros_like(g), torch.zeros_like(g)], 1)    # decoupled grey
    mask = torch.cat([torch.ones_like(g), torch.zeros_like(g), torch.zeros_like(g)], 1)
    return impute(sde, score_fn, couple(known), mask, sampler=sampler, steps=steps, resample=resample,
                  generator=generator, transform="decouple", **options)


def _labels(y, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(y, device=x.device).long().reshape(-1).expand(x.shape[0])


def classifier_guided_score(score_fn, classifier, y, scale: float = 1.0):
    """score(x, t) + scale grad_x log p_t(y | x); classifier(x, t) -> logits [B, K]; y an int or [B]."""
    def score(x: torch.Tensor, t) -> torch.Tensor:
        labels = _labels(y, x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = classifier(xg, t).log_softmax(1).gather(1, labels[:, None]).sum()
            grad = torch.autograd.grad(logp, xg)[0]
        return score_fn(x, t) + scale * grad.to(x.dtype)
    return score


def classifier_free_score(score_fn, y, scale: float = 1.0, null_label=-1):
    """(1 + scale) score(x, t | y) - scale score(x, t | null) for score_fn(x, t, class_labels=...)."""
    def score(x: torch.Tensor, t) -> torch.Tensor:
        cond = score_fn(x, t, class_labels=_labels(y, x))
        if scale == 0:
            return cond
        return (1 + scale) * cond - scale * score_fn(x, t, class_labels=_labels(null_label, x))
    return score

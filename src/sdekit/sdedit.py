"""SDEdit (Meng et al. 2022): guided synthesis and editing by perturbing and denoising.

A guide x^(g) (a stroke painting, an edited or a composited image) is perturbed with the SDE's own
kernel to an intermediate time t = t0 * T,

    x(t) = s(t) x^(g) + s(t) sigma(t) z,    z ~ N(0, I)                      (perturbation kernel)

and the reverse-time SDE (or any solver of :func:`sdekit.sample`) is run from t back to 0. Noise
at time t washes out the details of the guide while the coarse layout survives: small t0 keeps the
output faithful to the guide, t0 = 1 forgets it and samples the data distribution (realism). For
VE, VP and sub-VP, T = 1, so t0 *is* the time; for EDM (T = sigma_max) t0 is a fraction of T.
``steps`` counts solver steps over [eps, t]: Algorithm 1's  Delta t = t0 / N.

With a mask (1 = keep the guide, 0 = regenerate), after every solver step the kept region is
replaced by the guide perturbed to the new time, so the generated region is conditioned on it
(the replacement trick of Song et al. 2021, App. I); the output equals the guide where mask = 1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import UserError
from .samplers import _noise, sample
from .sde import SDE

__all__ = ["sdedit", "perturb", "composite", "simulate_strokes", "median_filter", "quantize_colors"]


def perturb(sde: SDE, x0: torch.Tensor, t: float, generator=None) -> torch.Tensor:
    """A draw of x(t) ~ p_0t(. | x0) = N(s(t) x0, s(t)^2 sigma(t)^2 I)."""
    mean, std = sde.marginal_prob(x0, torch.full((x0.shape[0],), float(t), dtype=x0.dtype, device=x0.device))
    return mean + std.reshape(-1, *([1] * (x0.dim() - 1))) * _noise(x0, generator)


def _check(sde: SDE, guide, t0, steps, mask, repeats):
    if not torch.is_tensor(guide) or guide.dim() < 2:
        raise UserError("guide must be a tensor [B, ...] in the model's space")
    if not guide.is_floating_point():
        raise UserError(f"guide must be a floating-point tensor, got {guide.dtype}")
    if not torch.isfinite(guide).all():
        raise UserError("guide contains NaN or Inf")
    try:
        t0 = float(t0)
    except (TypeError, ValueError):
        raise UserError(f"t0 must be a number in (0, 1], got {t0!r}") from None
    if not 0 < t0 <= 1:
        raise UserError(f"t0 must lie in (0, 1], got {t0}")
    if t0 * sde.T <= sde.eps:
        raise UserError(f"t0 = {t0} is at or below the SDE's smallest time eps = {sde.eps / sde.T:g} T")
    if int(steps) != steps or int(steps) < 1:
        raise UserError(f"steps must be a positive integer, got {steps}")
    if int(repeats) != repeats or int(repeats) < 1:
        raise UserError(f"repeats must be a positive integer, got {repeats}")
    if mask is not None:
        if not torch.is_tensor(mask):
            raise UserError("mask must be a tensor")
        if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
            raise UserError("mask values must lie in [0, 1] (1 = keep the guide)")
        ms, gs = tuple(mask.shape), tuple(guide.shape)
        if len(ms) > len(gs) or any(m not in (1, g) for m, g in zip(ms[::-1], gs[::-1])):
            raise UserError(f"mask of shape {ms} does not match the guide's shape {gs}")
    return t0, int(steps), int(repeats)


def _masked_solve(sde, score_fn, x, guide, mask, t, steps, sampler, generator, eps, denoise, options, progress=False):
    """Solve from t to eps one grid interval at a time (uniform in time), re-imposing the guide,
    perturbed to each new time, where mask = 1. Each interval is one call of :func:`sample`."""
    ts = torch.linspace(t, eps, steps + 1, dtype=torch.float64).tolist()
    for i in tqdm(range(steps), disable=not progress, desc="sdedit (masked)"):
        last = i == steps - 1
        x = sample(sde, score_fn, x_T=x, t_start=ts[i], eps=ts[i + 1], steps=1, sampler=sampler,
                   generator=generator, denoise=denoise and last, **dict(options))
        if not last:
            x = mask * perturb(sde, guide, ts[i + 1], generator) + (1 - mask) * x
    return x


def sdedit(sde: SDE, score_fn, guide: torch.Tensor, t0: float = 0.5, steps: int = 500, mask=None,
           repeats: int = 1, sampler: str = "reverse_diffusion", generator: torch.Generator | None = None,
           denoise: bool = True, eps: float | None = None, progress: bool = False, **options) -> torch.Tensor:
    """SDEdit: perturb ``guide`` to time t0 * T and solve the reverse SDE back to time 0.

    guide: [B, ...] in the model's space. t0 in (0, 1]: the fraction of [0, T] to go back from.
    steps: solver steps over [eps, t0 T]. mask: 1 = keep the guide exactly, 0 = regenerate; any
    shape broadcasting to the guide's. repeats: K rounds of perturb-and-denoise, each starting from
    the previous output (Meng et al. Alg. 3). sampler, options: any sampler of :func:`sdekit.sample`
    (default: the reverse-diffusion predictor, Algorithm 1's update for VE, ancestral DDPM for VP).
    """
    t0, steps, repeats = _check(sde, guide, t0, steps, mask, repeats)
    t = t0 * sde.T
    eps = sde.eps if eps is None else float(eps)
    if mask is not None:
        mask = mask.to(guide.dtype).to(guide.device)
    x = guide
    for _ in range(repeats):
        xt = perturb(sde, x, t, generator)
        if mask is None:
            x = sample(sde, score_fn, x_T=xt, t_start=t, eps=eps, steps=steps, sampler=sampler,
                       generator=generator, denoise=denoise, progress=progress, **dict(options))
        else:
            xt = mask * perturb(sde, guide, t, generator) + (1 - mask) * xt
            x = _masked_solve(sde, score_fn, xt, guide, mask, t, steps, sampler, generator, eps, denoise, options,
                              progress)
            x = mask * guide + (1 - mask) * x
    return x


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

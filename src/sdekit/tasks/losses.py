"""Training losses for score models of any SDE in the family.

A model is a :class:`~sdekit.core.denoisers.Denoiser` (e.g. a Preconditioned network) or any score
function model(x, t, class_labels); losses use its score or its denoised estimate E[x0 | x_t]
(sdekit.core.denoisers). Every loss returns the batch mean
of a per-sample loss; ``reduce`` says how a sample's dimensions are combined: "mean" (score_sde's
reduce_mean=True) or "sum" (the summed loss on -eps/sigma, whose scale grows with the dimension).

* dsm_loss, continuous time (Song et al. 2021, eq. 7), t ~ U(eps, T), x_t = s x0 + std z:
      weighting "sigma2":     lambda = std^2:   || std * score(x_t, t) + z ||^2
      weighting "likelihood": lambda = g(t)^2:  g^2 || score(x_t, t) + z / std ||^2   (Song et al. 2021b)
* edm_loss (Karras et al. 2022, eq. 8 and Table 1): ln sigma ~ N(P_mean, P_std^2),
      lambda(sigma) || D(x0 + sigma n; sigma) - x0 ||^2,  lambda = (sigma^2 + sd^2) / (sigma sd)^2.
* smld_loss (NCSN, Song & Ermon 2019): sigma_i on the VE SDE's N geometric levels, t_i = i/(N-1).
* ddpm_loss (Ho et al. 2020): alpha-bar_i of the N-step beta schedule, || eps_hat - z ||^2 with
  eps_hat = -std * score, queried at t_i = (i+1)/N.
* cd_loss, consistency distillation (Song et al. 2023, Algorithm 2) of a teacher denoiser into a
  consistency function f: on the Karras grid sigma_1 < ... < sigma_N, y = x0 + sigma_{n+1} z, one Heun step
  of the teacher's probability-flow ODE to sigma_n gives y', and
      lambda_n d(f(y, sigma_{n+1}), stopgrad f(y', sigma_n)),  lambda_n = 1 / (sigma_{n+1} - sigma_n),
  d the pseudo-Huber metric sqrt(||a - b||^2 + c^2) - c, c = 0.00054 sqrt(dim) (Song & Dhariwal 2023,
  "Improved techniques for training consistency models", which also drops the EMA target network).
* flow_loss, flow matching (Lipman et al. 2023; Liu et al. 2023): on the straight path
  x = (1 - tau) x0 + tau z, the velocity MSE || v_hat(x, tau) - (z - x0) ||^2 with v_hat = (x - D) / tau;
  tau from TIME_DENSITIES: uniform, or logit-normal (Esser et al. 2024: logit tau ~ N(mean, std^2)).
  Any member's scaled variable y = x0 + sigma z is that path as y / (1 + sigma), tau = sigma / (1 + sigma)
  (sdekit.FlowSDE's own kernel).
"""
from __future__ import annotations

import torch

from sdekit.core.errors import UserError
from sdekit.core.denoisers import as_denoiser
from sdekit.core.sde import SDE, VESDE, VPSDE, _bcast

__all__ = ["dsm_loss", "edm_loss", "smld_loss", "ddpm_loss", "cd_loss", "karras_sigmas", "heun_step", "flow_loss",
           "flow_times", "TIME_DENSITIES", "LOSSES",
           "get_loss"]


def _reduce(sq: torch.Tensor, reduce: str) -> torch.Tensor:
    """Per-sample reduction of a squared error [B, ...] -> [B]."""
    if reduce == "mean":
        return sq.flatten(1).mean(1)
    if reduce == "sum":
        return sq.flatten(1).sum(1)
    raise UserError(f"unknown reduce {reduce!r}; choose mean or sum")


def _randn(x, generator):
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _rand(n, x, generator):
    return torch.rand(n, generator=generator, dtype=x.dtype, device=x.device)


def dsm_loss(model, sde: SDE, x0: torch.Tensor, class_labels=None, weighting: str = "sigma2",
             reduce: str = "mean", eps: float | None = None, t: torch.Tensor | None = None,
             z: torch.Tensor | None = None, generator=None) -> torch.Tensor:
    """Denoising score matching in continuous time; ``t`` and ``z`` may be given (else drawn)."""
    eps = sde.eps if eps is None else eps
    t = eps + (sde.T - eps) * _rand(x0.shape[0], x0, generator) if t is None else t
    z = _randn(x0, generator) if z is None else z
    std_ = _bcast(sde.marginal_std(t), x0)
    score = _score(model, sde, sde.perturb(x0, t, noise=z), t, class_labels)
    if weighting == "sigma2":
        return _reduce((std_ * score + z) ** 2, reduce).mean()
    if weighting == "likelihood":
        return (sde.diffusion_sq(t) * _reduce((score + z / std_) ** 2, reduce)).mean()
    raise UserError(f"unknown weighting {weighting!r}; choose sigma2 or likelihood")


def _score(model, sde: SDE, x, t, class_labels):
    return as_denoiser(sde, model).score(x, t, class_labels)


def edm_loss(model, sde: SDE, x0: torch.Tensor, class_labels=None, P_mean: float = -1.2, P_std: float = 1.2,
             sigma_data: float = 0.5, reduce: str = "mean", sigma: torch.Tensor | None = None,
             z: torch.Tensor | None = None, generator=None) -> torch.Tensor:
    """EDM's loss for any SDE of the family: sigma is drawn log-normally (then clamped to the
    SDE's range [sigma(eps), sigma(T)]) and converted to time t = sigma^{-1}(sigma)."""
    if sigma is None:
        sigma = (P_mean + P_std * torch.randn(x0.shape[0], generator=generator, dtype=x0.dtype,
                                              device=x0.device)).exp()
    lim = sde.sigma(torch.tensor([sde.eps, sde.T], dtype=torch.float64)).tolist()
    sigma = sigma.clamp(*lim)
    t = sde.sigma_inv(sigma)
    z = _randn(x0, generator) if z is None else z
    x = sde.perturb(x0, t, noise=z)                     # s(t) (x0 + sigma z)
    weight = (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
    return (weight * _reduce((as_denoiser(sde, model).x0(x, t, class_labels) - x0) ** 2, reduce)).mean()


def smld_loss(model, sde: VESDE, x0: torch.Tensor, class_labels=None, reduce: str = "mean",
              index: torch.Tensor | None = None, z: torch.Tensor | None = None, generator=None) -> torch.Tensor:
    """NCSN's loss on N discrete levels sigma_i = sigma_min (sigma_max/sigma_min)^{i/(N-1)}:
    sigma_i^2 || score(x0 + sigma_i z, t_i) + z / sigma_i ||^2."""
    if not isinstance(sde, VESDE):
        raise UserError("the SMLD loss needs the VE SDE")
    N = sde.N
    i = torch.randint(N, (x0.shape[0],), generator=generator, device=x0.device) if index is None else index
    t = i.to(x0.dtype) / (N - 1)
    sig = _bcast(sde.sigma(t), x0)
    z = _randn(x0, generator) if z is None else z
    score = _score(model, sde, x0 + sig * z, t, class_labels)
    return _reduce((sig * score + z) ** 2, reduce).mean()


def ddpm_betas(sde: VPSDE, dtype=torch.float64) -> torch.Tensor:
    """The N-step DDPM schedule beta_i = beta_min/N + i/(N-1) (beta_max - beta_min)/N."""
    return torch.linspace(sde.beta_min / sde.N, sde.beta_max / sde.N, sde.N, dtype=dtype)


def ddpm_loss(model, sde: VPSDE, x0: torch.Tensor, class_labels=None, reduce: str = "mean",
              index: torch.Tensor | None = None, z: torch.Tensor | None = None, generator=None) -> torch.Tensor:
    """DDPM's simple loss || eps_hat(x_i) - z ||^2, x_i = sqrt(abar_i) x0 + sqrt(1 - abar_i) z."""
    if not isinstance(sde, VPSDE):
        raise UserError("the DDPM loss needs the VP SDE")
    N = sde.N
    if sde.beta_max / N >= 1:
        raise UserError(f"the DDPM schedule needs beta_max / N < 1, got {sde.beta_max} / {N}")
    abar = torch.cumprod(1 - ddpm_betas(sde), 0).to(device=x0.device)
    i = torch.randint(N, (x0.shape[0],), generator=generator, device=x0.device) if index is None else index
    a = abar[i].to(x0.dtype)
    z = _randn(x0, generator) if z is None else z
    std = _bcast((1 - a).sqrt(), x0)
    x = _bcast(a.sqrt(), x0) * x0 + std * z
    eps_hat = -std * _score(model, sde, x, (i + 1).to(x0.dtype) / N, class_labels)
    return _reduce((eps_hat - z) ** 2, reduce).mean()


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                  dtype=torch.float64) -> torch.Tensor:
    """The n noise levels of Karras et al. 2022 (eq. 5) in ascending order: sigma_1 = sigma_min ... sigma_n = sigma_max."""
    r = torch.linspace(0, 1, n, dtype=dtype)
    return (sigma_min ** (1 / rho) + r * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** rho


def heun_step(teacher, y: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, class_labels=None) -> torch.Tensor:
    """One Heun step (EDM Algorithm 1, lines 5-8) of the probability-flow ODE dy/dsigma = (y - D(y; sigma)) / sigma
    from ``sigma`` to ``sigma_next`` (tensors [B], both > 0) with the denoiser ``teacher``."""
    s, sn = _bcast(sigma, y), _bcast(sigma_next, y)
    d = (y - teacher.denoise(y, sigma, class_labels)) / s
    y_euler = y + (sn - s) * d
    d_next = (y_euler - teacher.denoise(y_euler, sigma_next, class_labels)) / sn
    return y + (sn - s) * (d + d_next) / 2


def cd_loss(model, sde: SDE, x0: torch.Tensor, class_labels=None, teacher=None, N: int = 18,
            reduce: str = "mean", index: torch.Tensor | None = None, z: torch.Tensor | None = None,
            generator=None) -> torch.Tensor:
    """Consistency distillation (module docstring) of ``teacher`` (a Denoiser, frozen) into ``model`` (a
    Denoiser whose D is a consistency function, e.g. Preconditioned kind "consistency"). x0 [B, ...] in model
    space; ``index`` n in 0..N-2 per sample; the grid is :func:`karras_sigmas` (N) with the model's
    sigma_min. ``reduce`` is accepted for a uniform signature; the metric is over the whole sample."""
    if teacher is None:
        raise UserError("consistency distillation needs a teacher model")
    sigmas = karras_sigmas(N).to(device=x0.device, dtype=x0.dtype)
    n = torch.randint(N - 1, (x0.shape[0],), generator=generator, device=x0.device) if index is None else index
    lo, hi = sigmas[n], sigmas[n + 1]
    z = _randn(x0, generator) if z is None else z
    y = x0 + _bcast(hi, x0) * z
    with torch.no_grad():
        y_lo = heun_step(teacher, y, hi, lo, class_labels)
        target = model.denoise(y_lo, lo, class_labels)
    pred = model.denoise(y, hi, class_labels)
    c = 0.00054 * x0[0].numel() ** 0.5
    dist = ((pred - target).flatten(1).pow(2).sum(1) + c ** 2).sqrt() - c
    return (dist / (hi - lo)).mean()


# the flow path's time densities: a draw u (U(0, 1) or N(0, 1)) -> tau in [lo, hi] (mean, std: the logit-normal's)
TIME_DENSITIES = {
    "uniform": (torch.rand, lambda u, mean, std, lo, hi: lo + (hi - lo) * u),
    "logit_normal": (torch.randn, lambda u, mean, std, lo, hi: torch.sigmoid(mean + std * u).clamp(lo, hi)),
}


def flow_times(n: int, sde: SDE, density: str = "uniform", mean: float = 0.0, std: float = 1.0, generator=None,
               dtype=torch.float32, device=None) -> torch.Tensor:
    """n path times tau [n] from ``density`` (a key of TIME_DENSITIES), kept within the SDE's range
    [tau(eps), tau(T)], tau = sigma / (1 + sigma). UserError for an unknown density or std <= 0."""
    if density not in TIME_DENSITIES:
        raise UserError(f"unknown time density {density!r}; choose one of {', '.join(TIME_DENSITIES)}")
    if not std > 0:
        raise UserError(f"the logit-normal std must be > 0, got {std}")
    draw, to_tau = TIME_DENSITIES[density]
    sig = sde.sigma(torch.tensor([sde.eps, sde.T], dtype=torch.float64))
    lo, hi = (sig / (1 + sig)).tolist()
    return to_tau(draw(n, generator=generator, dtype=dtype, device=device), mean, std, lo, hi)


def flow_loss(model, sde: SDE, x0: torch.Tensor, class_labels=None, reduce: str = "mean", density: str = "uniform",
              mean: float = 0.0, std: float = 1.0, tau: torch.Tensor | None = None, z: torch.Tensor | None = None,
              generator=None) -> torch.Tensor:
    """Flow matching's velocity MSE || (x - D) / tau - (z - x0) ||^2 at x = (1 - tau) x0 + tau z (module
    docstring); ``tau`` [B] and ``z`` may be given, else drawn (:func:`flow_times`)."""
    if tau is None:
        tau = flow_times(x0.shape[0], sde, density, mean, std, generator, x0.dtype, x0.device)
    z = _randn(x0, generator) if z is None else z
    sigma = tau / (1 - tau)
    d = as_denoiser(sde, model).denoise(x0 + _bcast(sigma, x0) * z, sigma, class_labels)
    x = _bcast(1 - tau, x0) * x0 + _bcast(tau, x0) * z
    return _reduce(((x - d) / _bcast(tau, x0) - (z - x0)) ** 2, reduce).mean()


LOSSES = {"dsm": dsm_loss, "edm": edm_loss, "smld": smld_loss, "ddpm": ddpm_loss, "flow": flow_loss, "cd": cd_loss}


def get_loss(name: str):
    if name not in LOSSES:
        raise UserError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]

"""Samplers for any SDE of the family, each a small function over (sde, score, x, grid).

One entry point, :func:`sample`. Two kinds of samplers:

* on the SDE's own time grid t_0 = T > ... > t_N = eps (Song et al. 2021): Euler-Maruyama,
  reverse diffusion, ancestral sampling, Langevin correctors, predictor-corrector, and the
  probability-flow ODE with adaptive RK45;
* fast solvers on a noise-level grid sigma_0 > ... > sigma_N, in the scaled variable y = x / s(t),
  where every member of the family is EDM's ODE  dy/dsigma = (y - D(y; sigma)) / sigma  with the
  denoiser  D(y; sigma) = y + sigma^2 s(t) score(s(t) y, t),  t = t(sigma)  (Karras et al. eq. 3-4):
  DDIM, EDM's Heun, DPM-Solver++(2M).
"""
from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .errors import UserError
from .ode import rk45
from .sde import SDE, _bcast

__all__ = ["sample", "SAMPLERS", "sigma_schedule", "Denoiser", "CountedScore"]


class NonFiniteError(UserError, FloatingPointError):
    """The score or the state became NaN/Inf."""


class CountedScore:
    """Wraps score_fn: counts evaluations (NFE) and refuses non-finite output."""

    def __init__(self, score_fn):
        self.score_fn, self.nfe = score_fn, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        out = self.score_fn(x, t)
        if out.shape != x.shape:
            raise UserError(f"score_fn returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
        if not torch.isfinite(out).all():
            raise NonFiniteError(f"score is NaN/Inf at t={float(t.flatten()[0]):.4g} (evaluation {self.nfe})")
        return out


def _noise(x: torch.Tensor, generator) -> torch.Tensor:
    if generator is None or generator.device == x.device:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def _tvec(t, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)


# ------------------------------------------------------------------------------------------------
# Predictors and correctors on the SDE's time grid. Each takes x at t and returns (x, x_mean) at
# t - dt; x_mean is the step without its noise, returned at the last step when denoising.
# ------------------------------------------------------------------------------------------------

def euler_maruyama_step(sde: SDE, score, x, t, dt, generator):
    """x <- x - [f - g^2 score] dt + g sqrt(dt) z  (reverse SDE, Song et al. eq. 6)."""
    drift, g = sde.reverse(score).sde(x, t)
    x_mean = x - drift * dt
    return x_mean + _bcast(g, x) * math.sqrt(dt) * _noise(x, generator), x_mean


def reverse_diffusion_step(sde: SDE, score, x, t, dt, generator):
    """x <- x - f_i + G_i^2 score + G_i z with the SDE's own discretisation (Song et al. eq. 45)."""
    rev_f, G = sde.reverse(score).discretize(x, t, dt)
    x_mean = x - rev_f
    return x_mean + _bcast(G, x) * _noise(x, generator), x_mean


def ancestral_step(sde: SDE, score, x, t, dt, generator):
    """Sample the Gaussian posterior p(x_{t-dt} | x_t, x0 = Tweedie estimate).

    For VE this is SMLD's ancestral step x + (sig_i^2 - sig_{i-1}^2) score + ... (Song et al.
    eq. 47); for VP the DDPM posterior with variance beta-tilde; for any member, DDIM with eta=1."""
    den = Denoiser(sde, score)
    s, s_next = sde.scale(t), sde.scale(t - dt)
    sig, sig_next = sde.sigma(t), sde.sigma(t - dt)
    y = x / _bcast(s, x)
    d = den.from_t(y, t)
    y_mean, y = _ddim_step(y, d, sig, sig_next, 1.0, _noise(x, generator))
    return _bcast(s_next, x) * y, _bcast(s_next, x) * y_mean


def langevin_step(sde: SDE, score, x, t, dt, generator, snr: float):
    """Langevin corrector with target signal-to-noise ratio (Song et al. Alg. 4), per-sample step
    eps_i = 2 alpha (snr ||z|| / ||score||)^2 with alpha = (s(t)/s(t-dt))^2 (1 - beta_i for VP).
    The rule is meant for high dimension, where ||score|| concentrates; in low dimension the
    x-dependent step biases the chain (e.g. +3% std on a 64-D Gaussian mixture)."""
    alpha = (sde.scale(t) / sde.scale((t - dt).clamp_min(0))) ** 2
    grad = score(x, t)
    z = _noise(x, generator)
    g_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    z_norm = z.flatten(1).norm(dim=1)
    step = _bcast(2 * alpha * (snr * z_norm / g_norm) ** 2, x)
    x_mean = x + step * grad
    return x_mean + (2 * step).sqrt() * z, x_mean


def annealed_langevin_step(sde: SDE, score, x, t, dt, generator, snr: float):
    """Annealed Langevin dynamics of NCSN (Song & Ermon 2019): step 2 alpha (snr std(t))^2."""
    alpha = (sde.scale(t) / sde.scale((t - dt).clamp_min(0))) ** 2
    grad = score(x, t)
    step = _bcast(2 * alpha * (snr * sde.marginal_std(t)) ** 2, x)
    x_mean = x + step * grad
    return x_mean + (2 * step).sqrt() * _noise(x, generator), x_mean


PREDICTORS = {"em": euler_maruyama_step, "euler_maruyama": euler_maruyama_step,
              "reverse_diffusion": reverse_diffusion_step, "ancestral": ancestral_step, "none": None}
CORRECTORS = {"langevin": langevin_step, "ald": annealed_langevin_step, "none": None}


def pc_sampler(sde, score, x, ts, generator, predictor="reverse_diffusion", corrector="langevin",
               snr: float = 0.16, n_corrector: int = 1, denoise=True, progress=False):
    """Predictor-corrector (Song et al. Alg. 1): at each t_i, n corrector steps then one predictor."""
    if predictor not in PREDICTORS:
        raise UserError(f"unknown predictor {predictor!r}; choose one of {', '.join(PREDICTORS)}")
    if corrector not in CORRECTORS:
        raise UserError(f"unknown corrector {corrector!r}; choose one of {', '.join(CORRECTORS)}")
    pred, corr = PREDICTORS[predictor], CORRECTORS[corrector]
    x_mean = x
    for i in tqdm(range(len(ts) - 1), disable=not progress, desc="sampling"):
        t, dt = _tvec(ts[i], x), float(ts[i] - ts[i + 1])
        if corr is not None:
            for _ in range(n_corrector):
                x, x_mean = corr(sde, score, x, t, dt, generator, snr)
        if pred is not None:
            x, x_mean = pred(sde, score, x, t, dt, generator)
    return x_mean if denoise else x


def ode_sampler(sde, score, x, eps, generator=None, rtol=1e-5, atol=1e-5, denoise=True, progress=False,
                t_start=None):
    """Probability-flow ODE dx/dt = f x - g^2 score / 2 from t_start (default T) to eps by adaptive
    RK45 (score_sde's sampler, in torch); then the Tweedie denoiser at eps."""
    shape = x.shape

    def f(t, y):
        y = y.reshape(shape)
        return sde.ode_drift(score, y, _tvec(t, y)).reshape(-1)

    y, _, _ = rk45(f, x.reshape(-1), sde.T if t_start is None else t_start, eps, rtol=rtol, atol=atol)
    x = y.reshape(shape)
    if denoise:
        t = _tvec(eps, x)
        x = Denoiser(sde, score).x0_from_x(x, t)
    return x


# ------------------------------------------------------------------------------------------------
# Fast solvers in y = x / s, sigma as time.
# ------------------------------------------------------------------------------------------------

@dataclass
class Denoiser:
    """D(y; sigma) = y + sigma^2 grad_y log p(y; sigma), with grad_y log p = s(t) score(s y, t)."""

    sde: SDE
    score: object

    def from_t(self, y, t):
        s, sig = self.sde.scale(t), self.sde.sigma(t)
        return y + _bcast(sig ** 2 * s, y) * self.score(_bcast(s, y) * y, t)

    def __call__(self, y, sigma: float):
        t = self.sde.sigma_inv(torch.full((y.shape[0],), float(sigma), dtype=y.dtype, device=y.device))
        return self.from_t(y, t)

    def x0_from_x(self, x, t):
        """Tweedie: E[x0 | x_t] = (x + std^2 score) / s."""
        return self.from_t(x / _bcast(self.sde.scale(t), x), t)


def sigma_schedule(sde: SDE, n: int, kind: str = "karras", eps: float | None = None, rho: float = 7.0,
                   dtype=torch.float64, t_start: float | None = None) -> torch.Tensor:
    """n noise levels from sigma(t_start) (default sigma(T)) down to sigma(eps): "karras" (EDM eq. 5,
    rho=7), "logsnr" (uniform in log sigma = -half log-SNR, DPM-Solver), or "uniform" (uniform in t)."""
    eps = sde.eps if eps is None else eps
    t_start = sde.T if t_start is None else t_start
    T = torch.tensor([t_start, eps], dtype=dtype)
    smax, smin = sde.sigma(T).tolist()
    if n == 1:
        return torch.tensor([smax], dtype=dtype)
    u = torch.linspace(0, 1, n, dtype=dtype)
    if kind == "karras":
        return (smax ** (1 / rho) + u * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    if kind == "logsnr":
        return torch.exp(math.log(smax) + u * (math.log(smin) - math.log(smax)))
    if kind == "uniform":
        return sde.sigma(t_start + u * (eps - t_start))
    raise UserError(f"unknown schedule {kind!r}; choose karras, logsnr or uniform")


def _ddim_step(y, d, sig, sig_next, eta: float, z):
    """DDIM in sigma: y' = D + sigma_down (y - D)/sigma + sigma_up z, with the ancestral split
    sigma_up = eta sqrt(sig'^2 (sig^2 - sig'^2) / sig^2), sigma_down = sqrt(sig'^2 - sigma_up^2).
    eta = 0 is the Euler step of the ODE; eta = 1 samples the exact Gaussian posterior."""
    sig, sig_next = torch.as_tensor(sig, dtype=y.dtype), torch.as_tensor(sig_next, dtype=y.dtype)
    up = (eta * (sig_next ** 2 * (sig ** 2 - sig_next ** 2) / sig ** 2).clamp_min(0).sqrt()).minimum(sig_next)
    down = (sig_next ** 2 - up ** 2).clamp_min(0).sqrt()
    y_mean = d + _bcast(down / sig, y) * (y - d)
    return y_mean, y_mean + _bcast(up, y) * z if eta > 0 else y_mean


def ddim(den: Denoiser, y, sigmas, generator=None, eta: float = 0.0, progress=False):
    """DDIM (Song, Meng & Ermon 2021) as a first-order solver in sigma; eta > 0 adds noise."""
    for i in tqdm(range(len(sigmas) - 1), disable=not progress, desc="ddim"):
        d = den(y, sigmas[i])
        _, y = _ddim_step(y, d, sigmas[i], sigmas[i + 1], eta, _noise(y, generator) if eta > 0 else None)
    return y


def heun(den: Denoiser, y, sigmas, generator=None, churn: float = 0.0, s_tmin: float = 0.0,
         s_tmax: float = float("inf"), s_noise: float = 1.0, progress=False):
    """EDM's 2nd-order sampler (Karras et al. Alg. 2); churn > 0 adds its stochastic step."""
    n = len(sigmas) - 1
    for i in tqdm(range(n), disable=not progress, desc="heun"):
        sig, sig_next = float(sigmas[i]), float(sigmas[i + 1])
        gamma = min(churn / n, math.sqrt(2) - 1) if s_tmin <= sig <= s_tmax else 0.0
        sig_hat = sig * (1 + gamma)                                               # eq. line 5
        if gamma > 0:
            y = y + math.sqrt(sig_hat ** 2 - sig ** 2) * s_noise * _noise(y, generator)   # line 6
        d = (y - den(y, sig_hat)) / sig_hat                                        # line 7
        y_next = y + (sig_next - sig_hat) * d                                      # line 8
        if sig_next > 0:                                                           # lines 9-11
            d_next = (y_next - den(y_next, sig_next)) / sig_next
            y_next = y + (sig_next - sig_hat) * 0.5 * (d + d_next)
        y = y_next
    return y


def _exp_ab_weights(lams: list[float], lam_next: float, n_nodes: int = 12) -> list[float]:
    """w_j = int_{lam}^{lam'} e^{u - lam'} l_j(u) du, l_j the Lagrange basis on the nodes ``lams``
    (last = lam, the current point), by Gauss-Legendre quadrature (exact to rounding for these steps)."""
    xi, om = _leggauss(n_nodes)
    lam, h = lams[-1], lam_next - lams[-1]
    u = [lam + h * (x + 1) / 2 for x in xi]
    ws = []
    for j, lj in enumerate(lams):
        basis = [math.prod((uu - lk) / (lj - lk) for k, lk in enumerate(lams) if k != j) for uu in u]
        ws.append(sum(h / 2 * o * math.exp(uu - lam_next) * b for o, uu, b in zip(om, u, basis)))
    return ws


@functools.lru_cache(maxsize=None)
def _leggauss(n: int):
    import numpy as np
    xi, om = np.polynomial.legendre.leggauss(n)
    return xi.tolist(), om.tolist()


def dpm_solver(den: Denoiser, y, sigmas, generator=None, order: int = 2, progress=False):
    """DPM-Solver++ multistep (Lu et al. 2022) in lambda = -log sigma with data prediction D:
    y' = e^-h y + int_lam^lam' e^(u - lam') D(u) du  with D extrapolated from past evaluations.

    order=2: DPM-Solver++(2M) (Alg. 2); first order on the first step and on a last step to sigma = 0.
    order=3: D interpolated by a polynomial in lambda through the last 3 evaluations and the integral
    taken exactly (exponential Adams-Bashforth); a last step to sigma = 0 extrapolates D along the
    path to sigma = 0 in sigma^2 (D(y(sigma), sigma) is even in sigma), with no extra evaluation."""
    if order not in (2, 3):
        raise UserError(f"dpm_solver order must be 2 or 3, got {order}")
    d_prev, h_prev = None, None
    hist = []                                                       # (lambda, sigma, D) of past steps
    for i in tqdm(range(len(sigmas) - 1), disable=not progress, desc="dpm_solver"):
        sig, sig_next = float(sigmas[i]), float(sigmas[i + 1])
        d = den(y, sig)
        if sig_next == 0:
            y = d
            if order == 3 and hist:                                 # D(0) ~ D + (D - D_prev) s^2 / (s_prev^2 - s^2)
                s_prev = hist[-1][1]
                y = d + (d - hist[-1][2]) * (sig ** 2 / (s_prev ** 2 - sig ** 2))
            break
        h = math.log(sig / sig_next)                                 # lambda_next - lambda
        if order == 3 and hist:
            past = hist[-2:]
            lams = [p[0] for p in past] + [-math.log(sig)]
            ws = _exp_ab_weights(lams, -math.log(sig_next))
            y = (sig_next / sig) * y + sum(w * dd for w, dd in zip(ws, [p[2] for p in past] + [d]))
        else:
            if d_prev is None:
                d_hat = d
            else:
                r = h_prev / h
                d_hat = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * d_prev
            y = (sig_next / sig) * y - math.expm1(-h) * d_hat       # y' = (s'/s) y + (1 - e^-h) D
        d_prev, h_prev = d, h
        hist = (hist + [(-math.log(sig), sig, d)])[-2:]
    return y


FAST = {"ddim": (ddim, "uniform"), "heun": (heun, "karras"), "dpm_solver": (dpm_solver, "logsnr")}
GRID = {"em": "em", "euler_maruyama": "em", "reverse_diffusion": "reverse_diffusion",
        "ancestral": "ancestral", "langevin": None, "ald": None, "pc": None}
SAMPLERS = tuple(GRID) + ("ode",) + tuple(FAST)


def _check_options(fn, options: dict, sampler: str, extra=()):
    allowed = set(inspect.signature(fn).parameters) - {"den", "y", "sigmas", "sde", "score", "x", "ts",
                                                       "generator", "denoise", "progress", "eps", "t_start"}
    allowed |= set(extra)
    bad = sorted(set(options) - allowed)
    if bad:
        raise UserError(f"sampler {sampler!r} takes no option {', '.join(bad)}; it takes {', '.join(sorted(allowed)) or 'none'}")


@torch.no_grad()
def sample(sde: SDE, score_fn, shape=None, sampler: str = "pc", steps: int = 1000,
           generator: torch.Generator | None = None, x_T: torch.Tensor | None = None, denoise: bool = True,
           return_info: bool = False, clip: tuple[float, float] | None = None, eps: float | None = None,
           progress: bool = False, device=None, dtype=torch.float32, t_start: float | None = None, **options):
    """Draw samples by solving the reverse-time SDE or the probability-flow ODE from T to eps.

    shape: output shape [B, ...] (or None with ``x_T``). sampler: one of SAMPLERS.
    steps: number of solver steps (grid intervals; NFE = steps x (1 + corrector steps) for "pc",
    steps for "ddim"/"dpm_solver", 2 steps - 1 for "heun"; "ode" is adaptive and ignores it).
    x_T: start from this noise. denoise: finish with the noise-free mean / Tweedie estimate.
    clip: clamp the final output to (lo, hi) only when given.
    t_start: solve from this time instead of T (``x_T`` is then the state at t_start; SDEdit).
    options: predictor, corrector, snr, n_corrector (pc); rtol, atol (ode); schedule, rho, eta
    (ddim), churn, s_tmin, s_tmax, s_noise (heun), order (dpm_solver: 2 or 3).
    Returns x, or (x, info) with info["nfe"] when return_info.
    """
    sampler = str(sampler).lower()
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if int(steps) < 1:
        raise UserError(f"steps must be a positive integer, got {steps}")
    steps = int(steps)
    eps = sde.eps if eps is None else float(eps)
    t_start = sde.T if t_start is None else float(t_start)
    if not 0 < t_start <= sde.T:
        raise UserError(f"t_start must lie in (0, T={sde.T}], got {t_start}")
    if not 0 <= eps < t_start:
        raise UserError(f"eps must lie in [0, t_start={t_start}), got {eps}")
    if x_T is None:
        if t_start != sde.T:
            raise UserError("t_start before T needs the state x_T at t_start")
        if shape is None:
            raise UserError("give a shape or x_T")
        shape = tuple(int(s) for s in shape)
        if not shape or any(s < 1 for s in shape):
            raise UserError(f"shape must be positive integers [B, ...], got {shape}")
        x = sde.prior_sampling(shape, generator=generator, device=device, dtype=dtype)
        if device is not None:
            x = x.to(device)
    else:
        if shape is not None and tuple(x_T.shape) != tuple(shape):
            raise UserError(f"x_T has shape {tuple(x_T.shape)} but shape is {tuple(shape)}")
        if x_T.dim() < 1:
            raise UserError("x_T must have a batch dimension")
        if not torch.isfinite(x_T).all():
            raise UserError("x_T contains NaN or Inf")
        x = x_T.clone()
    score = CountedScore(score_fn)

    if sampler in FAST:
        fn, default_schedule = FAST[sampler]
        schedule, rho = options.pop("schedule", default_schedule), options.pop("rho", 7.0)
        _check_options(fn, options, sampler)
        n_levels = steps if denoise else steps + 1           # denoise: last step goes to sigma = 0
        sigmas = sigma_schedule(sde, n_levels, schedule, eps, rho, t_start=t_start)
        if denoise:
            sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
        den = Denoiser(sde, score)
        t_T = torch.full((x.shape[0],), t_start, dtype=x.dtype, device=x.device)
        y = fn(den, x / _bcast(sde.scale(t_T), x), sigmas.tolist(), generator=generator, progress=progress, **options)
        t_end = sde.sigma_inv(torch.full((x.shape[0],), float(sigmas[-1]), dtype=x.dtype, device=x.device)) \
            if not denoise else torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        x = _bcast(sde.scale(t_end), y) * y
    elif sampler == "ode":
        _check_options(ode_sampler, options, sampler)
        x = ode_sampler(sde, score, x, eps, denoise=denoise, progress=progress, t_start=t_start, **options)
    else:
        if sampler in ("langevin", "ald"):
            options.setdefault("predictor", "none")
            options.setdefault("corrector", sampler)
        elif sampler != "pc":
            options.setdefault("predictor", GRID[sampler])
            options.setdefault("corrector", "none")
        _check_options(pc_sampler, options, sampler)
        ts = torch.linspace(t_start, eps, steps + 1, dtype=torch.float64).tolist()
        x = pc_sampler(sde, score, x, ts, generator, denoise=denoise, progress=progress, **options)

    if not torch.isfinite(x).all():
        raise NonFiniteError(f"sampler {sampler!r} produced NaN/Inf")
    if clip is not None:
        x = x.clamp(*clip)
    return (x, {"nfe": score.nfe, "sampler": sampler, "steps": steps}) if return_info else x

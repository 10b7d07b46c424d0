"""Exact likelihoods, encoding and decoding through the probability-flow ODE.

For the probability-flow ODE  dx/dt = v(x, t) = f(t) x - g(t)^2 score(x, t) / 2  (Song et al. 2021,
eq. 13) the instantaneous change of variables (Chen et al. 2018) gives  d log p_t(x(t))/dt = -div v,
so for a data point x at t = eps  (Song et al. eq. 40)

    log p_eps(x) = log p_T(x(T)) + int_eps^T div v(x(t), t) dt.                           (ll)

The divergence is either exact (D vector-Jacobian products; small D) or the Hutchinson-Skilling
estimate  div v = E_e[e^T (dv/dx) e]  with Rademacher or Gaussian probes e, each probe held fixed
along the path so that every probe gives an unbiased estimate of log p (several probes give a
standard error).

Bits per dimension. For continuous data  bpd = -log p(x) / (D ln 2).  For 8-bit images stored in
model space as  x = lo + (hi - lo) u  with pixels  u = (k + U) / 256,  k in 0..255,  U ~ Uniform
(uniform dequantisation), the density of the integer-valued image is  p_x(x) (hi - lo)^D / 256^D,
hence
    bpd_8bit = -log2 p_x(x) / D - log2(hi - lo) + 8,                                       (bpd)
score_sde's convention ("offset = 7 - inverse_scaler(-1)": +7 for data in [-1, 1], +8 in [0, 1]).

Solvers: adaptive RK45 in t (score_sde's setting: rtol = atol = 1e-5), or a fixed-step Heun in the
scaled variable y = x / s(t) with sigma as time, where the ODE is EDM's  dy/dsigma = (y - D(y; sigma))
/ sigma  (Karras et al. eq. 3); then  log p_x = log p_y - D log s.
"""
from __future__ import annotations

import math
import types

import torch
from tqdm.auto import tqdm

from .errors import UserError
from .ode import rk45
from .denoisers import Counted, ScoreDenoiser, as_denoiser
from .noise import sigma_schedule
from .sampling import sample
from .sde import SDE, _bcast

__all__ = ["likelihood", "encode", "decode", "interpolate", "bits_per_dim", "uniform_dequantize", "slerp"]

PROBES = ("auto", "rademacher", "gaussian", "exact")
EXACT_MAX_DIM = 8       # "auto": the exact divergence (D backward passes) up to this many dimensions


# ---- helpers -----------------------------------------------------------------------------------

def default_eps(sde: SDE) -> float:
    """score_sde integrates likelihoods from t = 1e-5 (on t in [0, 1]); EDM-type SDEs from sigma_min."""
    return 1e-5 if sde.T == 1.0 else sde.eps


def _counted(sde: SDE, score_fn) -> Counted:
    """The model's counted denoiser, with autograd through a wrapped score function (_differentiable)."""
    den = as_denoiser(sde, score_fn)
    if isinstance(den, ScoreDenoiser):
        den = ScoreDenoiser(sde, _differentiable(den.score_fn))
    return Counted(den)


def _differentiable(score_fn):
    """score_fn with autograd allowed (a bound method wrapped in torch.no_grad is unwrapped) that
    refuses to return a detached score for an input that requires gradients."""
    fn = getattr(score_fn, "__func__", None)
    wrapped = getattr(fn, "__wrapped__", None)
    inner = types.MethodType(wrapped, score_fn.__self__) if wrapped is not None else score_fn

    def score(x, t):
        out = inner(x, t)
        if x.requires_grad and torch.is_grad_enabled() and not out.requires_grad:
            raise UserError("score_fn does not pass gradients; the divergence needs autograd through it")
        return out
    return score


def uniform_dequantize(x: torch.Tensor, data_range=(-1.0, 1.0), generator=None) -> torch.Tensor:
    """Uniform dequantisation of 8-bit images in model space: u -> (round(255 u) + U) / 256."""
    lo, hi = data_range
    k = ((x - lo) / (hi - lo)).clamp(0, 1).mul(255).round()
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=generator.device if generator else x.device)
    return lo + (hi - lo) * (k + noise.to(x.device)) / 256


def bits_per_dim(logp: torch.Tensor, dim: int, data_scale: float | None = None) -> torch.Tensor:
    """(bpd): -log2 p / D, plus log2(256 / data_scale) for 8-bit data of model-space width data_scale."""
    bpd = -logp / (dim * math.log(2))
    if data_scale is not None:
        bpd = bpd + 8 - math.log2(data_scale)
    return bpd


def _probes(x: torch.Tensor, kind: str, n: int, generator) -> list[torch.Tensor]:
    dev = generator.device if generator is not None else x.device
    out = []
    for _ in range(n):
        e = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=dev).to(x.device)
        out.append(e.sign() if kind == "rademacher" else e)
    return out


def _drift_div(drift, x: torch.Tensor, t: torch.Tensor, probes):
    """v = drift(x, t) and div v per sample: exact [B, 1] if probes is None, else [B, K] estimates e^T J e."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = drift(x, t)
        if probes is None:
            vf = v.flatten(1)
            cols = [torch.autograd.grad(vf[:, j].sum(), x, retain_graph=True)[0].flatten(1)[:, j]
                    for j in range(vf.shape[1])]
            div = torch.stack(cols, 1).sum(1, keepdim=True)
        else:
            div = torch.stack([(torch.autograd.grad(v, x, e, retain_graph=i < len(probes) - 1)[0] * e).flatten(1).sum(1)
                               for i, e in enumerate(probes)], 1)
    return v.detach(), div.detach()


# ---- the ODE with its log-density -----------------------------------------------------------------

def _rk45_path(sde, score, x, eps, probes, rtol, atol):
    """(ll) in t by RK45 on the state [x, int div]: returns x(T), int_eps^T div [B, K], steps."""
    B, n = x.shape[0], x.numel()
    K = 1 if probes is None else len(probes)

    def f(t, state):
        xt = state[:n].reshape(x.shape)
        v, div = _drift_div(lambda z, tt: sde.ode_drift(score.score, z, tt), xt, torch.full((B,), t, dtype=x.dtype,
                                                                                        device=x.device), probes)
        return torch.cat([v.reshape(-1), div.reshape(-1)])

    y0 = torch.cat([x.reshape(-1), x.new_zeros(B * K)])
    y, _, steps = rk45(f, y0, eps, sde.T, rtol=rtol, atol=atol)
    return y[:n].reshape(x.shape), y[n:].reshape(B, K), steps


def _heun_path(sde, score, x, eps, probes, steps, progress=False, schedule="karras"):
    """(ll) in y = x/s with sigma as time: Heun (2nd order) on the ascending Karras grid sigma(eps) -> sigma(T).
    Returns x(T), int div_x dt [B, K] (including the -D log s terms), steps."""
    B, D = x.shape[0], x[0].numel()
    den = score.denoise
    sigmas = sigma_schedule(sde, steps + 1, schedule, eps).flip(0).tolist()
    t_eps, t_T = (torch.full((B,), v, dtype=x.dtype, device=x.device) for v in (eps, sde.T))
    y = x / _bcast(sde.scale(t_eps), x)

    def f(y, sig):
        return _drift_div(lambda z, _: (z - den(z, sig)) / sig, y, None, probes)

    acc = 0.0
    for sig, sig_next in tqdm(list(zip(sigmas[:-1], sigmas[1:])), disable=not progress, desc="likelihood"):
        h = sig_next - sig
        v, div = f(y, sig)
        y_next = y + h * v
        v2, div2 = f(y_next, sig_next)
        y = y + h * 0.5 * (v + v2)
        acc = acc + h * 0.5 * (div + div2)
    s_eps, s_T = sde.scale(t_eps), sde.scale(t_T)
    acc = acc + (D * (s_T.log() - s_eps.log()))[:, None]            # log p_x = log p_y - D log s
    return _bcast(s_T, y) * y, acc, steps


# ---- public API -------------------------------------------------------------------------------------

def likelihood(sde: SDE, score_fn, x: torch.Tensor, data_scale: float | None = None, data_range=None,
               probes: str = "auto", n_probes: int = 1, solver: str = "rk45", rtol: float = 1e-5,
               atol: float = 1e-5, steps: int = 64, schedule: str = "karras", eps: float | None = None,
               dequantize: bool = False,
               generator: torch.Generator | None = None, return_info: bool = False, progress: bool = False,
               hutchinson: str | None = None, prior_logp=None):
    """Per-sample bits/dim [B] of x (model space) under the model's p_eps, by (ll) and (bpd).

    data_scale: model-space width of the pixel range [0, 1] (2 for data in [-1, 1]); given (or given
    ``data_range=(lo, hi)``), x is 8-bit image data and the result is score_sde's 8-bit bits/dim.
    dequantize: first replace x by its uniform dequantisation (needs data_range).
    probes (alias hutchinson): "auto" (default: the exact divergence when a sample has at most
    max(8, n_probes) dimensions, where it costs no more than the probes, else one Rademacher probe),
    "rademacher" | "gaussian" (Hutchinson, n_probes estimates each) or "exact".
    solver: "rk45" (rtol, atol; score_sde's default 1e-5) or "heun" (``steps`` fixed steps, 2 NFE each,
    on the noise levels of ``schedule``, see sigma_schedule).
    eps: starting time (default 1e-5 on t in [0, 1], as score_sde; sde.eps for EDM).
    prior_logp: log-density at T (default sde.prior_logp, which is only approximately p_T).
    return_info: also return a dict with nfe, steps, logp (nats), prior_logp, bpd_se (standard
    error over probes, NaN for one probe), bpd_probes [B, K] and z = x(T).
    """
    probes = str(hutchinson or probes).lower()
    if probes not in PROBES:
        raise UserError(f"unknown divergence estimator {probes!r}; choose one of {', '.join(PROBES)}")
    if probes == "auto" and torch.is_tensor(x) and x.dim() >= 1:
        probes = "exact" if x[0].numel() <= max(EXACT_MAX_DIM, int(n_probes)) else "rademacher"
    if solver not in ("rk45", "heun"):
        raise UserError(f"unknown likelihood solver {solver!r}; choose rk45 or heun")
    if int(n_probes) < 1 or int(steps) < 1:
        raise UserError(f"n_probes and steps must be positive, got {n_probes}, {steps}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise UserError(f"x must be a batch [B, ...], got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise UserError("x contains NaN or Inf")
    if data_range is not None:
        lo, hi = (float(v) for v in data_range)
        if not hi > lo:
            raise UserError(f"data_range must be (lo, hi) with hi > lo, got {data_range}")
        data_scale = hi - lo if data_scale is None else data_scale
    if data_scale is not None and not float(data_scale) > 0:
        raise UserError(f"data_scale must be positive, got {data_scale}")
    eps = default_eps(sde) if eps is None else float(eps)
    if not 0 < eps < sde.T:
        raise UserError(f"eps must lie in (0, T={sde.T}), got {eps}")
    if dequantize:
        if data_range is None:
            raise UserError("dequantize needs data_range=(lo, hi)")
        x = uniform_dequantize(x, data_range, generator)

    score = _counted(sde, score_fn)
    e = None if probes == "exact" else _probes(x, probes, int(n_probes), generator)
    if solver == "rk45":
        z, delta, n_steps = _rk45_path(sde, score, x, eps, e, rtol, atol)
    else:
        z, delta, n_steps = _heun_path(sde, score, x, eps, e, int(steps), progress, schedule)
    prior = (sde.prior_logp if prior_logp is None else prior_logp)(z)
    logp = prior[:, None] + delta                                      # (ll), one column per probe
    D = x[0].numel()
    bpd_k = bits_per_dim(logp, D, data_scale)
    bpd = bpd_k.mean(1)
    if not return_info:
        return bpd
    K = bpd_k.shape[1]
    if probes == "exact":
        se = torch.zeros_like(bpd)                          # no probe noise (the solver's error remains)
    else:
        se = bpd_k.std(1) / math.sqrt(K) if K > 1 else torch.full_like(bpd, float("nan"))
    return bpd, {"nfe": score.nfe, "steps": n_steps, "logp": logp.mean(1), "prior_logp": prior,
                 "bpd_se": se, "bpd_probes": bpd_k, "z": z, "eps": eps, "solver": solver, "probes": probes}


@torch.no_grad()
def encode(sde: SDE, score_fn, x: torch.Tensor, eps: float | None = None, rtol: float = 1e-5, atol: float = 1e-5,
           solver: str = "rk45", steps: int = 64, return_info: bool = False):
    """The latent z = x(T) of data x (at t = eps) under the probability-flow ODE (Song et al. sec. 4.3)."""
    eps = default_eps(sde) if eps is None else float(eps)
    score = Counted(as_denoiser(sde, score_fn))
    if solver == "rk45":
        def f(t, y):
            y = y.reshape(x.shape)
            return sde.ode_drift(score.score, y, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)).reshape(-1)
        z = rk45(f, x.reshape(-1), eps, sde.T, rtol=rtol, atol=atol)[0].reshape(x.shape)
    elif solver == "heun":
        from .samplers import Grid, Heun
        from .sampling import solve
        sigmas = sigma_schedule(sde, steps + 1, "karras", eps).flip(0)
        z = solve(Heun(score, Grid(sde, sigmas=sigmas)), x, denoise=False)
    else:
        raise UserError(f"unknown solver {solver!r}; choose rk45 or heun")
    return (z, {"nfe": score.nfe}) if return_info else z


def decode(sde: SDE, score_fn, z: torch.Tensor, eps: float | None = None, rtol: float = 1e-5, atol: float = 1e-5,
           solver: str = "rk45", steps: int = 64, return_info: bool = False):
    """Data x(eps) from the latent z = x(T): the probability-flow ODE backwards (inverse of encode)."""
    eps = default_eps(sde) if eps is None else float(eps)
    if solver == "rk45":
        return sample(sde, score_fn, x_T=z, sampler="ode", eps=eps, denoise=False, rtol=rtol, atol=atol,
                      return_info=return_info)
    if solver == "heun":
        return sample(sde, score_fn, x_T=z, sampler="heun", steps=steps, eps=eps, denoise=False,
                      return_info=return_info)
    raise UserError(f"unknown solver {solver!r}; choose rk45 or heun")


def slerp(z0: torch.Tensor, z1: torch.Tensor, a: float) -> torch.Tensor:
    """Spherical interpolation per sample: sin((1-a) w)/sin w z0 + sin(a w)/sin w z1, w = angle(z0, z1)."""
    f0, f1 = z0.flatten(1), z1.flatten(1)
    cos = (f0 * f1).sum(1) / (f0.norm(dim=1) * f1.norm(dim=1)).clamp_min(1e-12)
    w = cos.clamp(-1, 1).acos()
    sw = w.sin()
    lin = sw < 1e-6                                                   # (anti)parallel: linear blend
    c0 = torch.where(lin, 1 - a, torch.sin((1 - a) * w) / sw.where(~lin, torch.ones_like(sw)))
    c1 = torch.where(lin, torch.full_like(w, a), torch.sin(a * w) / sw.where(~lin, torch.ones_like(sw)))
    return _bcast(c0, z0) * z0 + _bcast(c1, z1) * z1


def interpolate(sde: SDE, score_fn, x0: torch.Tensor, x1: torch.Tensor, n: int = 8, eps: float | None = None,
                **kwargs) -> torch.Tensor:
    """n images from x0 to x1 (each [B, ...]) by spherical interpolation of their latents: [n, B, ...]."""
    if x0.shape != x1.shape:
        raise UserError(f"x0 and x1 differ in shape: {tuple(x0.shape)} vs {tuple(x1.shape)}")
    if int(n) < 2:
        raise UserError(f"n must be at least 2, got {n}")
    z = encode(sde, score_fn, torch.cat([x0, x1]), eps=eps, **kwargs)
    z0, z1 = z.chunk(2)
    zs = torch.cat([slerp(z0, z1, a) for a in torch.linspace(0, 1, int(n)).tolist()])
    out = decode(sde, score_fn, zs, eps=eps, **kwargs)
    return out.reshape(int(n), *x0.shape)

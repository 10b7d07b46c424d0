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

Solvers: adaptive RK45 in t (score_sde's setting: rtol = atol = 1e-5); adaptive RK45 in the scaled
variable y = x / s(t) with u = log sigma as time, where the ODE is  dy/du = y - D(y; sigma)  (EDM's
dy/dsigma = (y - D) / sigma, Karras et al. eq. 3, times sigma) and each sample's log-density error is
controlled in bits/dim; or a fixed-step Heun in y with sigma as time. In y,  log p_x = log p_y - D log s.
"""
from __future__ import annotations

import math
import types

import torch

from sdekit.core.errors import UserError
from sdekit.core.denoisers import Counted, ScoreDenoiser, as_denoiser
from sdekit.core.noise import sigma_schedule, solver_dtype
from sdekit.core.placement import warn_slow_precision
from sdekit.core.sde import SDE, _bcast
from sdekit.policy import ENCODE, LIKELIHOOD
from sdekit.solvers.loop import model_dtype_device, sample, solve
from sdekit.solvers.ode import heun, rk45
from sdekit.solvers.samplers import ODE, Grid, Heun

__all__ = ["likelihood", "encode", "decode", "interpolate", "bits_per_dim", "uniform_dequantize", "slerp"]

PROBES = ("auto", "rademacher", "gaussian", "exact")
SOLVERS = ("rk45", "rk45_logsigma", "heun")
EXACT_MAX_DIM = 64      # "auto": the exact divergence (D vector-Jacobian products) up to this many dimensions
CHUNK_ROWS = 1024       # rows (points x probes) per network call when computing divergences
TOLERANCES = {"rk45": (1e-5, 1e-5), "rk45_logsigma": (1e-3, 1e-3)}   # default (rtol, atol) per solver
BPD_TOL = 1e-3          # rk45_logsigma: local error of each sample's log-density per step, bits/dim


# ---- helpers -----------------------------------------------------------------------------------

def default_eps(sde: SDE) -> float:
    """score_sde integrates likelihoods from t = 1e-5 (on t in [0, 1]); EDM-type SDEs from sigma_min."""
    return 1e-5 if sde.T == 1.0 else sde.eps


def _counted(sde: SDE, score_fn) -> Counted:
    """The model's counted denoiser, with autograd through a wrapped score function (_differentiable). Its
    NaN/Inf checks are read once per solver step (:func:`_checked`), not per evaluation."""
    den = as_denoiser(sde, score_fn)
    if isinstance(den, ScoreDenoiser):
        den = ScoreDenoiser(sde, _differentiable(den.score_fn))
    return Counted(den, eager=False)


def _checked(score: Counted, n: int):
    """The per-step hook of an integration of [x (n numbers), ...]: the counted model's NaN/Inf ledger and the
    new state read together, one host sync per step (noise.Counter.verdict)."""
    return lambda t, state: score.counter.verdict(state[:n], ("t", t))


def _in_solver_dtype(model, x: torch.Tensor) -> torch.Tensor:
    """x in noise.solver_dtype (float32 at least) on the model's device: the path and the log-density are
    integrated there whatever the network's precision (a bfloat16 state keeps 8 bits, less than the
    dequantisation noise of 8-bit data, and its bits/dim come out meaningless); the network sees its
    input cast to its own dtype. Warns once when the network runs in a precision its device runs much
    slower than float32 (float16 on a CPU)."""
    m_dtype, m_device = model_dtype_device(model)
    if m_dtype is not None:
        warn_slow_precision(m_device, m_dtype)
    return x.to(dtype=solver_dtype(x.dtype, m_dtype), device=m_device or x.device)


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


def _probes(x: torch.Tensor, kind: str, n: int, generator) -> torch.Tensor:
    """n Hutchinson probes [n, B, ...]: Rademacher (+-1) or standard Gaussian entries."""
    dev = generator.device if generator is not None else x.device
    e = torch.randn((n, *x.shape), generator=generator, dtype=x.dtype, device=dev).to(x.device)
    return e.sign() if kind == "rademacher" else e


def _basis(x: torch.Tensor) -> torch.Tensor:
    """The D unit vectors of one sample's space, for every sample: [D, B, ...] (exact traces)."""
    B, D = x.shape[0], x[0].numel()
    eye = torch.eye(D, dtype=x.dtype, device=x.device)
    return eye[:, None, :].expand(D, B, D).reshape(D, *x.shape)


def _velocity_div(velocity, x: torch.Tensor, time, probes: torch.Tensor | None):
    """v = velocity(x, time) [B, ...] and its divergence per sample: the exact trace of dv/dx [B, 1] if
    probes is None, else the Hutchinson estimates e^T (dv/dx) e [B, K], one per probe of probes [K, B, ...].

    All K (exact: D) vector-Jacobian products come from one call of ``velocity`` on the batch repeated K
    times and one backward pass, at most CHUNK_ROWS rows per call (more calls beyond that)."""
    B = x.shape[0]
    vecs = _basis(x) if probes is None else probes
    per_call = max(1, CHUNK_ROWS // B)
    v, traces = None, []
    for chunk in vecs.split(per_call):
        k = chunk.shape[0]
        with torch.enable_grad():
            xr = x.detach().repeat(k, *[1] * (x.dim() - 1)).requires_grad_(True)
            out = velocity(xr, time.repeat(k) if torch.is_tensor(time) else time)
            grad, = torch.autograd.grad(out, xr, chunk.reshape(xr.shape))
        traces.append((grad * chunk.reshape(xr.shape)).flatten(1).sum(1).reshape(k, B).T)
        v = out[:B].detach() if v is None else v
    div = torch.cat(traces, 1).detach()
    return v, (div.sum(1, keepdim=True) if probes is None else div)


# ---- the ODE with its log-density -----------------------------------------------------------------

def _rk45_path(sde, score, x, eps, probes, rtol, atol):
    """(ll) in t by RK45 on the state [x, int div]: returns x(T), int_eps^T div [B, K], NFE, steps."""
    B, n = x.shape[0], x.numel()

    def f(t, state):
        xt = state[:n].reshape(x.shape)
        v, div = _velocity_div(lambda z, tt: sde.ode_drift(score.score, z, tt), xt,
                               torch.full((B,), t, dtype=x.dtype, device=x.device), probes)
        return torch.cat([v.reshape(-1), div.reshape(-1)])

    K = 1 if probes is None else probes.shape[0]
    y0 = torch.cat([x.reshape(-1), x.new_zeros(B * K)])
    y, nfe, steps = rk45(f, y0, eps, sde.T, rtol=rtol, atol=atol, on_step=_checked(score, n),
                         on_bad=score.counter.verdict)
    return y[:n].reshape(x.shape), y[n:].reshape(B, K), nfe, steps


def _log_s(sde, x, eps):
    """log s(eps), log s(T) [B]: log p_x = log p_y - D log s in y = x / s."""
    t = torch.tensor([eps, sde.T], dtype=torch.float64)
    return [torch.full((x.shape[0],), v, dtype=x.dtype, device=x.device) for v in sde.scale(t).log().tolist()]


def _logsigma_path(sde, score, x, eps, probes, rtol, atol, bpd_tol):
    """(ll) in y = x/s with u = log sigma as time: dy/du = y - D(y; e^u) (EDM's ODE, Karras et al. eq. 3,
    times sigma), smooth in u where it is stiff in t. RK45 on [y, int div du], the error of every sample
    held separately: its y by rtol/atol (RMS over its coordinates), its log-density within bpd_tol bits/dim
    per step. Returns x(T), int div [B, K] (with the -D log s terms), NFE, steps."""
    B, n, D = x.shape[0], x.numel(), x[0].numel()
    den = score.denoise
    log_s_eps, log_s_T = _log_s(sde, x, eps)
    u0, u1 = sde.sigma(torch.tensor([eps, sde.T], dtype=torch.float64)).log().tolist()
    K = 1 if probes is None else probes.shape[0]

    def f(u, state):
        y = state[:n].reshape(x.shape)
        w, div = _velocity_div(lambda z, sig: z - den(z, sig), y, math.exp(u), probes)
        return torch.cat([w.reshape(-1), div.reshape(-1)])

    def worst_sample(scaled):                      # max over samples of max(RMS of y, |log p|)
        ey = scaled[:n].reshape(B, D).pow(2).mean(1).sqrt()
        el = scaled[n:].reshape(B, K).abs().amax(1)
        return float(torch.maximum(ey, el).max())

    tol_logp = bpd_tol * D * math.log(2)           # bits/dim -> nats of the whole sample
    rtols = torch.cat([x.new_full((n,), rtol), x.new_zeros(B * K)])
    atols = torch.cat([x.new_full((n,), atol), x.new_full((B * K,), tol_logp)])
    state0 = torch.cat([(x / _bcast(log_s_eps.exp(), x)).reshape(-1), x.new_zeros(B * K)])
    state, nfe, steps = rk45(f, state0, u0, u1, rtol=rtols, atol=atols, norm=worst_sample, on_step=_checked(score, n),
                             on_bad=score.counter.verdict)
    y = state[:n].reshape(x.shape)
    acc = state[n:].reshape(B, K) + (D * (log_s_T - log_s_eps))[:, None]
    return _bcast(log_s_T.exp(), y) * y, acc, nfe, steps


def _heun_path(sde, score, x, eps, probes, steps, progress=False, schedule="karras"):
    """(ll) in y = x/s with sigma as time: Heun (2nd order, sdekit.solvers.ode.heun) on [y, int div] over the
    ascending grid of ``schedule`` sigma(eps) -> sigma(T). Returns x(T), int div_x dt [B, K] (including the
    -D log s terms), NFE, steps."""
    B, n, D = x.shape[0], x.numel(), x[0].numel()
    den = score.denoise
    sigmas = sigma_schedule(sde, steps + 1, schedule, eps).flip(0).tolist()
    log_s_eps, log_s_T = _log_s(sde, x, eps)
    K = 1 if probes is None else probes.shape[0]

    def f(sig, state):
        v, div = _velocity_div(lambda z, s: (z - den(z, s)) / s, state[:n].reshape(x.shape), sig, probes)
        return torch.cat([v.reshape(-1), div.reshape(-1)])

    state0 = torch.cat([(x / _bcast(log_s_eps.exp(), x)).reshape(-1), x.new_zeros(B * K)])
    state, nfe, n_steps = heun(f, state0, sigmas, on_step=_checked(score, n), progress=progress, desc="likelihood")
    y = state[:n].reshape(x.shape)
    acc = state[n:].reshape(B, K) + (D * (log_s_T - log_s_eps))[:, None]      # log p_x = log p_y - D log s
    return _bcast(log_s_T.exp(), y) * y, acc, nfe, n_steps


# ---- public API -------------------------------------------------------------------------------------

def likelihood(sde: SDE, score_fn, x: torch.Tensor, data_scale: float | None = None, data_range=None,
               probes: str = "auto", n_probes: int = 1, solver: str = LIKELIHOOD.sampler, rtol: float | None = None,
               atol: float | None = None, steps: int = LIKELIHOOD.steps, schedule: str = "karras", eps: float | None = None,
               dequantize: bool = False,
               generator: torch.Generator | None = None, return_info: bool = False, progress: bool = False,
               hutchinson: str | None = None, prior_logp=None, bpd_tol: float = BPD_TOL):
    """Per-sample bits/dim [B] of x (model space, [B, ...]) under the model's p_eps, by (ll) and (bpd).

    data_scale: model-space width of the pixel range [0, 1] (2 for data in [-1, 1]); given (or given
    ``data_range=(lo, hi)``), x is 8-bit image data and the result is score_sde's 8-bit bits/dim.
    dequantize: first replace x by its uniform dequantisation (needs data_range).
    probes (alias hutchinson): "auto" (default: the exact divergence when a sample has at most
    max(EXACT_MAX_DIM = 64, n_probes) dimensions, else one Rademacher probe), "rademacher" | "gaussian"
    (Hutchinson, n_probes estimates each) or "exact". Every evaluation computes its K vector-Jacobian
    products (K = D for "exact") in one network call on the batch repeated K times (CHUNK_ROWS rows
    per call at most) and one backward pass.
    solver (default: the policy's, :data:`sdekit.policy.LIKELIHOOD`): "rk45" (adaptive Dormand-Prince in t on the whole batch, score_sde's setting;
    rtol, atol default 1e-5), "rk45_logsigma" (Dormand-Prince in y = x/s with u = log sigma as time,
    each sample's error held separately and its log-density's to ``bpd_tol`` bits/dim per step; rtol,
    atol default 1e-3 for y) or "heun" (``steps`` fixed steps, 2 NFE each, on the noise levels of
    ``schedule``, see sigma_schedule).
    eps: starting time (default 1e-5 on t in [0, 1], as score_sde; sde.eps for EDM).
    prior_logp: log-density at T (default sde.prior_logp, which is only approximately p_T).
    return_info: also return a dict with nfe (evaluations of the ODE's right-hand side: one forward
    and one backward pass each), network_calls, vjps_per_nfe (K), steps, logp (nats), prior_logp,
    bpd_se (standard error over probes, NaN for one probe; 0 for the exact divergence), bpd_probes
    [B, K] and z = x(T).
    Raises UserError for an unknown probes or solver, non-positive n_probes, steps, rtol, atol or
    bpd_tol, eps outside (0, T), x not a finite batch, or a score_fn that does not pass gradients.
    """
    probes = str(hutchinson or probes).lower()
    if probes not in PROBES:
        raise UserError(f"unknown divergence estimator {probes!r}; choose one of {', '.join(PROBES)}")
    if probes == "auto" and torch.is_tensor(x) and x.dim() >= 1:
        probes = "exact" if x[0].numel() <= max(EXACT_MAX_DIM, int(n_probes)) else "rademacher"
    if solver not in SOLVERS:
        raise UserError(f"unknown likelihood solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if int(n_probes) < 1 or int(steps) < 1:
        raise UserError(f"n_probes and steps must be positive, got {n_probes}, {steps}")
    rtol, atol = (d if v is None else float(v) for v, d in zip((rtol, atol), TOLERANCES.get(solver, (1e-5, 1e-5))))
    if not (rtol > 0 and atol > 0 and float(bpd_tol) > 0):
        raise UserError(f"rtol, atol and bpd_tol must be positive, got {rtol}, {atol}, {bpd_tol}")
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
    score = _counted(sde, score_fn)
    x = _in_solver_dtype(score, x)
    if dequantize:
        if data_range is None:
            raise UserError("dequantize needs data_range=(lo, hi)")
        x = uniform_dequantize(x, data_range, generator)

    e = None if probes == "exact" else _probes(x, probes, int(n_probes), generator)
    if solver == "rk45":
        z, delta, nfe, n_steps = _rk45_path(sde, score, x, eps, e, rtol, atol)
    elif solver == "rk45_logsigma":
        z, delta, nfe, n_steps = _logsigma_path(sde, score, x, eps, e, rtol, atol, float(bpd_tol))
    else:
        z, delta, nfe, n_steps = _heun_path(sde, score, x, eps, e, int(steps), progress, schedule)
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
    return bpd, {"nfe": nfe, "network_calls": score.nfe, "vjps_per_nfe": D if probes == "exact" else K,
                 "steps": n_steps, "logp": logp.mean(1), "prior_logp": prior,
                 "bpd_se": se, "bpd_probes": bpd_k, "z": z, "eps": eps, "solver": solver, "probes": probes}


@torch.no_grad()
def encode(sde: SDE, score_fn, x: torch.Tensor, eps: float | None = None, rtol: float = 1e-5, atol: float = 1e-5,
           solver: str = ENCODE.sampler, steps: int = ENCODE.steps, return_info: bool = False):
    """The latent z = x(T) of data x (at t = eps) under the probability-flow ODE (Song et al. sec. 4.3).
    solver: "rk45" (adaptive, to rtol / atol) or "heun" (``steps`` fixed steps); default the policy's
    (:data:`sdekit.policy.ENCODE`)."""
    eps = default_eps(sde) if eps is None else float(eps)
    score = Counted(as_denoiser(sde, score_fn), eager=False)
    x = _in_solver_dtype(score, x)
    if solver == "rk45":                        # the "ode" sampler forward in time, from eps up to T
        z = solve(ODE(score, Grid(sde, ts=[eps, sde.T]), rtol=rtol, atol=atol), x, denoise=False)
    elif solver == "heun":
        sigmas = sigma_schedule(sde, steps + 1, "karras", eps).flip(0)
        z = solve(Heun(score, Grid(sde, sigmas=sigmas)), x, denoise=False)
    else:
        raise UserError(f"unknown solver {solver!r}; choose rk45 or heun")
    return (z, {"nfe": score.nfe}) if return_info else z


def decode(sde: SDE, score_fn, z: torch.Tensor, eps: float | None = None, rtol: float = 1e-5, atol: float = 1e-5,
           solver: str = ENCODE.sampler, steps: int = ENCODE.steps, return_info: bool = False):
    """Data x(eps) from the latent z = x(T): the probability-flow ODE backwards (inverse of encode)."""
    eps = default_eps(sde) if eps is None else float(eps)
    if solver == "rk45":
        return sample(sde, score_fn, x_T=z, sampler="ode", eps=eps, denoise=False, rtol=rtol, atol=atol,
                      return_info=return_info)
    if solver == "heun":
        return sample(sde, score_fn, x_T=z, sampler=solver, steps=steps, eps=eps, denoise=False,
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

"""Samplers for any SDE of the family: one small stepper each, moving x from grid point i to i + 1.

A stepper holds the model (a :class:`~sdekit.core.denoisers.Denoiser`), the grid (times t_i and noise
levels sigma_i, descending) and the generator; ``step(i, x)`` returns (x_{i+1}, x_mean), the new
state and its noise-free mean. The loop around them (step hooks, RePaint rewinds, progress,
counting) is :func:`sdekit.solvers.loop.solve`; the records that name them are sdekit.solvers.registry.

* On the SDE's own time grid (Song et al. 2021): Euler-Maruyama, reverse diffusion, ancestral
  sampling, the Langevin correctors and predictor-corrector, all one :class:`PC` stepper.
* In y = x / s(t) with sigma as time, where every member is EDM's ODE
  dy/dsigma = (y - D(y; sigma)) / sigma  (Karras et al. eq. 4): DDIM, EDM's Heun, DPM-Solver++, and
  an Adams-Bashforth-Moulton predictor-corrector for few evaluations (ABM).
* Multistep consistency sampling (Song et al. 2023, Algorithm 1) for consistency models, whose D is
  the consistency function f(y, sigma) (:class:`Consistency`).
"""
from __future__ import annotations

import functools
import math

import torch

from sdekit.core.denoisers import Denoiser
from sdekit.core.errors import UserError
from sdekit.core.noise import bcast, cos_theta, randn, solver_dtype

__all__ = ["Grid", "Stepper", "PC", "DDIM", "Heun", "DPMSolver", "ABM", "ConsistencySampler", "consistency_levels",
           "SIGMA_MID", "PREDICTORS", "CORRECTORS", "NORMS",
           "euler_maruyama_step", "reverse_diffusion_step", "ancestral_step", "langevin_step",
           "annealed_langevin_step", "ddim_step", "check_keeps_up", "LAG"]


class Grid:
    """Times ts [n+1] (float64, descending) and their noise levels sigmas; the last may be sigma = 0
    (t = 0), where every member has s = 1."""

    def __init__(self, sde, ts=None, sigmas=None):
        if sigmas is None:
            ts = torch.as_tensor(ts, dtype=torch.float64)
            sigmas = sde.sigma(ts)
        else:
            sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
            pos = sigmas > 0
            ts = torch.zeros_like(sigmas)
            ts[pos] = sde.sigma_inv(sigmas[pos]).clamp(0, sde.T)
        self.ts, self.sigmas = ts.tolist(), sigmas.tolist()
        self.scales = [1.0 if s == 0 else float(v) for s, v in zip(self.sigmas, sde.scale(ts).tolist())]

    def __len__(self) -> int:
        return len(self.ts) - 1           # number of steps


class Stepper:
    """Base: ``model`` (Denoiser), ``grid`` (Grid), ``generator``; subclasses define ``step``."""

    def __init__(self, model: Denoiser, grid: Grid, generator=None):
        self.model, self.sde, self.grid, self.generator = model, model.sde, grid, generator
        self.denoised = None                      # the last denoised estimate E[x0 | x], model space

    def t(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.grid.ts[i], dtype=x.dtype, device=x.device)

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The model's score, remembering the Tweedie estimate (x + std^2 score) / s for hooks."""
        out = self.model.score(x, t)
        s, std = self.sde.scale(t), self.sde.marginal_std(t)
        self.denoised = (x + bcast(std ** 2, x) * out) / bcast(s, x)
        return out

    def step(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def rewind(self, i: int) -> None:
        """Forget what step i left behind (multistep history); the state is back at grid point i."""


# ---- predictors and correctors on the time grid: (x at t) -> (x, x_mean) at t - dt ------------------

def euler_maruyama_step(st: Stepper, x, t, dt):
    """x <- x - [f - g^2 score] dt + g sqrt(dt) z  (reverse SDE, Song et al. eq. 6)."""
    drift, g = st.sde.reverse(st.score).sde(x, t)
    x_mean = x - drift * dt
    return x_mean + bcast(g, x) * math.sqrt(dt) * randn(x, st.generator), x_mean


def reverse_diffusion_step(st: Stepper, x, t, dt):
    """x <- x - f_i + G_i^2 score + G_i z with the SDE's own discretisation (Song et al. eq. 45)."""
    rev_f, G = st.sde.reverse(st.score).discretize(x, t, dt)
    x_mean = x - rev_f
    return x_mean + bcast(G, x) * randn(x, st.generator), x_mean


def ancestral_step(st: Stepper, x, t, dt):
    """Sample the Gaussian posterior p(x_{t-dt} | x_t, x0 = D): SMLD's ancestral step for VE (Song et al.
    eq. 47), DDPM's posterior for VP, DDIM with eta = 1 for any member."""
    sde = st.sde
    t_next = (t - dt).clamp_min(0)
    s, s_next, sig, sig_next = sde.scale(t), sde.scale(t_next), sde.sigma(t), sde.sigma(t_next)
    y = x / bcast(s, x)
    d = st.model.denoise(y, sig)
    st.denoised = d
    y_mean, y = ddim_step(y, d, sig, sig_next, 1.0, randn(x, st.generator))
    return bcast(s_next, x) * y, bcast(s_next, x) * y_mean


NORMS = ("batch", "sample")      # the Langevin corrector's norms: averaged over the batch, or each sample's own


def _annealed_step(st: Stepper, t, dt, snr: float) -> torch.Tensor:
    """NCSN's step size 2 alpha (snr std(t))^2, [B], with alpha = (s(t) / s(t - dt))^2 (1 - beta_i for VP)."""
    alpha = (st.sde.scale(t) / st.sde.scale((t - dt).clamp_min(0))) ** 2
    return 2 * alpha * (snr * st.sde.marginal_std(t)) ** 2


def langevin_step(st: Stepper, x, t, dt, snr: float, norm: str = "batch"):
    """Langevin corrector (Song et al. Alg. 4 as in score_sde's code): x <- x + eps score + sqrt(2 eps) z
    with eps = 2 alpha (snr ||z|| / ||score||)^2 and alpha = (s(t) / s(t - dt))^2 (1 - beta_i for VP),
    and eps at least NCSN's 2 alpha (snr std(t))^2 (annealed_langevin_step).

    The floor: under p_t the score's mean square is at most d / std(t)^2 (Fisher information inequality,
    Stam 1959: adding Gaussian noise of std(t) leaves at most the noise's own information), so on samples
    of p_t the rule's step is at least that floor. A smaller step means the state is wider than p_t (the
    chain lags the annealing); the rule alone then shrinks its step and lags further, and on grids coarser
    than it can follow the chain runs away (variance 10^3-10^4 x the exact one with exact scores). With
    the floor, the excess variance contracts by about (1 - 2 snr^2)^2 per step whatever the state, and
    PC checks up front that a chain without a predictor can keep up with its grid (PC).

    norm="batch" (score_sde): the norms are averaged over the batch, so the chain is unadjusted Langevin
    with one step size (unbiased as eps -> 0) that depends on the batch. norm="sample": each sample's own
    norms, a step that depends on the sample alone, so a sample does not depend on the batch it is drawn
    in; meant for many dimensions (images), where both norms concentrate. In few dimensions the ratio
    ||z|| / ||score|| is heavy-tailed and the step explodes near a mode, where the score vanishes (2-D
    mixture: spread x100)."""
    alpha = (st.sde.scale(t) / st.sde.scale((t - dt).clamp_min(0))) ** 2
    grad = st.score(x, t)
    z = randn(x, st.generator)
    g_norm, z_norm = grad.flatten(1).norm(dim=1), z.flatten(1).norm(dim=1)
    if norm == "batch":
        g_norm, z_norm = g_norm.mean(), z_norm.mean()
    eps = (2 * alpha * (snr * z_norm / g_norm.clamp_min(1e-12)) ** 2).maximum(_annealed_step(st, t, dt, snr))
    step = bcast(eps, x)
    x_mean = x + step * grad
    return x_mean + (2 * step).sqrt() * z, x_mean


def annealed_langevin_step(st: Stepper, x, t, dt, snr: float, norm: str = "batch"):
    """Annealed Langevin dynamics of NCSN (Song & Ermon 2019): step 2 alpha (snr std(t))^2, the snr rule
    with the norms' values for Gaussian noise of std(t) (||z|| ~ sqrt(d), ||score|| ~ sqrt(d) / std(t)),
    which needs no norms (``norm`` is ignored). NCSN's alpha_i = eps sigma_i^2 / sigma_L^2 is
    snr = sqrt(eps) / (2 sigma_L)."""
    grad = st.score(x, t)
    step = bcast(_annealed_step(st, t, dt, snr), x)
    x_mean = x + step * grad
    return x_mean + (2 * step).sqrt() * randn(x, st.generator), x_mean


PREDICTORS = {"em": euler_maruyama_step, "reverse_diffusion": reverse_diffusion_step,
              "ancestral": ancestral_step, "none": None}
CORRECTORS = {"langevin": langevin_step, "ald": annealed_langevin_step, "none": None}


LAG = 2.0     # the largest excess variance (x the target's) a Langevin chain alone may hold while annealing


def check_keeps_up(sde, grid: Grid, snr: float, n_corrector: int) -> None:
    """UserError unless a chain of Langevin correctors alone (no predictor) keeps up with the grid.

    Per grid level the target's variance shrinks by q = (std(t_i) / std(t_{i+1}))^2 at most (data of no
    width; wider data shrink less), and each corrector step with the floored step 2 snr^2 std^2
    (langevin_step) takes the excess variance factor c to a c + 4 snr^2 with a = (1 - 2 snr^2)^2 (exact for
    a Gaussian target). The factor then settles at c* = q (1 - a^n) / ((1 - snr^2) (1 - q a^n)) for n
    corrector steps, or grows without bound once q a^n >= 1; a grid whose largest q gives c* > LAG is
    refused, naming the step count that would do (on a grid uniform in log sigma, log q falls as 1 / steps).
    The bound is the floored step's; the snr rule's own larger steps do better."""
    r = snr ** 2
    a_n = (1 - 2 * r) ** (2 * n_corrector)
    stds = sde.marginal_std(torch.tensor(grid.ts[:-1], dtype=torch.float64))
    if len(stds) < 2:
        return
    q = float(((stds[:-1] / stds[1:]) ** 2).max())
    q_max = LAG / ((1 - a_n) / (1 - r) + LAG * a_n) if a_n < 1 else 1.0
    if q > q_max:
        need = math.ceil(len(grid) * math.log(q) / math.log(q_max)) if q_max > 1 else None
        how = f"use at least {need} steps, more n_corrector or a larger snr" if need else "use an snr below 1"
        raise UserError(f"Langevin alone at {len(grid)} steps cannot keep up with the annealing: each step shrinks "
                        f"the noise variance up to {q:.4g}x, more than {n_corrector} corrector step(s) at snr {snr:g} "
                        f"can follow (the output would be noise); {how}")


class PC(Stepper):
    """Predictor-corrector (Song et al. Alg. 1): at each t_i, ``n_corrector`` corrector steps then one
    predictor step. Plain predictors and plain Langevin are PC with "none" on the other side.

    ``norm`` (langevin_step): default "sample" when ``generator`` is a list of per-sample generators (the
    caller asks for samples that do not depend on their batch, as :func:`sdekit.models.model.generate` does,
    which norms averaged over the batch would break), else score_sde's "batch". Langevin alone (no
    predictor) refuses a grid it cannot keep up with (:func:`check_keeps_up`), before any evaluation.

    Langevin alone (predictor "none") ends, as NCSNv2's "denoise", with Tweedie's estimate
    E[x0 | x] = (x + std^2 score) / s at the last level as its noise-free output: the mean of a Langevin
    move keeps the chain's noise of std(t), which Tweedie's formula removes (no extra evaluation: the last
    corrector's own score)."""

    def __init__(self, model, grid, generator=None, predictor="reverse_diffusion", corrector="langevin",
                 snr: float = 0.16, n_corrector: int = 1, norm: str | None = None):
        super().__init__(model, grid, generator)
        if norm is None:
            norm = "sample" if isinstance(generator, (list, tuple)) else "batch"
        if norm not in NORMS:
            raise UserError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        self.predictor, self.corrector = PREDICTORS[predictor], CORRECTORS[corrector]
        self.snr, self.n_corrector, self.norm = float(snr), int(n_corrector), norm
        if self.predictor is None and self.corrector is not None and self.n_corrector > 0:
            check_keeps_up(self.sde, grid, self.snr, self.n_corrector)

    def step(self, i, x):
        t, dt = self.t(i, x), self.grid.ts[i] - self.grid.ts[i + 1]
        x_mean = x
        if self.corrector is not None:
            for _ in range(self.n_corrector):
                x, x_mean = self.corrector(self, x, t, dt, self.snr, self.norm)
            if self.predictor is None and self.n_corrector > 0:
                x_mean = self.denoised                                  # Tweedie at t_i (NCSNv2's denoise)
        if self.predictor is not None:
            x, x_mean = self.predictor(self, x, t, dt)
        return x, x_mean


# ---- fast solvers in y = x / s with sigma as time ---------------------------------------------------

def ddim_step(y, d, sig, sig_next, eta: float, z):
    """DDIM in sigma: y' = D + sigma_down (y - D) / sigma + sigma_up z, with the ancestral split
    sigma_up = eta sqrt(sig'^2 (sig^2 - sig'^2) / sig^2) = eta sig' sqrt(1 - (sig'/sig)^2),
    sigma_down = sqrt(sig'^2 - sigma_up^2) (the second forms, in noise.solver_dtype, hold no sigma^2
    that could overflow). eta = 0 is the Euler step of the ODE; eta = 1 samples the exact Gaussian
    posterior. Returns (y_mean, y')."""
    c = solver_dtype(y.dtype)
    sig, sig_next = torch.as_tensor(sig, dtype=c), torch.as_tensor(sig_next, dtype=c)
    up = (eta * sig_next * (1 - (sig_next / sig) ** 2).clamp_min(0).sqrt()).minimum(sig_next)
    down = (sig_next ** 2 - up ** 2).clamp_min(0).sqrt() if eta > 0 else sig_next
    y_mean = d + bcast(down / sig, y) * (y - d)
    return y_mean, (y_mean + bcast(up, y) * z if eta > 0 else y_mean)


class _InY(Stepper):
    """A solver in y = x / s: ``step_y(i, y) -> (y', y_mean)`` at sigma_i -> sigma_{i+1}."""

    def den(self, y, sig: float):
        d = self.model.denoise(y, sig)
        self.denoised = d
        return d

    def step(self, i, x):
        g = self.grid
        y_next, y_mean = self.step_y(i, x / g.scales[i])
        return g.scales[i + 1] * y_next, g.scales[i + 1] * y_mean


class DDIM(_InY):
    """DDIM (Song, Meng & Ermon 2021) as the first-order solver in sigma; eta > 0 adds noise."""

    def __init__(self, model, grid, generator=None, eta: float = 0.0):
        super().__init__(model, grid, generator)
        self.eta = float(eta)

    def step_y(self, i, y):
        sig, sig_next = self.grid.sigmas[i], self.grid.sigmas[i + 1]
        d = self.den(y, sig)
        y_mean, y_next = ddim_step(y, d, sig, sig_next, self.eta, randn(y, self.generator) if self.eta > 0 else None)
        return y_next, y_mean


class Heun(_InY):
    """EDM's 2nd-order sampler (Karras et al. Alg. 2); churn > 0 adds its stochastic step."""

    def __init__(self, model, grid, generator=None, churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = float("inf"), s_noise: float = 1.0):
        super().__init__(model, grid, generator)
        self.churn, self.s_tmin, self.s_tmax, self.s_noise = float(churn), float(s_tmin), float(s_tmax), float(s_noise)

    def step_y(self, i, y):
        n, sig, sig_next = len(self.grid), self.grid.sigmas[i], self.grid.sigmas[i + 1]
        gamma = min(self.churn / n, math.sqrt(2) - 1) if self.s_tmin <= sig <= self.s_tmax else 0.0
        sig_hat = sig * (1 + gamma)                                                     # Alg. 2 line 5
        if gamma > 0:
            y = y + math.sqrt(sig_hat ** 2 - sig ** 2) * self.s_noise * randn(y, self.generator)  # line 6
        d = (y - self.den(y, sig_hat)) / sig_hat                                           # line 7
        y_next = y + (sig_next - sig_hat) * d                                              # line 8
        if sig_next > 0:                                                                   # lines 9-11
            d_next = (y_next - self.den(y_next, sig_next)) / sig_next
            y_next = y + (sig_next - sig_hat) * 0.5 * (d + d_next)
        return y_next, y_next


def _lagrange(nodes: list[float], j: int, v: float) -> float:
    """The j-th Lagrange basis polynomial on ``nodes`` at v."""
    return math.prod((v - nk) / (nodes[j] - nk) for k, nk in enumerate(nodes) if k != j)


def _exp_weights(nodes: list[float], lam: float, lam_next: float, var=None, n_nodes: int = 16) -> list[float]:
    """w_j = int_{lam}^{lam'} e^{u - lam'} l_j(var(u)) du, l_j the Lagrange basis on ``nodes`` (values of the
    interpolation variable var; default var(u) = u), by Gauss-Legendre quadrature in u: exact to rounding
    for polynomials in u, and for the smooth var of these solvers over steps of any length used here."""
    xi, om = _leggauss(n_nodes)
    h = lam_next - lam
    us = [lam + h * (x + 1) / 2 for x in xi]
    vs = us if var is None else [var(u) for u in us]
    return [sum(h / 2 * o * math.exp(u - lam_next) * _lagrange(nodes, j, v) for o, u, v in zip(om, us, vs))
            for j in range(len(nodes))]


def _exp_ab_weights(lams: list[float], lam_next: float, n_nodes: int = 12) -> list[float]:
    """Adams-Bashforth weights in lambda: nodes ``lams`` (last = lam, the current point), see _exp_weights."""
    return _exp_weights(lams, lams[-1], lam_next, n_nodes=n_nodes)


@functools.lru_cache(maxsize=None)
def _leggauss(n: int):
    import numpy as np
    xi, om = np.polynomial.legendre.leggauss(n)
    return xi.tolist(), om.tolist()


class DPMSolver(_InY):
    """DPM-Solver++ multistep (Lu et al. 2022) in lambda = -log sigma with data prediction D:
    y' = e^-h y + int_lam^lam' e^(u - lam') D(u) du  with D extrapolated from past evaluations.

    order=2: DPM-Solver++(2M) (Alg. 2); first order on the first step and on a last step to sigma = 0.
    order=3: D interpolated by a polynomial in lambda through the last 3 evaluations and the integral
    taken exactly (exponential Adams-Bashforth); a last step to sigma = 0 extrapolates D along the
    path to sigma = 0 in sigma^2 (D(y(sigma), sigma) is even in sigma), with no extra evaluation."""

    def __init__(self, model, grid, generator=None, order: int = 2):
        super().__init__(model, grid, generator)
        if order not in (2, 3):
            raise UserError(f"dpm_solver order must be 2 or 3, got {order}")
        self.order, self.hist = int(order), []            # hist: (i, lambda, sigma, D) of past steps

    def rewind(self, i):
        self.hist = [h for h in self.hist if h[0] < i]

    def step_y(self, i, y):
        sig, sig_next = self.grid.sigmas[i], self.grid.sigmas[i + 1]
        d = self.den(y, sig)
        past = [h for h in self.hist if h[0] < i][-2:]
        self.hist = past + [(i, -math.log(sig), sig, d)]
        if sig_next == 0:
            if self.order == 3 and past:          # D(0) ~ D + (D - D_prev) s^2 / (s_prev^2 - s^2)
                s_prev = past[-1][2]
                d = d + (d - past[-1][3]) * (sig ** 2 / (s_prev ** 2 - sig ** 2))
            return d, d
        h = math.log(sig / sig_next)                                          # lambda' - lambda
        if self.order == 3 and past:
            lams = [p[1] for p in past] + [-math.log(sig)]
            ws = _exp_ab_weights(lams, -math.log(sig_next))
            y = (sig_next / sig) * y + sum(w * dd for w, dd in zip(ws, [p[3] for p in past] + [d]))
            return y, y
        d_hat = d
        if past:
            r = (-math.log(sig) - past[-1][1]) / h
            d_hat = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * past[-1][3]
        y = (sig_next / sig) * y - math.expm1(-h) * d_hat                      # (s'/s) y + (1 - e^-h) D
        return y, y


def _cos_of_lambda(lam: float) -> float:
    return cos_theta(math.exp(-lam))


class ABM(_InY):
    """Adams-Bashforth-Moulton predictor-corrector for few evaluations, in y with sigma as time.

    Every step is exact in its linear part, y' = (sigma'/sigma) y + int_lam^lam' e^(u - lam') D(u) du with
    lam = -log sigma (as DPM-Solver++), but D is interpolated by a polynomial in c = cos theta =
    sigma_data / sqrt(sigma_data^2 + sigma^2) (sdekit.core.noise.cos_theta), not in lam. Along the flow
    D - E[x0] ~ 1/sigma ~ c at large sigma and D - x0 ~ sigma^2 ~ 1 - c at small sigma, so a low-degree
    polynomial in c follows D over long steps where one in lam, which levels off at neither end, overshoots;
    for Gaussian data of std sigma_data, D is linear in c and the solver is exact.

    * Predictor (Adams-Bashforth): the polynomial through the last ``order`` evaluations.
    * Corrector (Adams-Moulton; UniPC's use of it, Zhao et al. 2023): once D is evaluated at the predicted
      state at sigma_i, the step i-1 -> i is redone with that evaluation among its order + 1 nodes. It
      costs no evaluation (D is not re-evaluated at the corrected state) and depends on the D's alone, so
      the correction is added to whatever state a step hook left; a rewound step is not corrected.
    * Last step to sigma = 0: D extrapolated to c = 1 through the last order + 1 evaluations, plus the
      last correction, i.e. the corrected state minus the noise the predicted state holds. From further
      than 0.05 in c (a last level above about sigma_data / 3: fewer than 5 steps from sigma(T)) the
      polynomial overshoots and the extrapolation is linear through the last two evaluations, and from
      further than 0.1 (above about sigma_data / 2) it is the last D alone (measured on the benchmark's
      mixtures with 2 to 5 evaluations).

    ``order``: 3 (default; the corrector's is 4) or 2. N evaluations are N steps."""

    def __init__(self, model, grid, generator=None, order: int = 3):
        super().__init__(model, grid, generator)
        if order not in (2, 3):
            raise UserError(f"abm order must be 2 or 3, got {order}")
        self.order = int(order)
        self.hist = []             # (i, c, D) of past evaluations
        self.pending = None        # (i, c-nodes, D's, predictor weights) of the step that reached grid point i

    def rewind(self, i):
        self.hist = [h for h in self.hist if h[0] < i]
        self.pending = None

    def step_y(self, i, y):
        sig, sig_next = self.grid.sigmas[i], self.grid.sigmas[i + 1]
        c, d = cos_theta(sig), self.den(y, sig)
        self.hist = [h for h in self.hist if h[0] < i][-self.order:] + [(i, c, d)]
        correction = 0
        if self.pending is not None and self.pending[0] == i:          # Adams-Moulton on step i-1 -> i
            _, cs, ds, w_pred = self.pending
            w = _exp_weights(cs + [c], -math.log(self.grid.sigmas[i - 1]), -math.log(sig), _cos_of_lambda)
            correction = sum(wj * dj for wj, dj in zip(w, ds + [d])) - sum(wj * dj for wj, dj in zip(w_pred, ds))
            y = y + correction
        self.pending = None
        if sig_next == 0:                     # extrapolate D to c = 1, by a lower degree from further away
            nodes = self.hist[-(1 if 1 - c > 0.1 else 2 if 1 - c > 0.05 else len(self.hist)):]
            cs, ds = [h[1] for h in nodes], [h[2] for h in nodes]
            x0 = sum(_lagrange(cs, j, 1.0) * dj for j, dj in enumerate(ds)) + correction
            return x0, x0
        cs, ds = [h[1] for h in self.hist[-self.order:]], [h[2] for h in self.hist[-self.order:]]
        w = _exp_weights(cs, -math.log(sig), -math.log(sig_next), _cos_of_lambda)
        self.pending = (i + 1, cs, ds, w)
        y = (sig_next / sig) * y + sum(wj * dj for wj, dj in zip(w, ds))             # Adams-Bashforth
        return y, y


SIGMA_MID = 0.821      # the second level of two-step consistency sampling (Song & Dhariwal 2023, CIFAR-10)


def consistency_levels(sigma_start: float, sigma_end: float, steps: int, sigma_min: float) -> list[float]:
    """The default noise levels of the "consistency" sampler, [steps] descending: sigma_start (sigma(T),
    or sigma(t0) for SDEdit), then steps - 1 levels of the Karras grid (rho = 7) from
    m = min(SIGMA_MID, sigma_start / 2) down to the boundary level, its last point dropped: with 2 steps
    the levels are sigma_start and m, i.e. 80 and 0.821 for an EDM model, the two-step grid of Song &
    Dhariwal (2023) on CIFAR-10. Levels below ``sigma_end`` (the sampler's eps) are raised to it."""
    from sdekit.core.noise import karras
    if steps == 1:
        return [float(sigma_start)]
    m = min(SIGMA_MID, sigma_start / 2)
    rest = karras(m, max(sigma_min, 1e-12), steps).tolist()[:-1]
    return [float(sigma_start)] + [max(v, sigma_end) for v in rest]


class ConsistencySampler(_InY):
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1) on the grid tau_0 > ... > tau_n:

        x <- f(y, tau_0);  for each further level: y <- x + sqrt(tau_i^2 - sigma_min^2) z, x <- f(y, tau_i)

    with f the model's denoise (a consistency model's f(y, sigma), :class:`sdekit.core.denoisers.Consistency`)
    and sigma_min its boundary level (0 for a model that is not a consistency model: then each step jumps
    to E[x0 | y] and renoises). A last level 0 returns f itself; ``steps`` levels are ``steps`` evaluations,
    one step is one-step generation. A step hook sees y at each level tau_i, so SDEdit starts at
    sigma(t0) and inpainting re-imposes the known pixels noised to tau_i (the paper's zero-shot editing)."""

    def __init__(self, model, grid, generator=None):
        super().__init__(model, grid, generator)
        self.sigma_min = float(model.sigma_min or 0.0)

    def step_y(self, i, y):
        sig, sig_next = self.grid.sigmas[i], self.grid.sigmas[i + 1]
        x0 = self.den(y, sig)
        if sig_next == 0:
            return x0, x0
        std = math.sqrt(max(sig_next ** 2 - self.sigma_min ** 2, 0.0))
        y = x0 + std * randn(x0, self.generator)
        return y, y

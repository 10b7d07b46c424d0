"""The samplers: one :class:`~sdekit.solvers.solver.Solver` class each, registered with its traits, moving x
from grid point i to i + 1.

A solver holds the model (a :class:`~sdekit.core.denoisers.Denoiser`), the grid (times t_i and noise
levels sigma_i, descending) and the generator; ``step(i, x)`` returns (x_{i+1}, x_mean), the new
state and its noise-free mean. The loop around them (step hooks, RePaint rewinds, progress,
counting) is :func:`sdekit.solvers.loop.solve`; the registry that names them is sdekit.solvers.registry.

* On the SDE's own time grid (Song et al. 2021): Euler-Maruyama, reverse diffusion, ancestral
  sampling, the Langevin correctors and predictor-corrector, all one :class:`PredictorCorrector`
  with fixed predictor and corrector.
* The probability-flow ODE by adaptive RK45 (:class:`ODE`).
* In y = x / s(t) with sigma as time, where every member is EDM's ODE
  dy/dsigma = (y - D(y; sigma)) / sigma  (Karras et al. eq. 4): DDIM, EDM's Heun, DPM-Solver++, and
  an Adams-Bashforth-Moulton predictor-corrector for few evaluations (ABM).
* Multistep consistency sampling (Song et al. 2023, Algorithm 1) for consistency models, whose D is
  the consistency function f(y, sigma) (:class:`Consistency`).

Adding a sampler is one class here (or anywhere, decorated with ``@register``) and one test.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from sdekit.core.errors import UserError
from sdekit.core.noise import as_batch, bcast, cos_theta, randn, sigma_schedule, solver_dtype
from sdekit.solvers.ode import DormandPrince
from sdekit.solvers.solver import RHO, SCHEDULE, Grid, Option, Solver, count, nonneg, one_of, positive, register
from sdekit.core.noise import karras

__all__ = ["Grid", "Solver", "Stepper", "PredictorCorrector", "EM", "ReverseDiffusion", "Ancestral", "Langevin", "ALD",
           "PC", "ODE", "FastSolver", "DDIM", "Heun", "DPMSolver", "ABM", "ConsistencySampler", "consistency_levels",
           "Evaluation", "Prediction",
           "SIGMA_MID", "PREDICTORS", "CORRECTORS", "NORMS",
           "euler_maruyama_step", "reverse_diffusion_step", "ancestral_step", "langevin_step",
           "annealed_langevin_step", "ddim_step", "check_keeps_up", "LAG"]


Stepper = Solver          # the older name of the solver base


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


class PredictorCorrector(Solver):
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

    kind, stochastic = "sde", True

    @classmethod
    def evals_per_step(cls, options):
        p = 0 if options.get("predictor", "reverse_diffusion") == "none" else 1
        c = 0 if options.get("corrector", "langevin") == "none" else int(options.get("n_corrector", 1))
        return p + c

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


PC_OPTIONS = {
    "predictor": Option("reverse_diffusion", one_of(tuple(PREDICTORS)), "predictor of each step"),
    "corrector": Option("langevin", one_of(tuple(CORRECTORS)), "corrector before each predictor step"),
    "snr": Option(0.16, positive, "Langevin target signal-to-noise ratio"),
    "n_corrector": Option(1, count, "corrector steps per grid point"),
}
NORM = Option(None, one_of(NORMS), "Langevin step from norms averaged over the batch or each sample's own "
              "(default: each sample's with per-sample generators, else the batch's)")
GRID = {"schedule": SCHEDULE, "rho": RHO}
N_LANGEVIN = Option(1, count, "Langevin steps per grid point")


@register
class EM(PredictorCorrector):
    name, summary, aliases = "em", "Euler-Maruyama on the reverse SDE", ("euler_maruyama",)
    default_steps, options, fixed = 500, GRID, {"predictor": "em", "corrector": "none"}


@register
class ReverseDiffusion(PredictorCorrector):
    name, summary = "reverse_diffusion", "reverse diffusion predictor (the SDE's own discretisation)"
    default_steps, options, fixed = 500, GRID, {"predictor": "reverse_diffusion", "corrector": "none"}


@register
class Ancestral(PredictorCorrector):
    name, summary = "ancestral", "ancestral sampling (posterior of the discretised chain)"
    default_steps, options, fixed = 500, GRID, {"predictor": "ancestral", "corrector": "none"}


@register
class Langevin(PredictorCorrector):
    """The Langevin corrector alone. The Langevin samplers alone ("langevin", "ald") finish on a geometric grid
    (NCSN's noise levels, uniform in log sigma) with Tweedie's last step (PC): the snr rule's chain keeps up
    with the annealing when the grid's step in log sigma is well below the step's 2 snr^2 (1000 levels from
    VP's sigma 152 to 0.01: 0.0096 against 0.051); on score_sde's grid, uniform in t, the last levels are
    crossed in few steps and the chain lags (default MNIST model, 1000 steps: residual 0.68 on that grid
    without the Tweedie step; 0.34 for both on the geometric grid with it, as heun's 0.32)."""
    name, summary = "langevin", "Langevin corrector alone (snr rule), geometric grid, Tweedie's last step"
    default_steps, schedule = 1000, "logsnr"
    options = {"snr": PC_OPTIONS["snr"], "n_corrector": N_LANGEVIN, "norm": NORM, **GRID}
    fixed = {"predictor": "none", "corrector": "langevin"}


@register
class ALD(PredictorCorrector):
    """Annealed Langevin dynamics (NCSN) alone, on the geometric grid as :class:`Langevin`. Default 2000
    steps: at 1000 its 2-D mixture weights are off (energy distance 7x the floor, 3x at 2000)."""
    name, summary = "ald", "annealed Langevin dynamics (NCSN), geometric grid, Tweedie's last step"
    default_steps, schedule = 2000, "logsnr"
    options = {"snr": PC_OPTIONS["snr"], "n_corrector": N_LANGEVIN, **GRID}
    fixed = {"predictor": "none", "corrector": "ald"}


@register
class PC(PredictorCorrector):
    name, summary = "pc", "predictor-corrector (reverse diffusion + Langevin by default)"
    default_steps, options = 500, {**PC_OPTIONS, "norm": NORM, **GRID}


# ---- the probability-flow ODE, adaptive ---------------------------------------------------------------

@register
class ODE(Solver):
    """Probability-flow ODE dx/dt = f x - g^2 score / 2 from t_start to eps by adaptive RK45 (score_sde's
    sampler, in torch: :class:`sdekit.solvers.ode.DormandPrince`), one accepted step per :meth:`step`; the
    grid holds the times reached so far. Denoising ends with Tweedie's E[x0 | x] at eps (one evaluation).
    A step hook that replaces the state makes the next step evaluate the drift afresh; no rewinds.
    Either direction: a grid from eps up to T integrates forward (encoding)."""
    name, summary, kind = "ode", "probability-flow ODE, adaptive RK45", "adaptive"
    adaptive = True
    options = {"rtol": Option(1e-5, positive, "relative tolerance"),
               "atol": Option(1e-5, positive, "absolute tolerance")}

    @classmethod
    def evaluations(cls, steps, options=None):
        return None

    @classmethod
    def grid(cls, sde, steps, t_start, eps, denoise, schedule=None, rho=7.0, sigmas=None, sigma_min=0.0):
        """Its ends only, t_start and eps; UserError for an explicit ``sigmas`` grid."""
        if sigmas is not None:
            raise UserError("the adaptive 'ode' sampler takes no sigmas grid")
        return Grid(sde, ts=[t_start, eps])

    def __init__(self, model, grid, generator=None, rtol: float = 1e-5, atol: float = 1e-5):
        super().__init__(model, grid, generator)
        self.rtol, self.atol, self.end = float(rtol), float(atol), grid.ts[-1]
        self.grid.ts, self.grid.sigmas, self.grid.scales = grid.ts[:1], grid.sigmas[:1], grid.scales[:1]
        self.rk, self.x = None, None

    def drift(self, t: float, y: torch.Tensor) -> torch.Tensor:
        x = y.reshape(self.shape)
        return self.sde.ode_drift(self.model.score, x, as_batch(t, x)).reshape(-1)

    def done(self, i):
        return self.rk is not None and self.rk.done

    def numbered(self, i):
        return -1, -1                              # its steps are not numbered in advance

    def step(self, i, x):
        if self.rk is None:
            self.shape = x.shape
            counter = getattr(self.model, "counter", None)             # a counted model names a bad number
            self.rk = DormandPrince(self.drift, x.reshape(-1), self.grid.ts[0], self.end, self.rtol, self.atol,
                                    on_bad=counter.verdict if counter is not None else None)
        elif x is not self.x:                      # a hook replaced the state: the drift there is new
            self.rk.restart(x.reshape(-1))
        t, y = self.rk.step()
        self.x = y.reshape(self.shape)
        sigma = float(self.sde.sigma(torch.tensor(t, dtype=torch.float64)))
        self.grid.ts.append(t)
        self.grid.sigmas.append(sigma)
        return self.x, self.x

    def finish(self, x, x_mean):
        return self.model.x0(x, as_batch(self.end, x))

    def rewind(self, i):
        raise UserError("the adaptive 'ode' sampler has no fixed grid to rewind on")


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


class FastSolver(Solver):
    """A solver in y = x / s on a grid of noise levels: ``step_y(i, y) -> (y', y_mean)`` at sigma_i ->
    sigma_{i+1}. Its grid ends at sigma = 0 when denoising (the last step is the denoised output).
    ``schedule`` None: the SDE's own (``sde.schedule``: uniform in t, EDM's Karras grid)."""
    kind = "fast"
    schedule = None

    @classmethod
    def steps_scale_with_span(cls):
        return False

    @classmethod
    def grid(cls, sde, steps, t_start, eps, denoise, schedule=None, rho=7.0, sigmas=None, sigma_min=0.0):
        """``steps`` noise levels of ``schedule`` (default: the class's, else the SDE's) from sigma(t_start) to
        sigma(eps), and a last step to sigma = 0 when denoising (else steps + 1 levels); or the explicit
        ``sigmas``."""
        if sigmas is not None:
            return Grid(sde, sigmas=sigmas)
        kind = schedule or cls.schedule or sde.schedule
        levels = sigma_schedule(sde, steps if denoise else steps + 1, kind, eps, rho, t_start=t_start)
        return Grid(sde, sigmas=torch.cat([levels, levels.new_zeros(1)]) if denoise else levels)

    def finish(self, x, x_mean):
        return x

    def step(self, i, x):
        g = self.grid
        y_next, y_mean = self.step_y(i, x / g.scales[i])
        return g.scales[i + 1] * y_next, g.scales[i + 1] * y_mean


@register
class DDIM(FastSolver):
    """DDIM (Song, Meng & Ermon 2021) as the first-order solver in sigma; eta > 0 adds noise."""
    name, summary, default_steps = "ddim", "DDIM (eta > 0: stochastic)", 50
    fitted_grids = True
    options = {"eta": Option(0.0, nonneg, "noise of each step (1: ancestral)"), **GRID}

    def __init__(self, model, grid, generator=None, eta: float = 0.0):
        super().__init__(model, grid, generator)
        self.eta = float(eta)

    def step_y(self, i, y):
        sig, sig_next = self.grid.sigmas[i], self.grid.sigmas[i + 1]
        d = self.denoised = self.model.denoise(y, sig)
        y_mean, y_next = ddim_step(y, d, sig, sig_next, self.eta, randn(y, self.generator) if self.eta > 0 else None)
        return y_next, y_mean


@register
class Heun(FastSolver):
    """EDM's 2nd-order sampler (Karras et al. Alg. 2); churn > 0 adds its stochastic step. Two evaluations
    per step, one on a last step to sigma = 0 (Euler there)."""
    name, summary, default_steps, schedule = "heun", "EDM's 2nd-order Heun, Karras grid", 20, "karras"
    options = {"churn": Option(0.0, nonneg, "EDM's S_churn (stochasticity)"),
               "s_tmin": Option(0.0, nonneg, "churn only above this sigma"),
               "s_tmax": Option(float("inf"), lambda v: None if isinstance(v, (int, float)) and v >= 0
                                else "a number >= 0", "churn only below this sigma"),
               "s_noise": Option(1.0, positive, "EDM's S_noise"), **GRID}

    @classmethod
    def evals_per_step(cls, options):
        return 2

    @classmethod
    def evaluations(cls, steps, options=None):
        return super().evaluations(steps, options) - 1          # the last step, to sigma = 0, is Euler's

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
        self.denoised = self.model.denoise(y, sig_hat)
        d = (y - self.denoised) / sig_hat                                                  # line 7
        y_next = y + (sig_next - sig_hat) * d                                              # line 8
        if sig_next > 0:                                                                   # lines 9-11
            self.denoised = self.model.denoise(y_next, sig_next)
            d_next = (y_next - self.denoised) / sig_next
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


@dataclass(frozen=True)
class Evaluation:
    """One past evaluation of a multistep solver: at grid point ``i``, noise level ``sigma``, the denoised
    ``d`` = D(y_i; sigma) [B, ...] (y space)."""
    i: int
    sigma: float
    d: torch.Tensor

    @property
    def lam(self) -> float:
        """lambda = -log sigma (half the log-SNR), DPM-Solver's time."""
        return -math.log(self.sigma)

    @property
    def c(self) -> float:
        """cos theta of sigma (noise.cos_theta), ABM's interpolation variable."""
        return cos_theta(self.sigma)


def _before(hist: list[Evaluation], i: int) -> list[Evaluation]:
    """The evaluations of a history made before grid point i (a rewound step's are dropped)."""
    return [h for h in hist if h.i < i]


@register
class DPMSolver(FastSolver):
    """DPM-Solver++ multistep (Lu et al. 2022) in lambda = -log sigma with data prediction D:
    y' = e^-h y + int_lam^lam' e^(u - lam') D(u) du  with D extrapolated from past evaluations.

    order=2: DPM-Solver++(2M) (Alg. 2); first order on the first step and on a last step to sigma = 0.
    order=3: D interpolated by a polynomial in lambda through the last 3 evaluations and the integral
    taken exactly (exponential Adams-Bashforth); a last step to sigma = 0 extrapolates D along the
    path to sigma = 0 in sigma^2 (D(y(sigma), sigma) is even in sigma), with no extra evaluation."""
    name, default_steps, schedule = "dpm_solver", 20, "logsnr"
    summary = "DPM-Solver++(2M), log-SNR grid or the model's fitted grid"
    fitted_grids = True
    options = {"order": Option(2, one_of((2, 3)), "multistep order"), **GRID}

    def __init__(self, model, grid, generator=None, order: int = 2):
        super().__init__(model, grid, generator)
        if order not in (2, 3):
            raise UserError(f"dpm_solver order must be 2 or 3, got {order}")
        self.order, self.hist = int(order), []            # hist: Evaluation of past steps

    def rewind(self, i):
        self.hist = _before(self.hist, i)

    def step_y(self, i, y):
        sig, sig_next = self.grid.sigmas[i], self.grid.sigmas[i + 1]
        d = self.denoised = self.model.denoise(y, sig)
        now = Evaluation(i, sig, d)
        past = _before(self.hist, i)[-2:]
        self.hist = past + [now]
        if sig_next == 0:
            if self.order == 3 and past:          # D(0) ~ D + (D - D_prev) s^2 / (s_prev^2 - s^2)
                prev = past[-1]
                d = d + (d - prev.d) * (sig ** 2 / (prev.sigma ** 2 - sig ** 2))
            return d, d
        h = math.log(sig / sig_next)                                          # lambda' - lambda
        if self.order == 3 and past:
            ws = _exp_ab_weights([p.lam for p in self.hist], -math.log(sig_next))
            y = (sig_next / sig) * y + sum(w * p.d for w, p in zip(ws, self.hist))
            return y, y
        d_hat = d
        if past:
            r = (now.lam - past[-1].lam) / h
            d_hat = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * past[-1].d
        y = (sig_next / sig) * y - math.expm1(-h) * d_hat                      # (s'/s) y + (1 - e^-h) D
        return y, y


def _cos_of_lambda(lam: float) -> float:
    return cos_theta(math.exp(-lam))


@register
class ABM(FastSolver):
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

    name, summary = "abm", "Adams-Bashforth-Moulton predictor-corrector in cos theta, cosine grid (fewest evaluations)"
    default_steps, schedule = 20, "cosine"
    options = {"order": Option(3, one_of((2, 3)), "predictor order (the corrector's is one more)"), **GRID}

    def __init__(self, model, grid, generator=None, order: int = 3):
        super().__init__(model, grid, generator)
        if order not in (2, 3):
            raise UserError(f"abm order must be 2 or 3, got {order}")
        self.order = int(order)
        self.hist: list[Evaluation] = []          # past evaluations
        self.pending: Prediction | None = None    # the predictor of the step that reached its grid point

    def rewind(self, i):
        self.hist = _before(self.hist, i)
        self.pending = None

    def step_y(self, i, y):
        sig, sig_next = self.grid.sigmas[i], self.grid.sigmas[i + 1]
        d = self.denoised = self.model.denoise(y, sig)
        now = Evaluation(i, sig, d)
        self.hist = _before(self.hist, i)[-self.order:] + [now]
        correction = 0
        if self.pending is not None and self.pending.i == i:          # Adams-Moulton on step i-1 -> i
            p = self.pending
            w = _exp_weights([e.c for e in p.nodes] + [now.c], -math.log(self.grid.sigmas[i - 1]), -math.log(sig),
                             _cos_of_lambda)
            correction = (sum(wj * e.d for wj, e in zip(w, p.nodes + [now]))
                          - sum(wj * e.d for wj, e in zip(p.weights, p.nodes)))
            y = y + correction
        self.pending = None
        if sig_next == 0:                     # extrapolate D to c = 1, by a lower degree from further away
            c = now.c
            nodes = self.hist[-(1 if 1 - c > 0.1 else 2 if 1 - c > 0.05 else len(self.hist)):]
            cs = [e.c for e in nodes]
            x0 = sum(_lagrange(cs, j, 1.0) * e.d for j, e in enumerate(nodes)) + correction
            return x0, x0
        nodes = self.hist[-self.order:]
        w = _exp_weights([e.c for e in nodes], -math.log(sig), -math.log(sig_next), _cos_of_lambda)
        self.pending = Prediction(i + 1, nodes, w)
        y = (sig_next / sig) * y + sum(wj * e.d for wj, e in zip(w, nodes))             # Adams-Bashforth
        return y, y


@dataclass(frozen=True)
class Prediction:
    """ABM's Adams-Bashforth step that reached grid point ``i``: its ``nodes`` (Evaluation) and ``weights``,
    kept for the Adams-Moulton correction once D is evaluated at i."""
    i: int
    nodes: list
    weights: list


SIGMA_MID = 0.821      # the second level of two-step consistency sampling (Song & Dhariwal 2023, CIFAR-10)


def consistency_levels(sigma_start: float, sigma_end: float, steps: int, sigma_min: float) -> list[float]:
    """The default noise levels of the "consistency" sampler, [steps] descending: sigma_start (sigma(T),
    or sigma(t0) for SDEdit), then steps - 1 levels of the Karras grid (rho = 7) from
    m = min(SIGMA_MID, sigma_start / 2) down to the boundary level, its last point dropped: with 2 steps
    the levels are sigma_start and m, i.e. 80 and 0.821 for an EDM model, the two-step grid of Song &
    Dhariwal (2023) on CIFAR-10. Levels below ``sigma_end`` (the sampler's eps) are raised to it."""
    if steps == 1:
        return [float(sigma_start)]
    m = min(SIGMA_MID, sigma_start / 2)
    rest = karras(m, max(sigma_min, 1e-12), steps).tolist()[:-1]
    return [float(sigma_start)] + [max(v, sigma_end) for v in rest]


@register
class ConsistencySampler(FastSolver):
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1) on the grid tau_0 > ... > tau_n:

        x <- f(y, tau_0);  for each further level: y <- x + sqrt(tau_i^2 - sigma_min^2) z, x <- f(y, tau_i)

    with f the model's denoise (a consistency model's f(y, sigma), :class:`sdekit.core.denoisers.Consistency`)
    and sigma_min its boundary level (0 for a model that is not a consistency model: then each step jumps
    to E[x0 | y] and renoises). A last level 0 returns f itself; ``steps`` levels are ``steps`` evaluations,
    one step is one-step generation. A step hook sees y at each level tau_i, so SDEdit starts at
    sigma(t0) and inpainting re-imposes the known pixels noised to tau_i (the paper's zero-shot editing)."""

    name, summary = "consistency", "multistep consistency sampling (Song et al. 2023 Alg. 1), for consistency models"
    default_steps, schedule, stochastic = 2, "karras", True

    @classmethod
    def grid(cls, sde, steps, t_start, eps, denoise, schedule=None, rho=7.0, sigmas=None, sigma_min=0.0):
        """Its own levels (:func:`consistency_levels`; ``sigma_min``: the model's boundary level) and a last
        step to sigma = 0 when denoising, unless a ``schedule`` or explicit ``sigmas`` are given."""
        if sigmas is not None or schedule is not None:
            return super().grid(sde, steps, t_start, eps, denoise, schedule, rho, sigmas, sigma_min)
        smax, smin = sde.sigma(torch.tensor([t_start, eps], dtype=torch.float64)).tolist()
        levels = torch.tensor(consistency_levels(smax, smin, steps, sigma_min), dtype=torch.float64)
        end = levels.new_zeros(1) if denoise else levels.new_full((1,), smin)
        return Grid(sde, sigmas=torch.cat([levels, end]))

    def __init__(self, model, grid, generator=None):
        super().__init__(model, grid, generator)
        self.sigma_min = float(model.sigma_min or 0.0)

    def step_y(self, i, y):
        sig, sig_next = self.grid.sigmas[i], self.grid.sigmas[i + 1]
        x0 = self.denoised = self.model.denoise(y, sig)
        if sig_next == 0:
            return x0, x0
        std = math.sqrt(max(sig_next ** 2 - self.sigma_min ** 2, 0.0))
        y = x0 + std * randn(x0, self.generator)
        return y, y

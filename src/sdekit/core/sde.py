"""The SDE family: closed forms only, no network code.

Every member is a linear SDE  dx = f(t) x dt + g(t) dw  whose perturbation kernel is

    p_0t(x_t | x_0) = N(s(t) x_0, s(t)^2 sigma(t)^2 I),                     (kernel)

with  f(t) = s'(t)/s(t)  and  g(t)^2 = s(t)^2 d[sigma(t)^2]/dt  (EDM, Karras et al. 2022, eqs. 28, 34).
A subclass states s(t), sigma(t), their log-derivatives and the prior; the reverse-time SDE and the
probability-flow ODE (Song et al. 2021, eqs. 6 and 13) are derived once, here, for all of them.
In the scaled variable y = x / s(t) every member is EDM's  dy = sqrt(d sigma^2/dt) dw, which is what
the fast solvers integrate (samplers.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sdekit.core.noise import as_batch, bcast, randn
from sdekit.core.errors import UserError

__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE", "EDMSDE", "FlowSDE", "DiscreteVPSDE", "ReverseSDE", "get_sde",
           "BETA_SCHEDULES"]


# Kept for callers of the older private names.
_bcast, _as_t = bcast, as_batch


class SDE:
    """A linear SDE of the family (kernel). Subclasses define the closed forms below.

    Attributes: ``T`` (end time), ``eps`` (smallest time samplers go to), ``N`` (discretisation
    steps used by :meth:`discretize` when no ``dt`` is given), ``schedule`` (the grid the fast ODE
    solvers walk unless told otherwise, a key of sdekit.core.noise.SCHEDULES: "uniform", uniform in t
    from T to eps, the member's own clock, as score_sde's samplers and diffusers' "linspace" spacing;
    EDM, whose t is sigma, takes its Karras grid).
    """

    T: float = 1.0
    eps: float = 1e-3
    N: int = 1000
    schedule: str = "uniform"

    # -- closed forms a member provides ------------------------------------------------------
    def scale(self, t: torch.Tensor) -> torch.Tensor:
        """s(t): the mean coefficient of the kernel."""
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma(t): noise-to-signal ratio, the kernel std is s(t) sigma(t)."""
        raise NotImplementedError

    def sigma_inv(self, sigma: torch.Tensor) -> torch.Tensor:
        """t(sigma): the time at which sigma(t) equals sigma."""
        raise NotImplementedError

    def drift_coef(self, t: torch.Tensor) -> torch.Tensor:
        """f(t) = d log s / dt."""
        raise NotImplementedError

    def diffusion_sq(self, t: torch.Tensor) -> torch.Tensor:
        """g(t)^2 = s(t)^2 d[sigma(t)^2]/dt."""
        raise NotImplementedError

    @property
    def prior_std(self) -> float:
        """Std of the isotropic Gaussian prior p_T."""
        raise NotImplementedError

    # -- derived, once for the whole family ---------------------------------------------------
    def sde(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward SDE coefficients: drift f(t) x and diffusion g(t) (shape [B])."""
        t = as_batch(t, x)
        return bcast(self.drift_coef(t), x) * x, self.diffusion_sq(t).sqrt()

    def marginal_prob(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean s(t) x0 and std s(t) sigma(t) (shape [B]) of p_0t(x_t | x_0)."""
        t = as_batch(t, x0)
        s = self.scale(t)
        return bcast(s, x0) * x0, s * self.sigma(t)

    def marginal_std(self, t: torch.Tensor) -> torch.Tensor:
        return self.scale(t) * self.sigma(t)

    def perturb(self, x0: torch.Tensor, t, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """A draw of x_t ~ p_0t(. | x0) = N(s(t) x0, s(t)^2 sigma(t)^2 I) (kernel); ``noise`` may be given.

        x0: [B, ...]; t: float or [B]. The one place the forward kernel is sampled (training,
        SDEdit, imputation and classifiers all call it)."""
        mean, std = self.marginal_prob(x0, t)
        return mean + bcast(std, x0) * (randn(x0, generator) if noise is None else noise)

    def transition(self, x: torch.Tensor, t_from, t_to, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw of x(t_to) ~ p(. | x(t_from) = x) for t_to >= t_from (forward transition):
        s_to / s_from x + s_to sqrt(sigma_to^2 - sigma_from^2) z."""
        a, b = as_batch(t_from, x), as_batch(t_to, x)
        s_a, s_b, sig_a, sig_b = self.scale(a), self.scale(b), self.sigma(a), self.sigma(b)
        std = s_b * (sig_b ** 2 - sig_a ** 2).clamp_min(0).sqrt()
        return bcast(s_b / s_a, x) * x + bcast(std, x) * randn(x, generator)

    def prior_sampling(self, shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        """z ~ N(0, prior_std^2 I) of ``shape`` on ``device`` (default: the generator's, else CPU);
        ``generator`` may be one generator or a list with one per sample (noise.randn)."""
        if device is None:
            device = generator.device if isinstance(generator, torch.Generator) else "cpu"
        return self.prior_std * randn(torch.empty(tuple(shape), device=device, dtype=dtype), generator)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std^2 I), summed over all but the batch dimension: shape [B]."""
        d = z[0].numel()
        v = self.prior_std ** 2
        return -0.5 * d * math.log(2 * math.pi * v) - z.flatten(1).pow(2).sum(1) / (2 * v)

    def discretize(self, x: torch.Tensor, t, dt: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward step x_{t+dt} = x + f_i + G_i z. Euler-Maruyama unless a member knows better."""
        dt = self.T / self.N if dt is None else dt
        drift, g = self.sde(x, t)
        return drift * dt, g * math.sqrt(dt)

    def reverse(self, score_fn, probability_flow: bool = False) -> "ReverseSDE":
        return ReverseSDE(self, score_fn, probability_flow)

    def ode_drift(self, score_fn, x: torch.Tensor, t) -> torch.Tensor:
        """dx/dt of the probability-flow ODE, f(t) x - g(t)^2 / 2 * score (Song et al. eq. 13)."""
        return self.reverse(score_fn, probability_flow=True).sde(x, t)[0]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def config(self) -> dict:
        """JSON-able description, inverse of :func:`get_sde`."""
        raise NotImplementedError


@dataclass
class ReverseSDE:
    """Reverse-time SDE  dx = [f - g^2 score] dt + g dw_bar  (Song et al. eq. 6), or, with
    ``probability_flow``, the ODE  dx = [f - g^2 score / 2] dt  (eq. 13). Time runs from T to 0:
    an Euler step of size dt > 0 is  x <- x - drift dt + diffusion sqrt(dt) z."""

    fwd: SDE
    score_fn: object
    probability_flow: bool = False

    @property
    def T(self) -> float:
        return self.fwd.T

    def sde(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        t = as_batch(t, x)
        drift, g = self.fwd.sde(x, t)
        w = 0.5 if self.probability_flow else 1.0
        drift = drift - bcast(g ** 2 * w, x) * self.score_fn(x, t)
        return drift, torch.zeros_like(g) if self.probability_flow else g

    def discretize(self, x: torch.Tensor, t, dt: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reverse of :meth:`SDE.discretize`: x_{t-dt} = x - rev_f + rev_G z."""
        t = as_batch(t, x)
        f, G = self.fwd.discretize(x, t, dt)
        w = 0.5 if self.probability_flow else 1.0
        rev_f = f - bcast(G ** 2 * w, x) * self.score_fn(x, t)
        return rev_f, torch.zeros_like(G) if self.probability_flow else G


class VESDE(SDE):
    """Variance exploding (SMLD/NCSN): s = 1, sigma(t) = sigma_min (sigma_max/sigma_min)^t."""

    eps = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"VESDE needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max, self.N = float(sigma_min), float(sigma_max), int(N)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def scale(self, t):
        return torch.ones_like(t)

    def sigma(self, t):
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def sigma_inv(self, sigma):
        return torch.log(sigma / self.sigma_min) / self._log_ratio

    def drift_coef(self, t):
        return torch.zeros_like(t)

    def diffusion_sq(self, t):
        return self.sigma(t) ** 2 * 2 * self._log_ratio

    @property
    def prior_std(self):
        return self.sigma_max

    def discretize(self, x, t, dt=None):
        """SMLD: x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z  (Song et al. eq. 46), computed as
        sigma_i sqrt(1 - (sigma_{i-1} / sigma_i)^2), which holds no sigma^2 (float16 ends at 65504)."""
        dt = self.T / self.N if dt is None else dt
        t = as_batch(t, x)
        sig = self.sigma(t)
        prev = torch.where(t - dt > 0, self.sigma((t - dt).clamp_min(0)), torch.zeros_like(t))
        return torch.zeros_like(x), sig * (1 - (prev / sig) ** 2).clamp_min(0).sqrt()

    def config(self):
        return {"name": "ve", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "N": self.N}


class _BetaLinear(SDE):
    """beta(t) = beta_min + t (beta_max - beta_min);  B(t) = int_0^t beta."""

    eps = 1e-3
    name = ""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"{type(self).__name__} needs 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max, self.N = float(beta_min), float(beta_max), int(N)

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def int_beta(self, t):
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t ** 2

    def _int_beta_inv(self, B):
        a, b = 0.5 * (self.beta_max - self.beta_min), self.beta_min
        return 2 * B / (b + torch.sqrt(b * b + 4 * a * B))   # root of a t^2 + b t = B, stable form

    def scale(self, t):
        return torch.exp(-0.5 * self.int_beta(t))

    def drift_coef(self, t):
        return -0.5 * self.beta(t)

    @property
    def prior_std(self):
        return 1.0

    def config(self):
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max, "N": self.N}


class VPSDE(_BetaLinear):
    """Variance preserving (DDPM): dx = -beta/2 x dt + sqrt(beta) dw; s = e^{-B/2}, s^2 sigma^2 = 1 - e^{-B}."""

    name = "vp"

    def sigma(self, t):
        return torch.sqrt(torch.expm1(self.int_beta(t)))

    def sigma_inv(self, sigma):
        return self._int_beta_inv(torch.log1p(sigma ** 2))

    def diffusion_sq(self, t):
        return self.beta(t)

    def discretize(self, x, t, dt=None):
        """DDPM: x_i = sqrt(1 - b_i) x_{i-1} + sqrt(b_i) z with b_i = beta(t) dt (Song et al. eq. 47)."""
        dt = self.T / self.N if dt is None else dt
        t = as_batch(t, x)
        b = (self.beta(t) * dt).clamp(max=1.0)
        return (bcast(torch.sqrt(1 - b), x) - 1) * x, torch.sqrt(b)


class SubVPSDE(_BetaLinear):
    """Sub-VP: dx = -beta/2 x dt + sqrt(beta (1 - e^{-2B})) dw; kernel std s sigma = 1 - e^{-B}."""

    name = "subvp"

    def sigma(self, t):
        B = self.int_beta(t)
        return -torch.expm1(-B) * torch.exp(0.5 * B)     # (1 - e^{-B}) / s = 2 sinh(B/2)

    def sigma_inv(self, sigma):
        return self._int_beta_inv(2 * torch.asinh(sigma / 2))

    def diffusion_sq(self, t):
        return self.beta(t) * -torch.expm1(-2 * self.int_beta(t))


class EDMSDE(SDE):
    """EDM (Karras et al. 2022): s = 1, sigma(t) = t, t in [sigma_min, sigma_max]; g = sqrt(2 t)."""

    schedule = "karras"          # uniform in t would be uniform in sigma

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float = 0.5, N: int = 1000):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"EDMSDE needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max, self.sigma_data, self.N = float(sigma_min), float(sigma_max), float(sigma_data), int(N)
        self.T, self.eps = self.sigma_max, self.sigma_min

    def scale(self, t):
        return torch.ones_like(t)

    def sigma(self, t):
        return t

    def sigma_inv(self, sigma):
        return sigma

    def drift_coef(self, t):
        return torch.zeros_like(t)

    def diffusion_sq(self, t):
        return 2 * t

    @property
    def prior_std(self):
        return self.sigma_max

    def config(self):
        return {"name": "edm", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max,
                "sigma_data": self.sigma_data, "N": self.N}


class FlowSDE(SDE):
    """Rectified flow / flow matching (Liu et al. 2023; Lipman et al. 2023): the straight path
    x = (1 - tau) x0 + tau n, i.e. s = 1 - tau and sigma = tau / (1 - tau), so s = 1 / (1 + sigma).

    ``shift`` k > 0 reparametrises time as diffusers' FlowMatchEulerDiscreteScheduler does (Esser et al.
    2024): the path time is tau(t) = k t / (1 + (k - 1) t), so a grid uniform in t is its shifted grid.
    Then sigma(t) = k t / (1 - t), s(t) = (1 - t) / (1 - t + k t) and, as for every member,
    f(t) = d log s / dt = -k / ((1 - t)(1 - t + k t)) and g(t)^2 = s^2 d sigma^2 / dt =
    2 k^2 t / ((1 - t)(1 - t + k t)^2) (k = 1: f = -1 / (1 - t), g^2 = 2 t / (1 - t)).

    At t = 1 the path is pure noise (s = 0, sigma infinite), where the solvers in y = x / s cannot start:
    time runs in [0, T] with T < 1 (default 0.999, sigma(T) = 999 k). The prior is N(0, tau(T)^2 I), the
    marginal's noise; it leaves out the marginal's mean s(T) x0 (a thousandth of the data for k = 1).
    ``eps``: the smallest time samplers go to (default 1e-3). ValueError unless 0 < eps < T < 1, k > 0."""

    def __init__(self, shift: float = 1.0, T: float = 0.999, eps: float = 1e-3, N: int = 1000):
        if not (shift > 0 and 0 < eps < T < 1):
            raise ValueError(f"FlowSDE needs shift > 0 and 0 < eps < T < 1, got {shift}, {eps}, {T}")
        self.shift, self.T, self.eps, self.N = float(shift), float(T), float(eps), int(N)

    def tau(self, t):
        """The path time tau(t) = k t / (1 + (k - 1) t) in [0, 1): x = (1 - tau) x0 + tau n."""
        return self.shift * t / (1 + (self.shift - 1) * t)

    def scale(self, t):
        return 1 - self.tau(t)

    def sigma(self, t):
        return self.shift * t / (1 - t)

    def sigma_inv(self, sigma):
        return sigma / (self.shift + sigma)

    def drift_coef(self, t):
        return -self.shift / ((1 - t) * (1 - t + self.shift * t))

    def diffusion_sq(self, t):
        return 2 * self.shift ** 2 * t / ((1 - t) * (1 - t + self.shift * t) ** 2)

    @property
    def prior_std(self):
        return float(self.tau(torch.tensor(self.T, dtype=torch.float64)))

    def config(self):
        return {"name": "flow", "shift": self.shift, "T": self.T, "eps": self.eps, "N": self.N}


def _cosine_betas(n: int, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule as betas (diffusers' "squaredcos_cap_v2"):
    beta_i = min(1 - abar((i+1)/n) / abar(i/n), max_beta), abar(u) = cos((u + 0.008) / 1.008 pi/2)^2."""
    def abar(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    return torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), max_beta) for i in range(n)], dtype=torch.float64,
                        device="cpu")


# Beta schedules by the names diffusers' scheduler configs use: (N, beta_start, beta_end) -> betas [N].
BETA_SCHEDULES = {
    "linear": lambda n, b0, b1: torch.linspace(b0, b1, n, dtype=torch.float64, device="cpu"),
    "scaled_linear": lambda n, b0, b1: torch.linspace(b0 ** 0.5, b1 ** 0.5, n, dtype=torch.float64, device="cpu") ** 2,
    "squaredcos_cap_v2": lambda n, b0, b1: _cosine_betas(n),
}


class DiscreteVPSDE(SDE):
    """A discrete-time VP (DDPM) schedule as a member of the family (k-diffusion's DiscreteSchedule).

    The N noise levels of the timesteps i = 0..N-1 are sigma_i = sqrt((1 - abar_i) / abar_i), abar the
    cumulative product of (1 - beta); between grid points log sigma is interpolated linearly in the
    fractional timestep tau = t (N - 1), t in [0, 1] (and extrapolated with the end slopes outside, so
    that sigma and sigma_inv stay inverse of each other). s(t) = 1 / sqrt(1 + sigma(t)^2), so at a grid
    timestep the kernel is DDPM's  x_i = sqrt(abar_i) x0 + sqrt(1 - abar_i) eps.

    Build it from ``alphas_cumprod`` [N] (strictly decreasing in (0, 1)), from ``betas`` [N] (diffusers'
    ``trained_betas``), or from a named ``schedule`` ("linear", "scaled_linear", "squaredcos_cap_v2")
    with ``N``, ``beta_start``, ``beta_end``. :meth:`timestep` maps a noise level to the network's
    fractional timestep (clamped to [0, N - 1]). Bad values: UserError.
    """

    T = 1.0
    eps = 0.0              # timestep 0; its noise level sigma_0 > 0 is the smallest the network knows

    def __init__(self, alphas_cumprod=None, schedule: str | None = None, N: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02, betas=None):
        given = [v is not None for v in (alphas_cumprod, schedule, betas)]
        if sum(given) != 1:
            raise UserError("DiscreteVPSDE takes exactly one of alphas_cumprod, betas or schedule")
        if schedule is not None:
            if not isinstance(schedule, str) or schedule not in BETA_SCHEDULES:
                raise UserError(f"unknown beta schedule {schedule!r}; choose one of {', '.join(BETA_SCHEDULES)}")
            if not (isinstance(N, int) and N >= 2 and 0 < beta_start <= beta_end < 1):
                raise UserError(f"beta schedule needs N >= 2 and 0 < beta_start <= beta_end < 1, "
                                f"got {N}, {beta_start}, {beta_end}")
            betas = BETA_SCHEDULES[schedule](N, float(beta_start), float(beta_end))
            self._spec = {"schedule": schedule, "beta_start": float(beta_start), "beta_end": float(beta_end), "N": N}
        elif betas is not None:
            betas = torch.as_tensor(betas, dtype=torch.float64, device="cpu").flatten()
            if not (torch.isfinite(betas).all() and (betas > 0).all() and (betas < 1).all()):
                raise UserError("betas must lie in (0, 1)")
            self._spec = {"betas": betas.tolist()}
        if betas is not None:
            alphas_cumprod = torch.cumprod(1 - betas, 0)
        # the schedule is a table on the CPU, also while a bundle's network is built on the "meta" device
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64, device="cpu").flatten()
        if len(abar) < 2 or not torch.isfinite(abar).all() or (abar <= 0).any() or (abar >= 1).any() \
                or (abar[1:] >= abar[:-1]).any():
            raise UserError("alphas_cumprod must be at least 2 values in (0, 1), strictly decreasing")
        if not hasattr(self, "_spec"):
            self._spec = {"alphas_cumprod": abar.tolist()}
        self.alphas_cumprod = abar
        self.N = len(abar)
        self.log_sigmas = (0.5 * (torch.log1p(-abar) - torch.log(abar)))   # log sigma_i, increasing

    # -- the schedule as a function of t ---------------------------------------------------------------
    def _segment(self, tau: torch.Tensor):
        """(k, w): tau = k + w with k the grid segment (end segments extend beyond the grid)."""
        k = tau.floor().clamp(0, self.N - 2)
        return k.long(), tau - k

    def _log_sigma(self, t: torch.Tensor) -> torch.Tensor:
        ls = self.log_sigmas.to(t.device)
        k, w = self._segment(t.double() * (self.N - 1))
        return ls[k] + w * (ls[k + 1] - ls[k])

    def _dlog_sigma_dt(self, t: torch.Tensor) -> torch.Tensor:
        ls = self.log_sigmas.to(t.device)
        k, _ = self._segment(t.double() * (self.N - 1))
        return (ls[k + 1] - ls[k]) * (self.N - 1)

    def sigma(self, t):
        return self._log_sigma(t).exp().to(t.dtype)

    def sigma_inv(self, sigma):
        ls = self.log_sigmas.to(sigma.device)
        x = sigma.double().log()
        k = (torch.searchsorted(ls, x.contiguous(), right=True) - 1).clamp(0, self.N - 2)
        tau = k + (x - ls[k]) / (ls[k + 1] - ls[k])
        return (tau / (self.N - 1)).to(sigma.dtype)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The network's fractional timestep of noise level sigma: tau in [0, N - 1] (clamped), shape of sigma."""
        return (self.sigma_inv(sigma).double() * (self.N - 1)).clamp(0, self.N - 1).to(sigma.dtype)

    def scale(self, t):
        return torch.rsqrt(1 + self._log_sigma(t).mul(2).exp()).to(t.dtype)

    def drift_coef(self, t):
        """d log s / dt = -sigma^2 / (1 + sigma^2) d log sigma / dt (piecewise constant slope)."""
        s2 = self._log_sigma(t).mul(2).exp()
        return (-s2 / (1 + s2) * self._dlog_sigma_dt(t)).to(t.dtype)

    def diffusion_sq(self, t):
        """s^2 d sigma^2 / dt = 2 sigma^2 / (1 + sigma^2) d log sigma / dt."""
        s2 = self._log_sigma(t).mul(2).exp()
        return (2 * s2 / (1 + s2) * self._dlog_sigma_dt(t)).to(t.dtype)

    @property
    def prior_std(self):
        return 1.0

    def discretize(self, x, t, dt=None):
        """DDPM: x_t = sqrt(1 - b) x_{t-dt} + sqrt(b) z with 1 - b = abar(t) / abar(t - dt), b = beta_i on the grid."""
        dt = self.T / (self.N - 1) if dt is None else dt
        t = as_batch(t, x)
        ratio = (self.scale(t).double() / self.scale((t - dt).clamp_min(0)).double()) ** 2
        b = (1 - ratio).clamp(0, 1).to(x.dtype)
        return (bcast(torch.sqrt(1 - b), x) - 1) * x, torch.sqrt(b)

    def config(self):
        return {"name": "discrete_vp", **self._spec}

    def __repr__(self) -> str:
        spec = {k: v for k, v in self._spec.items() if not isinstance(v, list)}
        inner = ", ".join(f"{k}={v!r}" for k, v in spec.items()) or f"N={self.N}"
        return f"DiscreteVPSDE({inner})"


_SDES = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE, "edm": EDMSDE, "flow": FlowSDE, "discretevp": DiscreteVPSDE}


def get_sde(name: str | dict, **kwargs) -> SDE:
    """An SDE by name ("ve", "vp", "subvp", "edm", "flow", "discrete_vp") or from its :meth:`SDE.config`."""
    if isinstance(name, dict):
        kwargs = {**{k: v for k, v in name.items() if k != "name"}, **kwargs}
        name = name["name"]
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in _SDES:
        raise ValueError(f"unknown SDE {name!r}; choose one of {', '.join(_SDES)}")
    return _SDES[key](**kwargs)

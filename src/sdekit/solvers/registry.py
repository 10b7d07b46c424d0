"""The one registry of samplers: a record per sampler with everything the rest of sdekit needs to know.

The library's validation, the CLI's choices, defaults and help, the web page's choices and progress
estimate and the README's table all read these records; no sampler name or trait is written
anywhere else. Look a record up with :func:`get_sampler` (aliases accepted, unknown names refused).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from sdekit.core.errors import UserError
from sdekit.core.noise import SCHEDULES
from sdekit.policy import CONSISTENCY, is_consistency
from sdekit.solvers.samplers import (ABM, CORRECTORS, DDIM, NORMS, PC, PREDICTORS, ConsistencySampler, DPMSolver, Heun,
                       consistency_levels)

__all__ = ["Option", "SamplerSpec", "REGISTRY", "SAMPLERS", "ALIASES", "get_sampler", "check_options",
           "default_sampler", "CONSISTENCY"]


@dataclass(frozen=True)
class Option:
    """A sampler option: its ``default``, a ``check`` returning an error text (or None), and ``help``."""
    default: object
    check: Callable[[object], str | None]
    help: str


def _positive(v):
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 \
        else "a positive number"


def _nonneg(v):
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 \
        else "a non-negative number"


def _count(v):
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "a non-negative integer"


def _one_of(choices):
    return lambda v: None if v in choices else f"one of {', '.join(map(str, choices))}"


SCHEDULE = Option(None, _one_of(tuple(SCHEDULES)), "noise-level grid: " + " | ".join(SCHEDULES) + " (uniform: in t)")
RHO = Option(7.0, _positive, "exponent of the karras grid")
NORM = Option(None, _one_of(NORMS), "Langevin step from norms averaged over the batch or each sample's own "
              "(default: each sample's with per-sample generators, else the batch's)")
PC_OPTIONS = {
    "predictor": Option("reverse_diffusion", _one_of(tuple(PREDICTORS)), "predictor of each step"),
    "corrector": Option("langevin", _one_of(tuple(CORRECTORS)), "corrector before each predictor step"),
    "snr": Option(0.16, _positive, "Langevin target signal-to-noise ratio"),
    "n_corrector": Option(1, _count, "corrector steps per grid point"),
}


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler. ``kind``: "sde" (time grid, stochastic steps), "fast" (noise-level grid, ends at
    sigma = 0 when denoising), "adaptive" (RK45; ``steps`` ignored). ``evals_per_step(options)``: score
    evaluations per step; ``fixed`` options are set by the record and cannot be changed. ``finishes``:
    whether the output at the default settings is a finished sample on an image model (residual noise
    below sdekit.solvers.loop.NOISY); the page offers only samplers that finish.

    The Langevin samplers alone ("langevin", "ald") finish on a geometric grid (NCSN's noise levels,
    uniform in log sigma) with Tweedie's last step (PC): the snr rule's chain keeps up with the annealing
    when the grid's step in log sigma is well below the step's 2 snr^2 (1000 levels from VP's sigma 152 to
    0.01: 0.0096 against 0.051); on score_sde's grid, uniform in t, the last levels are crossed in few steps
    and the chain lags (default MNIST model, 1000 steps: residual 0.68 on that grid without the Tweedie
    step; 0.34 for both on the geometric grid with it, as heun's 0.32). ALD's default 2000 steps: at 1000
    its 2-D mixture weights are off (energy distance 7x the floor, 3x at 2000)."""
    name: str
    summary: str
    kind: str
    stepper: type | None
    schedule: str
    stochastic: bool
    default_steps: int
    evals_per_step: Callable[[dict], float]
    options: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    aliases: tuple = ()
    finishes: bool = True          # False: at its default steps the output on an image model still holds noise
    levels: Callable | None = None  # (sigma_start, sigma_end, steps, sigma_min) -> its own default levels

    def evaluations(self, steps: int, options: dict | None = None) -> int | None:
        """Expected evaluations for ``steps`` steps (None for the adaptive solver)."""
        if self.kind == "adaptive":
            return None
        opts = {**self.defaults(), **(options or {}), **self.fixed}
        n = self.evals_per_step(opts) * steps
        return int(round(n - 1)) if self.name == "heun" else int(round(n))   # Heun's last step to 0 is Euler

    def defaults(self) -> dict:
        return {k: o.default for k, o in self.options.items() if o.default is not None}


def _pc_evals(o):
    p = 0 if o.get("predictor", "reverse_diffusion") == "none" else 1
    c = 0 if o.get("corrector", "langevin") == "none" else int(o.get("n_corrector", 1))
    return p + c


_SPECS = [
    SamplerSpec("em", "Euler-Maruyama on the reverse SDE", "sde", PC, "uniform", True, 500,
                lambda o: 1, {"schedule": SCHEDULE, "rho": RHO}, {"predictor": "em", "corrector": "none"},
                aliases=("euler_maruyama",)),
    SamplerSpec("reverse_diffusion", "reverse diffusion predictor (the SDE's own discretisation)", "sde", PC,
                "uniform", True, 500, lambda o: 1, {"schedule": SCHEDULE, "rho": RHO},
                {"predictor": "reverse_diffusion", "corrector": "none"}),
    SamplerSpec("ancestral", "ancestral sampling (posterior of the discretised chain)", "sde", PC, "uniform",
                True, 500, lambda o: 1, {"schedule": SCHEDULE, "rho": RHO},
                {"predictor": "ancestral", "corrector": "none"}),
    SamplerSpec("langevin", "Langevin corrector alone (snr rule), geometric grid, Tweedie's last step", "sde", PC,
                "logsnr", True, 1000, _pc_evals,
                {"snr": PC_OPTIONS["snr"], "n_corrector": Option(1, _count, "Langevin steps per grid point"),
                 "norm": NORM, "schedule": SCHEDULE, "rho": RHO},
                {"predictor": "none", "corrector": "langevin"}),
    SamplerSpec("ald", "annealed Langevin dynamics (NCSN), geometric grid, Tweedie's last step", "sde", PC,
                "logsnr", True, 2000, _pc_evals,
                {"snr": PC_OPTIONS["snr"], "n_corrector": Option(1, _count, "Langevin steps per grid point"),
                 "schedule": SCHEDULE, "rho": RHO},
                {"predictor": "none", "corrector": "ald"}),
    SamplerSpec("pc", "predictor-corrector (reverse diffusion + Langevin by default)", "sde", PC, "uniform",
                True, 500, _pc_evals, {**PC_OPTIONS, "norm": NORM, "schedule": SCHEDULE, "rho": RHO}),
    SamplerSpec("ode", "probability-flow ODE, adaptive RK45", "adaptive", None, "uniform", False, 1,
                lambda o: 1, {"rtol": Option(1e-5, _positive, "relative tolerance"),
                              "atol": Option(1e-5, _positive, "absolute tolerance")}),
    SamplerSpec("ddim", "DDIM (eta > 0: stochastic)", "fast", DDIM, "uniform", False, 50, lambda o: 1,
                {"eta": Option(0.0, _nonneg, "noise of each step (1: ancestral)"), "schedule": SCHEDULE, "rho": RHO}),
    SamplerSpec("heun", "EDM's 2nd-order Heun, Karras grid", "fast", Heun, "karras", False, 20, lambda o: 2,
                {"churn": Option(0.0, _nonneg, "EDM's S_churn (stochasticity)"),
                 "s_tmin": Option(0.0, _nonneg, "churn only above this sigma"),
                 "s_tmax": Option(float("inf"), lambda v: None if isinstance(v, (int, float)) and v >= 0 else "a number >= 0",
                                  "churn only below this sigma"),
                 "s_noise": Option(1.0, _positive, "EDM's S_noise"), "schedule": SCHEDULE, "rho": RHO}),
    SamplerSpec("dpm_solver", "DPM-Solver++(2M), log-SNR grid", "fast", DPMSolver, "logsnr", False, 20, lambda o: 1,
                {"order": Option(2, _one_of((2, 3)), "multistep order"), "schedule": SCHEDULE, "rho": RHO}),
    SamplerSpec("abm", "Adams-Bashforth-Moulton predictor-corrector in cos theta, cosine grid (fewest evaluations)",
                "fast", ABM, "cosine", False, 20, lambda o: 1,
                {"order": Option(3, _one_of((2, 3)), "predictor order (the corrector's is one more)"),
                 "schedule": SCHEDULE, "rho": RHO}),
    SamplerSpec("consistency", "multistep consistency sampling (Song et al. 2023 Alg. 1), for consistency models",
                "fast", ConsistencySampler, "karras", True, 2, lambda o: 1, levels=consistency_levels),
]

REGISTRY: dict[str, SamplerSpec] = {s.name: s for s in _SPECS}
ALIASES: dict[str, str] = {a: s.name for s in _SPECS for a in s.aliases}
SAMPLERS: tuple[str, ...] = tuple(REGISTRY)


def get_sampler(name) -> SamplerSpec:
    """The record of sampler ``name`` (case-insensitive; aliases accepted). UserError if unknown."""
    key = str(name).lower()
    key = ALIASES.get(key, key)
    if key not in REGISTRY:
        raise UserError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return REGISTRY[key]


def default_sampler(model, fallback: str) -> str:
    """The sampler a task uses when none is named: the policy's for a consistency model
    (:data:`sdekit.policy.CONSISTENCY`; ``model`` or the denoiser it holds says ``consistency``), else
    ``fallback``, the task's own default (:func:`sdekit.policy.default_sampler` reads it from the policy)."""
    return CONSISTENCY if is_consistency(model) else fallback


def check_options(spec: SamplerSpec, options: dict) -> dict:
    """``options`` checked against the record; returns them with defaults filled in. UserError on an
    unknown option, a bad value, or a change of a value the record fixes."""
    for k, v in options.items():
        if k in spec.fixed:
            if v != spec.fixed[k]:
                raise UserError(f"sampler {spec.name!r} fixes {k}={spec.fixed[k]!r}; use sampler 'pc' to choose it")
            continue
        if k not in spec.options:
            allowed = ", ".join(sorted(spec.options)) or "none"
            raise UserError(f"sampler {spec.name!r} takes no option {k!r}; it takes {allowed}")
        err = spec.options[k].check(v)
        if err:
            raise UserError(f"sampler {spec.name!r}: {k} must be {err}, got {v!r}")
    return {**spec.defaults(), **options, **spec.fixed}


def markdown_table() -> str:
    """The README's table of samplers, written from the records (tests check that the README holds it)."""
    rows = ["| sampler | what | default steps N | evaluations for N steps | options |", "|---|---|---|---|---|"]
    for s in REGISTRY.values():
        names = ", ".join(f"`{n}`" for n in (s.name, *s.aliases))
        evals = "adaptive" if s.kind == "adaptive" else str(s.evaluations(s.default_steps))
        opts = ", ".join(f"`{k}`" for k in s.options) or "-"
        rows.append(f"| {names} | {s.summary} | {s.default_steps if s.kind != 'adaptive' else '-'} | {evals} | {opts} |")
    return "\n".join(rows)

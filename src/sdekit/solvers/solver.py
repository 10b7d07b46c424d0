"""The solver protocol: one class per sampler, its traits declared as class attributes, and the registry.

A :class:`Solver` subclass states everything the rest of sdekit needs to know about its sampler: its
``name``, ``summary`` and ``aliases``, its ``default_steps``, the grid it walks (:meth:`Solver.grid`), its
evaluations for N steps (:meth:`Solver.evaluations`), whether it is ``adaptive`` and ``stochastic``,
whether it ``finishes`` a sample at its defaults, and its ``options`` (:class:`Option` records) and
``fixed`` option values. An instance is the running solver: it holds the model, the grid and the
generator, and ``step(i, x)`` moves the state from grid point i to i + 1 (:func:`sdekit.solvers.loop.solve`
runs it). ``@register`` puts a class in :data:`REGISTRY`; the package ``sdekit.solvers`` imports the modules
that define the solvers, so the registry is full once anything of the package is imported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from sdekit.core.denoisers import Denoiser
from sdekit.core.errors import UserError
from sdekit.core.noise import SCHEDULES, bcast, sigma_schedule

__all__ = ["Option", "Solver", "Grid", "REGISTRY", "ALIASES", "register", "unregister", "SCHEDULE", "RHO",
           "positive", "nonneg", "count", "one_of"]


@dataclass(frozen=True)
class Option:
    """A sampler option: its ``default``, a ``check`` returning an error text (or None), and ``help``."""
    default: object
    check: Callable[[object], str | None]
    help: str


def positive(v):
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 \
        else "a positive number"


def nonneg(v):
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 \
        else "a non-negative number"


def count(v):
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "a non-negative integer"


def one_of(choices):
    return lambda v: None if v in choices else f"one of {', '.join(map(str, choices))}"


SCHEDULE = Option(None, one_of(tuple(SCHEDULES)), "noise-level grid: " + " | ".join(SCHEDULES) + " (uniform: in t)")
RHO = Option(7.0, positive, "exponent of the karras grid")


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


REGISTRY: dict[str, type["Solver"]] = {}
ALIASES: dict[str, str] = {}


def register(cls: type["Solver"]) -> type["Solver"]:
    """Class decorator: put solver ``cls`` in REGISTRY under its name and its aliases (UserError if taken)."""
    for key in (cls.name, *cls.aliases):
        if key in REGISTRY or key in ALIASES:
            raise UserError(f"a sampler named {key!r} is registered already")
    REGISTRY[cls.name] = cls
    ALIASES.update({a: cls.name for a in cls.aliases})
    return cls


def unregister(name: str) -> None:
    """Remove sampler ``name`` and its aliases from the registry (KeyError if absent)."""
    cls = REGISTRY.pop(name)
    for a in cls.aliases:
        ALIASES.pop(a, None)


class Solver:
    """One sampler. Class attributes, read by the library's validation, the CLI, the web page and the README:

    ``name``, ``summary``, ``aliases``; ``default_steps``; ``schedule``: its default grid (a key of
    noise.SCHEDULES); ``adaptive``: chooses its own steps (``steps`` ignored, evaluations not known in
    advance); ``stochastic``: draws noise while it steps; ``finishes``: whether its output at the default
    settings is a finished sample on an image model (residual noise below sdekit.solvers.loop.NOISY; the
    page offers only samplers that finish); ``options``: name -> :class:`Option`; ``fixed``: option values
    the class sets and a caller cannot change; ``kind``: a one-word label of its family ("sde", "fast",
    "adaptive"), for callers and documents only; ``fitted_grids``: a model's grids fitted to it
    (sdekit.solvers.gits, a bundle's "grids" record) replace the default grid when the caller names none.

    This base class walks the SDE's own time grid (:meth:`grid`) and, when denoising, ends with the noise-free
    mean of its last step (:meth:`finish`). An instance holds ``model`` (a Denoiser), ``grid`` (Grid) and
    ``generator``; subclasses define :meth:`step`."""

    name: str = ""
    summary: str = ""
    aliases: tuple = ()
    kind = "sde"
    default_steps: int = 1
    schedule = "uniform"
    adaptive = False
    stochastic = False
    finishes = True
    options: dict = {}
    fixed: dict = {}
    fitted_grids = False

    # ---- what the class declares --------------------------------------------------------------------

    @classmethod
    def evals_per_step(cls, options: dict) -> float:
        """Model evaluations per step with these (complete) options."""
        return 1

    @classmethod
    def evaluations(cls, steps: int, options: dict | None = None) -> int | None:
        """Evaluations for ``steps`` steps with ``options`` (None for an adaptive solver)."""
        opts = {**cls.defaults(), **(options or {}), **cls.fixed}
        return int(round(cls.evals_per_step(opts) * steps))

    @classmethod
    def defaults(cls) -> dict:
        return {k: o.default for k, o in cls.options.items() if o.default is not None}

    @classmethod
    def steps_scale_with_span(cls) -> bool:
        """Whether the default steps are a density in t (a grid uniform in t): a solve over part of [0, T]
        (an SDEdit from t0) then needs that share of them. Here: a fixed time grid uniform in t."""
        return not cls.adaptive and cls.schedule == "uniform"

    @classmethod
    def grid(cls, sde, steps: int, t_start: float, eps: float, denoise: bool, schedule: str | None = None,
             rho: float = 7.0, sigmas=None, sigma_min: float = 0.0) -> Grid:
        """The grid the solver walks: explicit ``sigmas`` (descending, may end at 0), else ``steps`` steps of
        ``schedule`` (default: the class's) from t_start down to eps, here as times: uniform in t for
        "uniform", else at the times of the schedule's noise levels."""
        if sigmas is not None:
            return Grid(sde, sigmas=sigmas)
        kind = schedule or cls.schedule
        if kind == "uniform":
            return Grid(sde, ts=torch.linspace(t_start, eps, steps + 1, dtype=torch.float64))
        ts = sde.sigma_inv(sigma_schedule(sde, steps + 1, kind, eps, rho, t_start=t_start))
        ts[0], ts[-1] = t_start, eps
        return Grid(sde, ts=ts)

    # ---- the running solver -------------------------------------------------------------------------

    def __init__(self, model: Denoiser, grid: Grid, generator=None):
        self.model, self.sde, self.grid, self.generator = model, model.sde, grid, generator
        self.denoised = None                      # the last denoised estimate E[x0 | x], model space

    def done(self, i: int) -> bool:
        """Whether grid point i is the end of the solve."""
        return i >= len(self.grid)

    def numbered(self, i: int) -> tuple[int, int]:
        """(step index, number of steps) a step hook sees for step i."""
        return i, len(self.grid)

    def t(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.grid.ts[i], dtype=x.dtype, device=x.device)

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The model's score, remembering the Tweedie estimate (x + std^2 score) / s for hooks."""
        out = self.model.score(x, t)
        s, std = self.sde.scale(t), self.sde.marginal_std(t)
        self.denoised = (x + bcast(std ** 2, x) * out) / bcast(s, x)
        return out

    def step(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_{i+1}, its noise-free mean) from x at grid point i."""
        raise NotImplementedError

    def finish(self, x: torch.Tensor, x_mean: torch.Tensor) -> torch.Tensor:
        """The denoised output of the last step, which left x and its noise-free mean x_mean."""
        return x_mean

    def rewind(self, i: int) -> None:
        """Forget what step i left behind (multistep history); the state is back at grid point i."""

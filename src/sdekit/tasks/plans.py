"""Explicit plans: what a task decided before any work, passed down as one object instead of keywords.

* :class:`SolverConfig`: what a task hands to :func:`sdekit.sample` (sampler, steps, the sampler's options,
  the end time eps and the final denoising step);
* :class:`EditPlan`: an SDEdit run (:func:`sdekit.tasks.sdedit.plan_edit` builds it once from
  :func:`sdekit.sdedit`'s keywords, the policy and the model's calibration).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sdekit.core.sde import SDE
from sdekit.solvers.loop import sample

__all__ = ["SolverConfig", "EditPlan"]


@dataclass(frozen=True)
class SolverConfig:
    """A solver run of :func:`sdekit.sample`: ``sampler`` (a name of sdekit.solvers.registry), ``steps``
    (grid intervals; None: the sampler's default), ``options`` (the sampler's, checked by sample), ``eps``
    (the end time; None: the SDE's) and ``denoise`` (finish with the noise-free mean / a last step to
    sigma = 0)."""
    sampler: str
    steps: int | None = None
    options: dict = field(default_factory=dict)
    eps: float | None = None
    denoise: bool = True

    def run(self, sde: SDE, score_fn, x_T: torch.Tensor, t_start: float | None = None, generator=None,
            callback=None, progress: bool = False):
        """Solve from the state ``x_T`` [B, ...] at ``t_start`` (None: T) to eps: (x [B, ...], info) as
        :func:`sdekit.sample` with ``return_info``; its errors (UserError on bad input, NonFiniteError)."""
        return sample(sde, score_fn, x_T=x_T, t_start=t_start, sampler=self.sampler, steps=self.steps, eps=self.eps,
                      denoise=self.denoise, generator=generator, progress=progress, callback=callback,
                      return_info=True, **self.options)


@dataclass(frozen=True)
class EditPlan:
    """An SDEdit run, every choice made and checked (Meng et al. 2022; sdekit.tasks.sdedit's module docstring).

    ``t0``: the noise level to start from, in (0, 1] (a t0 map's largest); ``t0_map``: the per-pixel t0
    (float64, broadcasting to the guide, values in [0, 1]) or None; ``t``: the SDE's start time for t0
    (:func:`sdekit.tasks.sdedit.sdedit_time`); ``repeats``: rounds of perturb-and-denoise (Meng et al.
    Alg. 3); ``solver``: the run from t to eps, its ``steps`` fixed; ``class_label``, ``guidance``: what the
    score function is conditioned on (as its view declares: labels or None, classifier-free w)."""
    t0: float
    t: float
    repeats: int
    solver: SolverConfig
    t0_map: torch.Tensor | None = None
    class_label: object = None
    guidance: float = 0.0

    @property
    def steps(self) -> int:
        return self.solver.steps

    @property
    def sampler(self) -> str:
        return self.solver.sampler

"""Every task's defaults, as data, in one place: which sampler, how its steps are chosen, SDEdit's t0.

The library (``sdekit.sample``, :meth:`Model.sample <sdekit.models.model.Model.sample>`, ``generate``,
``sdedit``, ``inpaint``, ``colorize``, ``likelihood``, ``encode`` / ``decode``), the command line (argparse
defaults and help), the web page (``/api/info`` "defaults") and the README's policy table
(:func:`markdown_table`, checked by the tests) all read these records; no default sampler name is
written anywhere else (a test greps ``src/`` for one).

What a sampler is (its default steps, grid, evaluations per step) lives on its record in
:mod:`sdekit.solvers.registry`; the policy says which sampler a task uses and how the steps are chosen.

This module sits beside :mod:`sdekit.core` in the layering: it holds data and small rules, and imports
nothing of sdekit above the core.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TaskDefault", "EditSteps", "T0Range", "Calibration", "SAMPLE", "MODEL_SAMPLE", "EDIT", "INPAINT",
           "COLORIZE", "LIKELIHOOD", "ENCODE", "TRAINING_PICTURES", "DEMO_SAMPLE", "TASKS", "CONSISTENCY",
           "EDIT_STEPS", "T0", "sampler_for", "is_consistency", "default_sampler", "markdown_table"]

CONSISTENCY = "consistency"
"""The sampler of every task on a consistency model (Song et al. 2023, Alg. 1: its network maps any noise
level straight to the data, so the diffusion samplers, which need a posterior mean, do not apply)."""


@dataclass(frozen=True)
class TaskDefault:
    """A task's default solver. ``sampler``: a name of :mod:`sdekit.solvers.registry` (for the likelihood
    tasks a likelihood solver of :mod:`sdekit.tasks.likelihood`); ``steps``: None = the sampler record's
    default steps, ``"per t0"`` = :data:`EDIT_STEPS`, or a fixed number; ``entry``: where it applies;
    ``why``: the reason / source."""
    task: str
    sampler: str
    steps: int | str | None
    entry: str
    why: str


SAMPLE = TaskDefault(
    "sample (score function)", "pc", None, "sdekit.sample",
    "the public API's contract (sampler=\"pc\"): score_sde's predictor-corrector, reverse diffusion + Langevin, "
    "which works for any SDE and any score function (an exact mixture score included)")
MODEL_SAMPLE = TaskDefault(
    "sample (model)", "abm", None, "Model.sample, generate, sdekit sample, the page's sample tab",
    "Adams-Bashforth-Moulton at its 20 evaluations: the most accurate per evaluation on the bundled models "
    "(BENCHMARKS.md section 1)")
EDIT = TaskDefault(
    "edit (SDEdit)", "reverse_diffusion", "per t0", "sdekit.sdedit, sdekit edit / evaluate / demo, the page's edit tab",
    "Meng et al. 2022, Algorithm 1's stochastic update (the SDE's own discretisation: ancestral DDPM for VP); "
    "stochastic steps wash out the guide's off-manifold detail")
INPAINT = TaskDefault(
    "inpaint", "pc", None, "sdekit.inpaint, sdekit inpaint, the page's inpaint tab",
    "Song et al. 2021, App. I.2: imputation by the predictor-corrector sampler, the kept region replaced after "
    "every step; the fast solvers are biased by the replacement (BENCHMARKS.md section 12: 80-140x the exact "
    "conditional's floor against pc's 1.3x; the digit kept in 56 % against 81 %)")
COLORIZE = TaskDefault(
    "colorize", "pc", None, "sdekit.colorize, sdekit colorize",
    "Song et al. 2021, App. I.2: imputation in a decoupled colour space by the predictor-corrector sampler")
LIKELIHOOD = TaskDefault(
    "likelihood", "rk45", 64, "sdekit.likelihood, sdekit likelihood",
    "score_sde's setting: adaptive RK45 in t at rtol = atol = 1e-5 (steps: the fixed-step 'heun' solver's)")
ENCODE = TaskDefault(
    "encode / decode", "rk45", 64, "sdekit.encode, sdekit.decode, sdekit.interpolate",
    "the probability-flow ODE solved to the tolerance of the likelihood (an exact inverse pair up to it)")
TRAINING_PICTURES = TaskDefault(
    "training pictures", "heun", 20, "sdekit train's sample pictures",
    "EDM's Heun at 20 steps (39 evaluations): finished samples at a small cost during training")
DEMO_SAMPLE = TaskDefault(
    "demo / evaluate samples", "dpm_solver", None, "sdekit demo's sample grid, sdekit evaluate's samples row",
    "DPM-Solver++(2M) at its 20 evaluations, on the model's fitted grid (else log-SNR): the reports' reference samples")

TASKS: dict[str, TaskDefault] = {
    "sample": SAMPLE, "model_sample": MODEL_SAMPLE, "edit": EDIT, "inpaint": INPAINT, "colorize": COLORIZE,
    "likelihood": LIKELIHOOD, "encode": ENCODE, "training_pictures": TRAINING_PICTURES, "demo_sample": DEMO_SAMPLE}


def sampler_for(task: TaskDefault, consistency: bool = False) -> str:
    """The sampler ``task`` uses when none is named: :data:`CONSISTENCY` on a consistency model, else the
    task's own."""
    return CONSISTENCY if consistency else task.sampler


def is_consistency(model) -> bool:
    """Whether ``model`` (a Model, a score view, a Denoiser, or any object with a ``denoiser``) says it is a
    consistency model (its ``consistency`` attribute); a plain score function is not."""
    return bool(getattr(getattr(model, "denoiser", model), "consistency", False))


def default_sampler(task: TaskDefault, model=None) -> str:
    """The sampler ``task`` uses on ``model`` when none is named (:func:`sampler_for`, :func:`is_consistency`)."""
    return sampler_for(task, is_consistency(model))


@dataclass(frozen=True)
class EditSteps:
    """SDEdit's default steps: for the stochastic SDE samplers on a grid uniform in t, ``fraction`` of the
    sampler's default steps per unit of t0 (100 t0 for reverse diffusion's 500: Algorithm 1's
    Delta t = t0 / N), at least ``min_steps``. The fast solvers keep their default steps, which their
    accuracy depends on more than the span, and so do the samplers on a geometric grid (Langevin alone),
    whose chains keep up with the annealing only at their default spacing in log sigma."""
    fraction: float = 0.2
    min_steps: int = 4

    def steps(self, scales_with_span: bool, default_steps: int, t0: float) -> int:
        """Steps for an edit from t0 by a sampler with ``default_steps`` whose steps are a density in t or not
        (``scales_with_span``: its class's Solver.steps_scale_with_span(), in sdekit.solvers)."""
        if not scales_with_span:
            return int(default_steps)
        return max(self.min_steps, math.ceil(self.fraction * default_steps * float(t0)))


@dataclass(frozen=True)
class T0Range:
    """SDEdit's t0, a noise level on the reference VP SDE's scale (sdekit.tasks.sdedit): allowed in
    (``low``, ``high``] (0 would not edit; 1 is the prior's level, where the guide is forgotten); a t0
    map's values lie in [low, high], 0 = keep. ``default``: for a model without a calibrated value (Meng et
    al. 2022 find t0 in [0.3, 0.6] a good trade-off; 0.5 is the middle of the paper's sweep)."""
    default: float = 0.5
    low: float = 0.0
    high: float = 1.0

    def allows(self, t0: float) -> bool:
        """Whether the number t0 is a valid single t0 (finite, in (low, high])."""
        return math.isfinite(t0) and self.low < t0 <= self.high

    @property
    def interval(self) -> str:
        """The range in words, for messages: "(0, 1]"."""
        return f"({self.low:g}, {self.high:g}]"


EDIT_STEPS = EditSteps()
T0 = T0Range()


@dataclass(frozen=True)
class Calibration:
    """A model's calibrated SDEdit settings, the bundle's config.json "sdedit" section (written by
    ``sdekit evaluate --write-t0``): ``t0`` of its default edit, ``t0_unconditional`` of a plain edit where
    the default edit is class-guided, ``read_class`` (``"class": "auto"``: read the drawn class with the
    bundle's classifier) and classifier-free ``guidance`` w (as written: checked where an edit uses it). Missing
    values are None / False / 0; an invalid t0 counts as missing."""
    t0: float | None = None
    t0_unconditional: float | None = None
    read_class: bool = False
    guidance: object = 0.0

    @classmethod
    def from_config(cls, config) -> "Calibration":
        """The settings of a bundle's config (a dict; anything else has none)."""
        sd = config.get("sdedit") if isinstance(config, dict) else None
        sd = sd if isinstance(sd, dict) else {}

        def level(v):
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and T0.allows(float(v)) else None

        plain = None                 # a plain edit's t0, where the bundle names one (invalid: the default)
        if "t0_unconditional" in sd:
            plain = level(sd["t0_unconditional"]) or T0.default
        return cls(level(sd.get("t0")), plain, sd.get("class") == "auto", sd.get("guidance", 0.0))

    def default_t0(self, conditioned: bool = True) -> float:
        """The t0 an edit uses when none is given: the plain edit's where ``conditioned`` is False and the
        bundle has one, else its default edit's, else :data:`T0`'s default."""
        if not conditioned and self.t0_unconditional is not None:
            return self.t0_unconditional
        return self.t0 if self.t0 is not None else T0.default


def markdown_table() -> str:
    """The README's table of default solvers per task, written from the records (tests check that the
    README holds it)."""
    rows = ["| task | default sampler | steps | where | why |", "|---|---|---|---|---|"]
    for t in TASKS.values():
        steps = ("the sampler's default" if t.steps is None else
                 f"{EDIT_STEPS.fraction:g} x the sampler's default per unit of t0, at least {EDIT_STEPS.min_steps}"
                 if t.steps == "per t0" else str(t.steps))
        rows.append(f"| {t.task} | `{t.sampler}` | {steps} | {t.entry} | {t.why} |")
    rows.append(f"| any task on a consistency model | `{CONSISTENCY}` | the sampler's default | every entry point but "
                f"sdekit.sample (the contract's) | its network maps any noise level to the data (Song et al. 2023) |")
    rows.append(f"| SDEdit t0 | {T0.default:g} in {T0.interval} | | sdekit.sdedit, sdekit edit, the page | "
                f"the model's calibrated t0 (config.json \"sdedit\") when it has one |")
    return "\n".join(rows)

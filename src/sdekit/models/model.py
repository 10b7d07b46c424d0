"""The model object every entry point takes: a denoiser plus what its data look like.

:class:`Model` joins a :class:`~sdekit.core.denoisers.Denoiser` (sdekit's own preconditioned network, a
diffusers UNet, any wrapped network) with its SDE, its data shape (C, H, W), its data range (model
space x = lo + (hi - lo) u for pixels u in [0, 1]) and its number of classes. ``sdekit.load`` and
``sdekit.wrap`` return one; ``model.score_fn`` is a score function usable with every function of
sdekit, and the solvers use the denoiser behind it directly.
"""
from __future__ import annotations

import torch

from sdekit.models.accel import Acceleration, accelerate
from sdekit.core.checks import check_labels, check_shape
from sdekit.core.denoisers import ClassifierFree, Conditional, Denoiser, ScoreView, Shaped, labels_for
from sdekit.core.errors import UserError
from sdekit.core.sde import SDE
from sdekit.policy import MODEL_SAMPLE, Calibration, sampler_for
from sdekit.solvers.loop import sample
from sdekit.solvers.registry import get_sampler

__all__ = ["Model", "generate", "sample_seeds", "SAMPLER"]

SAMPLER = MODEL_SAMPLE.sampler      # the default sampler of a (diffusion) model (sdekit.policy)


class Model:
    """A score model: ``denoiser`` (D(y; sigma) under ``sde``), ``shape`` (C, H, W), ``data_range``.

    Conditional models (num_classes > 0) take ``class_labels=`` (int tensor [B] or an int; None or
    -1 means unconditional) and ``guidance=w`` for classifier-free guidance,
    score = (1 + w) score(x | y) - w score(x)  (Ho & Salimans 2022). A conditional model without a null
    label (``null_label`` False: a diffusers UNet with class embeddings) has no unconditional score: it
    needs a class 0..K-1 for every sample and takes no guidance (UserError, see :meth:`check_labels`).
    ``config`` is the bundle's config.json (a dict; "sdedit": {"t0": ...} is the calibrated SDEdit t0, read as
    :attr:`calibration`).
    ``classifier``: the bundle's noise-conditional classifier (its ``classifier/`` folder) or None; SDEdit
    reads the drawn class with it (:func:`sdekit.tasks.sdedit.edit_condition`).
    """

    def __init__(self, net: Denoiser, config: dict, name: str = "model"):
        self.net, self.config, self.name = net.eval(), config, name
        for p in self.net.parameters():          # a fixed model: gradients flow only to inputs (x)
            p.requires_grad_(False)
        self.sde: SDE = net.sde
        self.shape = tuple(int(v) for v in config["shape"])
        self.num_classes = int(config.get("num_classes", 0))
        self.data_range = tuple(float(v) for v in config.get("data_range", (-1.0, 1.0)))
        self.classifier = None       # a noise-conditional classifier p_t(y | x) shipped with the bundle, if any

    @property
    def denoiser(self) -> Denoiser:
        return self.net

    @property
    def consistency(self) -> bool:
        """Whether this is a consistency model (prediction "consistency", Song et al. 2023): its tasks'
        default sampler is then the policy's (:data:`sdekit.policy.CONSISTENCY`)."""
        return self.net.consistency

    @property
    def calibration(self) -> Calibration:
        """The bundle's calibrated SDEdit settings (config.json "sdedit", :class:`sdekit.policy.Calibration`),
        declared on the score views this model hands out (:attr:`score_fn`, :meth:`conditional`)."""
        return Calibration.from_config(self.config)

    @property
    def grids(self) -> dict[int, list[float]]:
        """Noise-level grids fitted to this model, {N: N + 1 levels from sigma(T) down to 0}: the bundle's
        config.json "grids" record ({"sigmas": {N: [...]}, "method": ...}, see sdekit.solvers.gits); {} when
        it has none."""
        rec = self.config.get("grids") or {}
        return {int(k): [float(v) for v in levels] for k, levels in rec.get("sigmas", {}).items()}

    def grid_options(self, sampler: str, steps: int | None, options: dict) -> dict:
        """``options`` with ``sigmas`` = the model's fitted grid of ``steps`` steps (default: the sampler's
        default steps) when the sampler takes fitted grids (Solver.fitted_grids: dpm_solver, ddim), the model
        has one of that length and the caller named no grid of its own (``schedule``, ``sigmas``, ``t_start``,
        ``eps``); else unchanged."""
        spec = get_sampler(sampler)
        if not spec.fitted_grids or any(k in options for k in ("sigmas", "schedule", "t_start", "eps")):
            return options
        grid = self.grids.get(int(steps or spec.default_steps))
        return options if grid is None else {**options, "sigmas": grid}

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.net.parameters())
        return f"Model({self.name!r}, shape={self.shape}, sde={self.sde!r}, classes={self.num_classes}, params={n})"

    @property
    def device(self) -> torch.device:
        p = next(self.net.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def null_label(self) -> bool:
        """Whether the model also scores without a class (None or label -1): always for an unconditional
        model and sdekit's bundles; not for a diffusers UNet with class embeddings."""
        return getattr(self.net, "null_label", True)

    @property
    def dtype(self) -> torch.dtype:
        p = next((q for q in self.net.parameters() if q.is_floating_point()), None)
        return p.dtype if p is not None else torch.float32

    def to(self, device=None, dtype=None) -> "Model":
        self.net.to(device=device, dtype=dtype)
        if self.classifier is not None:
            self.classifier.to(device=device)
        return self

    def accelerate(self, options: Acceleration) -> "Model":
        """Run the network as ``options`` say from now on (:class:`sdekit.models.accel.Acceleration`: torch.compile,
        channels-last memory, autocast in bf16 / fp16) on the model's current device; returns self. The
        weights stay those of the model (shared). UserError when the options cannot run on that device
        or the model has no network."""
        self.net = accelerate(self.net, options, self.device)
        return self

    def class_index(self, value) -> int:
        """The class K that ``value`` names: K itself, or a name of the model's classes, in full or by its first
        word ("Food & Drink" or "food" for the emoji model; :func:`sdekit.data.datasets.class_index`).
        UserError listing the names for any other value."""
        from sdekit.data.datasets import class_index
        return class_index(self.config, value)

    def labels(self, class_labels, n: int | None = None):
        """``class_labels`` as the samplers take them: names (a str, or a list holding some) become their
        indices (:meth:`class_index`); an int stays; a sequence or tensor must hold one label or ``n``
        (UserError otherwise)."""
        if isinstance(class_labels, str):
            return self.class_index(class_labels)
        if isinstance(class_labels, (list, tuple)):
            class_labels = torch.tensor([self.class_index(v) if isinstance(v, str) else v for v in class_labels])
        if n is not None and torch.is_tensor(class_labels) and class_labels.numel() not in (1, n):
            raise UserError(f"{class_labels.numel()} class labels for {n} samples: give one, or one per sample")
        return class_labels

    def check_labels(self, class_labels, guidance: float = 0.0) -> None:
        """UserError unless ``class_labels`` (None, an int or a tensor) and classifier-free ``guidance`` fit
        this model: labels 0..K-1, or None / -1 for none where the model has a null label (which guidance
        needs too)."""
        check_labels(class_labels, self.num_classes, self.null_label, guidance)

    @property
    def score_fn(self) -> ScoreView:
        """score_fn(x, t, class_labels=None, guidance=0.0) -> grad_x log p_t(x) [B, C, H, W]. UserError
        when x is not [B, *shape] (naming both shapes) or for labels the model does not take."""
        return ScoreView(Shaped(self.net, self.shape), self.calibration)

    def conditional(self, class_labels, guidance: float = 0.0) -> ScoreView:
        """A plain score_fn(x, t) for fixed labels (and classifier-free guidance w), for samplers and editors.
        UserError as :meth:`check_labels` says, and when x is not [B, *shape]. Classes may be named
        (:meth:`labels`)."""
        class_labels = self.labels(class_labels)
        self.check_labels(class_labels, guidance)
        net = Shaped(self.net, self.shape)
        den = ClassifierFree(net, class_labels, guidance, batch=True) if guidance else Conditional(net, class_labels)
        return ScoreView(den, self.calibration, class_labels, guidance)

    def denoise(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        """D(x; sigma) = E[x0 | x0 + sigma n = x], x in the scaled variable (EDM / k-diffusion convention).
        UserError when x is not [B, *shape] or for labels the model does not take (:meth:`check_labels`)."""
        self.check_labels(class_labels)
        check_shape(x, self.shape)
        return self.net.denoise(x, sigma, labels_for(class_labels, x))

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1], [B, C, H, W] -> model space."""
        lo, hi = self.data_range
        return lo + (hi - lo) * u

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Model space -> pixels in [0, 1] (clamped)."""
        lo, hi = self.data_range
        return ((x - lo) / (hi - lo)).clamp(0, 1)

    def sample(self, n: int, sampler: str | None = None, steps: int | None = None, generator=None, class_labels=None,
               guidance: float = 0.0, **options) -> torch.Tensor:
        """n samples in model space, shape [n, C, H, W]. Default sampler: the policy's for a model
        (:data:`sdekit.policy.MODEL_SAMPLE`, with its reason), :data:`sdekit.policy.CONSISTENCY` for a
        consistency model. Labels and guidance the model does not take: UserError (:meth:`check_labels`),
        before any work."""
        sampler = sampler_for(MODEL_SAMPLE, self.consistency) if sampler is None else sampler
        class_labels = self.labels(class_labels, n)
        self.check_labels(class_labels, guidance)
        fn = self.conditional(class_labels, guidance) if class_labels is not None else self.score_fn
        return sample(self.sde, fn, (n, *self.shape), sampler=sampler, steps=steps, generator=generator,
                      device=self.device, **self.grid_options(sampler, steps, options))


def sample_seeds(seed: int, start: int, count: int) -> list[torch.Generator]:
    """One CPU generator per sample: sample i's stream is seeded by (seed, i) alone, so a sample does not
    depend on the batch it is drawn in, the chunking or the number of processes."""
    return [torch.Generator().manual_seed((int(seed) * 1_000_003 + i) % (2 ** 63)) for i in range(start, start + count)]


def generate(model: Model, n: int, sampler: str | None = None, steps: int | None = None, seed: int = 0,
             class_labels=None, guidance: float = 0.0, batch_size: int = 256, progress: bool = False,
             return_info: bool = False, **options):
    """n samples in model space [n, C, H, W] (on the CPU), drawn in batches of ``batch_size`` on the
    model's device. Sample i uses its own noise stream seeded by (seed, i) (:func:`sample_seeds`), so the
    result does not depend on the batch size or on how batches are spread over processes. Under
    torchrun, rank r draws batches r, r + K, ... and every rank returns the whole set (gathered).
    ``class_labels``: None, an int for all samples, or an int tensor [n]. ``return_info``: also return
    {"nfe": evaluations of this process, "steps": steps per sample}. ``sampler``: default as
    :meth:`Model.sample`. UserError before any work for bad sizes, and for labels or guidance the model
    does not take (:meth:`Model.check_labels`)."""
    from sdekit.core.bars import progress_bar
    import torch.distributed as dist
    sampler = sampler_for(MODEL_SAMPLE, model.consistency) if sampler is None else sampler
    if n < 1 or batch_size < 1:
        raise UserError(f"need n >= 1 and batch_size >= 1, got {n}, {batch_size}")
    class_labels = model.labels(class_labels, n)
    if class_labels is not None and not torch.is_tensor(class_labels):
        model.check_labels(class_labels)                          # a float 3.5 is refused, not cut to 3
        class_labels = torch.full((n,), int(class_labels), dtype=torch.long)
    model.check_labels(class_labels, guidance)
    options = model.grid_options(sampler, steps, options)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank() if world > 1 else 0
    chunks = [(c, min(batch_size, n - c * batch_size)) for c in range((n + batch_size - 1) // batch_size)]
    mine = chunks[rank::world]
    per_rank = len(chunks[0::world])
    out = torch.zeros(per_rank * batch_size, *model.shape)
    nfe = 0
    steps_bar = progress and rank == 0 and len(mine) == 1       # one batch: a bar per solver step, not 0/1 batches
    for j, (c, size) in enumerate(progress_bar(mine, disable=not (progress and rank == 0) or steps_bar, desc="sampling",
                                       unit="batch")):
        gens = sample_seeds(seed, c * batch_size, size)
        fn = model.score_fn
        if class_labels is not None:
            fn = model.conditional(class_labels[c * batch_size: c * batch_size + size].to(model.device), guidance)
        x, info = sample(model.sde, fn, (size, *model.shape), sampler=sampler, steps=steps, generator=gens,
                         device=model.device, progress=steps_bar, return_info=True, **options)
        nfe += info["nfe"]
        out[j * batch_size: j * batch_size + size] = x.cpu()
    stats = {"nfe": nfe, "steps": info["steps"]}
    if world == 1:
        return (out[:n], stats) if return_info else out[:n]
    parts = [torch.zeros_like(out) for _ in range(world)]
    dist.all_gather(parts, out)
    res = torch.zeros(n, *model.shape)
    for r in range(world):
        for j, (c, size) in enumerate(chunks[r::world]):
            res[c * batch_size: c * batch_size + size] = parts[r][j * batch_size: j * batch_size + size]
    return (res, stats) if return_info else res

"""The model interface: a model of the data is its denoiser D(y; sigma).

Every SDE of the family has the kernel x_t = s(t) (x0 + sigma(t) n) (sde.py), so in the scaled
variable y = x / s(t) a model only has to remove Gaussian noise of level sigma. Its denoiser

    D(y; sigma) = E[x0 | x0 + sigma n = y]

is the primitive every solver, the likelihood, guidance and SDEdit use (EDM, Karras et al. 2022,
eqs. 2-3; k-diffusion's convention). The score is a derived view, by Tweedie's formula:

    score(x, t) = grad_x log p_t(x) = (D(x / s; sigma) - x / s) / (s sigma^2),   sigma = sigma(t),
    D(y; sigma) = y + sigma^2 s score(s y, t(sigma)).

A :class:`Denoiser` defines one of the two and inherits the other. Adapters turn a network's own
output F into D, one small class per parametrisation (epsilon, x0, v, score, std * score, EDM's
F-preconditioning), and a :class:`NetInput` states what the network is fed (EDM's c_in y and
c_noise, or the model-space x with t, sigma or a discrete timestep). Shapes: y, x [B, ...];
sigma, t float or [B]; class_labels None or int [B].
"""
from __future__ import annotations

import torch
from torch import nn

from sdekit.core.checks import check_labels, check_shape  # noqa: F401  (sdekit.core.denoisers.check_labels, as before)
from sdekit.core.errors import UserError
from sdekit.core.noise import Counter, as_batch, bcast, solver_dtype, watch
from sdekit.core.sde import SDE

__all__ = ["Denoiser", "ScoreDenoiser", "NetworkDenoiser", "Preconditioned", "Counted", "Shaped", "Conditional",
           "ClassifierFree", "ClassifierGuided", "Guided", "Labelled", "ScoreView", "as_denoiser", "EDMInput", "ModelSpaceInput", "PREDICTIONS",
           "TIME_INPUTS", "labels_for", "check_labels", "check_shape", "Consistency", "SIGMA_MIN_CM"]


def labels_for(class_labels, x: torch.Tensor) -> torch.Tensor | None:
    """Class labels (None, an int, or a tensor [B] / [1]) as a long tensor [B] on x's device."""
    if class_labels is None:
        return None
    y = torch.as_tensor(class_labels, device=x.device).long().reshape(-1)
    return y.expand(x.shape[0]) if y.numel() == 1 else y


class Denoiser(nn.Module):
    """D(y; sigma) and score(x, t) of one model under ``sde``. Subclasses override one of the two."""

    def __init__(self, sde: SDE):
        super().__init__()
        self.sde = sde

    @property
    def consistency(self) -> bool:
        """Whether denoise(y, sigma) is a consistency function f(y, sigma) (Song et al. 2023): the end point
        of the probability-flow ODE from (y, sigma) to sigma_min, not the posterior mean E[x0 | y]. Such a
        model is sampled by the "consistency" sampler; a wrapper answers for the model it wraps."""
        inner = getattr(self, "inner", None)
        return bool(inner is not None and inner.consistency)

    @property
    def sigma_min(self) -> float | None:
        """A consistency model's boundary level (f(y, sigma_min) = y); None for other models."""
        inner = getattr(self, "inner", None)
        return None if inner is None else inner.sigma_min

    def denoise(self, y: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        """D(y; sigma) = E[x0 | y], y = x / s(t): [B, ...] like y (and in its dtype; computed in
        noise.solver_dtype). Default: from the score (Tweedie)."""
        y_in, y = y, y.to(solver_dtype(y.dtype))
        sigma = as_batch(sigma, y)
        t = self.sde.sigma_inv(sigma)
        s = self.sde.scale(t)
        return (y + bcast(sigma ** 2 * s, y) * self.score(bcast(s, y) * y, t, class_labels)).to(y_in.dtype)

    def score(self, x: torch.Tensor, t, class_labels=None) -> torch.Tensor:
        """grad_x log p_t(x): [B, ...] like x (and in its dtype; computed in noise.solver_dtype).
        Default: from the denoiser (Tweedie)."""
        x_in, x = x, x.to(solver_dtype(x.dtype))
        t = as_batch(t, x)
        s, sig = self.sde.scale(t), self.sde.sigma(t)
        y = x / bcast(s, x)
        return ((self.denoise(y, sig, class_labels) - y) / bcast(s * sig ** 2, x)).to(x_in.dtype)

    def prepared(self, x: torch.Tensor, class_labels=None) -> "Denoiser":
        """This denoiser, with ``class_labels`` fixed (None, an int or a tensor [B]), composed for a solve on
        states shaped like x [B, ...]: what can be checked or resolved once (the data shape, the labels, their
        device, the null label) is done here, and the denoiser returned gives the same values without doing it
        again at every evaluation. UserError as those checks. Default: itself, or :class:`Conditional`."""
        return self if class_labels is None else Conditional(self, labels_for(class_labels, x))

    def x0(self, x: torch.Tensor, t, class_labels=None) -> torch.Tensor:
        """E[x0 | x_t = x], the denoised estimate of a model-space state x at time t."""
        t = as_batch(t, x)
        return self.denoise(x / bcast(self.sde.scale(t), x), self.sde.sigma(t), class_labels)

    def forward(self, y: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        return self.denoise(y, sigma, class_labels)

    def __call__(self, *args, **kwargs):            # plain call: no module hooks on the solvers' hot path
        return self.forward(*args, **kwargs)


class ScoreDenoiser(Denoiser):
    """A Denoiser from any ``score_fn(x, t)`` (an exact mixture score, a user's function, ...)."""

    def __init__(self, sde: SDE, score_fn):
        super().__init__(sde)
        self.score_fn = score_fn

    def score(self, x, t, class_labels=None):
        """score_fn(x, t): a score_fn that is a module with floating parameters sees x in their dtype;
        the output comes back in x's."""
        t = as_batch(t, x)
        p = next((q for q in self.parameters() if q.is_floating_point()), None)
        x_net = x if p is None else x.to(p.dtype)
        out = self.score_fn(x_net, t) if class_labels is None else self.score_fn(x_net, t, class_labels=class_labels)
        return watch(out, "model").to(x.dtype)


def as_denoiser(sde: SDE, model) -> Denoiser:
    """The Denoiser behind ``model``: a Denoiser itself, an object with a ``.denoiser`` (e.g. a bundle's
    ``model.score_fn``), or any callable score_fn(x, t), wrapped. Raises UserError otherwise."""
    if isinstance(model, Denoiser):
        return model
    inner = getattr(model, "denoiser", None)
    if isinstance(inner, Denoiser):
        return inner
    if not callable(model):
        raise UserError(f"expected a score function score_fn(x, t) or a Denoiser, got {type(model).__name__}")
    return ScoreDenoiser(sde, model)


class ScoreView:
    """A Denoiser seen as a score function: ``view(x, t, class_labels=None, guidance=0.0)`` is
    grad_x log p_t(x [| class]) [B, ...]; ``guidance`` w > 0 applies classifier-free guidance.
    ``view.denoiser`` is what samplers use directly (no score round trip).

    What a model declares about the view it hands out (:meth:`sdekit.models.model.Model.score_fn` and
    ``.conditional``), read by the tasks instead of the model itself:

    * ``calibration``: the model's calibrated SDEdit settings (:class:`sdekit.policy.Calibration`), or None
      for a score function that belongs to no model (the policy's defaults then apply);
    * ``class_labels``, ``guidance``: the labels (an int or an int tensor [B]) the view is conditioned on and
      its classifier-free guidance weight; None and 0 for an unconditional view."""

    def __init__(self, denoiser: Denoiser, calibration=None, class_labels=None, guidance: float = 0.0):
        self.denoiser = denoiser
        self.calibration = calibration
        self.class_labels, self.guidance = class_labels, float(guidance)

    def __call__(self, x: torch.Tensor, t, class_labels=None, guidance: float = 0.0) -> torch.Tensor:
        if class_labels is not None and guidance:
            return ClassifierFree(self.denoiser, class_labels, guidance).score(x, t)
        return self.denoiser.score(x, t, labels_for(class_labels, x))


# ---- wrappers: counting, labels, guidance -----------------------------------------------------------

class Counted(Denoiser):
    """Counts evaluations (``nfe``) of ``inner`` and refuses NaN/Inf or mis-shaped outputs, naming whose
    number went bad (noise.Counter). ``eager`` False: the NaN/Inf checks wait for ``counter.verdict()``
    (the solver loop reads them once per step, without a host sync per evaluation)."""

    def __init__(self, inner: Denoiser, eager: bool = True):
        super().__init__(inner.sde)
        self.inner, self.counter = inner, Counter(eager)

    @property
    def nfe(self) -> int:
        return self.counter.nfe

    def denoise(self, y, sigma, class_labels=None):
        c, out = self.counter, None
        token = c.begin(y, ("sigma", sigma))
        try:
            out = self.inner.denoise(y, sigma, class_labels)
        finally:
            c.end(token, out, y)
        return out

    def score(self, x, t, class_labels=None):
        c, out = self.counter, None
        token = c.begin(x, ("t", t))
        try:
            out = self.inner.score(x, t, class_labels)
        finally:
            c.end(token, out, x)
        return out


class Shaped(Denoiser):
    """``inner`` for inputs [B, *shape] only: any other x is a UserError naming both shapes."""

    def __init__(self, inner: Denoiser, shape):
        super().__init__(inner.sde)
        self.inner, self.shape = inner, tuple(shape)

    def prepared(self, x, class_labels=None):
        check_shape(x, self.shape)
        return self.inner.prepared(x, class_labels)

    def denoise(self, y, sigma, class_labels=None):
        check_shape(y, self.shape)
        return self.inner.denoise(y, sigma, class_labels)

    def score(self, x, t, class_labels=None):
        check_shape(x, self.shape)
        return self.inner.score(x, t, class_labels)


class Conditional(Denoiser):
    """``inner`` with its class labels fixed (an int or a tensor [B])."""

    def __init__(self, inner: Denoiser, class_labels):
        super().__init__(inner.sde)
        self.inner, self.class_labels = inner, class_labels

    def prepared(self, x, class_labels=None):
        return self.inner.prepared(x, self.class_labels)

    def denoise(self, y, sigma, class_labels=None):
        return self.inner.denoise(y, sigma, labels_for(self.class_labels, y))

    def score(self, x, t, class_labels=None):
        return self.inner.score(x, t, labels_for(self.class_labels, x))


class ClassifierFree(Denoiser):
    """Classifier-free guidance (Ho & Salimans 2022): (1 + w) D(y | c) - w D(y | null), the same
    combination of scores since the two differ by an affine map. ``null_label``: the label the
    network was trained with for "no label" (-1 for sdekit's bundles). ``batch``: evaluate both in one
    call on the doubled batch (for networks, whose outputs are per sample; not for score functions
    that read one label per batch)."""

    def __init__(self, inner: Denoiser, class_labels, scale: float, null_label=-1, batch: bool = False):
        super().__init__(inner.sde)
        self.inner, self.class_labels, self.scale, self.null_label = inner, class_labels, float(scale), null_label
        self.batch = bool(batch)

    def denoise(self, y, sigma, class_labels=None):
        return self.prepared(y).denoise(y, sigma)

    def score(self, x, t, class_labels=None):
        return self.prepared(x).score(x, t)

    def prepared(self, x, class_labels=None):
        """The guided denoiser for states like x: the conditional and unconditional models each prepared with
        their labels (one prepared model on the doubled batch when ``batch``)."""
        c = labels_for(self.class_labels, x)
        if self.scale == 0:
            return self.inner.prepared(x, c)
        null = torch.full_like(c, int(self.null_label))
        if self.batch:
            return Guided(self.inner.prepared(torch.cat([x, x]), torch.cat([c, null])), None, self.scale)
        return Guided(self.inner.prepared(x, c), self.inner.prepared(x, null), self.scale)


class Guided(Denoiser):
    """(1 + w) D_c - w D_null from two prepared denoisers (``cond`` and ``uncond``), or from one, ``cond``,
    prepared on the doubled batch [conditional; unconditional] (``uncond`` None): ClassifierFree.prepared."""

    def __init__(self, cond: Denoiser, uncond: Denoiser | None, scale: float):
        super().__init__(cond.sde)
        self.cond, self.uncond, self.scale = cond, uncond, float(scale)

    def _combine(self, fn, x, v):
        if self.uncond is not None:
            return (1 + self.scale) * fn(self.cond, x, v) - self.scale * fn(self.uncond, x, v)
        per_sample = torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == len(x) and len(x) > 1
        cond, null = fn(self.cond, torch.cat([x, x]), torch.cat([v, v]) if per_sample else v).chunk(2)
        return (1 + self.scale) * cond - self.scale * null

    def denoise(self, y, sigma, class_labels=None):
        return self._combine(lambda d, a, b: d.denoise(a, b), y, sigma)

    def score(self, x, t, class_labels=None):
        return self._combine(lambda d, a, b: d.score(a, b), x, t)


class ClassifierGuided(Denoiser):
    """score(x, t) + w grad_x log p_t(c | x) (Song et al. 2021 eq. 14; Dhariwal & Nichol 2021) with a
    noise-conditional ``classifier(x, t) -> logits [B, K]``."""

    def __init__(self, inner: Denoiser, classifier, class_labels, scale: float = 1.0):
        super().__init__(inner.sde)
        self.inner, self.classifier, self.class_labels, self.scale = inner, classifier, class_labels, float(scale)

    def score(self, x, t, class_labels=None):
        c = labels_for(self.class_labels, x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = self.classifier(xg, as_batch(t, x)).log_softmax(1).gather(1, c[:, None]).sum()
            grad = torch.autograd.grad(logp, xg)[0]
        return self.inner.score(x, t) + self.scale * grad.to(x.dtype)


# ---- networks: what they are fed, and what they predict ---------------------------------------------

class EDMInput:
    """EDM's input scaling (Karras et al. Table 1): the network sees c_in y with
    c_in = 1 / sqrt(sigma^2 + sigma_data^2), and the noise condition c_noise = ln(sigma) / 4, multiplied
    by ``time_scale`` (e.g. 1000: the consistency models' 250 ln(sigma))."""

    def __init__(self, sigma_data: float = 0.5, time_scale: float = 1.0):
        self.sigma_data, self.time_scale = float(sigma_data), float(time_scale)

    def __call__(self, sde: SDE, y, sigma):
        return bcast((sigma ** 2 + self.sigma_data ** 2).rsqrt(), y) * y, sigma.log() / 4 * self.time_scale


TIME_INPUTS = {
    "sigma": lambda sde, sigma: sigma,                        # NCSN / score_sde VE: the noise level itself
    "t": lambda sde, sigma: sde.sigma_inv(sigma),             # continuous time in [0, T]
    "timestep": lambda sde, sigma: sde.timestep(sigma),       # discrete: fractional index into alphas_cumprod
    "flow": lambda sde, sigma: sigma / (1 + sigma),           # the flow path's time tau (diffusers' flow "sigma")
}


class ModelSpaceInput:
    """The network sees the model-space state x = s(t) y and its own time variable: ``time`` is one of
    TIME_INPUTS ("sigma", "t", "timestep", "flow": tau = sigma / (1 + sigma)), optionally multiplied by
    ``time_scale`` (e.g. 999)."""

    def __init__(self, time: str = "t", time_scale: float = 1.0):
        if time not in TIME_INPUTS:
            raise UserError(f"unknown time input {time!r}; choose one of {', '.join(TIME_INPUTS)}")
        self.time, self.time_scale = time, float(time_scale)

    def __call__(self, sde: SDE, y, sigma):
        s = sde.scale(sde.sigma_inv(sigma))
        return bcast(s, y) * y, TIME_INPUTS[self.time](sde, sigma) * self.time_scale


# Each prediction maps the network output F (for input y at level sigma, scale s) to D(y; sigma).
def _edm(F, y, sigma, s, sigma_data):
    sd2 = sigma_data ** 2
    return bcast(sd2 / (sigma ** 2 + sd2), y) * y + bcast(sigma * sigma_data * (sigma ** 2 + sd2).rsqrt(), y) * F


def _v(F, y, sigma, s, sd):
    """v-prediction (Salimans & Ho 2022) in the variance-preserving sense of k-diffusion:
    x0 = alpha x - sigma_t v with alpha = 1/sqrt(1 + sigma^2), sigma_t = sigma alpha, x = alpha y."""
    a = (1 + sigma ** 2).rsqrt()
    return bcast(a ** 2, y) * y - bcast(sigma * a, y) * F


SIGMA_MIN_CM = 0.002     # consistency models' boundary level epsilon (Song et al. 2023, EDM's sigma_min)


class Consistency:
    """The consistency-model parametrisation (Song et al. 2023, eq. 5 and appendix C):
    D = f(y, sigma) = c_skip y + c_out F with c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2) and
    c_out = (sigma - sigma_min) sd / sqrt(sd^2 + sigma^2), so f(y, sigma_min) = y exactly (the boundary
    condition). ``sigma_min`` > 0: the boundary level epsilon (default SIGMA_MIN_CM); the network is fed
    EDM's c_in y and ln(sigma) / 4 (:class:`EDMInput`). UserError for sigma_min <= 0."""

    def __init__(self, sigma_min: float = SIGMA_MIN_CM):
        if not (isinstance(sigma_min, (int, float)) and 0 < sigma_min < float("inf")):
            raise UserError(f"sigma_min must be a positive number, got {sigma_min!r}")
        self.sigma_min = float(sigma_min)

    def __call__(self, F, y, sigma, s, sigma_data):
        sd2, d = sigma_data ** 2, sigma - self.sigma_min
        return bcast(sd2 / (d ** 2 + sd2), y) * y + bcast(d * sigma_data * (sd2 + sigma ** 2).rsqrt(), y) * F


def _velocity(F, y, sigma, s, sd):
    """Flow matching's velocity v = dx/dtau = n - x0 on the path x = (1 - tau) x0 + tau n (Lipman et al.
    2023; Liu et al. 2023) with tau = sigma / (1 + sigma), x = y / (1 + sigma): x0 = x - tau v, i.e.
    D = (y - sigma F) / (1 + sigma)."""
    return (y - bcast(sigma, y) * F) / bcast(1 + sigma, y)


PREDICTIONS = {
    "edm": _edm,                                                                   # EDM eq. 7
    "eps": lambda F, y, sigma, s, sd: y - bcast(sigma, y) * F,                     # y = x0 + sigma eps
    "x0": lambda F, y, sigma, s, sd: F,
    "v": _v,
    "score": lambda F, y, sigma, s, sd: y + bcast(sigma ** 2 * s, y) * F,          # F = grad_x log p_t
    "scaled_score": lambda F, y, sigma, s, sd: y + bcast(sigma, y) * F,            # F = std * score
    "consistency": Consistency(),                                                  # Song et al. 2023 eq. 5
    "velocity": _velocity,                                                         # F = n - x0 (flow)
}


class NetworkDenoiser(Denoiser):
    """D from a network ``net(input, noise_condition[, class_labels]) -> F`` with a ``prediction``
    (a key of PREDICTIONS: "edm", "eps", "x0", "v", "score", "scaled_score", "consistency", "velocity") and a
    ``net_input`` (EDMInput or ModelSpaceInput). The network is stored as ``self.net`` (weights under "net.").
    ``null_label``: whether a conditional network also takes no label (None, or -1); without one, an
    evaluation without a class 0..K-1 is a UserError (:func:`check_labels`). ``sigma_min``: the boundary
    level of prediction "consistency" (None: its default, :data:`SIGMA_MIN_CM`); UserError for another
    prediction. Precision: the network
    runs in its own dtype (sdekit's networks and pretrained.wrap cast their input to it), its output F is
    cast to noise.solver_dtype (at least float32) before the conversion to D, and D comes back in y's dtype."""

    def __init__(self, net: nn.Module, sde: SDE, prediction: str = "edm", net_input=None, sigma_data: float = 0.5,
                 null_label: bool = True, sigma_min: float | None = None):
        super().__init__(sde)
        if prediction not in PREDICTIONS:
            raise UserError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
        self.net, self.prediction, self.sigma_data = net, prediction, float(sigma_data)
        self.null_label = bool(null_label)
        self._to_d = PREDICTIONS[prediction]
        if sigma_min is not None:
            if not isinstance(self._to_d, Consistency):
                raise UserError(f"sigma_min is a parameter of prediction 'consistency', not of {prediction!r}")
            self._to_d = Consistency(sigma_min)
        self.net_input = net_input if net_input is not None else EDMInput(sigma_data)

    @property
    def consistency(self) -> bool:
        return isinstance(self._to_d, Consistency)

    @property
    def sigma_min(self) -> float | None:
        """The boundary level of a consistency model (f(y, sigma_min) = y), None for other predictions."""
        return self._to_d.sigma_min if self.consistency else None

    @property
    def num_classes(self) -> int:
        return int(getattr(self.net, "num_classes", 0))

    def net_labels(self, class_labels, x: torch.Tensor):
        """The labels the network is fed for ``class_labels`` (None, an int or a tensor [B]) with states x:
        None, or a long tensor [B] on x's device. UserError for labels it does not take (:func:`check_labels`: without a null label it needs a class
        0..K-1 for every sample)."""
        if not self.null_label:
            check_labels(class_labels, self.num_classes, null_label=False)
        return labels_for(class_labels, x)

    def prepared(self, x, class_labels=None):
        """Labels checked and converted once (:meth:`net_labels`): itself without labels, else a
        :class:`Labelled` view that feeds them to the network unchecked."""
        net_labels = self.net_labels(class_labels, x)
        return self if net_labels is None else Labelled(self, net_labels)

    def denoise(self, y, sigma, class_labels=None):
        return self.net_denoise(y, sigma, self.net_labels(class_labels, y))

    def net_denoise(self, y, sigma, net_labels=None):
        """D(y; sigma) with ``net_labels`` (None, or a label tensor as :meth:`net_labels` gives) fed to the
        network as they are."""
        y_in, y = y, y.to(solver_dtype(y.dtype))     # sdekit's arithmetic; the network casts its own input
        sigma = as_batch(sigma, y)
        inp, cond = self.net_input(self.sde, y, sigma)
        F = watch(self.net(inp, cond) if net_labels is None else self.net(inp, cond, net_labels), "network")
        s = self.sde.scale(self.sde.sigma_inv(sigma)) if self.prediction == "score" else None
        return self._to_d(F.to(y.dtype), y, sigma, s, self.sigma_data).to(y_in.dtype)


class Preconditioned(NetworkDenoiser):
    """sdekit's own networks: F(c_in y, ln(sigma)/4, class_labels) with the parametrisation ``kind``
    ("edm" preconditioning, "eps", "scaled_score", "score", "consistency" or "velocity"); see nets/precond.py.
    ``sigma_min``: the boundary level of kind "consistency" (None: :data:`SIGMA_MIN_CM`); ValueError for
    another kind."""

    KINDS = ("edm", "eps", "scaled_score", "score", "consistency", "velocity")

    def __init__(self, net: nn.Module, sde: SDE, kind: str = "edm", sigma_data: float = 0.5,
                 sigma_min: float | None = None):
        if kind not in self.KINDS:
            raise ValueError(f"unknown preconditioning {kind!r}; choose one of {', '.join(self.KINDS)}")
        if sigma_min is not None and kind != "consistency":
            raise ValueError(f"sigma_min is a parameter of the consistency preconditioning, not of {kind!r}")
        super().__init__(net, sde, kind, EDMInput(sigma_data), sigma_data, sigma_min=sigma_min)
        self.kind = kind

    def config(self) -> dict:
        extra = {"sigma_min": self.sigma_min} if self.consistency else {}
        return {"kind": self.kind, "sigma_data": self.sigma_data, **extra}

    def net_labels(self, class_labels, x):
        """As NetworkDenoiser; class label -1 means "no label" (the embedding's extra null row, index K)."""
        if class_labels is None:
            return None
        k = self.num_classes
        check_labels(class_labels, k)
        class_labels = labels_for(class_labels, x)
        return torch.where(class_labels < 0, torch.full_like(class_labels, k), class_labels)


class Labelled(Denoiser):
    """A network's denoiser with its labels fixed, already checked and converted (``net_labels`` [B]):
    :meth:`NetworkDenoiser.prepared`. The labels of a call are ignored."""

    def __init__(self, inner: NetworkDenoiser, net_labels: torch.Tensor):
        super().__init__(inner.sde)
        self.inner, self.net_labels = inner, net_labels

    def denoise(self, y, sigma, class_labels=None):
        return self.inner.net_denoise(y, sigma, self.net_labels)

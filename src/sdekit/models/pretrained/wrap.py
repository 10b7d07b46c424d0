"""Any torch network as an sdekit model: ``wrap(net, prediction=..., ...)`` returns the same
:class:`~sdekit.models.model.Model` that :func:`sdekit.load` returns.

The network's output F is turned into the denoiser D(y; sigma) once, by its parametrisation
(:data:`sdekit.core.denoisers.PREDICTIONS`), and every sampler, SDEdit, inpainting and the likelihood see
only D (k-diffusion's ``external.py`` idea). Two ways to state the noise process:

* **discrete** (DDPM-style): ``alphas_cumprod`` [N]; the network is called ``net(x, timestep)`` with
  x in model space and a float timestep tensor [B] on the 0..N-1 scale of alphas_cumprod
  (fractional between grid points); the SDE is :class:`~sdekit.core.sde.DiscreteVPSDE`.
* **continuous**: ``sde`` (any member of the family); ``net(x, c)`` with c = t (``time_input="t"``)
  or c = sigma(t) (``time_input="sigma"``).

With ``prediction="edm"`` the network is EDM's F(c_in y, ln(sigma) / 4) instead (Karras et al.
Table 1), for any ``sde``; so is it with ``prediction="consistency"`` (a consistency model, Song et al.
2023: D = c_skip y + c_out F with the boundary condition at ``sigma_min``).
"""
from __future__ import annotations

import torch
from torch import nn

from sdekit.core.denoisers import PREDICTIONS, EDMInput, ModelSpaceInput, NetworkDenoiser
from sdekit.core.errors import UserError
from sdekit.models.model import Model
from sdekit.core.sde import SDE, DiscreteVPSDE

__all__ = ["wrap", "TensorOutput", "WRAP_PREDICTIONS"]

WRAP_PREDICTIONS = ("eps", "x0", "v", "score", "edm", "consistency", "velocity")
EDM_INPUT = ("edm", "consistency")          # predictions whose network is fed EDM's c_in y and ln(sigma) / 4


class TensorOutput(nn.Module):
    """``net`` called with its inputs cast to its own floating dtype, returning a tensor in the input's
    dtype: an output object with ``.sample`` (diffusers) or a tuple is unwrapped. ``keep_channels``:
    keep only the first C output channels (models that also predict a variance, as diffusers'
    "learned" / "learned_range" variance types)."""

    def __init__(self, net, keep_channels: int | None = None):
        super().__init__()
        self.net = net
        self.keep_channels = keep_channels
        self.num_classes = int(getattr(net, "num_classes", 0) or 0)

    def _dtype(self, x: torch.Tensor) -> torch.dtype:
        p = next((q for q in self.parameters() if q.is_floating_point()), None)
        return p.dtype if p is not None else x.dtype

    def forward(self, x: torch.Tensor, cond: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        dtype = self._dtype(x)                 # the time input at least in float32 (fp16 embeddings lose it)
        args = (x.to(dtype), cond.to(torch.promote_types(dtype, torch.float32)))
        out = self.net(*args) if class_labels is None else self.net(*args, class_labels)
        out = getattr(out, "sample", out)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not torch.is_tensor(out):
            raise UserError(f"the network returned {type(out).__name__}, not a tensor")
        if self.keep_channels is not None:
            out = out[:, : self.keep_channels]
        return out.to(x.dtype)


def _shape(shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise UserError(f"shape must be a tuple of positive integers such as (C, H, W), got {shape!r}") from None
    if not 1 <= len(shape) <= 3 or any(s < 1 for s in shape):
        raise UserError(f"shape must be 1 to 3 positive integers such as (C, H, W), got {shape}")
    return shape


def _data_range(data_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise UserError(f"data_range must be (lo, hi), got {data_range!r}") from None
    if not (torch.isfinite(torch.tensor([lo, hi])).all() and lo < hi):
        raise UserError(f"data_range must be finite numbers lo < hi, got {data_range!r}")
    return lo, hi


def _net_input(prediction: str, sde: SDE, time_input: str | None, discrete: bool, sigma_data: float,
               time_scale: float = 1.0):
    """What the network is fed: EDM's scaling, or the model-space x and its time variable (x time_scale)."""
    if isinstance(time_scale, bool) or not isinstance(time_scale, (int, float)) or not 0 < time_scale < float("inf"):
        raise UserError(f"time_scale must be a positive number, got {time_scale!r}")
    if prediction in EDM_INPUT:
        if time_input is not None:
            raise UserError(f"prediction={prediction!r} feeds the network EDM's ln(sigma)/4; it takes no time_input")
        return EDMInput(sigma_data, time_scale)
    if discrete:
        if time_input not in (None, "timestep"):
            raise UserError("a network on alphas_cumprod takes the timestep; time_input must be left out")
        return ModelSpaceInput("timestep", time_scale)
    time_input = "t" if time_input is None else time_input
    if time_input not in ("t", "sigma", "flow"):
        raise UserError(f"time_input must be 't', 'sigma' or 'flow', got {time_input!r}")
    return ModelSpaceInput(time_input, time_scale)


def wrap(net, prediction: str = "eps", alphas_cumprod=None, sde: SDE | None = None, time_input: str | None = None,
         shape=None, data_range=(-1.0, 1.0), num_classes: int = 0, name: str = "wrapped",
         sigma_data: float = 0.5, null_label: bool = True, sigma_min: float | None = None,
         time_scale: float = 1.0) -> Model:
    """A :class:`~sdekit.models.model.Model` of any torch network (or callable).

    net: called as ``net(x, c)`` (``net(x, c, class_labels)`` for a conditional model) with x [B, *shape]
    in model space; it returns a tensor shaped like x (or an object with ``.sample``, or a tuple).
    prediction: what it returns, one of "eps" (the noise: x = s (x0 + sigma eps)), "x0" (the clean data),
    "v" (v-prediction, alpha eps - sigma_t x0 in the VP sense), "score" (grad_x log p_t), "edm" (EDM's F),
    "consistency" (a consistency model's F, Song et al. 2023; fed as "edm"; its default sampler is "consistency"),
    "velocity" (flow matching: v = n - x0 on the path x = (1 - tau) x0 + tau n, with sde=sdekit.FlowSDE()).
    alphas_cumprod: [N] strictly decreasing in (0, 1), for a discrete-time network: c is the float
    timestep [B] in [0, N - 1]. sde: a member of the SDE family, for a continuous-time network:
    c = t in [0, sde.T] (time_input "t", default), c = sigma(t) (time_input "sigma") or the flow path's
    time c = tau = sigma / (1 + sigma) (time_input "flow"; t itself for sdekit.FlowSDE() without shift).
    Give exactly one of alphas_cumprod and sde. shape: (C, H, W) of one sample (or (d,) for vectors).
    data_range: (lo, hi), model space x = lo + (hi - lo) u for pixels u in [0, 1] (the network's own
    range, e.g. (-1, 1) for DDPM, (0, 1) for score_sde's VE models). num_classes: K > 0 for a
    class-conditional network. sigma_data: EDM's, for predictions "edm" and "consistency". sigma_min: the
    boundary level of prediction "consistency" (default 0.002). time_scale: the network's time input is
    c x time_scale (e.g. 1000 for diffusers' flow-matching timesteps, 1000 ln(sigma)/4 for consistency
    models). null_label: whether a conditional
    network also takes label -1 for "no class" (its unconditional score, which unlabelled sampling and
    classifier-free guidance need); False: every evaluation needs a class 0..K-1 (UserError otherwise).

    The network is put in eval mode and its parameters are frozen. Raises UserError on bad arguments.
    """
    if not callable(net):
        raise UserError(f"net must be a torch module or a callable, got {type(net).__name__}")
    if prediction not in WRAP_PREDICTIONS or prediction not in PREDICTIONS:
        raise UserError(f"unknown prediction {prediction!r}; choose one of {', '.join(WRAP_PREDICTIONS)}")
    if (alphas_cumprod is None) == (sde is None):
        raise UserError("give exactly one of alphas_cumprod= (discrete timesteps) and sde= (continuous time)")
    if sde is not None and not isinstance(sde, SDE):
        raise UserError(f"sde must be an sdekit SDE (sdekit.VPSDE(), ...), got {type(sde).__name__}")
    if shape is None:
        raise UserError("wrap needs shape=(C, H, W), the shape of one sample")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise UserError(f"num_classes must be an integer >= 0, got {num_classes!r}")
    shape, (lo, hi) = _shape(shape), _data_range(data_range)
    discrete = alphas_cumprod is not None or isinstance(sde, DiscreteVPSDE)
    if alphas_cumprod is not None:
        sde = DiscreteVPSDE(alphas_cumprod)
    if not isinstance(net, TensorOutput):
        net = TensorOutput(net)
    net.num_classes = num_classes
    net_input = _net_input(prediction, sde, time_input, discrete, sigma_data, time_scale)
    den = NetworkDenoiser(net, sde, prediction, net_input, sigma_data, null_label, sigma_min)
    config = {"format": "wrapped", "name": str(name), "shape": list(shape), "num_classes": num_classes,
              "data_range": [lo, hi], "sde": sde.config(), "prediction": prediction,
              "time_input": getattr(net_input, "time", "edm"),
              **({"sigma_min": den.sigma_min} if den.consistency else {})}
    return Model(den, config, str(name))

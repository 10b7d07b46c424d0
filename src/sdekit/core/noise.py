"""The noise-level core: broadcasting, noise draws, noise-level schedules and evaluation counting.

Everything between a model and a solver speaks in these terms. Times t are float tensors of shape
[B]; noise levels sigma are those of the scaled variable y = x / s(t), in which every SDE of the
family is x0 + sigma n (sde.py). A schedule is a descending list of noise levels
sigma_0 > ... > sigma_{n-1}; solvers may append sigma = 0.
"""
from __future__ import annotations

import contextvars
import functools
import math

import torch

from sdekit.core.errors import UserError

__all__ = ["READ_EVERY", "bcast", "as_batch", "randn", "sigma_schedule", "SCHEDULES", "SIGMA_DATA", "TAIL", "cos_theta",
           "NonFiniteError", "Counter", "solver_dtype", "watch"]


def solver_dtype(*dtypes) -> torch.dtype:
    """The dtype of a solver's state and of every noise-level coefficient: float32, or the widest of
    ``dtypes`` (None ignored) when that is wider (float64). Half-precision networks see their input cast
    to their own dtype and return outputs that are cast back; sdekit's arithmetic on noise levels
    (sigma^2 reaches 121104 at VE's sigma_max = 348, float16 ends at 65504) never runs in 16 bits."""
    return functools.reduce(torch.promote_types, [d for d in dtypes if d is not None], torch.float32)


def bcast(v, x: torch.Tensor) -> torch.Tensor:
    """Shape a per-sample [B] (or scalar) coefficient to broadcast against x [B, ...]."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return v.reshape(v.shape + (1,) * (x.dim() - v.dim()))


def as_batch(v, x: torch.Tensor) -> torch.Tensor:
    """A time or noise level (float, 0-d or [B] tensor) as a float tensor [B] on x's device and dtype."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    if v.dim() == 0:
        v = v.expand(x.shape[0])
    return v


def randn(x: torch.Tensor, generator=None) -> torch.Tensor:
    """Standard normal noise shaped like x [B, ...], drawn from ``generator`` (on its own device) and
    moved to x's. ``generator`` may also be a list of B generators, one stream per sample (row b is
    drawn from generator b), which makes a sample independent of the batch it is drawn in."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != x.shape[0]:
            raise UserError(f"{len(generator)} generators for a batch of {x.shape[0]}")
        return torch.stack([torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype)
                            for g in generator]).to(x.device)
    if generator is None or generator.device == x.device:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


# ---- noise-level schedules: n levels from sigma_max down to sigma_min -------------------------------

def karras(smax: float, smin: float, n: int, rho: float = 7.0, dtype=torch.float64) -> torch.Tensor:
    """EDM's schedule (Karras et al. 2022, eq. 5): uniform in sigma^(1/rho)."""
    u = torch.linspace(0, 1, n, dtype=dtype)
    return (smax ** (1 / rho) + u * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho


def logsnr(smax: float, smin: float, n: int, rho: float = 7.0, dtype=torch.float64) -> torch.Tensor:
    """Uniform in log sigma, i.e. in half the log-SNR (DPM-Solver's default)."""
    u = torch.linspace(0, 1, n, dtype=dtype)
    return torch.exp(math.log(smax) + u * (math.log(smin) - math.log(smax)))


SIGMA_DATA = 0.5     # the data's standard deviation the cosine schedule assumes (EDM's, for data in [-1, 1])


def cos_theta(sigma: float) -> float:
    """cos theta of the noise level sigma >= 0, theta = arctan(sigma / SIGMA_DATA) in [0, pi/2): the signal
    coefficient sigma_data / sqrt(sigma_data^2 + sigma^2) of y / sqrt(1 + sigma^2 / sigma_data^2), 1 at sigma = 0."""
    return SIGMA_DATA / math.hypot(SIGMA_DATA, sigma)


READ_EVERY = 8       # fixed-step solvers read their NaN/Inf flags from the device every this many steps and
                     # after the last: one host sync per 8 steps, at most 7 wasted steps after a NaN
TAIL = 0.4          # the cosine grid's logarithmic share: about two levels spread log-uniformly (see cosine)


def cosine(smax: float, smin: float, n: int, rho: float = 7.0, dtype=torch.float64) -> torch.Tensor:
    """Uniform in v = theta + (TAIL / n) asinh(10 sigma / SIGMA_DATA), theta = arctan(sigma / SIGMA_DATA).

    theta is the angle of the cosine schedule (Nichol & Dhariwal 2021, sigma = tan theta for data of unit
    std), here for data of std SIGMA_DATA: uniform in theta, a few levels go where the widths and nearby
    modes of such data are decided (sigma ~ SIGMA_DATA). The asinh term, logarithmic from SIGMA_DATA / 10
    up, spreads about two levels (TAIL / n keeps its share of v) over the scales theta leaves bare: above
    sigma ~ 3, where data of many dimensions choose between modes (at sigma of the order of their
    distance, which grows with the dimension), and below SIGMA_DATA / 2, where narrower data settle.

    The levels are v_max (1 - k / n), k = 0..n-1, so that a last step to sigma = 0 is as long as the others:
    with few levels the grid ends above smin (the end time rises with a small budget); only once
    v_max / n < v(smin) (about 80 levels for VP) does it end at smin, uniform in v in between."""
    a = TAIL / n

    def v(sig):
        return torch.atan(sig / SIGMA_DATA) + a * torch.asinh(10 * sig / SIGMA_DATA)

    smax_t, smin_t = torch.tensor(smax, dtype=torch.float64), torch.tensor(smin, dtype=torch.float64)
    vmax = float(v(smax_t))
    target = torch.linspace(vmax, max(float(v(smin_t)), vmax / n), n, dtype=torch.float64)
    lo, hi = torch.zeros_like(target), torch.full_like(target, smax)
    for _ in range(200):                         # bisection: v is increasing in sigma
        mid = (lo + hi) / 2
        below = v(mid) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    out = ((lo + hi) / 2).to(dtype)
    out[0] = smax
    return out


SCHEDULES = {"karras": karras, "logsnr": logsnr, "cosine": cosine,
             "uniform": None}   # uniform: uniform in t, needs the SDE


def sigma_schedule(sde, n: int, kind: str = "karras", eps: float | None = None, rho: float = 7.0,
                   dtype=torch.float64, t_start: float | None = None) -> torch.Tensor:
    """n noise levels [n] from sigma(t_start) (default sigma(T)) down to sigma(eps).

    kind: "karras" (EDM eq. 5, ``rho``), "logsnr" (uniform in log sigma), "cosine" (uniform in
    arctan(sigma / SIGMA_DATA) with a logarithmic tail; with few levels it ends one spacing above
    sigma = 0 instead, see :func:`cosine`), "uniform" (uniform in t, score_sde's grid). Raises UserError
    for an unknown kind."""
    if kind not in SCHEDULES:
        raise UserError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    eps = sde.eps if eps is None else eps
    t_start = sde.T if t_start is None else t_start
    smax, smin = sde.sigma(torch.tensor([t_start, eps], dtype=dtype)).tolist()
    if n == 1:
        return torch.tensor([smax], dtype=dtype)
    if kind == "uniform":
        return sde.sigma(torch.linspace(t_start, eps, n, dtype=dtype))
    return SCHEDULES[kind](smax, smin, n, rho, dtype)


# ---- evaluation counting ----------------------------------------------------------------------------

class NonFiniteError(UserError, FloatingPointError):
    """The model's output or the solver's state became NaN/Inf."""


# Who produced a number, in the order of one evaluation: what sdekit fed the model, what the model
# (a network or a score function) returned, and what sdekit made of it (the denoiser's conversion).
_BLAME = {
    "input": "sdekit's solver state fed to the model is NaN/Inf at {where} (the solver's own arithmetic in "
             "{dtype} went bad before this evaluation; the model's earlier outputs were finite)",
    "network": "the network's output is NaN/Inf at {where} (evaluation {nfe}; its input was finite)",
    "model": "the model's output is NaN/Inf at {where} (evaluation {nfe}; its input was finite)",
    "conversion": "sdekit's conversion of the model's finite output into a denoised estimate or score "
                  "overflowed at {where} (evaluation {nfe}, in {dtype})",
    "state": "sdekit's solver step to {where} produced NaN/Inf in its {dtype} state (the model's outputs were "
             "finite)",
}

_WATCH: contextvars.ContextVar = contextvars.ContextVar("sdekit_watch", default=None)


def watch(out: torch.Tensor, who: str = "network") -> torch.Tensor:
    """Record in the evaluation now under way (a :class:`Counter`'s) whether the model's own output
    ``out`` is finite, as ``who`` ("network" or "model"); a device-side flag, no host sync. Returns
    ``out``; a no-op outside a counted evaluation."""
    counter = _WATCH.get()
    if counter is not None:
        counter.note(who, out, counter._where)
        counter._watched = out
    return out


def _fmt_where(where) -> str:
    if isinstance(where, str):
        return where
    kind, v = where
    v = float(torch.as_tensor(v).flatten()[0]) if torch.is_tensor(v) else float(v)
    return f"{kind}={v:.4g}"


class Counter:
    """Counts model evaluations (NFE), refuses mis-shaped outputs at once and NaN/Inf ones when
    :meth:`verdict` reads its ledger.

    The ledger holds, in order, what one evaluation touched: the state fed to the model, the model's own
    output (a device-side finiteness flag, no host sync), sdekit's conversion of it; then the solver's new
    state. :meth:`verdict` reads the flags and the state's together (one host sync): every
    :data:`READ_EVERY` solver steps and after the last in :func:`sdekit.solvers.loop.solve`, or after every
    evaluation when ``eager`` (the default; adaptive
    solvers and direct calls). Inputs and conversions are kept as references and looked at only when
    something is NaN/Inf (they reach the state, so a bad one always shows there). The
    :class:`NonFiniteError` names the first number that went bad, whose it was (the network's, the
    model's, or sdekit's own arithmetic) and its noise level."""

    def __init__(self, eager: bool = True):
        self.nfe, self.eager = 0, bool(eager)
        self._notes, self._where, self._watched, self._opened = [], None, None, 0

    def note(self, who: str, t: torch.Tensor, where=None, lazy: bool = False) -> None:
        """Record whether ``t`` is finite (``who``: a key of the blame table; ``where``: a string, or a
        (name, value) pair formatted only on failure); ``lazy``: keep ``t`` and look only on failure."""
        self._notes.append((who, where, self.nfe, t.dtype, t if lazy else torch.isfinite(t).all(), lazy))

    def begin(self, x: torch.Tensor, where):
        """Open one counted evaluation of the model at the state x (``where``: (name, level)); returns the
        token for :meth:`end`. Between the two, :func:`watch` records the model's own output."""
        self.nfe += 1
        self.note("input", x, where, lazy=True)
        self._opened, self._where = len(self._notes), where
        return _WATCH.set(self)

    def end(self, token, out: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """Close the evaluation opened by :meth:`begin` with its output ``out`` (None: it raised) for input x:
        UserError for a mis-shaped output, NaN/Inf noted (and read at once when ``eager``). Returns out."""
        _WATCH.reset(token)
        if out is None:
            self._watched = None
            return out
        if out.shape != x.shape:
            self._watched = None
            raise UserError(f"the model returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
        if out is not self._watched:                        # the model's own output is noted already
            converted = len(self._notes) > self._opened
            self.note("conversion" if converted else "model", out, self._where, lazy=converted)
        self._watched = None
        if self.eager:
            self.verdict()
        return out

    def evaluate(self, fn, x: torch.Tensor, where):
        """``fn()``, one counted evaluation of the model at the state x (``where``: (name, level))."""
        token, out = self.begin(x, where), None
        try:
            out = fn()
        finally:
            self.end(token, out, x)
        return out

    def check(self, out: torch.Tensor, x: torch.Tensor, where: str) -> torch.Tensor:
        """Count one evaluation whose output ``out`` (for input x) is already computed."""
        return self.evaluate(lambda: out, x, where)

    def verdict(self, state: torch.Tensor | None = None, where=None, read: bool = True) -> None:
        """Read the ledger and the new solver ``state`` reached at ``where`` (when given) in one host sync;
        raise NonFiniteError naming the first NaN/Inf, else clear the ledger. ``read=False`` defers the read:
        the state's flag joins the ledger and every kept reference becomes its device-side flag (no host
        sync, nothing held across steps); the next read looks at all of it, in order."""
        if state is not None:
            self._notes.append(("state", where, self.nfe, state.dtype, torch.isfinite(state).all(), False))
        if not read:
            self._notes = [(*n[:4], torch.isfinite(n[4]).all(), False) if n[5] else n for n in self._notes]
            return
        notes, self._notes = self._notes, []
        flags = [n[4] for n in notes if not n[5]]
        if not flags or all(torch.stack(flags).tolist()):
            if state is not None or not any(n[5] for n in notes):
                return
        for who, at, nfe, dtype, v, lazy in notes:          # something is NaN/Inf: the first one, in order
            if not bool(torch.isfinite(v).all() if lazy else v):
                raise NonFiniteError(_BLAME[who].format(where=_fmt_where(at), nfe=nfe,
                                                        dtype=str(dtype).replace("torch.", "")))

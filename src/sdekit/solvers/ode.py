"""ODE integrators that stay in torch: adaptive Dormand-Prince 5(4) (as scipy's RK45) and fixed-step Heun.

The whole state is one vector, as in score_sde's use of scipy.integrate.solve_ivp, but no NumPy
round trip per step: the state lives on its device and dtype throughout. The samplers that use them
(the probability-flow ODE) are in sdekit.solvers.samplers; the likelihood integrates its augmented ODE
(the state and its log-density) with them.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from sdekit.core.errors import UserError

# Dormand & Prince (1980) tableau; c, A, and the 5th/4th order weights.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
# error weights: b5 - b4 (including the FSAL stage k7)
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


class DormandPrince:
    """Dormand-Prince 5(4) with step-size control on dy/dt = f(t, y) from t0 to t1 (either direction),
    one accepted step per :meth:`step`. ``y0``: the whole state as one tensor, which stays on its device and
    dtype. norm: the size of an error already divided by atol + rtol |y|, a step being accepted when it is at
    most 1 (default: the RMS over the whole state, as scipy's); it is read on the host once per try, the
    step's one sync. ``on_bad()``, when given, is called before FloatingPointError is raised for a NaN/Inf
    error estimate (a counted model's verdict names the culprit there). UserError after ``max_steps``
    accepted steps. ``nfe``: evaluations of f so far; ``steps``: accepted steps."""

    def __init__(self, f: Callable[[float, torch.Tensor], torch.Tensor], y0: torch.Tensor, t0: float, t1: float,
                 rtol=1e-5, atol=1e-5, first_step: float | None = None, norm: Callable[[torch.Tensor], float] = _rms,
                 max_steps: int = 100_000, on_bad: Callable[[], None] | None = None):
        self.f, self.t1, self.rtol, self.atol, self.norm = f, float(t1), rtol, atol, norm
        self.max_steps, self.on_bad = max_steps, on_bad
        self.direction = 1.0 if t1 >= t0 else -1.0
        self.t, self.y, self.steps = float(t0), y0, 0
        self.k1 = f(self.t, y0)
        self.nfe = 1
        span = abs(self.t1 - self.t)
        if span == 0:
            self.h = 0.0
        elif first_step is None:                    # Hairer, Norsett & Wanner, II.4 "starting step size"
            y, k1 = self.y, self.k1
            scale = atol + y.abs() * rtol
            d0, d1 = norm(y / scale), norm(k1 / scale)
            h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
            h0 = min(h0, span)
            k = f(self.t + self.direction * h0, y + self.direction * h0 * k1)
            self.nfe += 1
            d2 = norm((k - k1) / scale) / h0
            h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
            self.h = min(100 * h0, h1, span)
        else:
            self.h = min(abs(first_step), span)

    @property
    def done(self) -> bool:
        return self.direction * (self.t1 - self.t) <= 0

    def restart(self, y: torch.Tensor) -> None:
        """Go on from state y at the current time (a replaced state): the derivative is evaluated afresh."""
        self.y = y
        if not self.done:
            self.k1 = self.f(self.t, y)
            self.nfe += 1

    def step(self) -> tuple[float, torch.Tensor]:
        """Take one accepted step (shrinking h after rejected tries); returns the new (t, y)."""
        if self.steps >= self.max_steps:
            raise UserError(f"rk45: more than {self.max_steps} steps; loosen rtol/atol")
        f, t, y, k1, d = self.f, self.t, self.y, self.k1, self.direction
        while True:
            h = min(self.h, abs(self.t1 - t))
            last = h >= abs(self.t1 - t)
            ks = [k1]
            for i in range(1, 6):
                yi = y + d * h * sum(a * kk for a, kk in zip(_A[i], ks))
                ks.append(f(t + d * h * _C[i], yi))
            y_new = y + d * h * sum(b * kk for b, kk in zip(_B5, ks) if b != 0.0)
            k_new = f(t + d * h, y_new)
            self.nfe += 6
            ks.append(k_new)
            err = d * h * sum(e * kk for e, kk in zip(_E, ks) if e != 0.0)
            scale = self.atol + torch.maximum(y.abs(), y_new.abs()) * self.rtol
            err_norm = self.norm(err / scale)
            if not math.isfinite(err_norm):
                if self.on_bad is not None:
                    self.on_bad()
                raise FloatingPointError(f"rk45: non-finite state at t={t:.4g}")
            if err_norm <= 1.0:
                self.h = h * (10.0 if err_norm == 0 else min(10.0, 0.9 * err_norm ** -0.2))
                self.t, self.y, self.k1 = (self.t1 if last else t + d * h), y_new, k_new
                self.steps += 1
                return self.t, self.y
            self.h = h * max(0.2, 0.9 * err_norm ** -0.2)


def rk45(f: Callable[[float, torch.Tensor], torch.Tensor], y0: torch.Tensor, t0: float, t1: float,
         rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 100_000, first_step: float | None = None,
         on_step: Callable[[float, torch.Tensor], torch.Tensor | None] | None = None,
         norm: Callable[[torch.Tensor], float] = _rms, on_bad: Callable[[], None] | None = None):
    """Integrate dy/dt = f(t, y) from t0 to t1 (either direction) by :class:`DormandPrince`. Returns
    (y(t1), nfe, n_steps).

    on_step(t, y), called after every accepted step, may return a replaced state (the derivative is
    then evaluated afresh at it). norm, on_bad, max_steps: as DormandPrince."""
    rk = DormandPrince(f, y0, t0, t1, rtol, atol, first_step, norm, max_steps, on_bad)
    while not rk.done:
        t, y = rk.step()
        if on_step is not None:
            replaced = on_step(t, y)
            if replaced is not None:
                rk.restart(replaced)
    return rk.y, rk.nfe, rk.steps


def heun(f: Callable[[float, torch.Tensor], torch.Tensor], y0: torch.Tensor, ts,
         on_step: Callable[[float, torch.Tensor], None] | None = None, progress: bool = False, desc: str = "heun"):
    """Integrate dy/dt = f(t, y) over the grid ``ts`` (a list of times, either direction) by Heun's method
    (the explicit trapezoidal rule, 2nd order): y' = y + h (f(t, y) + f(t', y + h f(t, y))) / 2.
    ``on_step(t, y)`` after every step (e.g. a finiteness verdict). Returns (y(ts[-1]), nfe, n_steps)."""
    from sdekit.core.bars import progress_bar
    y, nfe = y0, 0
    pairs = list(zip(ts[:-1], ts[1:]))
    for t, t_next in progress_bar(pairs, disable=not progress, desc=desc):
        h = t_next - t
        k1 = f(t, y)
        k2 = f(t_next, y + h * k1)
        y = y + h * 0.5 * (k1 + k2)
        nfe += 2
        if on_step is not None:
            on_step(t_next, y)
    return y, nfe, len(pairs)

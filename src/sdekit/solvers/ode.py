"""An adaptive Runge-Kutta solver that stays in torch (Dormand-Prince 5(4), as scipy's RK45).

The whole state is one vector, as in score_sde's use of scipy.integrate.solve_ivp, but no NumPy
round trip per step: the state lives on its device and dtype throughout.
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


def rk45(f: Callable[[float, torch.Tensor], torch.Tensor], y0: torch.Tensor, t0: float, t1: float,
         rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 100_000, first_step: float | None = None,
         on_step: Callable[[float, torch.Tensor], torch.Tensor | None] | None = None,
         norm: Callable[[torch.Tensor], float] = _rms):
    """Integrate dy/dt = f(t, y) from t0 to t1 (either direction). Returns (y(t1), nfe, n_steps).

    on_step(t, y), called after every accepted step, may return a replaced state (the derivative is
    then evaluated afresh at it). norm: the size of an error already divided by atol + rtol |y|, a
    step being accepted when it is at most 1 (default: the RMS over the whole state, as scipy's)."""
    direction = 1.0 if t1 >= t0 else -1.0
    t, y = float(t0), y0
    k1 = f(t, y)
    nfe = 1
    span = abs(t1 - t0)
    if span == 0:
        return y, nfe, 0
    if first_step is None:                      # Hairer, Norsett & Wanner, II.4 "starting step size"
        scale = atol + y.abs() * rtol
        d0, d1 = norm(y / scale), norm(k1 / scale)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, span)
        y1 = y + direction * h0 * k1
        k = f(t + direction * h0, y1)
        nfe += 1
        d2 = norm((k - k1) / scale) / h0
        h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
        h = min(100 * h0, h1, span)
    else:
        h = min(abs(first_step), span)
    steps = 0
    while direction * (t1 - t) > 0:
        if steps >= max_steps:
            raise UserError(f"rk45: more than {max_steps} steps; loosen rtol/atol")
        h = min(h, abs(t1 - t))
        last = h >= abs(t1 - t)
        ks = [k1]
        for i in range(1, 6):
            yi = y + direction * h * sum(a * kk for a, kk in zip(_A[i], ks))
            ks.append(f(t + direction * h * _C[i], yi))
        y_new = y + direction * h * sum(b * kk for b, kk in zip(_B5, ks) if b != 0.0)
        k_new = f(t + direction * h, y_new)
        nfe += 6
        ks.append(k_new)
        err = direction * h * sum(e * kk for e, kk in zip(_E, ks) if e != 0.0)
        scale = atol + torch.maximum(y.abs(), y_new.abs()) * rtol
        err_norm = norm(err / scale)
        if not math.isfinite(err_norm):
            raise FloatingPointError(f"rk45: non-finite state at t={t:.4g}")
        if err_norm <= 1.0:
            t, y, k1 = (t1 if last else t + direction * h), y_new, k_new
            steps += 1
            if on_step is not None:
                replaced = on_step(t, y)
                if replaced is not None:
                    y = replaced
                    if not last:
                        k1 = f(t, y)
                        nfe += 1
            factor = 10.0 if err_norm == 0 else min(10.0, 0.9 * err_norm ** -0.2)
        else:
            factor = max(0.2, 0.9 * err_norm ** -0.2)
        h *= factor
    return y, nfe, steps

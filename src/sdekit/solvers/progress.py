"""Progress of a long integration, seen from the model: a denoiser that reports each evaluation.

Solvers that choose their own steps (RK45) cannot say in advance how many evaluations they need,
but every evaluation is at a time t between the first one (eps) and T, so the fraction
(t - t_first) / (T - t_first) tells how far the integration has come.
"""
from __future__ import annotations

from sdekit.core.denoisers import Denoiser
from sdekit.core.noise import as_batch

__all__ = ["Watched"]


class Watched(Denoiser):
    """``inner`` unchanged, but every evaluation calls ``report(fraction, t, nfe)``: the fraction in
    [0, 1] of [t_first, T] reached (t_first: the time of the first evaluation), the time t of this
    evaluation (from sigma for denoiser calls) and the evaluations so far. Use it as the model of
    any sdekit function (``ScoreView(Watched(model.denoiser, report))``); results are identical."""

    def __init__(self, inner: Denoiser, report):
        super().__init__(inner.sde)
        self.inner, self.report, self.t_first, self.nfe = inner, report, None, 0

    def _seen(self, t) -> None:
        t = float(t.max())
        self.nfe += 1
        self.t_first = t if self.t_first is None else self.t_first
        span = self.sde.T - self.t_first
        self.report(min(max((t - self.t_first) / span, 0.0), 1.0) if span > 0 else 0.0, t, self.nfe)

    def denoise(self, y, sigma, class_labels=None):
        self._seen(self.sde.sigma_inv(as_batch(sigma, y)))
        return self.inner.denoise(y, sigma, class_labels)

    def score(self, x, t, class_labels=None):
        self._seen(as_batch(t, x))
        return self.inner.score(x, t, class_labels)

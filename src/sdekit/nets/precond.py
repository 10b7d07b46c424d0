"""Turn a raw network F into a score for any SDE of the family.

Every member has the kernel x_t = s(t) (x0 + sigma(t) n), so in the scaled variable y = x / s(t) the
data is only corrupted by noise of level sigma (sde.py). The wrapper works there:

* ``"edm"`` (Karras et al. 2022, eq. 7 and Table 1): the denoiser
      D(y; sigma) = c_skip y + c_out F(c_in y, c_noise),
      c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
      c_in = 1 / sqrt(sigma^2 + sd^2),   c_noise = ln(sigma) / 4,
  and the score follows from Tweedie's formula,  grad_x log p_t(x) = (D - y) / (s sigma^2).
* ``"eps"`` (DDPM / score_sde VP): F predicts the noise n, score = -F / (s sigma) = -F / std.
* ``"scaled_score"`` (score_sde NCSN++ VE): F predicts std * score, score = F / std.
* ``"score"``: F is the score itself.

In every case F sees c_in y (unit-variance input) and c_noise = ln(sigma)/4, so one network
definition serves VE, VP, sub-VP and EDM alike.
"""
from __future__ import annotations

import torch
from torch import nn

from ..sde import SDE, _as_t, _bcast

KINDS = ("edm", "eps", "scaled_score", "score")


class Preconditioned(nn.Module):
    """score(x, t, class_labels=None) for the SDE ``sde``, built from the raw network ``net``."""

    def __init__(self, net: nn.Module, sde: SDE, kind: str = "edm", sigma_data: float = 0.5):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown preconditioning {kind!r}; choose one of {', '.join(KINDS)}")
        self.net, self.sde, self.kind, self.sigma_data = net, sde, kind, float(sigma_data)

    def config(self) -> dict:
        return {"kind": self.kind, "sigma_data": self.sigma_data}

    @property
    def num_classes(self) -> int:
        return int(getattr(self.net, "num_classes", 0))

    def _coefs(self, t, x):
        t = _as_t(t, x)
        s, sig = self.sde.scale(t), self.sde.sigma(t)
        return t, s, sig

    def _raw(self, y, sig, class_labels):
        c_in = _bcast((sig ** 2 + self.sigma_data ** 2).rsqrt(), y)
        return self.net(c_in * y, sig.log() / 4, class_labels)

    def denoise(self, x: torch.Tensor, t, class_labels=None) -> torch.Tensor:
        """D(y; sigma(t)) = E[x0 | x_t = x], the denoised estimate (in the data's own units)."""
        t, s, sig = self._coefs(t, x)
        y = x / _bcast(s, x)
        if self.kind == "edm":
            sd2 = self.sigma_data ** 2
            c_skip = _bcast(sd2 / (sig ** 2 + sd2), y)
            c_out = _bcast(sig * self.sigma_data * (sig ** 2 + sd2).rsqrt(), y)
            return c_skip * y + c_out * self._raw(y, sig, class_labels)
        return y + _bcast(sig ** 2 * s, x) * self.forward(x, t, class_labels)   # Tweedie

    def forward(self, x: torch.Tensor, t, class_labels=None) -> torch.Tensor:
        t, s, sig = self._coefs(t, x)
        if self.kind == "edm":
            y = x / _bcast(s, x)
            return (self.denoise(x, t, class_labels) - y) / _bcast(s * sig ** 2, x)
        std = _bcast(s * sig, x)
        out = self._raw(x / _bcast(s, x), sig, class_labels)
        if self.kind == "eps":
            return -out / std
        if self.kind == "scaled_score":
            return out / std
        return out

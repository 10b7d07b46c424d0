"""Turn a raw network F into a denoiser for any SDE of the family (sdekit's own networks).

Every member has the kernel x_t = s(t) (x0 + sigma(t) n), so in the scaled variable y = x / s(t) the
data is only corrupted by noise of level sigma (sde.py). sdekit's networks always see c_in y
(unit-variance input, c_in = 1 / sqrt(sigma^2 + sigma_data^2)) and c_noise = ln(sigma) / 4, so one
network definition serves VE, VP, sub-VP and EDM alike; ``kind`` says what F predicts:

* ``"edm"`` (Karras et al. 2022, eq. 7 and Table 1): D = c_skip y + c_out F,
  c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2);
* ``"eps"`` (DDPM / score_sde VP): F predicts the noise n, D = y - sigma F;
* ``"scaled_score"`` (score_sde NCSN++ VE): F = std * score, D = y + sigma F;
* ``"score"``: F is the score itself, D = y + sigma^2 s F;
* ``"consistency"`` (Song et al. 2023, appendix C): D = f(y, sigma) = c_skip y + c_out F with
  c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2), c_out = (sigma - sigma_min) sd / sqrt(sd^2 + sigma^2):
  a consistency model (f(y, sigma_min) = y), sampled by the "consistency" sampler;
* ``"velocity"`` (flow matching): F = n - x0 on the path x = (1 - tau) x0 + tau n, tau = sigma / (1 + sigma),
  D = (y - sigma F) / (1 + sigma).

The class itself lives with the other denoisers (sdekit.core.denoisers); this module names it for nets/.
"""
from sdekit.core.denoisers import Preconditioned

KINDS = Preconditioned.KINDS

__all__ = ["Preconditioned", "KINDS"]

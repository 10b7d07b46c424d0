"""Faithfulness (L2) and realism (KID, FID) for SDEdit, on pixels in [0, 1].

* L2 (faithfulness to the guide): the Euclidean distance ||u - v||_2 between two images with pixel
  values in [0, 1], per image; and the same after average-pooling both by ``factor`` (the paper
  compares outputs and stroke inputs at low resolution, where a stroke painting carries its
  information).
* KID (realism; Binkowski et al. 2018): the unbiased MMD^2 with the kernel (x.y / d + 1)^3 between
  features of generated and of held-out real images, computed by torchmetrics'
  KernelInceptionDistance over random subsets (mean and std over subsets). The features are those of
  a small classifier trained on the data itself (:mod:`sdekit.models.nets.features`), since Inception
  weights cannot be fetched here; KID values are therefore comparable only within that feature space.
* FID: torchmetrics' FrechetInceptionDistance on the same features, when both sets have more
  images than twice the feature dimension (otherwise the covariances are too poorly estimated).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sdekit.core.errors import UserError
from sdekit.models.nets.features import load_features

__all__ = ["l2", "l2_downsampled", "mean_ci", "bootstrap_ci", "binomial_ci", "kid", "fid", "KIDResult",
           "features"]


def _check_pair(u: torch.Tensor, v: torch.Tensor):
    if u.shape != v.shape:
        raise UserError(f"images differ in shape: {tuple(u.shape)} vs {tuple(v.shape)}")
    if u.dim() != 4:
        raise UserError(f"expected images [B, C, H, W], got {tuple(u.shape)}")


def l2(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-image ||u - v||_2 on [0, 1] pixels, shape [B]."""
    _check_pair(u, v)
    return (u.double() - v.double()).flatten(1).norm(dim=1)


def l2_downsampled(u: torch.Tensor, v: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Per-image L2 after average-pooling both images by ``factor`` (16x16 -> 4x4 by default)."""
    _check_pair(u, v)
    if factor < 1 or u.shape[-1] % factor or u.shape[-2] % factor:
        raise UserError(f"downsampling factor {factor} does not divide the image size {tuple(u.shape[-2:])}")
    return l2(F.avg_pool2d(u.double(), factor), F.avg_pool2d(v.double(), factor))


def mean_ci(values: torch.Tensor, z: float = 1.96) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation confidence interval (95% for z = 1.96)."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        raise UserError("no values")
    half = z * float(v.std(unbiased=True)) / math.sqrt(v.numel()) if v.numel() > 1 else float("nan")
    return float(v.mean()), half


def bootstrap_ci(values, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of ``values`` and its percentile-bootstrap confidence interval
    (scipy.stats.bootstrap, ``resamples`` resamples drawn with ``seed``). One value: lo = hi = it."""
    from scipy.stats import bootstrap
    v = torch.as_tensor(values, dtype=torch.float64).flatten().numpy()
    if v.size == 0:
        raise UserError("no values")
    if v.size == 1 or v.min() == v.max():
        return float(v.mean()), float(v.min()), float(v.max())
    ci = bootstrap((v,), np.mean, confidence_level=level, n_resamples=resamples, method="percentile",
                   random_state=np.random.default_rng(seed)).confidence_interval
    return float(v.mean()), float(ci.low), float(ci.high)


def binomial_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """(p, lo, hi): the fraction successes / n and its Wilson score interval (scipy.stats.binomtest)."""
    from scipy.stats import binomtest
    if n < 1 or not 0 <= successes <= n:
        raise UserError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return successes / n, float(ci.low), float(ci.high)


@dataclass
class KIDResult:
    mean: float
    std: float            # standard deviation over subsets (torchmetrics' kid_std)
    subsets: int
    subset_size: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.std:.4f}"

    def ci(self, z: float = 1.96) -> tuple[float, float]:
        """mean -/+ z std: a confidence interval (95% for z = 1.96) when each subset holds about half of
        each set (:func:`kid`'s default), since the spread of half-sample estimates approximates the
        sampling spread of the full-sample one (McCarthy's half-sampling); conservative, as the
        reference's share of the spread is counted at half its size, too."""
        return self.mean - z * self.std, self.mean + z * self.std


def _feature_net(feature):
    if feature is None:
        return load_features()
    return feature


@torch.no_grad()
def features(u: torch.Tensor, feature=None, batch_size: int = 512) -> torch.Tensor:
    """Features of images u in [0, 1] under ``feature`` (default: the shipped digits network)."""
    net = _feature_net(feature)
    return torch.cat([net(b) for b in u.split(batch_size)])


def kid(real: torch.Tensor, fake: torch.Tensor, feature=None, subsets: int = 50, subset_size: int | None = None,
        seed: int = 0) -> KIDResult:
    """KID between images ``real`` and ``fake`` (pixels in [0, 1], [N, C, H, W]) in the feature space
    of ``feature`` (an nn.Module mapping such images to [N, d]; default the shipped digits network).
    subset_size defaults to min(N_real, N_fake) / 2 (at most 1000), so that subsets differ and their
    spread (``std``) shows the estimate's uncertainty; the subsets are drawn with ``seed``."""
    from torchmetrics.image.kid import KernelInceptionDistance
    n = min(len(real), len(fake))
    if n < 2:
        raise UserError(f"KID needs at least 2 images in each set, got {len(real)} and {len(fake)}")
    size = min(max(2, n // 2), 1000) if subset_size is None else int(subset_size)
    if not 2 <= size <= n:
        raise UserError(f"KID subset size must lie in [2, {n}], got {size}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)     # "will save all extracted features"
        metric = KernelInceptionDistance(feature=_feature_net(feature), subsets=subsets, subset_size=size)
    with torch.no_grad():
        for b in real.float().split(512):
            metric.update(b, real=True)
        for b in fake.float().split(512):
            metric.update(b, real=False)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            m, s = metric.compute()
    return KIDResult(float(m), float(s), subsets, size)


def fid(real: torch.Tensor, fake: torch.Tensor, feature=None) -> float | None:
    """FID in the feature space (None when either set has at most 2 d images: too few for the
    d x d covariances)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    net = _feature_net(feature)
    d = int(getattr(net, "num_features", 0)) or int(net(real[:1].float()).shape[-1])
    if min(len(real), len(fake)) <= 2 * d:
        return None
    metric = FrechetInceptionDistance(feature=net, normalize=True, input_img_size=tuple(real.shape[1:]))
    with torch.no_grad():
        for b in real.float().split(512):
            metric.update(b, real=True)
        for b in fake.float().split(512):
            metric.update(b, real=False)
        return float(metric.compute())

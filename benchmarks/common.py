"""Shared pieces of the benchmarks: the exact-score mixtures, the sigma-space reference ODE, the
energy distance, timing, optional peers, and result files.

Every member of the SDE family has the same probability-flow ODE in y = x / s(t) with sigma as time
(Karras et al. 2022, eq. 4):  dy/dsigma = -sigma grad_y log p(y; sigma),  p(y; sigma) = p_0 * N(0, sigma^2 I).
For a Gaussian mixture p(y; sigma) is again a mixture, so D(y; sigma) = y + sigma^2 grad log p is exact,
and every sampler (sdekit, diffusers, k-diffusion) is fed this same function in its own convention.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from sdekit import GaussianMixture
from sdekit.solvers.ode import rk45
from sdekit.core.sde import EDMSDE

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("SDEKIT_BENCH_RESULTS", ROOT / "benchmarks" / "results"))
IMG = ROOT / "docs" / "img"
F64 = torch.float64


# ---- problems ------------------------------------------------------------------------------------

def _ring2d():
    a = torch.arange(8, dtype=F64) * (2 * math.pi / 8)
    return GaussianMixture(torch.stack([a.cos(), a.sin()], 1), 0.1, torch.arange(1, 9, dtype=F64))


def _random64d():
    g = torch.Generator().manual_seed(0)
    means = 0.5 * torch.randn(16, 64, generator=g, dtype=F64)
    stds = 0.1 + 0.2 * torch.rand(16, generator=g, dtype=F64)
    return GaussianMixture(means, stds, 0.5 + torch.rand(16, generator=g, dtype=F64))


def _digits16():
    g = torch.Generator().manual_seed(0)
    from sdekit.data.datasets import digits
    x = digits(16).x
    idx = torch.randperm(len(x), generator=g)[:20]
    return GaussianMixture(x[idx].double(), 0.1)


def _unequal2d():
    return GaussianMixture(torch.tensor([[-2.5, -0.5], [0.0, 2.0], [2.0, -1.5], [1.0, 0.5]], dtype=F64),
                           torch.tensor([0.2, 0.5, 0.35, 0.6], dtype=F64), torch.tensor([0.15, 0.35, 0.2, 0.3], dtype=F64))


def _unequal64d():
    g = torch.Generator().manual_seed(1)
    means = 0.5 * torch.randn(8, 64, generator=g, dtype=F64)
    stds = 0.05 * 12 ** (torch.arange(8, dtype=F64) / 7)
    return GaussianMixture(means, stds, torch.tensor([3.0, 8.0, 1.0, 6.0, 2.0, 7.0, 4.0, 5.0], dtype=F64))


MIXTURES = {
    "2d": _ring2d,          # 8 modes on the unit circle, std 0.1, weights 1..8
    "64d": _random64d,      # 16 random modes, stds 0.1..0.3, random weights
    "img16": _digits16,     # 20 digit images at 16x16 in [-1, 1] as means, std 0.1
    "uneq2d": _unequal2d,   # 4 modes, stds 0.2, 0.5, 0.35, 0.6, weights 0.15, 0.35, 0.2, 0.3
    "uneq64d": _unequal64d,  # 8 random modes, stds 0.05..0.6 (geometric), weights 1..8 in shuffled order
}


def mixture(name: str) -> GaussianMixture:
    """The benchmark mixture ``name`` (a key of MIXTURES; see the comments there)."""
    if name not in MIXTURES:
        raise ValueError(f"unknown problem {name!r}; choose from {', '.join(MIXTURES)}")
    return MIXTURES[name]()


class ExactDenoiser:
    """D(y; sigma) = y + sigma^2 grad_y log p(y; sigma) for a mixture, sigma a float or a [B] tensor.
    grad log p(y; sigma) is the mixture's score under EDM's SDE (s = 1, sigma(t) = t) at t = sigma."""

    def __init__(self, gmm: GaussianMixture):
        self.score = gmm.score_fn(EDMSDE(1e-12, 1e6))
        self.calls = 0

    def __call__(self, y: torch.Tensor, sigma) -> torch.Tensor:
        self.calls += 1
        sig = torch.as_tensor(sigma, dtype=F64).reshape(-1).expand(y.shape[0])
        yd = y.double()
        d = yd + sig.reshape(-1, *[1] * (y.dim() - 1)) ** 2 * self.score(yd, sig).double()
        return d.to(y.dtype)


def reference(gmm: GaussianMixture, y0: torch.Tensor, sigma0: float, rtol: float = 1e-9,
              sigma_end: float = 1e-6) -> tuple[torch.Tensor, int]:
    """The exact endpoint of the probability-flow ODE from (y0, sigma0) to sigma = 0: adaptive RK45 in
    u = log sigma, dy/du = y - D(y; e^u) (no division by sigma), to sigma_end, then y = D(y; sigma_end)
    (error O(sigma_end^2)). Returns (x0, nfe)."""
    den = ExactDenoiser(gmm)
    shape = y0.shape

    def f(u, y):
        y = y.reshape(shape)
        return (y - den(y, math.exp(u))).reshape(-1)

    y, nfe, _ = rk45(f, y0.double().reshape(-1), math.log(sigma0), math.log(sigma_end), rtol=rtol, atol=rtol)
    return den(y.reshape(shape), sigma_end), nfe + 1


# ---- metrics -------------------------------------------------------------------------------------

def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Szekely's energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (V-statistic)."""
    x, y = x.flatten(1).double(), y.flatten(1).double()
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def per_sample_error(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """||x - ref|| / sqrt(dim) per sample (an RMS over coordinates, comparable across dimensions)."""
    d = (x.double() - ref.double()).flatten(1)
    return d.norm(dim=1) / math.sqrt(d.shape[1])


def median(xs) -> float:
    return float(np.median(np.asarray(xs, dtype=float)))


class Timer:
    """Wall time of a block: ``with Timer() as t: ...; t.seconds``."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def timed(fn, repeats: int = 5) -> float:
    """Median wall time of fn() over repeats (after one warm-up call)."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return median(out)


# ---- optional peers ------------------------------------------------------------------------------

_KD = []


def load_k_diffusion_sampling():
    """k_diffusion.sampling, or (None, reason). The package's __init__ imports its training and
    evaluation modules (torchvision, clip, clean-fid, scikit-image); the sampling module needs only
    torch, scipy, torchdiffeq and torchsde, plus k_diffusion.utils, whose one torchvision import
    (image transforms) sampling never uses. So the package is registered without running __init__
    and that import gets an empty placeholder module."""
    if not _KD:
        _KD.append(_load_k_diffusion_sampling())
    return _KD[0]


def _load_k_diffusion_sampling():
    try:
        spec = importlib.util.find_spec("k_diffusion")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None, "k-diffusion is not installed (pip install k-diffusion --no-deps torchdiffeq torchsde)"
    try:
        if "k_diffusion" not in sys.modules:
            pkg = types.ModuleType("k_diffusion")
            pkg.__path__ = list(spec.submodule_search_locations)
            sys.modules["k_diffusion"] = pkg
        placeholders = {}
        if importlib.util.find_spec("torchvision") is None:
            tv, tvt, tvf = (types.ModuleType(n) for n in
                            ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"))
            tv.transforms, tvt.functional = tvt, tvf
            placeholders = {"torchvision": tv, "torchvision.transforms": tvt, "torchvision.transforms.functional": tvf}
            sys.modules.update(placeholders)
        try:
            import k_diffusion.sampling as ks
        finally:       # k_diffusion.utils keeps its reference; nothing else may find a torchvision without a spec
            for name in placeholders:
                sys.modules.pop(name, None)
        return ks, None
    except Exception as e:  # a missing dependency is reported, not fatal
        return None, f"k_diffusion.sampling does not import: {e!r}"


def load_diffusers():
    try:
        import diffusers
        return diffusers, None
    except Exception as e:
        return None, f"diffusers does not import: {e!r}"


# ---- output --------------------------------------------------------------------------------------

def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


def save_json(name: str, data) -> Path:
    from sdekit.core.io import atomic_write_text
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    atomic_write_text(path, json.dumps(data, indent=1))
    return path


def save_text(name: str, text: str) -> Path:
    from sdekit.core.io import atomic_write_text
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    atomic_write_text(path, text)
    return path


def md_table(header, rows) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def fmt(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.2e}" if (abs(v) < 1e-2 or abs(v) >= 1e3) and v != 0 else f"{v:.3f}"

"""The toy pictures: a 1-D bimodal density carried to noise and back, and 2-D samples per sampler.

Every score here is exact (a Gaussian mixture under the SDE's own kernel), so what the pictures
show is the SDE and the sampler alone, not a network:
  forward SDE   dx = f(t) x dt + g(t) dw                       (trajectories over p_t)
  reverse SDE   dx = [f(t) x - g(t)^2 ∇log p_t(x)] dt + g(t) dw̄  (stochastic paths back to data)
  reverse ODE   dx = [f(t) x - ½ g(t)^2 ∇log p_t(x)] dt         (the probability-flow, deterministic)
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import torch

from .gmm import GaussianMixture
from .io import atomic_path, atomic_write_text
from .samplers import sample
from .sde import VESDE, VPSDE, SDE

# The samplers shown on 2-D data, with the step counts that make each one look converged.
TOY_SAMPLERS = [
    ("em", dict(steps=500)),
    ("reverse_diffusion", dict(steps=500)),
    ("ancestral", dict(steps=500)),
    ("pc", dict(steps=250, snr=0.05)),  # snr 0.16 is tuned for D≈3000; 2-D needs smaller
    ("ode", dict(rtol=1e-4, atol=1e-4)),
    ("ddim", dict(steps=25)),
    ("heun", dict(steps=13)),
    ("dpm_solver", dict(steps=25)),
]


def bimodal_1d() -> GaussianMixture:
    """p_0 = 0.6 N(-2, 0.3²) + 0.4 N(2, 0.5²): the bimodal example of the notes."""
    return GaussianMixture(torch.tensor([[-2.0], [2.0]]), torch.tensor([0.3, 0.5]), torch.tensor([0.6, 0.4]))


def ring_2d(k: int = 8, radius: float = 2.0, std: float = 0.15) -> GaussianMixture:
    """k Gaussians evenly spaced on a circle."""
    a = torch.arange(k) * 2 * math.pi / k
    return GaussianMixture(radius * torch.stack([a.cos(), a.sin()], 1), std)


def two_moons(n_per_moon: int = 48, std: float = 0.08) -> GaussianMixture:
    """Two interleaved half circles, each as a chain of small Gaussians (so its score is exact)."""
    a = torch.linspace(0, math.pi, n_per_moon)
    upper = torch.stack([a.cos(), a.sin()], 1)
    lower = torch.stack([1 - a.cos(), 0.5 - a.sin()], 1)
    means = torch.cat([upper, lower]) - torch.tensor([0.5, 0.25])
    return GaussianMixture(1.6 * means, std)


def simulate_forward(sde: SDE, x0: torch.Tensor, ts: torch.Tensor, generator=None) -> torch.Tensor:
    """Euler–Maruyama on the forward SDE over the grid ``ts``: returns [len(ts), *x0.shape]."""
    xs = [x0]
    x = x0
    for t, t_next in zip(ts[:-1], ts[1:]):
        dt = float(t_next - t)
        drift, g = sde.sde(x, torch.full((x.shape[0],), float(t)))
        z = torch.randn(x.shape, generator=generator)
        x = x + drift * dt + g[:, None] * math.sqrt(dt) * z
        xs.append(x)
    return torch.stack(xs)


def simulate_reverse(sde: SDE, score_fn, xT: torch.Tensor, ts: torch.Tensor, probability_flow: bool,
                     generator=None) -> torch.Tensor:
    """Euler(–Maruyama) on the reverse SDE / probability-flow ODE from ts[0]=T down to ts[-1]."""
    rsde = sde.reverse(score_fn, probability_flow=probability_flow)
    xs = [xT]
    x = xT
    for t, t_next in zip(ts[:-1], ts[1:]):
        dt = float(t_next - t)  # negative
        drift, g = rsde.sde(x, torch.full((x.shape[0],), float(t)))
        x = x + drift * dt
        if not probability_flow:
            x = x + g[:, None] * math.sqrt(-dt) * torch.randn(x.shape, generator=generator)
        xs.append(x)
    return torch.stack(xs)


def _density_image(sde: SDE, gmm: GaussianMixture, ts: torch.Tensor, grid: torch.Tensor) -> np.ndarray:
    """p_t(x) on a (x, t) grid, one column per time: the backdrop of the 1-D plots."""
    cols = [gmm.log_prob_t(sde, grid[:, None], torch.full((len(grid),), float(t))).exp() for t in ts]
    return torch.stack(cols, 1).numpy()


def plot_1d(out: Path, sde: SDE, name: str, seed: int = 0) -> list[tuple[str, str]]:
    """Three PNGs for one SDE: forward SDE, reverse SDE, reverse ODE, over the exact density p_t."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(seed)
    gmm = bimodal_1d()
    ts = torch.linspace(sde.eps, sde.T, 400)
    x0 = gmm.sample(24, generator=g)
    fwd = simulate_forward(sde, x0, ts, generator=g)[..., 0]
    xT = sde.prior_sampling((24, 1), generator=g)
    score = gmm.score_fn(sde)
    rev = simulate_reverse(sde, score, xT, ts.flip(0), False, generator=g)[..., 0].flip(0)
    zs = torch.linspace(-2.5, 2.5, 24)[:, None] * float(sde.prior_std)
    ode = simulate_reverse(sde, score, zs, ts.flip(0), True)[..., 0].flip(0)

    lim = max(4.0, 3 * float(sde.prior_std))
    grid = torch.linspace(-lim, lim, 300)
    dens = _density_image(sde, gmm, ts, grid)
    dens = dens / dens.max(0, keepdims=True)  # per-time normalisation keeps the wide prior visible
    shown = []
    for key, title, paths in [
        ("forward", "forward SDE: data → noise", fwd),
        ("reverse_sde", "reverse SDE: noise → data", rev),
        ("reverse_ode", "probability-flow ODE: noise → data", ode),
    ]:
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
        ax.imshow(dens, origin="lower", aspect="auto", cmap="Blues",
                  extent=[float(ts[0]), float(ts[-1]), -lim, lim])
        ax.plot(ts.numpy(), paths.numpy(), color="crimson", lw=0.8, alpha=0.8)
        ax.set_xlabel("t")
        ax.set_ylabel("x")
        ax.set_ylim(-lim, lim)
        ax.set_title(f"{name}: {title}")
        fig.tight_layout()
        path = out / f"1d_{name.lower()}_{key}.png"
        _savefig(fig, path)
        plt.close(fig)
        shown.append((path.name, f"{name}, {title}; background: exact p_t(x), normalised per t"))
    return shown


def plot_2d(out: Path, sde: SDE, data: GaussianMixture, name: str, n: int = 1000, seed: int = 0):
    """One panel per sampler: its samples beside exact samples, with the NFE it used."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    score = data.score_fn(sde)
    panels = [("exact samples", data.sample(n, generator=torch.Generator().manual_seed(seed)))]
    for sampler, opts in TOY_SAMPLERS:
        g = torch.Generator().manual_seed(seed + 1)
        x, info = sample(sde, score, (n, 2), sampler=sampler, generator=g, return_info=True, **opts)
        panels.append((f"{sampler} (NFE {info['nfe']})", x))
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), dpi=100)
    for ax, (title, x) in zip(axes.flat, panels):
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=2, alpha=0.5, color="navy")
        ax.set_title(title, fontsize=9)
        ax.set_xlim(-3.2, 3.2)
        ax.set_ylim(-3.2, 3.2)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{name} under {type(sde).__name__}: samples per sampler, exact score")
    fig.tight_layout()
    path = out / f"2d_{name.replace(' ', '_')}_{type(sde).__name__.lower()}.png"
    _savefig(fig, path)
    plt.close(fig)
    return path.name, f"{name}, {type(sde).__name__}: {n} samples per sampler (NFE = score evaluations)"


def _savefig(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def toy_report(out="sdekit-toy", seed: int = 0, n: int = 1000) -> Path:
    """Write the toy pictures and an index.html showing them; returns the index path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for sde, name in [(VPSDE(), "VP"), (VESDE(sigma_min=0.01, sigma_max=8.0), "VE")]:
        figures += plot_1d(out, sde, name, seed=seed)
    for data, name in [(ring_2d(), "ring of 8"), (two_moons(), "two moons")]:
        figures.append(plot_2d(out, VPSDE(), data, name, n=n, seed=seed))
    figures.append(plot_2d(out, VESDE(sigma_min=0.01, sigma_max=8.0), two_moons(), "two moons", n=n, seed=seed))
    body = "\n".join(
        f'<figure><img src="{html.escape(f)}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption></figure>'
        for f, c in figures)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>sdekit toy pictures</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}figure{{margin:1.5em 0}}
img{{max-width:100%}}figcaption{{color:#444}}</style></head><body>
<h1>Score-based SDEs on toy data</h1>
<p>All scores are exact: the data are Gaussian mixtures, whose marginals p<sub>t</sub> under any SDE of
the family are mixtures again. The pictures therefore show the SDE and the sampler alone.</p>
{body}
</body></html>
"""
    index = out / "index.html"
    atomic_write_text(index, page)
    return index

"""The toy pictures: a 1-D bimodal density carried to noise and back, and 2-D samples per sampler.

Every score here is exact (a Gaussian mixture under the SDE's own kernel), so what the pictures
show is the SDE and the sampler alone, not a network:
  forward SDE   dx = f(t) x dt + g(t) dw                       (trajectories over p_t)
  reverse SDE   dx = [f(t) x - g(t)^2 ∇log p_t(x)] dt + g(t) dw̄  (stochastic paths back to data)
  reverse ODE   dx = [f(t) x - ½ g(t)^2 ∇log p_t(x)] dt         (the probability-flow, deterministic)
The 2-D panels show every sampler of the registry (:mod:`sdekit.solvers.registry`), each at steps where it
works on these data (:data:`TOY_SETTINGS`; the sampler's defaults otherwise).
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import torch
from sdekit.core.bars import progress_bar

from sdekit.core.gmm import GaussianMixture
from sdekit.core.io import atomic_path, atomic_write_text
from sdekit.solvers.registry import REGISTRY
from sdekit.solvers.loop import sample
from sdekit.core.sde import VESDE, VPSDE, SDE

# Per sampler, the settings at which it reproduces the 2-D toy data (energy distance to exact samples
# within about twice its two-sample floor, n = 1000); a sampler not listed runs with its registry defaults.
TOY_SETTINGS = {
    "pc": dict(steps=250),                  # with its corrector, half the default steps suffice here
    "ode": dict(rtol=1e-4, atol=1e-4),
}
TOY_SDES = (("VP", VPSDE()), ("VE", VESDE(sigma_min=0.01, sigma_max=8.0)))
N_PATHS = 24                                 # paths drawn in each 1-D panel
DATA_EXTENT = 4.0                            # |x| of the 1-D data's support
ASINH_WIDTH = 1.0                            # linear width of the asinh axis of wide 1-D panels


def toy_settings(name: str) -> dict:
    """The keyword arguments of :func:`sdekit.sample` for sampler ``name`` on the toy data."""
    return dict(TOY_SETTINGS.get(name, {}))


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


def x_axis(lim: float) -> tuple[np.ndarray, str]:
    """The value axis of a 1-D panel reaching +-lim: (grid for the density backdrop, axis scale).
    Linear up to twice the data's extent; beyond, matplotlib's "asinh" scale, y -> asinh(y / w) with
    w = ASINH_WIDTH: linear near 0, logarithmic far out, so a wide prior (VE: sigma_max) does not
    flatten the data's modes. The grid is even in the scale's coordinate."""
    if lim <= 2 * DATA_EXTENT:
        return np.linspace(-lim, lim, 300), "linear"
    return ASINH_WIDTH * np.sinh(np.linspace(-1, 1, 400) * math.asinh(lim / ASINH_WIDTH)), "asinh"


def plot_1d(out: Path, sde: SDE, name: str, seed: int = 0, tick=None) -> list[tuple[str, str]]:
    """Three PNGs for one SDE: forward SDE, reverse SDE, reverse ODE, over the exact density p_t.
    The reverse SDE and the probability-flow ODE start from the same N_PATHS prior samples x(T).
    ``tick()`` is called after each picture (progress)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(seed)
    gmm = bimodal_1d()
    ts = torch.linspace(sde.eps, sde.T, 400)
    x0 = gmm.sample(N_PATHS, generator=g)
    fwd = simulate_forward(sde, x0, ts, generator=g)[..., 0]
    xT = sde.prior_sampling((N_PATHS, 1), generator=g)
    score = gmm.score_fn(sde)
    rev = simulate_reverse(sde, score, xT, ts.flip(0), False, generator=g)[..., 0].flip(0)
    ode = simulate_reverse(sde, score, xT, ts.flip(0), True)[..., 0].flip(0)

    lim = max(DATA_EXTENT, 3 * float(sde.prior_std))
    grid, scale = x_axis(lim)
    dens = _density_image(sde, gmm, ts, torch.from_numpy(grid).float())
    dens = dens / dens.max(0, keepdims=True)  # per-time normalisation keeps the wide prior visible
    axis = "" if scale == "linear" else f"; x axis asinh(x / {ASINH_WIDTH:g}): linear near 0, logarithmic far out"
    shown = []
    for key, title, paths, what in [
        ("forward", "forward SDE: data → noise", fwd, f"{N_PATHS} paths from data samples"),
        ("reverse_sde", "reverse SDE: noise → data", rev, f"{N_PATHS} paths from prior samples x(T)"),
        ("reverse_ode", "probability-flow ODE: noise → data", ode,
         f"{N_PATHS} paths from the same prior samples as the reverse SDE"),
    ]:
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
        ax.pcolormesh(ts.numpy(), grid, dens, shading="nearest", cmap="Blues", rasterized=True)
        ax.plot(ts.numpy(), paths.numpy(), color="crimson", lw=0.8, alpha=0.8)
        ax.set_xlabel("t")
        ax.set_ylabel("x")
        if scale != "linear":
            ax.set_yscale(scale, linear_width=ASINH_WIDTH)
            ticks = [v for v in (1, 2, 4, 10, 20, 50, 100) if v <= lim]
            ax.set_yticks([-v for v in ticks[::-1]] + [0] + ticks,
                          [f"{-v:g}" for v in ticks[::-1]] + ["0"] + [f"{v:g}" for v in ticks])
            ax.minorticks_off()
        ax.set_ylim(-lim, lim)
        ax.set_title(f"{name}: {title}")
        fig.tight_layout()
        path = out / f"1d_{name.lower()}_{key}.png"
        _savefig(fig, path)
        plt.close(fig)
        shown.append((path.name, f"{name}, {title}: {what}; background: exact p_t(x), normalised per t{axis}"))
        if tick is not None:
            tick()
    return shown


def plot_2d(out: Path, sde: SDE, data: GaussianMixture, name: str, sde_name: str | None = None, n: int = 1000,
            seed: int = 0, tick=None):
    """One panel per sampler of the registry (settings :func:`toy_settings`): its samples beside exact
    samples, with the score evaluations (NFE) it used. ``tick()`` is called after each panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sde_name = sde_name or type(sde).__name__
    score = data.score_fn(sde)
    panels = [("exact samples", data.sample(n, generator=torch.Generator().manual_seed(seed)))]
    for sampler in REGISTRY:
        g = torch.Generator().manual_seed(seed + 1)
        opts = toy_settings(sampler)
        x, info = sample(sde, score, (n, 2), sampler=sampler, generator=g, return_info=True, **opts)
        panels.append((f"{sampler}, {info['steps']} steps (NFE {info['nfe']})" if not REGISTRY[sampler].adaptive
                       else f"{sampler}, adaptive (NFE {info['nfe']})", x))
        if tick is not None:
            tick()
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.75 * rows), dpi=100)
    for ax, (title, x) in zip(axes.flat, panels):
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=2, alpha=0.5, color="navy")
        ax.set_title(title, fontsize=8)
        ax.set_xlim(-3.2, 3.2)
        ax.set_ylim(-3.2, 3.2)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{name} under the {sde_name} SDE: samples per sampler, exact score")
    fig.tight_layout()
    path = out / f"2d_{name.replace(' ', '_')}_{sde_name.lower()}.png"
    _savefig(fig, path)
    plt.close(fig)
    return path.name, (f"{name}, {sde_name} SDE: {n} samples of every sampler (NFE = score evaluations; "
                       "steps chosen where each sampler reproduces the data)")


def _savefig(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def panels(n_sdes: int = len(TOY_SDES), n_data: int = 2) -> int:
    """How many panels :func:`toy_report` draws: three 1-D pictures per SDE, and per (SDE, data set) the
    exact samples (not counted: no work) and one panel per sampler."""
    return 3 * n_sdes + n_sdes * n_data * len(REGISTRY)


def toy_report(out="sdekit-toy", seed: int = 0, n: int = 1000, progress: bool = True) -> Path:
    """Write the toy pictures (1-D: three per SDE of TOY_SDES; 2-D: one per SDE and data set, a ring of 8
    Gaussians and two moons) and an index.html showing them into folder ``out``; returns the index
    path. ``n``: samples per 2-D panel; ``progress``: a tqdm bar advancing per panel."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    data = [(ring_2d(), "ring of 8"), (two_moons(), "two moons")]
    with progress_bar(total=panels(len(TOY_SDES), len(data)), desc="toy", unit="panel", disable=not progress) as bar:
        for name, sde in TOY_SDES:
            bar.set_postfix_str(f"1-D, {name}")
            figures += plot_1d(out, sde, name, seed=seed, tick=bar.update)
        for name, sde in TOY_SDES:
            for d, dname in data:
                bar.set_postfix_str(f"{dname}, {name}")
                figures.append(plot_2d(out, sde, d, dname, name, n=n, seed=seed, tick=bar.update))
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

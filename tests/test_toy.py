"""The toy simulations agree with the closed forms they illustrate; the pictures show what they say."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import energy_distance
from sdekit import VESDE, VPSDE
from sdekit.apps import toy
from sdekit.apps.toy import bimodal_1d, simulate_forward, simulate_reverse, two_moons


def test_forward_simulation_matches_marginal(gen):
    # Euler–Maruyama on dx = f x dt + g dw from a point mass must give N(s x0, s²σ² ) at T.
    for sde in (VPSDE(), VESDE(sigma_min=0.01, sigma_max=8.0)):
        x0 = torch.full((4000, 1), 1.5)
        ts = torch.linspace(0, 1, 401)
        xT = simulate_forward(sde, x0, ts, generator=gen)[-1]
        mean, std = sde.marginal_prob(x0[:1], torch.tensor([1.0]))
        assert abs(xT.mean() - mean.item()) < 4 * std.item() / 4000 ** 0.5 + 0.02
        assert abs(xT.std() / std.item() - 1) < 0.05


def test_reverse_paths_reach_the_data(gen):
    # Both the reverse SDE and the probability-flow ODE, with the exact score, map the prior to p_0.
    sde, gmm = VPSDE(), bimodal_1d()
    ts = torch.linspace(sde.T, sde.eps, 500)
    exact = gmm.sample(1500, generator=gen)
    floor = energy_distance(exact, gmm.sample(1500, generator=gen))
    for flow in (False, True):
        xT = sde.prior_sampling((1500, 1), generator=gen)
        x0 = simulate_reverse(sde, gmm.score_fn(sde), xT, ts, flow, generator=gen)[-1]
        assert energy_distance(x0, exact) < 4 * abs(floor) + 0.01


def test_two_moons_is_a_normalised_mixture():
    m = two_moons()
    grid = torch.stack(torch.meshgrid(torch.linspace(-4, 4, 321), torch.linspace(-4, 4, 321), indexing="ij"), -1)
    mass = m.log_prob(grid.reshape(-1, 2)).exp().sum() * (8 / 320) ** 2
    assert abs(float(mass) - 1) < 1e-3


def test_toy_command_writes_report_with_progress(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sdekit.apps.cli", "toy", "-n", "60", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "index.html").read_text()
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(pngs) == 10 and all(name in page for name in pngs)
    assert all((tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert {"2d_ring_of_8_vp.png", "2d_ring_of_8_ve.png", "2d_two_moons_vp.png", "2d_two_moons_ve.png"} <= set(pngs)
    assert f"wrote 10 pictures into {tmp_path}" in r.stdout and f"report: {tmp_path / 'index.html'}" in r.stdout
    assert f"{toy.panels()}/{toy.panels()} [" in r.stderr          # the tqdm bar, one step per panel


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the toy pictures would save, by file name."""
    saved = {}
    monkeypatch.setattr(toy, "_savefig", lambda fig, path: saved.__setitem__(path.name, fig))
    return saved


def test_ve_axis_keeps_the_data_modes_visible(tmp_path, figures):
    # sigma_max = 8 puts the prior at +-24; on a linear axis the modes at -2 and 2 took 1/10 of its height
    toy.plot_1d(tmp_path, VESDE(sigma_min=0.01, sigma_max=8.0), "VE")
    toy.plot_1d(tmp_path, VPSDE(), "VP")
    for name, scale in [("1d_ve_forward.png", "asinh"), ("1d_vp_forward.png", "linear")]:
        ax = figures[name].axes[0]
        assert ax.get_yscale() == scale
        lo, hi = ax.transAxes.inverted().transform(ax.transData.transform([[0.5, -2.5], [0.5, 2.5]]))[:, 1]
        assert hi - lo > 0.3, (name, hi - lo)                        # the modes fill a third of the axis or more
        assert ax.get_ylim()[1] >= (24 if scale == "asinh" else 3.9)  # and the prior still fits


def test_probability_flow_paths_start_from_prior_samples(tmp_path, figures):
    sde = VESDE(sigma_min=0.01, sigma_max=8.0)
    shown = toy.plot_1d(tmp_path, sde, "VE", seed=3)
    start = {key: sorted(float(line.get_ydata()[-1]) for line in figures[f"1d_ve_{key}.png"].axes[0].lines)
             for key in ("reverse_sde", "reverse_ode")}
    assert start["reverse_sde"] == start["reverse_ode"]              # the same x(T) for both
    gaps = np.diff(start["reverse_ode"])
    assert gaps.std() > 0.2 * gaps.mean()                           # not an even grid
    xT = sde.prior_sampling((toy.N_PATHS, 1), generator=torch.Generator().manual_seed(3))
    assert abs(np.std(start["reverse_ode"]) / float(xT.std()) - 1) < 0.5
    assert "from the same prior samples as the reverse SDE" in dict(shown)["1d_ve_reverse_ode.png"]


def test_2d_panels_show_every_sampler_of_the_registry(tmp_path, figures, monkeypatch):
    from sdekit.solvers.registry import REGISTRY
    calls = []

    def fake_sample(sde, score, shape, sampler, generator=None, return_info=False, **opts):
        calls.append(sampler)
        return torch.zeros(shape), {"nfe": 1, "steps": opts.get("steps", REGISTRY[sampler].default_steps)}
    monkeypatch.setattr(toy, "sample", fake_sample)
    ticks = []
    toy.plot_2d(tmp_path, VESDE(), toy.ring_2d(), "ring of 8", "VE", n=10, tick=lambda: ticks.append(1))
    assert calls == list(REGISTRY) and len(ticks) == len(REGISTRY)
    titles = [ax.get_title() for ax in figures["2d_ring_of_8_ve.png"].axes if ax.get_title()]
    assert len(titles) == 1 + len(REGISTRY) and any(t.startswith("ald,") for t in titles)


@pytest.mark.parametrize("name", ["langevin", "ald"])
def test_langevin_samplers_reproduce_the_ring_at_their_toy_settings(name):
    # the settings the toy pictures use for each sampler must make it work on these data
    from sdekit import sample
    gmm, sde, n = toy.ring_2d(), VPSDE(), 800
    x = sample(sde, gmm.score_fn(sde), (n, 2), sampler=name, generator=torch.Generator().manual_seed(1),
               **toy.toy_settings(name))
    exact = gmm.sample(n, generator=torch.Generator().manual_seed(2))
    floor = abs(energy_distance(exact, gmm.sample(n, generator=torch.Generator().manual_seed(3))))
    assert energy_distance(x, exact) < 3 * floor + 3e-3

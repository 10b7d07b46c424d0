"""The toy simulations agree with the closed forms they illustrate."""
import subprocess
import sys

import torch

from conftest import energy_distance
from sdekit import VESDE, VPSDE
from sdekit.toy import bimodal_1d, simulate_forward, simulate_reverse, two_moons


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


def test_toy_command_writes_report(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sdekit.cli", "toy", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "index.html").read_text()
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(pngs) == 9 and all(name in page for name in pngs)
    assert all((tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)

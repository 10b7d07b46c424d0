"""Flow-matching training: the velocity loss against its closed form for Gaussian data, the time
densities, and `sdekit train --sde flow` writing a bundle that loads and samples."""
import math

import pytest
import torch

import sdekit
from sdekit.apps.cli import main
from sdekit.core.denoisers import ScoreDenoiser
from sdekit.tasks.losses import flow_loss, flow_times
from sdekit.tasks.train import TrainConfig
from sdekit.tasks.train.config import hparams

SD = 0.6


@pytest.mark.parametrize("tau", [0.1, 0.5, 0.9])
def test_the_loss_of_the_exact_model_is_the_velocitys_conditional_variance(tau):
    """x0 ~ N(0, SD^2), v = z - x0, x = (1 - tau) x0 + tau z: the best estimate E[v | x] leaves
    Var(v | x) = 1 + SD^2 - (tau - (1 - tau) SD^2)^2 / ((1 - tau)^2 SD^2 + tau^2) per dimension."""
    sde = sdekit.FlowSDE()
    gmm = sdekit.GaussianMixture(torch.zeros(1, 4, dtype=torch.float64), torch.tensor([SD], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = gmm.sample(n, generator=g).double()
    loss = flow_loss(ScoreDenoiser(sde, gmm.score_fn(sde)), sde, x0, tau=torch.full((n,), tau, dtype=torch.float64),
                     generator=g)
    exact = 1 + SD ** 2 - (tau - (1 - tau) * SD ** 2) ** 2 / ((1 - tau) ** 2 * SD ** 2 + tau ** 2)
    assert float(loss) == pytest.approx(exact, rel=0.01)


def test_time_densities():
    sde, g = sdekit.FlowSDE(), torch.Generator().manual_seed(1)
    u = flow_times(100_000, sde, "uniform", generator=g)
    assert abs(float(u.mean()) - 0.5) < 0.01 and float(u.min()) >= 0.001 - 1e-7 and float(u.max()) <= 0.999 + 1e-7
    ln = flow_times(100_000, sde, "logit_normal", mean=0.5, std=0.8, generator=g)
    logit = torch.log(ln / (1 - ln))
    assert abs(float(logit.mean()) - 0.5) < 0.02 and abs(float(logit.std()) - 0.8) < 0.02
    with pytest.raises(sdekit.UserError, match="time density"):
        flow_times(3, sde, "cosine")


def test_the_flow_sde_chooses_the_flow_loss_and_the_velocity_network():
    cfg = TrainConfig(sde="flow")
    assert (cfg.loss, cfg.precond) == ("flow", "velocity") and hparams(cfg)["time_density"] == "uniform"
    plain = TrainConfig()
    assert (plain.loss, plain.precond) == ("edm", "edm") and "time_density" not in hparams(plain)
    assert TrainConfig(sde="flow", loss="dsm").precond == "edm"


def test_train_sde_flow_writes_a_bundle_that_loads_and_samples(tmp_path):
    run = tmp_path / "flow"
    args = ["train", "--data", "toy:moons", "--sde", "flow", "--time-density", "logit_normal", "--hidden", "32",
            "--depth", "2", "--batch-size", "64", "--steps", "30", "--warmup", "0", "--lr", "3e-3",
            "--sample-every", "0", "--ckpt-every", "30", "--log-every", "10", "--no-progress", "--out", str(run)]
    assert main(args) == 0
    model = sdekit.load(run / "model")
    assert isinstance(model.sde, sdekit.FlowSDE) and model.config["precond"]["kind"] == "velocity"
    for sampler in ("abm", "heun"):
        x = model.sample(16, sampler=sampler, steps=8, generator=torch.Generator().manual_seed(0))
        assert x.shape == (16, *model.shape) and torch.isfinite(x).all()
    rows = (run / "log.csv").read_text().splitlines()
    assert len(rows) == 4 and all(math.isfinite(float(r.split(",")[1])) for r in rows[1:])
    assert main([*args[:-2], "--out", str(tmp_path / "bad"), "--time-density", "beta"]) == 2

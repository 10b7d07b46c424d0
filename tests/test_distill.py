"""Consistency distillation: the consistency parametrisation's boundary condition, the teacher's Heun step
against the exact probability-flow ODE of a Gaussian, and cd_loss small for the exact consistency function
and large for a function that is not one; a short `sdekit train --loss cd` run writes a student bundle."""
import pytest
import torch

import sdekit
from sdekit.core.denoisers import Denoiser, Preconditioned, ScoreDenoiser
from sdekit.core.errors import UserError
from sdekit.tasks.losses import cd_loss, heun_step, karras_sigmas

M, S, SIGMA_MIN = 0.7, 0.4, 0.002        # data N(M, S^2 I)


def flow(y, sigma, sigma_to):
    """The exact PF-ODE map of N(M, S^2) data from sigma to sigma_to (EDM's sigma coordinates)."""
    return M + (y - M) * ((S ** 2 + sigma_to ** 2) / (S ** 2 + sigma ** 2)) ** 0.5


class ExactConsistency(Denoiser):
    def denoise(self, y, sigma, class_labels=None):
        sigma = torch.as_tensor(sigma, dtype=y.dtype).reshape(-1, *[1] * (y.dim() - 1))
        return flow(y, sigma, SIGMA_MIN)


def _teacher():
    sde = sdekit.EDMSDE()
    gmm = sdekit.GaussianMixture(means=torch.full((1, 4), M), stds=S)
    return ScoreDenoiser(sde, gmm.score_fn(sde)), sde


def test_consistency_parametrisation_boundary():
    net = torch.nn.Identity()
    net.num_classes = 0
    net_fn = lambda x, c: 5 * torch.ones_like(x)       # any network output
    p = Preconditioned(torch.nn.Module(), sdekit.EDMSDE(), "consistency")
    p.net = type("F", (torch.nn.Module,), {"forward": lambda self, x, c: net_fn(x, c)})()
    y = torch.randn(3, 4)
    torch.testing.assert_close(p.denoise(y, torch.full((3,), SIGMA_MIN)), y)         # f(y, sigma_min) = y
    big = p.denoise(y, torch.full((3,), 80.0))
    assert (big - 5 * 0.5 * 79.998 / (0.25 + 6400) ** 0.5 - 0.25 / (79.998 ** 2 + 0.25) * y).abs().max() < 1e-4


def test_heun_step_follows_the_exact_flow():
    """Heun's local error is third order: halving the step divides it by about 8."""
    teacher, _ = _teacher()
    y = M + 3.0 * torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    hi = torch.full((256,), 2.0)
    errs = [(heun_step(teacher, y, hi, hi - h) - flow(y, 2.0, 2.0 - h)).abs().max() for h in (0.4, 0.2, 0.1)]
    assert errs[0] < 0.005 and errs[0] / errs[1] > 6 and errs[1] / errs[2] > 6, errs


def test_cd_loss_small_for_the_exact_consistency_function():
    teacher, sde = _teacher()
    g = torch.Generator().manual_seed(1)
    x0 = M + S * torch.randn(512, 4, generator=g)
    exact = cd_loss(ExactConsistency(sde), sde, x0, teacher=teacher, generator=g)
    wrong = cd_loss(teacher, sde, x0, teacher=teacher, generator=torch.Generator().manual_seed(1))
    assert exact < 0.2 * wrong
    with pytest.raises(UserError):
        cd_loss(teacher, sde, x0)


def test_karras_sigmas():
    s = karras_sigmas(18)
    assert s[0].item() == pytest.approx(0.002) and s[-1].item() == pytest.approx(80.0) and (s.diff() > 0).all()


def test_train_cd_writes_a_student(tmp_path):
    from sdekit.apps.cli import main
    out = tmp_path / "cd"
    assert main(["train", "--data", "digits", "--loss", "cd", "--teacher", "digits", "--steps", "2",
                 "--batch-size", "8", "--out", str(out), "--sample-every", "0", "--no-progress", "--threads", "1"]) in (0, None)
    m = sdekit.load(out / "model")
    assert m.config["precond"]["kind"] == "consistency" and m.config["train"]["teacher"] == "digits"
    y = torch.randn(2, *m.shape)
    torch.testing.assert_close(m.net.denoise(y, torch.tensor(SIGMA_MIN)), y)
    assert main(["train", "--data", "digits", "--loss", "cd", "--out", str(tmp_path / "x")]) == 2

"""Progress that tells the truth: the watched denoiser, and `sdekit likelihood`'s bar and summary."""
import re

import pytest
import torch

import sdekit
from sdekit.models.bundle import random_model, save_bundle
from sdekit.apps.cli import main
from sdekit.core.denoisers import ScoreView
from sdekit.tasks.likelihood import likelihood
from sdekit.solvers.progress import Watched


@pytest.mark.parametrize("solver", ["rk45", "heun"])
def test_watched_denoiser_reports_every_evaluation_and_changes_nothing(solver):
    model = random_model(ch=4)
    x = model.from_unit(torch.rand(2, *model.shape, generator=torch.Generator().manual_seed(0)))
    opts = dict(solver=solver, rtol=1e-2, atol=1e-2, steps=3, return_info=True)
    want, info = likelihood(model.sde, model.score_fn, x, generator=torch.Generator().manual_seed(1), **opts)
    reports = []
    watched = Watched(model.denoiser, lambda fraction, t, nfe: reports.append((fraction, t, nfe)))
    got, info2 = likelihood(model.sde, ScoreView(watched), x, generator=torch.Generator().manual_seed(1), **opts)
    assert torch.equal(got, want) and info2["nfe"] == info["nfe"]
    assert [n for _, _, n in reports] == list(range(1, info["nfe"] + 1))       # one report per evaluation
    fractions = [f for f, _, _ in reports]
    assert fractions[0] == 0 and max(fractions) == pytest.approx(1, abs=1e-6) and min(fractions) >= 0
    assert all(0 <= t <= model.sde.T + 1e-9 for _, t, _ in reports)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    m = random_model(ch=4)
    return save_bundle(tmp_path_factory.mktemp("m") / "model", m.net, shape=m.shape, name="tiny")


@pytest.mark.parametrize("solver", [["--solver", "heun", "--steps", "2"], ["--rtol", "1e-2", "--atol", "1e-2"]],
                         ids=["heun", "rk45"])
def test_likelihood_command_shows_progress_per_evaluation_and_a_summary(bundle, capsys, solver):
    assert main(["likelihood", "--model", str(bundle), "--data", "digits", "-n", "3", "--batch-size", "2", *solver]) == 0
    captured = capsys.readouterr()
    # the bar moves within a batch: its last state names the batch, the time reached and the evaluations
    assert re.search(r"100%.*batch 2/2, t = 1, \d+ evaluations", captured.err), captured.err
    summary, result = captured.out.strip().splitlines()[-2:]
    found = re.fullmatch(r"3 data points of digits in 2 batches; (\d+) network evaluations \((\d+)(?:-(\d+))? per "
                         r"batch; (RK45|Heun)[^)]*\); \d+ s", summary)
    assert found, summary
    lo, hi = int(found[2]), int(found[3] or found[2])
    assert lo < hi and int(found[1]) == lo + hi if found[3] else int(found[1]) == 2 * lo
    assert re.fullmatch(r"-?\d+\.\d{4} \+- \d+\.\d{4} bits/dim \(8-bit, dequantised\)  \(\+- is the standard error "
                        r"over the 3 data points and their probes\)", result), result


def test_sampling_bar_shows_the_evaluations_of_the_steps_it_counts(capsys, monkeypatch):
    # every drawn state of the bar pairs k steps with the evaluations of those k steps (ddim: one each)
    import functools
    from tqdm import tqdm
    monkeypatch.setattr(tqdm, "__init__", functools.partialmethod(tqdm.__init__, mininterval=0, miniters=1))
    sde = sdekit.VPSDE()
    gmm = sdekit.GaussianMixture(torch.zeros(1, 2), torch.ones(1), torch.ones(1))
    sdekit.sample(sde, gmm.score_fn(sde), (4, 2), sampler="ddim", steps=5, progress=True,
                  generator=torch.Generator().manual_seed(0))
    drawn = re.findall(r"(\d)/5 \[[^\]]*nfe=(\d+)", capsys.readouterr().err)
    assert drawn and all(int(k) == int(n) for k, n in drawn), drawn

"""The shipped colour model and consistency student: they load by name, say what they are, credit their
data, and run one command each end to end."""
import json

import pytest
import torch

import sdekit
from sdekit.models.bundle import BUNDLED_MODELS
from sdekit.apps.cli import main


def test_emoji_bundle():
    m = sdekit.load("emoji")
    assert m.shape == (3, 32, 32) and m.num_classes == 9 and m.config["data"] == "emoji"
    credit = m.config["credit"]
    assert "CC BY 4.0" in credit and "Apache" in credit
    card = (BUNDLED_MODELS["emoji"] / "README.md").read_text()
    assert "Twemoji" in card and "Noto" in card and "CC BY 4.0" in card and "Apache License 2.0" in card
    size = sum(f.stat().st_size for f in BUNDLED_MODELS["emoji"].rglob("*") if f.is_file())
    assert size < 5_000_000
    x = sdekit.sample(m.sde, m.score_fn, (2, 3, 32, 32), sampler="dpm_solver", steps=4,
                      generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all() and x.shape == (2, 3, 32, 32)


def test_emoji_edit_from_the_command_line(tmp_path):
    from sdekit.tasks.strokes import PACKAGED
    guide = sorted(PACKAGED["emoji"][0].glob("*.png"))[0]
    out = tmp_path / "e.png"
    assert main(["edit", "--model", "emoji", "--guide", str(guide), "--t0", "0.5", "--steps", "3",
                 "--out", str(out)]) == 0
    from PIL import Image
    assert Image.open(out).mode == "RGB"


def test_consistency_student_bundle():
    m = sdekit.load("mnist-cd")
    assert m.consistency and m.shape == (1, 28, 28) and m.config["precond"]["kind"] == "consistency"
    assert m.config["train"]["teacher"] == "mnist" and m.config["data"] == "mnist"
    y = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(m.denoise(y, torch.full((3,), 0.002)), y)      # the boundary condition
    x, info = m.sample(4, steps=1, generator=torch.Generator().manual_seed(0), return_info=True)
    assert info["nfe"] == 1 and torch.isfinite(x).all() and x.abs().max() < 1.5

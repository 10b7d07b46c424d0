"""Named training recipes, the recommended defaults, the start-up line and the summary of a resumed segment."""
import json

import pytest

from sdekit import UserError
from sdekit.apps.cli import main
from sdekit.models.bundle import BUNDLED_MODELS
from sdekit.tasks.train import TrainConfig
from sdekit.tasks.train.config import hparams
from sdekit.tasks.train.folder import resumed_config
from sdekit.tasks.train.recipes import QUICK, recipe_names


def test_a_shipped_models_recipe_reproduces_its_hyper_parameters():
    record = json.loads((BUNDLED_MODELS["digits"] / "config.json").read_text())["train"]
    cfg = resumed_config({"recipe": "digits", "data": "digits"})
    assert {k: hparams(cfg)[k] for k in record} == record
    assert cfg.recipe == "digits" and cfg.loss == "edm" and cfg.P_std == 1.4


def test_flags_beside_a_recipe_override_it_and_unknown_names_are_listed():
    cfg = resumed_config({"recipe": "quick", "ch": 8, "data": "digits"})
    assert cfg.ch == 8 and cfg.ch_mult == QUICK["ch_mult"] and cfg.batch_size == QUICK["batch_size"]
    with pytest.raises(UserError, match="unknown recipe 'nope'; choose one of quick"):
        resumed_config({"recipe": "nope"})
    assert set(recipe_names()) >= {"quick", "digits", "mnist"}


def test_the_default_is_the_recommended_vp_edm_recipe():
    cfg = TrainConfig()
    assert (cfg.sde, cfg.loss, cfg.precond) == ("vp", "edm", "edm")
    assert TrainConfig(sde="flow").loss == "flow"


def test_start_up_line_and_the_resumed_segment_are_reported(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--recipe", "quick", "--steps", "2", "--sample-every", "0", "--out", str(out), "--no-progress",
            "--threads", "1"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "training on digits: 1797 images 1x16x16" in text and "recipe quick" in text and "steps 0 -> 2" in text
    assert main(["train", "--out", str(out), "--resume", "--steps", "3", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "steps 2 -> 3" in text and "(1 in this run)" in text
    assert json.loads((out / "config.json").read_text())["options"]["recipe"] == "quick"

"""sdekit train --init DIFFUSERS_FOLDER: a run fine-tunes a diffusers UNet2DModel as sdekit.load wraps it, saves it
as a diffusers folder that sdekit and plain diffusers load, and refuses data or flags that do not fit it."""
import csv
import math

import pytest
import torch

import sdekit
from sdekit.apps.cli import main

pytest.importorskip("diffusers")
from diffusers import UNet2DModel  # noqa: E402

from sdekit.models.pretrained.export import to_diffusers  # noqa: E402
from tiny_unets import ddpm_folder, randomize  # noqa: E402

FLAGS = ["--data", "digits", "--batch-size", "8", "--sample-every", "0", "--no-progress", "--threads", "1"]
DIGITS_UNET = dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32),
                   down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                   layers_per_block=1, norm_num_groups=8, attention_head_dim=8)


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    path = tmp_path_factory.mktemp("init") / "tiny-ddpm"
    torch.manual_seed(0)
    ddpm_folder(path, unet=randomize(UNet2DModel(**DIGITS_UNET)))
    return path


def weights(folder):
    return UNet2DModel.from_pretrained(folder, subfolder="unet").state_dict()


def losses(run):
    with open(run / "log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_fine_tunes_the_unet_and_saves_a_diffusers_folder(init, tmp_path):
    run = tmp_path / "run"
    assert main(["train", *FLAGS, "--steps", "2", "--init", str(init), "--out", str(run)]) == 0
    assert losses(run) and all(math.isfinite(v) for v in losses(run))
    model = sdekit.load(run)                                  # the run's folder: its model/ diffusers folder
    assert model.config["format"] == "diffusers" and model.config["scheduler"] == "DDPMScheduler"
    assert model.shape == (1, 16, 16) and model.name == "run"
    start, tuned = weights(init), weights(run / "model")
    assert set(start) == set(tuned)
    assert max((tuned[k] - start[k]).abs().max().item() for k in start) > 1e-6       # the weights moved
    # its export is the same diffusers network; a resumed run continues from the checkpoint
    to_diffusers(model, tmp_path / "export")
    exported = weights(tmp_path / "export")
    assert all(torch.equal(exported[k], tuned[k]) for k in tuned)
    assert main(["train", *FLAGS, "--steps", "3", "--init", str(init), "--out", str(run), "--resume"]) == 0
    assert len(losses(run)) == 2


def test_starts_from_the_init_weights(init, tmp_path):
    """One step at a vanishing learning rate keeps the UNet2DModel's weights: the run started from them."""
    run = tmp_path / "run"
    assert main(["train", *FLAGS, "--steps", "1", "--lr", "1e-12", "--warmup", "0", "--ema", "0", "--init", str(init),
                 "--out", str(run)]) == 0
    start, tuned = weights(init), weights(run / "model")
    assert max((tuned[k] - start[k]).abs().max().item() for k in start) < 1e-6


def test_refuses_what_does_not_fit(init, tmp_path, capsys):
    other = tmp_path / "rgb"
    ddpm_folder(other)                                       # a 3x8x8 network: not the digits' 1x16x16
    for args in (["--init", str(other)], ["--init", str(init), "--class-cond"],
                 ["--init", str(init), "--label-dropout", "0.1"]):
        assert main(["train", *FLAGS, "--steps", "1", *args, "--out", str(tmp_path / "x")]) == 2, args
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--init" in err, err

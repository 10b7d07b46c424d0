"""sdekit train --init: a run starts from a bundle's weights, refused when the networks differ."""
import pytest
import torch

import sdekit
from sdekit.apps.cli import main
from sdekit.data.datasets import load_dataset
from sdekit.core.errors import UserError
from sdekit.tasks.train import TrainConfig
from sdekit.tasks.train.model import build_model, init_from

FLAGS = ["--data", "digits", "--ch", "8", "--ch-mult", "1,2", "--num-res-blocks", "1", "--attn", "", "--batch-size", "8",
         "--sample-every", "0", "--no-progress", "--threads", "1"]


def test_init_copies_the_bundle_and_refuses_another_network(tmp_path):
    assert main(["train", *FLAGS, "--steps", "2", "--out", str(tmp_path / "a")]) in (0, None)
    cfg = TrainConfig(data="digits", ch=8, ch_mult=(1, 2), num_res_blocks=1, attn=())
    model = build_model(cfg, load_dataset("digits"))
    init_from(model, str(tmp_path / "a" / "model"))
    saved = sdekit.load(tmp_path / "a" / "model").net.state_dict()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, saved[k])
    other = build_model(TrainConfig(data="digits", ch=16, ch_mult=(1, 2), num_res_blocks=1, attn=()), load_dataset("digits"))
    with pytest.raises(UserError, match="network"):
        init_from(other, str(tmp_path / "a" / "model"))
    # the command line: a run from the bundle trains on; another network is one line, exit 2
    assert main(["train", *FLAGS, "--steps", "1", "--lr", "1e-12", "--warmup", "0", "--init", str(tmp_path / "a" / "model"),
                 "--out", str(tmp_path / "b")]) in (0, None)
    b = sdekit.load(tmp_path / "b" / "model").net.state_dict()
    assert max((b[k].float() - saved[k].float()).abs().max().item() for k in saved) < 1e-6
    assert main(["train", *FLAGS, "--ch", "16", "--steps", "1", "--init", str(tmp_path / "a" / "model"),
                 "--out", str(tmp_path / "c")]) == 2


def test_version_and_mask_keywords(tmp_path, capsys):
    import sdekit as sk
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"sdekit {sk.__version__}"
    from PIL import Image
    Image.new("L", (16, 16), 128).save(tmp_path / "g.png")
    assert main(["inpaint", "--model", "digits", "--image", str(tmp_path / "g.png"), "--mask", "middle",
                 "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "left, right, top, bottom" in err and len(err.strip().splitlines()) == 1


def test_transparent_guide_is_composited_unless_alpha_mask(tmp_path, capsys):
    """An RGBA guide is edited whole over the model's background; --alpha-mask keeps its opaque pixels."""
    import numpy as np
    from PIL import Image
    a = np.zeros((16, 16, 4), np.uint8)
    a[:, :8] = (255, 255, 255, 255)                   # opaque white left half, transparent right half
    Image.fromarray(a, "RGBA").save(tmp_path / "g.png")
    common = ["edit", "--model", "digits", "--guide", str(tmp_path / "g.png"), "--t0", "0.6", "--steps", "4",
              "--scale", "1", "--seed", "0"]
    assert main([*common, "--out", str(tmp_path / "plain.png")]) == 0
    assert "composited over the model's background" in capsys.readouterr().out
    assert main([*common, "--alpha-mask", "--out", str(tmp_path / "masked.png")]) == 0
    plain = np.asarray(Image.open(tmp_path / "plain.png").convert("L"), dtype=int)
    masked = np.asarray(Image.open(tmp_path / "masked.png").convert("L"), dtype=int)
    assert (masked[:, :8] == 255).all()               # kept exactly where opaque
    assert (plain[:, :8] != 255).any()                # edited everywhere without the flag
    assert main([*common, "--alpha-mask", "--mask", str(tmp_path / "g.png"), "--out", str(tmp_path / "x.png")]) == 2

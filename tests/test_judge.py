"""The judges: chosen by the model's data; the shipped MNIST judge classifies and measures realism."""
import json
import os
from pathlib import Path

import pytest
import torch

from sdekit import UserError
from sdekit.tasks.judge import JUDGED, held_out, judged, load_judge, predict, split
from sdekit.tasks.metrics import kid
from sdekit.models.nets.features import FEATURES_DIR, MNIST_FEATURES_DIR

MNIST = Path(os.environ.get("SDEKIT_MNIST", "/work/shared/data/mnist"))
DATA = f"mnist:{MNIST}"
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                 reason="MNIST's idx files are not here (set SDEKIT_MNIST)")


@pytest.fixture(scope="module")
def held():
    return held_out(DATA)


def test_the_judge_is_chosen_by_the_data():
    assert judged("digits").weights == FEATURES_DIR and judged("digits").size == 16
    assert judged("mnist:/any/where").weights == MNIST_FEATURES_DIR and judged("MNIST:/x").size == 28
    for bad, msg in [("fashion-mnist:/x", "no judge"), ("cifar10:/x", "no judge"), ("mnist", "needs its folder")]:
        with pytest.raises(UserError, match=msg):
            judged(bad)
    assert set(JUDGED) == {"digits", "mnist", "emoji"}
    assert judged("emoji:/x").channels == 3 and judged("emoji:/x").num_classes == 9
    with pytest.raises(UserError, match="needs its folder"):
        judged("emoji")


def test_shipped_mnist_judge_config():
    cfg = json.loads((MNIST_FEATURES_DIR / "config.json").read_text())
    assert cfg["data"] == "mnist" and cfg["network"]["size"] == 28
    assert cfg["train_images"] == 60000 and cfg["test_images"] == 10000      # trained on the training split only
    assert cfg["test_accuracy"] >= 0.99
    assert "LeCun" in cfg["credit"] and "CC BY-SA 3.0" in cfg["credit"]
    assert (MNIST_FEATURES_DIR / "model.safetensors").stat().st_size < 600_000
    net = load_judge("mnist:/not/needed/to/load/weights")
    assert net.test_accuracy == cfg["test_accuracy"]


@needs_mnist
def test_mnist_judge_classifies_held_out_test_images():
    net = load_judge(DATA)
    _, _, te, te_y = split(DATA)
    assert te.shape == (10000, 1, 28, 28) and 0 <= float(te.min()) and float(te.max()) <= 1
    acc = float((predict(net, te[:2000]) == te_y[:2000]).float().mean())
    assert acc >= 0.985


@needs_mnist
def test_held_out_halves_are_disjoint_test_images(held):
    h = held
    assert len(h.reference) == len(h.real) == 5000 and len(h.train) == 60000
    assert torch.equal(h.pick(50, 3)[0], h.pick(50, 3)[0]) and not torch.equal(h.pick(50, 3)[0], h.pick(50, 4)[0])
    with pytest.raises(UserError):
        h.pick(5001)
    labels = torch.tensor([3, 3, 3, 7, 0])
    like = h.pick_like(labels, seed=1)
    assert torch.equal(predict(load_judge(DATA), like), labels)          # real images of those digits
    assert len({bytes(im.numpy()) for im in like}) == 5                # distinct
    with pytest.raises(UserError, match="digit 3"):
        h.pick_like(torch.full((1000,), 3))
    assert held_out(DATA, size=16).reference.shape[-1] == 16


@needs_mnist
def test_kid_real_vs_real_near_zero_real_vs_strokes_clearly_positive(held):
    from sdekit.tasks.strokes import pen, simulate_from
    net = load_judge(DATA)
    h = held
    ref = h.reference[:2000]
    real = kid(ref, h.real[:600], feature=net, subsets=50)
    sim = kid(ref, simulate_from(h.real[600:1200]), feature=net, subsets=50)
    drawn = kid(ref, pen(600)[0], feature=net, subsets=50)
    noise = kid(ref, torch.rand(600, 1, 28, 28, generator=torch.Generator().manual_seed(0)), feature=net, subsets=50)
    assert abs(real.mean) < 3 * real.std + 0.005
    for strokes in (sim, drawn):                   # measured: real 0.00 +- 0.01, simulated 0.09, pen 0.15
        assert strokes.mean > 0.04 and strokes.mean > real.mean + 2 * (real.std + strokes.std)
    assert noise.mean > max(sim.mean, drawn.mean)


@needs_mnist
def test_mnist_judge_reads_the_pen_strokes_as_their_digits():
    from sdekit.tasks.strokes import pen
    u, y = pen(200)
    acc = float((predict(load_judge(DATA), u) == y).float().mean())
    assert acc >= 0.9


def test_missing_mnist_files_are_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="--data mnist:DIR"):
        held_out(f"mnist:{tmp_path}")


def test_shipped_emoji_judge_config():
    """Trained on the training split only (the held-out emoji never), RGB, 9 categories, credited."""
    from sdekit.models.nets.features import EMOJI_FEATURES_DIR, load_features
    cfg = json.loads((EMOJI_FEATURES_DIR / "config.json").read_text())
    assert cfg["data"] == "emoji" and cfg["network"]["in_channels"] == 3 and cfg["network"]["num_classes"] == 9
    assert cfg["train_images"] == 6682 and cfg["test_images"] == 880
    assert cfg["test_accuracy"] > 0.75               # categories of emoji it never saw (majority class: 66 %)
    assert "CC BY 4.0" in cfg["credit"] and "Apache" in cfg["credit"]
    net = load_features(EMOJI_FEATURES_DIR)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 64) and net.logits(torch.rand(2, 3, 32, 32)).shape == (2, 9)

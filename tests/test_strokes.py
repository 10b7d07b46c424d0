"""The held-out stroke sets: deterministic, labelled, light strokes on black, in [0, 1]."""
import os
from pathlib import Path

import pytest
import torch

from sdekit import UserError
from sdekit.tasks.strokes import STROKE_SETS, package, pen, simulate_from, simulated

MNIST = Path(os.environ.get("SDEKIT_MNIST", "/work/shared/data/mnist"))
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                 reason="MNIST's idx files are not here (set SDEKIT_MNIST)")


def _check(u, y, n, size=28):
    assert u.shape == (n, 1, size, size) and u.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) <= 9
    assert 0 <= float(u.min()) and float(u.max()) <= 1
    assert (u.amax((1, 2, 3)) > 0.3).all()                         # every image has a light stroke
    assert float(u.mean()) < 0.3                                  # on a dark background


def test_pen_is_deterministic_labelled_and_prefix_stable():
    u, y = pen(30, seed=3)
    _check(u, y, 30)
    assert y.tolist() == [i % 10 for i in range(30)]
    u2, y2 = pen(30, seed=3)
    assert torch.equal(u, u2) and torch.equal(y, y2)
    u3, _ = pen(12, seed=3)
    assert torch.equal(u3, u[:12])                               # image i depends on (seed, i) only
    assert not torch.equal(pen(30, seed=4)[0], u)
    assert (u.flatten(1)[:, None] - u.flatten(1)[None]).abs().sum(-1).add(torch.eye(30) * 1e9).min() > 1  # all differ


def test_pen_varies_size_and_renders_anti_aliased():
    u, _ = pen(40, seed=0)
    heights = ((u.amax(3) > 0.3).sum((1, 2))).float()            # rows with ink
    assert heights.max() - heights.min() >= 5                     # varied size
    grey = ((u > 0.05) & (u < 0.7)).float().mean((1, 2, 3))
    assert (grey > 0).all()                                      # soft edges, not a binary mask
    _check(*pen(5, size=16), 5, 16)


@pytest.mark.parametrize("n,size", [(0, 28), (2.5, 28), (3, 4)])
def test_pen_refuses_bad_input(n, size):
    with pytest.raises(UserError):
        pen(n, size=size)


def test_package_strokes_are_labelled_by_name():
    u, y = package()
    _check(u, y, 7)
    assert sorted(y.tolist()) == [0, 1, 2, 3, 4, 6, 7]
    assert torch.equal(package()[0], u)


def test_package_refuses_unnamed(tmp_path):
    from PIL import Image
    Image.new("L", (20, 20)).save(tmp_path / "blob.png")
    with pytest.raises(UserError, match="class word"):
        package(folder=tmp_path)
    with pytest.raises(UserError, match="no stroke paintings"):
        package(folder=tmp_path / "none")


@needs_mnist
def test_simulated_strokes_come_from_held_out_mnist_test_images():
    from sdekit.tasks.judge import held_out
    data = f"mnist:{MNIST}"
    u, y = simulated(20, data, seed=1)
    _check(u, y, 20)
    h = held_out(data)
    real, y_real = h.pick(20, 1)
    assert torch.equal(y, y_real) and torch.equal(u, simulate_from(real))
    assert all(len(torch.unique(im)) <= 3 for im in u)               # flat colours: a stroke painting
    # not a copy of the image: the median filter and the palette change it, coarsely
    assert 0.5 < float((u - real).flatten(1).norm(dim=1).mean()) < 6
    assert torch.equal(simulated(20, data, seed=1)[0], u)
    # the real images are MNIST test images outside the KID reference
    ref = {bytes(r.numpy()) for r in (h.reference * 255).round().byte()}
    assert not any(bytes(r.numpy()) in ref for r in (real * 255).round().byte())


def test_the_evaluate_flag_names_the_sets():
    assert set(STROKE_SETS) == {"pen", "simulated", "package"}


def test_colour_package_and_simulation():
    """The shipped colour guides are RGB, labelled by their category's first word; colour strokes of
    emoji-like images keep at most the dataset's number of flat colours per image."""
    from sdekit.data.datasets import EMOJI_CATEGORIES
    from sdekit.tasks.strokes import SIMULATION, simulate_from
    u, y = package(32, data="emoji")
    assert u.shape[1:] == (3, 32, 32) and len(u) >= 4
    assert {EMOJI_CATEGORIES[k] for k in y.tolist()} >= {"Smileys & Emotion", "Food & Drink", "Flags", "Travel & Places"}
    assert (u.amax(1) - u.amin(1)).mean() > 0.1                      # colour, not grey
    g = torch.Generator().manual_seed(0)
    real = torch.rand(3, 3, 32, 32, generator=g)
    s = simulate_from(real, data="emoji:somewhere")
    colours = [len(torch.unique(img.reshape(3, -1).T, dim=0)) for img in s]
    assert max(colours) <= SIMULATION["emoji"][1] and s.shape == real.shape
    with pytest.raises(UserError, match="no stroke paintings for data"):
        simulate_from(real, data="cifar10:x")

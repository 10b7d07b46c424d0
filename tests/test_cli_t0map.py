"""sdekit edit --t0-map: a per-pixel t0 read from a picture by the guide's rule."""
import re

import numpy as np
import pytest
from PIL import Image

from sdekit.models.bundle import random_model, save_bundle
from sdekit.apps.cli import main
from sdekit.data.images import load_image, load_map


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("t0map")
    grey = random_model(ch=4)
    g = np.zeros((40, 40), np.uint8)
    g[8:32, 16:24] = 230
    g[4:10, 2:12] = 120
    Image.fromarray(g, "L").save(root / "guide.png")
    half = np.zeros((80, 80), np.uint8)                  # twice the guide's size: black left = keep
    half[:, 40:] = 255
    Image.fromarray(half, "L").save(root / "half.png")
    ramp = np.tile(np.linspace(0, 255, 80).astype(np.uint8), (80, 1))
    Image.fromarray(ramp, "L").save(root / "ramp.png")
    Image.fromarray(np.zeros((40, 40), np.uint8), "L").save(root / "black.png")
    Image.fromarray(np.full((40, 160), 255, np.uint8), "L").save(root / "wide.png")
    return {"GREY": str(save_bundle(root / "grey", grey.net, shape=grey.shape)), "GUIDE": str(root / "guide.png"),
            "HALF": str(root / "half.png"), "RAMP": str(root / "ramp.png"), "BLACK": str(root / "black.png"),
            "WIDE": str(root / "wide.png")}


def _run(capsys, files, *args):
    capsys.readouterr()
    try:
        code = main([files.get(str(a), str(a)) for a in args])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.err, out.out


def _one_line(err):
    return len([ln for ln in err.strip().splitlines() if "it/s]" not in ln]) == 1


def test_black_keeps_the_guide_and_white_changes_it(tmp_path, files, capsys):
    out = tmp_path / "o.png"
    code, err, said = _run(capsys, files, "edit", "--model", "GREY", "--guide", "GUIDE", "--t0-map", "HALF",
                           "--steps", "3", "--scale", "1", "--out", out)
    assert code == 0, err
    assert "t0 map 0..1" in said
    a = np.asarray(Image.open(out), dtype=np.float32) / 255
    want = load_image(files["GUIDE"], (1, 16, 16)).pixels[0, 0].numpy()
    keep = load_map(files["HALF"], (16, 16))[0, 0].numpy() == 0      # the left half, but for Lanczos' reach
    assert keep[:, :5].all() and not keep[:, 8:].any()
    assert np.abs(a - want)[keep].max() <= 1 / 255 + 1e-6
    assert np.abs(a - want)[:, 8:].mean() > 0.05


def test_the_map_is_read_by_the_guides_rule(files):
    m = load_map(files["RAMP"], (16, 16))
    assert m.shape == (1, 1, 16, 16) and float(m.min()) >= 0 and float(m.max()) <= 1
    assert (m[0, 0, :, 1:] >= m[0, 0, :, :-1]).all() and m[0, 0, 0, 0] < 0.05 and m[0, 0, 0, -1] > 0.95


@pytest.mark.parametrize("args,msg", [
    (["--t0", "0.3", "--t0-map", "RAMP"], "not both"),
    (["--t0-map", "WIDE"], "160x40.*40x40"),
    (["--t0-map", "BLACK"], "nothing to edit"),
    (["--t0-map", "missing.png"], "missing.png")])
def test_bad_maps_are_one_line(tmp_path, files, capsys, args, msg):
    out = tmp_path / "o.png"
    code, err, _ = _run(capsys, files, "edit", "--model", "GREY", "--guide", "GUIDE", *args, "--steps", "2",
                        "--out", out)
    assert code == 2 and _one_line(err), err
    assert re.search(msg, err), err
    assert not out.exists()

"""End-to-end: the demo, `sdekit edit` and `sdekit evaluate` on a tiny random-weight model bundle."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from sdekit.bundle import random_model, save_bundle
from sdekit.cli import main


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    m = random_model(ch=4)
    return save_bundle(tmp_path_factory.mktemp("m") / "model", m.net, shape=m.shape, name="tiny")


def _png(path, a, mode="L"):
    Image.fromarray(a, mode).save(path)
    return path


def test_demo_small_end_to_end(tmp_path, bundle, capsys):
    assert main(["demo", "--model", str(bundle), "--small", "--out", str(tmp_path / "d")]) == 0
    printed = capsys.readouterr().out
    index = tmp_path / "d" / "index.html"
    assert str(index) in printed
    page = index.read_text()
    for png in ("samples.png", "strokes.png", "simulated.png", "masked.png", "composite.png", "t0_strip.png"):
        assert (tmp_path / "d" / png).stat().st_size > 500 and png in page
    assert "toy/index.html" in page and (tmp_path / "d" / "toy" / "index.html").is_file()


def test_edit_cli(tmp_path, bundle):
    a = np.zeros((40, 40), np.uint8)
    a[8:32, 16:24] = 230
    g = _png(tmp_path / "g.png", a)
    out = tmp_path / "o.png"
    args = ["edit", "--model", str(bundle), "--guide", str(g), "--t0", "0.3", "--steps", "3", "--out", str(out)]
    assert main(args) == 0
    assert Image.open(out).size == (64, 64)                 # enlarged --scale 4 times by default
    before = out.read_bytes()
    assert main(args) == 2                             # exists: refused, untouched
    assert out.read_bytes() == before
    assert main(args + ["--overwrite", "--resize-back", "--seed", "1"]) == 0
    assert Image.open(out).size == (40, 40)
    # a mask: white = keep, so the output equals the guide there (up to 8-bit rounding)
    m = np.zeros((40, 40), np.uint8)
    m[:20] = 255
    mk = _png(tmp_path / "m.png", m)
    out2 = tmp_path / "o2.png"
    assert main(["edit", "--model", str(bundle), "--guide", str(g), "--mask", str(mk), "--t0", "0.5",
                 "--steps", "3", "--scale", "1", "--out", str(out2)]) == 0
    from sdekit.images import load_image
    got = np.asarray(Image.open(out2), dtype=np.float32) / 255
    want = load_image(g, (1, 16, 16)).pixels[0, 0].numpy()
    assert np.abs(got[:8] - want[:8]).max() <= 1 / 255 + 1e-6
    assert np.abs(got[8:] - want[8:]).max() > 0.05


@pytest.mark.parametrize("extra,msg", [(["--t0", "1.5"], "t0"), (["--t0", "0"], "t0"), (["--sampler", "nope"], "sampler"),
                                       (["--mask", "MASK"], "mask"), (["--guide", "BAD"], "not an image")])
def test_edit_cli_bad_input(tmp_path, bundle, capsys, extra, msg):
    g = _png(tmp_path / "g.png", np.zeros((16, 16), np.uint8))
    _png(tmp_path / "small_mask.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    extra = [str(tmp_path / "bad.png") if e == "BAD" else e for e in extra]
    args = ["edit", "--model", str(bundle), "--guide", str(g), "--steps", "2", "--out", str(tmp_path / "o.png")]
    if "MASK" in extra:
        # a mask is resized to the model's size by the same rule, so any size is accepted;
        # a mask that is not an image is refused
        (tmp_path / "m.txt").write_text("x")
        extra = ["--mask", str(tmp_path / "m.txt")]
        msg = "not an image"
    code = main(args + extra)
    err = capsys.readouterr().err
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_evaluate_cli(tmp_path, bundle, capsys):
    out = tmp_path / "e"
    assert main(["evaluate", "--model", str(bundle), "--t0", "0.2,1.0", "-n", "16", "--steps-per-unit", "4",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    methods = [r["method"] for r in rows]
    assert methods[:2] == ["SDEdit", "SDEdit"] and "nearest training image" in methods and "raw strokes" in methods
    stroke = next(r for r in rows if r["method"] == "raw strokes")
    assert float(stroke["l2"]) == 0
    assert "real images (real vs real)" in methods
    for f in ("tradeoff.png", "grid.png", "index.html", "results.md"):
        assert (out / f).stat().st_size > 200
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["n"] == 16 and data["meta"]["data"] == "digits" and data["meta"]["strokes"] == "pen"
    assert main(["evaluate", "--model", str(bundle), "--t0", "0.2,abc", "--out", str(out)]) == 2
    assert main(["evaluate", "--model", str(bundle), "--t0", "0", "--out", str(out)]) == 2

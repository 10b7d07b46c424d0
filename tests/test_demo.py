"""End-to-end: the demo (its report, captions, mask picture, model card), `sdekit edit` and `sdekit evaluate`
on tiny random-weight model bundles."""
import csv
import html
import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sdekit.models.bundle import random_model, save_bundle
from sdekit.apps.cli import main


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
    for png in ("samples.png", "strokes.png", "masked.png", "composite.png", "t0_strip.png"):
        assert (tmp_path / "d" / png).stat().st_size > 500 and png in page
    assert "toy/index.html" in page and (tmp_path / "d" / "toy" / "index.html").is_file()


# ---- the report on a class-conditional model with a judge and a calibrated t0 ---------------------------

CALIBRATED_T0 = 0.37


@pytest.fixture(scope="module")
def judged_bundle(tmp_path_factory):
    m = random_model(ch=4, num_classes=10)
    return save_bundle(tmp_path_factory.mktemp("j") / "model", m.net, shape=m.shape, name="tiny-digits",
                       data="digits", extra={"sdedit": {"t0": CALIBRATED_T0}})


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    """A folder as `sdekit evaluate` writes it (only the two files the demo reads)."""
    folder = tmp_path_factory.mktemp("eval")
    Image.new("RGB", (60, 20), "navy").save(folder / "tradeoff.png")
    meta = {"model": "tiny-digits", "n": 200, "strokes": "pen", "sampler": "reverse_diffusion", "fidelity_level": 0.95}
    (folder / "results.json").write_text(json.dumps({"meta": meta, "default_t0": 0.4, "rows": []}))
    return folder


@pytest.fixture(scope="module")
def report(tmp_path_factory, judged_bundle, evaluation):
    out = tmp_path_factory.mktemp("demo") / "d"
    assert main(["demo", "--model", str(judged_bundle), "--small", "--no-toy", "--evaluation", str(evaluation),
                 "--out", str(out)]) == 0
    return out, (out / "index.html").read_text()


def test_demo_reads_the_sdedit_policy_from_the_library(report):
    from sdekit.tasks.sdedit import DEFAULT_SAMPLER, sdedit_steps
    _, page = report
    steps = sdedit_steps(DEFAULT_SAMPLER, CALIBRATED_T0)
    assert f"t0 = {CALIBRATED_T0:g} (the model's)" in page and f"{steps} steps (the library's rule" in page
    assert f"SDEdit from t0 = {CALIBRATED_T0:g} with 1 seed ({DEFAULT_SAMPLER}, {steps} steps)" in page
    assert f"<td>{CALIBRATED_T0:g} (default)</td><td>{steps}</td>" in page      # the strip includes the default t0


def test_demo_opens_with_a_readable_model_card(report, judged_bundle):
    _, page = report
    head = page[:page.index("<h2>")]
    assert "Model(" not in head and "VPSDE(" not in head and "params=" not in head      # no Python repr
    for field, value in [("name", "tiny-digits"), ("data", "scikit-learn's digits"), ("images", "16x16, 1 channel"),
                         ("SDE", "VP (beta_min = 0.1, beta_max = 20, N = 1000)"), ("classes", "10 (class-conditional)"),
                         ("SDEdit t0", f"{CALIBRATED_T0:g} (calibrated by sdekit evaluate)")]:
        assert f"<tr><th>{field}</th><td>{html.escape(value)}" in head, field
    assert re.search(r"<th>network</th><td>0\.\d\d M parameters", head)


def test_demo_captions_are_measured(report):
    from sdekit.apps.demo import stroke_guides
    from sdekit.tasks.judge import load_judge, predict
    from sdekit.tasks.strokes import pen
    _, page = report
    text = html.unescape(page)
    assert "followed" not in text and "as unrealistic as" not in text
    assert re.search(r"the judge reads the digit asked for in \d+ of 10", text)
    found = re.search(r"the judge reads the drawn digit in (\d+) of 7 edits of the paintings and (\d+) of 3 edits of the "
                      r"pen strokes \(in the guides themselves: (\d+) of 10\)", text)
    assert found, text
    _, painted, y = stroke_guides((1, 16, 16))
    u, y2 = pen(3, 0, 16)
    judged = int((predict(load_judge("digits"), torch.cat([painted, u])) == torch.cat([y, y2])).sum())
    assert int(found[3]) == judged                                   # the count is the judge's own
    assert re.search(r"mean L2 to the guide \d+\.\d\d; an unguided sample of the same digit is at \d+\.\d\d", text)
    assert "output differs from the guide by at most 0 (identical)" in text
    assert re.search(r"<td>\d+ of 3</td>", page)                    # the strip's judge column


def test_masked_edit_shows_the_mask_in_colour_with_a_legend(report):
    from sdekit.apps.demo import KEEP_COLOUR, REDO_COLOUR, mask_overlay
    out, page = report
    assert page.count('class="sw"') == 2 and "kept from the guide (mask = 1)" in page
    # the mask cells are tinted: blue (kept) and orange (regenerated) pixels, which grey pictures have none of
    r, _, b = np.asarray(Image.open(out / "masked.png").convert("RGB")).reshape(-1, 3).astype(int).T
    half_cells = 2 * (16 // 2) * 16 * 4 ** 2                        # 2 rows, half a 16x16 cell each, scale 4
    assert ((b - r) > 60).sum() >= half_cells and ((r - b) > 60).sum() >= half_cells
    assert KEEP_COLOUR[2] - KEEP_COLOUR[0] > 0.5 and REDO_COLOUR[0] - REDO_COLOUR[2] > 0.5
    u = torch.ones(1, 1, 4, 4)
    shown = mask_overlay(u, torch.ones(1, 1, 4, 4))
    assert float((1 - shown).abs().max()) > 0.3                      # a white kept region is not drawn white


def test_demo_shows_an_evaluations_tradeoff_plot(report, evaluation):
    out, page = report
    assert (out / "tradeoff.png").read_bytes() == (evaluation / "tradeoff.png").read_bytes()
    assert 'src="tradeoff.png"' in page and "200 held-out pen strokes" in page and ": 0.4." in page


def test_demo_finds_the_evaluation_in_the_model_folder(tmp_path, judged_bundle, evaluation, monkeypatch):
    import sdekit.apps.demo
    seen = {}
    monkeypatch.setattr(sdekit.apps.demo, "demo", lambda out, **kw: seen.update(kw) or out / "index.html")
    model = tmp_path / "m"
    shutil.copytree(judged_bundle, model)
    assert main(["demo", "--model", str(model), "--out", str(tmp_path / "d")]) == 0
    assert seen["evaluation"] is None
    shutil.copytree(evaluation, model / "evaluation")
    assert main(["demo", "--model", str(model), "--out", str(tmp_path / "d2")]) == 0
    assert seen["evaluation"] == model / "evaluation"


def test_demo_refuses_a_folder_that_is_no_evaluation(tmp_path, judged_bundle, capsys):
    (tmp_path / "e").mkdir()
    code = main(["demo", "--model", str(judged_bundle), "--evaluation", str(tmp_path / "e"), "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "not an sdekit evaluate report" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


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
    from sdekit.data.images import load_image
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


def test_the_reproduce_line_follows_the_model(report):
    """How to paint and the --model flag follow the model: a grey digits model on black, not installed under a
    name of its own (so MODEL)."""
    _, page = report
    assert "light strokes on a dark background" in page and "colour strokes on white" not in page
    assert "sdekit edit --model MODEL --guide painting.png" in page

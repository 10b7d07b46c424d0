"""`sdekit evaluate`: the t0 sweep on held-out strokes, its intervals, its report and --write-t0."""
import csv
import json
import math
import os
from pathlib import Path

import pytest
import torch

from sdekit import UserError
from sdekit.models.bundle import random_model, save_bundle
from sdekit.apps.cli import main
from sdekit.apps.evaluation import Estimate, EvalResult, evaluate, fidelity_level, pick_t0, sample_warnings, write_t0
from sdekit.tasks.metrics import KIDResult, binomial_ci, bootstrap_ci

MNIST = Path(os.environ.get("SDEKIT_MNIST", "/work/shared/data/mnist"))
DATA = f"mnist:{MNIST}"
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                 reason="MNIST's idx files are not here (set SDEKIT_MNIST)")


@pytest.fixture(scope="module")
def model():
    return random_model(shape=(1, 28, 28), num_classes=10, ch=4)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, model):
    return save_bundle(tmp_path_factory.mktemp("m") / "model", model.net, shape=model.shape, name="tiny", data=DATA)


def test_binomial_interval_is_wilsons():
    p, lo, hi = binomial_ci(95, 100)
    z = 1.959964
    centre, half = (0.95 + z * z / 200) / (1 + z * z / 100), z / (1 + z * z / 100) * math.sqrt(0.95 * 0.05 / 100 + z * z / 4e4)
    assert p == 0.95 and math.isclose(lo, centre - half, rel_tol=1e-5) and math.isclose(hi, centre + half, rel_tol=1e-5)
    assert binomial_ci(10, 10)[2] == 1.0 and binomial_ci(0, 10)[1] == 0.0
    with pytest.raises(UserError):
        binomial_ci(3, 2)


def test_bootstrap_interval_of_a_mean():
    x = torch.randn(400, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m, lo, hi = bootstrap_ci(x)
    se = float(x.std()) / 20
    assert lo < m < hi and math.isclose(hi - lo, 2 * 1.96 * se, rel_tol=0.15)
    assert bootstrap_ci(torch.zeros(5)) == (0.0, 0.0, 0.0)
    assert bootstrap_ci(x) == (m, lo, hi)                              # seeded


def test_kid_interval():
    assert KIDResult(0.1, 0.02, 100, 50).ci() == pytest.approx((0.1 - 0.0392, 0.1 + 0.0392))


def _row(t0, p):
    e = Estimate(p, p, p)
    return EvalResult("SDEdit", t0, e, e, None, e, None)


def test_default_t0_is_the_largest_that_keeps_the_class():
    rows = [_row(0.1, 1.0), _row(0.2, 0.97), _row(0.3, 0.9), _row(0.4, 0.95), _row(0.5, 0.5)]
    assert pick_t0(rows) == 0.4
    baseline = EvalResult("raw strokes", None, Estimate(1, 1, 1), Estimate(0, 0, 0), None, Estimate(0, 0, 0), None)
    assert pick_t0(rows + [baseline]) == 0.4                           # baselines have no t0
    assert pick_t0([_row(0.1, 0.8)]) is None


def test_the_fidelity_asked_follows_a_judge_that_misreads_real_images():
    """95 % of edits, or 5 points below the judge's reading of real held-out images where that is lower: a
    judge that reads 85 % of real emoji right cannot read 95 % of edits right."""
    assert fidelity_level(None) == 0.95 and fidelity_level(1.0) == 0.95
    assert fidelity_level(0.994) == pytest.approx(0.944)                 # the MNIST judge
    assert fidelity_level(0.8489) == pytest.approx(0.7989)               # the emoji judge
    rows = [_row(0.2, 0.9), _row(0.3, 0.82), _row(0.5, 0.6)]
    assert pick_t0(rows) is None
    assert pick_t0(rows, fidelity_level(0.8489)) == 0.3


def test_default_t0_is_the_least_noise_as_realistic_as_samples():
    def row(t0, fidelity, kid):
        return EvalResult("SDEdit", t0, Estimate(fidelity, fidelity, fidelity), Estimate(kid, kid, kid), None,
                          Estimate(0, 0, 0), None)
    samples = EvalResult("plain samples (no guide)", None, Estimate(0.1, 0.1, 0.1), Estimate(0.03, 0.03, 0.03), None,
                         Estimate(9, 9, 9), None)
    guided = [row(0.2, 0.97, 0.08), row(0.3, 0.94, 0.02), row(0.4, 0.97, 0.01), row(0.6, 0.97, 0.02), row(1.0, 0.97, 0.03)]
    assert pick_t0(guided + [samples]) == 0.4          # 0.3 is realistic but loses the class; 1.0 forgets the stroke
    plain = [row(0.2, 0.96, 0.08), row(0.3, 0.6, 0.02), row(0.5, 0.2, 0.01)]
    assert pick_t0(plain + [samples]) == 0.2           # none both keeps the class and is realistic: the largest keeping it


def test_small_samples_are_flagged():
    assert len(sample_warnings(50)) == 2                               # KID noisy, FID empty
    assert len(sample_warnings(120)) == 1 and "FID" in sample_warnings(120)[0]
    assert sample_warnings(200) == []


def test_write_t0_touches_only_the_config(tmp_path, model):
    folder = save_bundle(tmp_path / "b", model.net, shape=model.shape, data=DATA)
    weights = (folder / "model.safetensors").read_bytes()
    before = json.loads((folder / "config.json").read_text())
    write_t0(folder, 0.4)
    after = json.loads((folder / "config.json").read_text())
    assert after.pop("sdedit") == {"t0": 0.4} and after == before
    assert (folder / "model.safetensors").read_bytes() == weights
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]     # no temporary file left
    with pytest.raises(UserError):
        write_t0(folder, 1.5)
    with pytest.raises(UserError):
        write_t0(tmp_path, 0.3)                                          # not a bundle


@needs_mnist
def test_evaluate_end_to_end_on_a_tiny_model(tmp_path, model):
    out = tmp_path / "e"
    res = evaluate(model, DATA, (0.3, 1.0), n=8, strokes="pen", steps_per_unit=4, out=out, progress=False,
                   n_reference=500)
    methods = [r.method for r in res.rows]
    assert methods == ["SDEdit", "SDEdit", "raw strokes", "real images (real vs real)", "nearest training image",
                       "plain samples (no guide)"]
    raw = res.rows[2]
    assert raw.l2.value == 0 and raw.fidelity.value >= 0.5          # the judge reads most strokes themselves
    for r in res.rows:
        for e in (r.fidelity, r.kid, r.l2, r.l2_down):
            assert e.lo <= e.value <= e.hi
        assert 0 <= r.fidelity.lo and r.fidelity.hi <= 1 and r.fid is None
    assert res.rows[0].steps == 4 and res.rows[1].steps == 4
    assert any("KID from n = 8" in w for w in res.warnings) and any("no FID" in w for w in res.warnings)
    for f in ("results.json", "results.md", "results.csv", "tradeoff.png", "grid.png", "index.html"):
        assert (out / f).stat().st_size > 200
    report = json.loads((out / "results.json").read_text())
    assert report["meta"]["n"] == 8 and report["meta"]["strokes"] == "pen" and "default_t0" in report
    assert report["meta"]["n_reference"] == 500
    assert report["rows"][0]["fidelity"].keys() == {"value", "lo", "hi"}
    md = (out / "results.md").read_text()
    assert "Warning: KID from n = 8" in md and "no FID" in md and "real vs real" in md
    assert len(list(csv.DictReader(open(out / "results.csv")))) == 6
    with pytest.raises(UserError, match="overwrite"):             # an existing report is kept
        evaluate(model, DATA, (0.3,), n=8, out=out, progress=False)
    with pytest.raises(UserError, match="stroke set"):
        evaluate(model, DATA, (0.3,), n=8, strokes="crayon", out=tmp_path / "x", progress=False)


@needs_mnist
def test_evaluate_cli_writes_the_default_t0(tmp_path, bundle, capsys):
    cfg = json.loads((bundle / "config.json").read_text())
    weights = (bundle / "model.safetensors").read_bytes()
    out = tmp_path / "e"
    # at t0 = 0.01 SDEdit hardly changes the package's clean paintings, so the judge keeps their digits
    args = ["evaluate", "--model", str(bundle), "--strokes", "package", "--t0", "0.01", "-n", "8",
            "--steps-per-unit", "4", "--n-reference", "500", "--out", str(out), "--write-t0"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "report:" in captured.out and "warning: KID from n = 8" in captured.err
    got = json.loads((bundle / "config.json").read_text())
    assert got.pop("sdedit") == {"t0": 0.01} and got == cfg
    assert (bundle / "model.safetensors").read_bytes() == weights


@needs_mnist
def test_evaluate_cli_refuses_bad_input_before_work(tmp_path, bundle, capsys):
    out = tmp_path / "e"
    base = ["evaluate", "--model", str(bundle), "-n", "8", "--steps-per-unit", "4", "--out", str(out)]
    for extra, msg in [(["--t0", "0"], "t0"), (["--t0", "0.2,x"], "t0"), (["--sampler", "nope"], "sampler"),
                       (["--data", "cifar10:/x"], "no judge"), (["--batch-size", "0"], "positive")]:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1
    assert main(["evaluate", "-n", "8", "--write-t0", "--out", str(out)]) == 2
    assert "--write-t0 needs --model" in capsys.readouterr().err
    assert not out.exists()


def test_the_digits_reference_is_the_judges_own_test_split_whatever_the_seed():
    from sdekit.apps.evaluation import reference_data
    from sdekit.tasks.judge import split_digits
    _, _, test, _ = split_digits(0)                              # the shipped digits judge never saw these
    for seed in (0, 3):
        assert torch.equal(reference_data("digits", (1, 16, 16), seed=seed)[1], test)


@pytest.mark.parametrize("extra, msg", [(["--class", "12"], "0..9"), (["--guidance-scale", "-2"], ">= 0"),
                                        (["--class", "none", "--guidance-scale", "2"], "needs a class")])
def test_evaluate_cli_refuses_a_bad_condition_before_the_judge_loads(tmp_path, capsys, monkeypatch, extra, msg):
    import sdekit.tasks.judge

    def work(*a, **k):
        raise AssertionError("the work started")
    monkeypatch.setattr(sdekit.tasks.judge, "load_judge", work)
    out = tmp_path / "e"
    assert main(["evaluate", "--model", "digits", "--data", "digits", "-n", "8", "--out", str(out)] + extra) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_bundle_config_takes_a_shipped_models_name():
    from sdekit.apps.evaluation import bundle_config
    from sdekit.models.bundle import BUNDLED_MODELS
    path, cfg = bundle_config("digits")
    assert path == BUNDLED_MODELS["digits"] / "config.json" and cfg["shape"] == [1, 16, 16]
    with pytest.raises(UserError, match="not a model bundle"):
        bundle_config("no-such-model")


def test_report_words_follow_the_data():
    from sdekit.apps.evaluation import _markdown
    meta = {"steps_per_unit": 20, "n": 4, "strokes": "simulated", "data": "emoji:DIR", "n_reference": 8,
            "judge_test_accuracy": 0.85, "sampler": "reverse_diffusion", "seed": 0, "seconds": 1.0,
            "class_noun": "category", "classes": "emoji of the 9 Unicode categories"}
    md = _markdown([], meta, None, [])
    assert "digit" not in md and "drawn category" in md and "emoji of the 9 Unicode categories" in md


def test_a_default_t0_from_few_strokes_is_not_shown_as_settled():
    from sdekit.apps.evaluation import KID_MIN_N, _markdown
    meta = {"steps_per_unit": 20, "n": 8, "strokes": "pen", "data": "digits", "n_reference": 8,
            "judge_test_accuracy": 0.9, "sampler": "reverse_diffusion", "seed": 0, "seconds": 1.0}
    assert "tentative: n = 8" in _markdown([], meta, 0.3, []) and "**0.3**" not in _markdown([], meta, 0.3, [])
    assert "**0.3**" in _markdown([], {**meta, "n": KID_MIN_N}, 0.3, [])


def test_grid_rows_name_the_class_where_the_data_names_its_classes():
    from sdekit.apps.evaluation import row_label
    from sdekit.data.datasets import class_index
    assert row_label(3, "emoji:/d") == "3 food" and row_label(8, "emoji") == "8 flags"
    assert row_label(7, "mnist:/d") == "7" and row_label(2, None) == "2"
    config = {"data": "emoji", "num_classes": 9}
    assert all(class_index(config, row_label(k, "emoji").split()[1]) == k for k in range(9))   # --class takes it

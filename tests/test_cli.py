"""The command line's contract, for every command: bad input is refused on one line (exit 2) before
any work, no output is replaced without --overwrite, pictures come out at a size one can look at
(and --resize-back lines up with the guide), internal errors are tracebacks, every option has help."""
import argparse
import errno
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sdekit.models.bundle
import sdekit.data.datasets
import sdekit.apps.toy
from sdekit.models.bundle import random_model, save_bundle
from sdekit.apps.cli import _parser, main
from sdekit.core.errors import UserError
from sdekit.data.images import SCALE, load_image


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    grey, rgb = random_model(ch=4, num_classes=10), random_model((3, 16, 16), ch=4)
    g = np.zeros((40, 40), np.uint8)
    g[8:32, 16:24] = 230
    Image.fromarray(g, "L").save(root / "guide.png")
    wide = np.zeros((40, 160), np.uint8)
    wide[:, 76:84] = 255
    wide[:, 0:6] = 255
    Image.fromarray(wide, "L").save(root / "wide.png")
    return {"GREY": str(save_bundle(root / "grey", grey.net, shape=grey.shape)),
            "RGB": str(save_bundle(root / "rgb", rgb.net, shape=rgb.shape)),
            "GUIDE": str(root / "guide.png"), "WIDE": str(root / "wide.png")}


def _run(capsys, files, *args):
    """main(args) with GREY, RGB, GUIDE, WIDE replaced by the fixture's files -> (exit code, stderr)."""
    capsys.readouterr()
    try:
        code = main([files.get(str(a), str(a)) for a in args])
    except SystemExit as e:                                      # argparse's own refusals
        code = e.code
    return code, capsys.readouterr().err


def _one_line(err):
    lines = [line for line in err.strip().splitlines() if "it/s]" not in line and "batch/s]" not in line]
    return len(lines) == 1


# ---- --resize-back: the inverse of the crop ---------------------------------------------------------

def test_resize_back_lines_up_with_a_wide_guide(tmp_path, files, capsys):
    """A 160x40 guide with an 8-pixel bar at x = 76..83 and one at x = 0..5: the model sees the centre
    40x40; the output, put back, has the middle bar where the guide has it, as wide, and the left bar."""
    out = tmp_path / "o.png"
    code, err = _run(capsys, files, "edit", "--model", "GREY", "--guide", "WIDE", "--t0", "0.02", "--steps", "2",
                     "--resize-back", "--out", out)
    assert code == 0, err
    a = np.asarray(Image.open(out), dtype=np.float32) / 255
    assert a.shape == (40, 160)
    bright = np.flatnonzero(a[20] > 0.5)
    middle = bright[bright > 10]
    assert 6 <= len(middle) <= 10 and abs(middle.mean() - 79.5) <= 1.5, middle
    assert a[:, :6].min() > 0.9 and a[:, 6:60].max() < 0.1          # outside the crop: the guide itself
    # several outputs: a row of guide-sized pictures, the guide first, not enlarged
    code, err = _run(capsys, files, "edit", "--model", "GREY", "--guide", "WIDE", "--t0", "0.02", "--steps", "2",
                     "-n", "2", "--resize-back", "--out", tmp_path / "row.png")
    assert code == 0, err
    row = np.asarray(Image.open(tmp_path / "row.png"), dtype=np.float32) / 255
    assert row.shape == (42, 3 * 161 + 1)
    assert np.abs(row[1:41, 1:161] - np.asarray(Image.open(files["WIDE"])) / 255).max() < 1e-6


# ---- pictures one can look at ------------------------------------------------------------------------

def test_edit_pictures_are_enlarged_and_grids_carry_the_guide(tmp_path, files, capsys):
    code, err = _run(capsys, files, "edit", "--model", "GREY", "--guide", "GUIDE", "--steps", "2", "--out", tmp_path / "1.png")
    assert code == 0, err
    assert Image.open(tmp_path / "1.png").size == (16 * SCALE, 16 * SCALE)
    code, err = _run(capsys, files, "edit", "--model", "GREY", "--guide", "GUIDE", "--steps", "2", "-n", "4",
                     "--out", tmp_path / "4.png")
    assert code == 0, err
    grid = np.asarray(Image.open(tmp_path / "4.png"), dtype=np.float32) / 255
    assert grid.shape == (18 * SCALE, (5 * 17 + 1) * SCALE)
    first = grid[SCALE:17 * SCALE:SCALE, SCALE:17 * SCALE:SCALE]            # one pixel per enlarged block
    want = load_image(files["GUIDE"], (1, 16, 16)).pixels[0, 0].numpy()
    assert np.abs(first - want).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize("args,cells", [
    (["inpaint", "--model", "GREY", "--image", "GUIDE", "--mask", "left", "--steps", "2", "-n", "2"], 3),
    (["colorize", "--model", "RGB", "--image", "GUIDE", "--steps", "2", "-n", "2"], 3),
    (["sample", "--model", "GREY", "--steps", "2", "-n", "3", "--nrow", "3"], 3)])
def test_scale_is_honoured(tmp_path, files, capsys, args, cells):
    code, err = _run(capsys, files, *args, "--scale", "2", "--out", tmp_path / "o.png")
    assert code == 0, err
    assert Image.open(tmp_path / "o.png").size == ((cells * 17 + 1) * 2, 18 * 2)


def test_every_picture_command_takes_scale_with_one_default():
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("sample", "edit", "inpaint", "colorize", "demo"):
        scale = next(a for a in sub.choices[name]._actions if "--scale" in a.option_strings)
        assert scale.default is None and f"(default: {SCALE})" in scale.help, name


# ---- outputs are never replaced without --overwrite, and refused before any work -----------------------

OUTPUTS = {
    "sample png": (["sample", "--model", "GREY", "-n", "2", "--steps", "1"], "o.png"),
    "sample npz": (["sample", "--model", "GREY", "-n", "2", "--steps", "1"], "o.npz"),
    "edit": (["edit", "--model", "GREY", "--guide", "GUIDE", "--steps", "1"], "o.png"),
    "inpaint": (["inpaint", "--model", "GREY", "--image", "GUIDE", "--mask", "left", "--steps", "1", "-n", "1"], "o.png"),
    "colorize": (["colorize", "--model", "RGB", "--image", "GUIDE", "--steps", "1", "-n", "1"], "o.png"),
    "demo": (["demo", "--model", "GREY", "--small", "--no-toy"], "folder"),
    "toy": (["toy"], "folder"),
    "train-classifier": (["train-classifier", "--steps", "1"], "folder"),
}


@pytest.fixture
def no_work(monkeypatch):
    def work(*a, **k):
        raise AssertionError("the work started")
    for module, name in ((sdekit.models.bundle, "load"), (sdekit.data.datasets, "load_dataset"), (sdekit.apps.toy, "toy_report")):
        monkeypatch.setattr(module, name, work)


@pytest.mark.parametrize("case", OUTPUTS)
def test_existing_output_is_refused_before_any_work(tmp_path, files, capsys, no_work, case):
    args, name = OUTPUTS[case]
    out = tmp_path / name
    if name == "folder":
        out.mkdir()
        (out / "keep.txt").write_text("keep")
    else:
        out.write_bytes(b"keep")
    code, err = _run(capsys, files, *args, "--out", out)
    assert code == 2 and "--overwrite" in err and _one_line(err), err
    assert (out / "keep.txt").read_text() == "keep" if name == "folder" else out.read_bytes() == b"keep"


@pytest.mark.parametrize("name", ["o.png", "o.npz"])
def test_overwrite_replaces(tmp_path, files, capsys, name):
    out = tmp_path / name
    out.write_bytes(b"keep")
    code, err = _run(capsys, files, "sample", "--model", "GREY", "-n", "2", "--steps", "1", "--out", out, "--overwrite")
    assert code == 0, err
    assert out.read_bytes() != b"keep"


def test_an_empty_output_folder_is_used(tmp_path, files, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(sdekit.apps.toy, "toy_report", lambda out, seed: calls.append(out) or out / "index.html")
    (tmp_path / "t").mkdir()
    code, err = _run(capsys, files, "toy", "--out", tmp_path / "t")
    assert code == 0, err
    assert calls == [tmp_path / "t"]


# ---- bad arguments: one line, exit 2, before any work --------------------------------------------------

BAD = [
    (["sample", "--steps", "0"], "positive integer"), (["sample", "-n", "0"], "positive integer"),
    (["sample", "--seed", "-1"], "0..2^32-1"), (["sample", "--seed", str(2 ** 64)], "0..2^32-1"),
    (["sample", "--scale", "0"], "positive integer"), (["sample", "--nrow", "0"], "positive integer"),
    (["sample", "--guidance", "nan", "--class", "1"], "finite"), (["sample", "--batch-size", "0"], "positive"),
    (["sample", "--device", "gpu"], "not a torch device"), (["sample", "--device", "meta"], "no meta device"),
    (["sample", "--scale", "1000"], "smaller --scale"), (["sample", "-n", "3", "--nrow", "4"], "--nrow"),
    (["sample", "--out", "OUT.txt"], "--out must end in"),
    (["edit", "--guide", "GUIDE", "-n", "0"], "1..256"), (["edit", "--guide", "GUIDE", "-n", "257"], "1..256"),
    (["edit", "--guide", "GUIDE", "--repeats", "0"], "positive"), (["edit", "--guide", "GUIDE", "--class", "-1"], ">= 0"),
    (["edit", "--guide", "GUIDE", "--class", "10"], "0..9"), (["edit", "--guide", "GUIDE", "--scale", "600"], "smaller --scale"),
    (["edit", "--guide", "GUIDE", "--t0", "nan"], "t0"), (["edit", "--guide", "GUIDE", "--steps", "-3"], "positive"),
    (["inpaint", "--image", "GUIDE", "--mask", "left", "--resample", "-1"], ">= 0"),
    (["inpaint", "--image", "GUIDE", "--mask", "left", "--class", "12"], "0..9"),
    (["likelihood", "--rtol", "0"], "positive number"), (["likelihood", "--n-probes", "0"], "positive"),
    (["train-classifier", "--holdout", "1"], "[0, 1)"), (["train-classifier", "--lr", "nan"], "positive number"),
    (["demo", "--seed", "x"], "0..2^32-1"), (["toy", "--seed", "1.5"], "0..2^32-1"),
]


@pytest.mark.parametrize("args,msg", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_are_one_line(tmp_path, files, capsys, args, msg):
    out = tmp_path / "OUT.png"
    args = [str(tmp_path / a) if a.startswith("OUT") else a for a in args]
    if "--out" not in args and args[0] not in ("likelihood", "demo", "toy"):
        args += ["--out", str(out)]
    if args[0] == "train-classifier":
        args += ["--out", str(tmp_path / "clf")]
    if args[0] not in ("train-classifier", "toy"):
        args[1:1] = ["--model", "GREY"]
    code, err = _run(capsys, files, *args)
    assert code == 2 and msg in err and _one_line(err), err
    assert not out.exists() and not (tmp_path / "clf").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, a folder nobody can create files in")
def test_an_unwritable_output_folder_is_refused_before_any_work(files, capsys, no_work):
    code, err = _run(capsys, files, "sample", "--model", "GREY", "--out", "/proc/o.png")
    assert code == 2 and "cannot write here" in err and _one_line(err), err


def test_likelihood_reads_the_models_own_data_not_another(files, capsys):
    # the default model is MNIST's; without its folder it reads the MNIST test images shipped with the
    # package and says so (naming mnist:DIR for the full set), never a silent stand-in of other digits
    capsys.readouterr()
    code = main(["likelihood", "-n", "2", "--solver", "heun", "--steps", "2"])
    out, err = capsys.readouterr()
    assert code == 0 and "the shipped held-out subset: 1000 MNIST test images" in err and "mnist:DIR" in err, err
    assert "2 data points of mnist" in out and "is not the data" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_refused_before_any_work(tmp_path, files, capsys, no_work):
    code, err = _run(capsys, files, "sample", "--device", "cuda", "--out", tmp_path / "o.png")
    assert code == 2 and "no cuda device" in err and _one_line(err), err


# ---- flags that would do nothing are refused ---------------------------------------------------------

NOTHING = [
    (["sample", "--guidance", "3"], "--class"),
    (["sample", "--classifier", "digits", "--class", "1"], "--guidance"),
    (["sample", "--scale", "2", "--out", "OUT.npz"], "--scale"),
    (["sample", "--nrow", "2", "--out", "OUT.npz"], "--nrow"),
    (["edit", "--guide", "GUIDE", "--resize-back", "--scale", "2"], "--scale"),
    (["likelihood", "--steps", "5"], "--steps"),
    (["likelihood", "--solver", "heun", "--rtol", "1e-3"], "--rtol"),
    (["likelihood", "--probes", "exact", "--n-probes", "3"], "--n-probes"),
    (["inpaint", "--image", "GUIDE", "--mask", "GUIDE_WHITE"], "no pixel to fill"),
    (["edit", "--guide", "GUIDE", "--guidance-scale", "2"], "needs a class"),
    (["sample", "--class", "none", "--guidance", "2"], "--class"),
    (["sample", "--class", "1", "--guidance", "-1"], ">= 0"),
]


@pytest.mark.parametrize("args,msg", NOTHING, ids=[" ".join(a) for a, _ in NOTHING])
def test_a_flag_without_effect_is_refused(tmp_path, files, capsys, args, msg):
    Image.new("L", (8, 8), 255).save(tmp_path / "white.png")
    args = [str(tmp_path / a) if a.startswith("OUT") else str(tmp_path / "white.png") if a == "GUIDE_WHITE" else a
            for a in args]
    if "--out" not in args and args[0] != "likelihood":
        args += ["--out", str(tmp_path / "OUT.png")]
    code, err = _run(capsys, files, args[0], "--model", "GREY", *args[1:])
    assert code == 2 and msg in err and _one_line(err), err
    assert not any(tmp_path.glob("OUT*"))


def test_edit_guidance_with_class_none_is_refused_not_ignored(tmp_path, files, capsys):
    code, err = _run(capsys, files, "edit", "--model", "digits", "--guide", files["GUIDE"], "--class", "none",
                     "--guidance-scale", "2", "--out", tmp_path / "e.png")
    assert code == 2 and "needs a class" in err and _one_line(err), err
    assert not (tmp_path / "e.png").exists()


def test_guidance_without_a_class_is_refused_not_ignored(tmp_path, files, capsys):
    code, err = _run(capsys, files, "sample", "--model", "GREY", "-n", "2", "--steps", "1", "--guidance", "3",
                     "--out", tmp_path / "g.png")
    assert code == 2 and "--class" in err
    code, err = _run(capsys, files, "sample", "--model", "GREY", "-n", "2", "--steps", "1", "--guidance-scale", "3",
                     "--out", tmp_path / "g.png")
    assert code == 2 and "--class" in err
    code, err = _run(capsys, files, "sample", "--model", "GREY", "-n", "2", "--steps", "1", "--guidance", "3",
                     "--class", "1", "--out", tmp_path / "g.png")
    assert code == 0, err                                              # the shorter name of the option works too


# ---- bad input versus bugs ---------------------------------------------------------------------------

@pytest.mark.parametrize("exc,refused", [(UserError("bad input"), True), (FileNotFoundError(2, "gone", "x.png"), True),
                                         (PermissionError(13, "denied", "x"), True), (OSError(errno.ENOSPC, "disk full"), True),
                                         (ValueError("a bug"), False), (OSError(errno.EIO, "i/o error"), False),
                                         (TypeError("a bug"), False)])
def test_bad_input_is_one_line_and_bugs_are_tracebacks(tmp_path, capsys, monkeypatch, exc, refused):
    import sdekit.apps.commands.toy

    def fail(args):
        raise exc
    monkeypatch.setattr(sdekit.apps.commands.toy, "run", fail)
    if refused:
        code, err = _run(capsys, {}, "toy", "--out", tmp_path / "t")
        assert code == 2 and _one_line(err), err
    else:
        with pytest.raises(type(exc)):
            main(["toy", "--out", str(tmp_path / "t")])


def test_argparse_errors_are_one_line(capsys):
    code, err = _run(capsys, {}, "sample")
    assert code == 2 and "--out" in err and _one_line(err), err


# ---- help ------------------------------------------------------------------------------------------

HELP_ELSEWHERE: set[str] = set()


def test_every_option_has_help_and_one_name():
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        text = p.format_help()
        assert not (" em," in text and "euler_maruyama" in text), name    # an alias is not offered twice
        for a in p._actions:
            if not a.option_strings or a.help == argparse.SUPPRESS or "-h" in a.option_strings:
                continue
            assert len([o for o in a.option_strings if o.startswith("--")]) <= 1, (name, a.option_strings)
            if name not in HELP_ELSEWHERE:
                assert a.help and not a.help.strip().startswith("(default"), (name, a.option_strings)


def test_an_ode_tolerance_too_tight_is_bad_input():
    import math

    from sdekit.solvers.ode import rk45
    with pytest.raises(UserError, match="loosen rtol/atol"):
        rk45(lambda t, y: math.cos(50 * t) * torch.ones_like(y), torch.zeros(1), 0.0, 1.0, rtol=1e-9, atol=1e-9,
             max_steps=5)


def test_help_names_the_default_model_and_no_step_count_for_the_adaptive_solver():
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sdekit.models.bundle.DEFAULT_MODEL == "mnist"
    for name, p in sub.choices.items():
        for a in p._actions:
            if "--model" in a.option_strings and "default" in a.help and name not in HELP_ELSEWHERE:
                assert "MNIST" in a.help and "default: the bundled digits" not in a.help, (name, a.help)
            if "--sampler" in a.option_strings:
                assert "adaptive RK45, 1 steps" not in a.help and "adaptive steps" in a.help, name


def test_model_commands_use_the_cpus_other_jobs_leave_free(tmp_path, files, capsys, monkeypatch):
    import sdekit.core.threads
    monkeypatch.setattr(sdekit.core.threads, "default_threads", lambda *a, **k: 1)
    torch.set_num_threads(2)                     # torch's own default on two cores
    try:
        code, err = _run(capsys, files, "edit", "--model", "GREY", "--guide", "GUIDE", "--steps", "2",
                         "--out", tmp_path / "o.png")
        assert code == 0, err
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("args", [
    ("edit", "--model", "GREY", "--guide", "GUIDE", "--steps", "3"),
    ("inpaint", "--model", "GREY", "--image", "GUIDE", "--mask", "left", "--steps", "3", "-n", "2"),
    ("colorize", "--model", "RGB", "--image", "GUIDE", "--steps", "3", "-n", "2"),
])
def test_the_summary_states_steps_evaluations_and_time(tmp_path, files, capsys, args):
    capsys.readouterr()
    assert main([files.get(a, a) for a in args] + ["--out", str(tmp_path / "o.png")]) in (0, None)
    said = capsys.readouterr().out
    assert " 3 steps" in said and " evaluations" in said and re.search(r"\d+\.\d s\)", said), said


def test_sampling_one_batch_shows_a_bar_per_solver_step(tmp_path, files, capsys):
    code, err = _run(capsys, files, "sample", "--model", "GREY", "--sampler", "euler_maruyama", "--steps", "7",
                     "-n", "2", "--out", tmp_path / "g.png")
    assert code == 0 and "7/7" in err, err


def test_likelihood_notes_data_other_than_the_models_own(capsys):
    from sdekit.apps.cli import main
    assert main(["likelihood", "--data", "digits", "-n", "2", "--solver", "heun", "--steps", "2"]) == 0
    err = capsys.readouterr().err
    assert "note: digits is not the data mnist was trained on (mnist)" in err


def test_progress_bars_written_to_a_log_redraw_rarely(tmp_path):
    """stderr a file, not a terminal: the bar of a 200-step sample is drawn a handful of times, not per step
    (``python -m sdekit`` is the CLI)."""
    import subprocess
    import sys as _sys
    log = tmp_path / "log.txt"
    with open(log, "w") as err:
        r = subprocess.run([_sys.executable, "-m", "sdekit", "sample", "--model", "digits", "--sampler", "ddim",
                            "--steps", "200", "-n", "2", "--out", str(tmp_path / "s.png")], stderr=err,
                           stdout=subprocess.DEVNULL)
    assert r.returncode == 0, log.read_text()
    text = log.read_text()
    assert "ddim" in text and text.count("\r") < 6, text[-500:]

"""The commands on a diffusers folder (as `sdekit convert` writes them), with --device and --dtype."""
import argparse

import pytest
import torch

import sdekit
from sdekit.apps.cli import main
from sdekit.apps.commands.common import placement

pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402

from tiny_unets import ddpm_folder  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "ddpm"
    ddpm_folder(path)
    return path


@pytest.fixture
def images(tmp_path):
    Image.new("RGB", (16, 10), (30, 140, 220)).save(tmp_path / "guide.png")
    Image.new("L", (8, 8), 255).save(tmp_path / "mask.png")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(data / f"{i}.png")
    return tmp_path


def code(argv) -> int:
    """The exit code of `sdekit argv` (argparse's refusals exit from inside main)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("command", ["sample", "edit", "inpaint", "colorize", "likelihood"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_commands_run_on_a_diffusers_folder(folder, images, command, dtype, capsys):
    t = images
    args = {"sample": ["sample", "-n", "2", "--sampler", "ddim", "--steps", "2", "--out", str(t / "s.png")],
            "edit": ["edit", "--guide", str(t / "guide.png"), "--t0", "0.3", "--steps", "2", "--sampler", "ddim",
                     "--out", str(t / "e.png")],
            "inpaint": ["inpaint", "--image", str(t / "guide.png"), "--mask", "left", "-n", "2", "--steps", "2",
                        "--sampler", "ddim", "--out", str(t / "i.png")],
            "colorize": ["colorize", "--image", str(t / "guide.png"), "-n", "1", "--steps", "2", "--sampler", "ddim",
                         "--out", str(t / "c.png")],
            "likelihood": ["likelihood", "--data", f"folder:{t / 'data'}", "-n", "2", "--solver", "heun", "--steps", "2"]}
    assert main([*args[command], "--model", str(folder), "--device", "cpu", "--dtype", dtype]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert ("bits/dim" in out) if command == "likelihood" else ("->" in out)


def test_unavailable_devices_and_precisions_are_refused_up_front(folder, images, capsys, monkeypatch):
    if torch.accelerator.current_accelerator() is None:
        assert code(["edit", "--model", str(folder), "--guide", str(images / "guide.png"), "--device", "cuda",
                     "--out", str(images / "x.png")]) == 2
        assert "no cuda device" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(sdekit.UserError, match="bfloat16"):
        placement(argparse.Namespace(device="cuda", dtype="bfloat16"))
    with pytest.raises(sdekit.UserError, match="float64"):
        placement(argparse.Namespace(device="mps", dtype="float64"))
    assert placement(argparse.Namespace(device=None, dtype="float16")) == (None, torch.float16)
    assert code(["sample", "--model", str(folder), "--dtype", "float8", "--out", str(images / "x.png")]) == 2
    assert not (images / "x.png").exists()


def test_class_conditional_unet_without_null_label_needs_a_class(tmp_path, images, capsys):
    from tiny_unets import ddpm_unet
    ddpm_folder(tmp_path / "cond", unet=ddpm_unet(num_class_embeds=10))
    model, out = ["--model", str(tmp_path / "cond")], str(tmp_path / "x.png")
    edit = ["edit", *model, "--guide", str(images / "guide.png"), "--steps", "2", "--sampler", "ddim", "--out", out]
    for argv in (["sample", *model, "-n", "2", "--steps", "2", "--out", out],
                 ["sample", *model, "-n", "2", "--steps", "2", "--class", "3", "--guidance-scale", "1", "--out", out],
                 edit, [*edit, "--class", "none"], [*edit, "--class", "3", "--guidance-scale", "2"]):
        assert code(argv) == 2, argv
        err = capsys.readouterr().err
        assert "needs a class label 0..9" in err and "no null label" in err and err.count("\n") == 1, err
        assert not (tmp_path / "x.png").exists()
    assert code([*edit, "--class", "3"]) == 0, capsys.readouterr().err
    assert (tmp_path / "x.png").exists()
    assert code(["sample", *model, "-n", "2", "--steps", "2", "--class", "3", "--out", str(tmp_path / "s.png")]) == 0, \
        capsys.readouterr().err
    assert (tmp_path / "s.png").exists()


MODEL_COMMANDS = ["sample", "edit", "inpaint", "colorize", "likelihood", "evaluate", "demo", "serve"]


def test_every_command_with_model_takes_the_ve_noise_range():
    from sdekit.apps.cli import _parser
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in MODEL_COMMANDS:
        flags = {o for a in sub.choices[name]._actions for o in a.option_strings}
        assert {"--model", "--sigma-min", "--sigma-max"} <= flags, name


def test_sigma_flags_reach_a_ve_folder(tmp_path, images, capsys):
    from sdekit.apps.commands.common import load_model
    from tiny_unets import ve_folder
    ve_folder(tmp_path / "ve", sigma_max=348.0)
    model = load_model(argparse.Namespace(model=str(tmp_path / "ve"), sigma_min=None, sigma_max=380.0))
    assert (model.sde.sigma_min, model.sde.sigma_max) == (0.01, 380.0)
    out = tmp_path / "s.png"
    assert main(["sample", "--model", str(tmp_path / "ve"), "--sigma-max", "380", "-n", "1", "--sampler", "heun",
                 "--steps", "2", "--out", str(out)]) == 0, capsys.readouterr().err
    assert out.exists()
    capsys.readouterr()
    assert main(["sample", "--model", str(tmp_path / "ve"), "--sigma-min", "400", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "sigma_min 400 must be below sigma_max 348" in err and len(err.splitlines()) == 1, err
    assert code(["sample", "--model", str(tmp_path / "ve"), "--sigma-max", "-3", "--out", str(tmp_path / "x.png")]) == 2
    assert "must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("which", ["ddpm", "default"])
@pytest.mark.parametrize("flag", ["--sigma-min", "--sigma-max"])
def test_sigma_flags_are_refused_for_other_models(folder, images, capsys, which, flag):
    model = ["--model", str(folder)] if which == "ddpm" else []
    what = "a DDPMScheduler model" if which == "ddpm" else "an sdekit bundle"
    runs = [["sample", "-n", "1", "--out", str(images / "x.png")],
            ["edit", "--guide", str(images / "guide.png"), "--out", str(images / "x.png")],
            ["serve", "--port", "0"]]
    for argv in runs:
        capsys.readouterr()
        assert main([*argv, *model, flag, "380"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"{flag} applies to score_sde VE diffusers folders (ScoreSdeVeScheduler), not to {what}")
        assert len(err.splitlines()) == 1, err
    assert not (images / "x.png").exists()

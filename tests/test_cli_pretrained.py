"""The commands on a diffusers folder (as `sdekit convert` writes them), with --device and --dtype."""
import argparse

import pytest
import torch

import sdekit
from sdekit.cli import main
from sdekit.commands.common import placement

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

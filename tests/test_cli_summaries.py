"""Summary lines name how the solver stepped: an adaptive sampler's steps are not a count the user chose."""
from PIL import Image

from sdekit.apps.cli import main


def test_an_adaptive_edit_says_adaptive_not_one_step(tmp_path, capsys):
    Image.new("L", (16, 16), 0).save(tmp_path / "g.png")
    args = ["edit", "--model", "digits", "--guide", str(tmp_path / "g.png"), "--t0", "0.3", "--seed", "0"]
    assert main(args + ["--sampler", "ode", "--out", str(tmp_path / "a.png")]) == 0
    said = capsys.readouterr().out
    assert "(ode, adaptive RK45," in said and "1 steps" not in said
    assert main(args + ["--sampler", "ddim", "--steps", "5", "--out", str(tmp_path / "b.png")]) == 0
    assert "(ddim, 5 steps," in capsys.readouterr().out


def test_a_guided_sample_says_its_class_and_the_cost_of_guidance(tmp_path, capsys):
    args = ["sample", "--model", "digits", "-n", "2", "--sampler", "ddim", "--steps", "2", "--seed", "0"]
    assert main(args + ["--class", "3", "--guidance-scale", "2", "--out", str(tmp_path / "a.png")]) == 0
    assert "class 3, guidance 2 (two network passes per evaluation)" in capsys.readouterr().out
    assert main(args + ["--out", str(tmp_path / "b.png")]) == 0
    assert "class" not in capsys.readouterr().out

"""Class-guided SDEdit: reading the drawn class with a noise-conditional classifier, the bundle's
default edit ("sdedit": {"class": "auto", "guidance": w, "t0": ...}), and the CLI / page around it."""
import json

import pytest
import torch
from torch import nn

import sdekit
from sdekit.models.bundle import load, random_model, save_bundle
from sdekit.apps.cli import main
from sdekit.core.errors import UserError
from sdekit.apps.evaluation import write_t0
from sdekit.tasks.guidance import read_class
from sdekit.models.nets.classifier import NoiseClassifier, save_classifier
from sdekit.core.sde import VPSDE
from sdekit.tasks.sdedit import default_class, default_t0, edit_condition, sdedit


class MeanReader(nn.Module):
    """An exact toy p_t(y | x_t): class k is 'the image's mean is near centre[k]' (Gaussian likelihood
    of the mean under the forward kernel), so its reading of a clean image is known."""

    def __init__(self, sde, centres=(-0.6, 0.0, 0.6), shape=(1, 8, 8)):
        super().__init__()
        self.sde, self.shape, self.num_classes = sde, shape, len(centres)
        self.centres = torch.tensor(centres)

    def forward(self, x, t):
        s, sig = self.sde.scale(t), self.sde.sigma(t)
        m = (x / s[:, None, None, None]).mean((1, 2, 3))
        var = sig ** 2 / x[0].numel() + 0.01
        return -(m[:, None] - self.centres[None]) ** 2 / (2 * var[:, None])


def _images(means, shape=(1, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.tensor(means)[:, None, None, None] + 0.05 * torch.randn(len(means), *shape, generator=g)


def test_read_class_reads_the_exact_classes_and_averages_log_probabilities():
    sde = VPSDE()
    clf = MeanReader(sde)
    x = _images([-0.6, 0.0, 0.6, 0.55, -0.5])
    labels, probs = read_class(clf, x, generator=torch.Generator().manual_seed(0))
    assert labels.tolist() == [0, 1, 2, 2, 0]
    assert probs.shape == (5, 3) and torch.allclose(probs.sum(1), torch.ones(5))
    # one time, one draw: the softmax of that one reading
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    _, p = read_class(clf, x, times=(0.1,), draws=1, generator=g1)
    t = torch.full((5,), 0.1)
    torch.testing.assert_close(p, clf(sde.perturb(x, t, g2), t).softmax(1))


def test_read_class_refuses_other_shapes():
    clf = MeanReader(VPSDE())
    with pytest.raises(UserError, match="reads images"):
        read_class(clf, torch.zeros(2, 1, 16, 16))


def _conditional_model(settings=None, classifier=True):
    m = random_model(shape=(1, 8, 8), num_classes=3, ch=4)
    if settings is not None:
        m.config["sdedit"] = settings
    if classifier:
        m.classifier = MeanReader(m.sde)
    return m


def test_edit_condition_auto_conditions_each_guide_on_its_read_class():
    m = _conditional_model({"t0": 0.4, "class": "auto", "guidance": 1.5, "t0_unconditional": 0.2})
    x = _images([0.6, -0.6, 0.0])
    fn, labels, w = edit_condition(m, x)                        # the bundle's default edit
    assert labels.tolist() == [2, 0, 1] and w == 1.5
    xt, t = torch.randn(3, 1, 8, 8), torch.full((3,), 0.3)
    cond, plain = m.score_fn(xt, t, class_labels=labels), m.score_fn(xt, t)
    torch.testing.assert_close(fn(xt, t), 2.5 * cond - 1.5 * plain, rtol=1e-5, atol=1e-5)
    assert default_class(m) == "auto" and default_t0(m) == 0.4 and default_t0(m, conditioned=False) == 0.2


def test_edit_condition_given_none_and_bad_input():
    m = _conditional_model({"t0": 0.4, "class": "auto", "guidance": 1.0})
    x = _images([0.6, -0.6])
    fn, labels, w = edit_condition(m, x, class_label=-1)
    assert labels is None and w == 0.0 and fn(x, torch.full((2,), 0.3)).shape == x.shape
    _, labels, w = edit_condition(m, x, class_label=1, guidance=0.0)
    assert labels.tolist() == [1, 1] and w == 0.0
    with pytest.raises(UserError, match="guidance must be"):
        edit_condition(m, x, class_label=1, guidance=-1.0)
    with pytest.raises(UserError, match="0..2"):
        edit_condition(m, x, class_label=5)
    with pytest.raises(UserError, match="'auto'"):
        edit_condition(m, x, class_label="maybe")
    with pytest.raises(UserError, match="no classifier"):
        edit_condition(_conditional_model(classifier=False), x, class_label="auto")
    plain = _conditional_model(classifier=False)                  # no settings: a plain edit
    assert edit_condition(plain, x)[1] is None and default_class(plain) == -1


def test_sdedit_default_t0_follows_the_condition():
    m = _conditional_model({"t0": 0.4, "class": "auto", "guidance": 1.0, "t0_unconditional": 0.2})
    x = _images([0.6, -0.6])
    _, info = sdedit(m.sde, m.score_fn, x, steps=2, return_info=True, generator=torch.Generator().manual_seed(0))
    assert info["t0"] == 0.2
    _, info = sdedit(m.sde, m.conditional(torch.tensor([2, 0]), 1.0), x, steps=2, return_info=True,
                     generator=torch.Generator().manual_seed(0))
    assert info["t0"] == 0.4


def test_write_t0_keeps_one_t0_per_way_of_editing(tmp_path):
    m = random_model(shape=(1, 8, 8), num_classes=3, ch=4)
    folder = save_bundle(tmp_path / "b", m.net, shape=m.shape)
    write_t0(folder, 0.2)
    assert json.loads((folder / "config.json").read_text())["sdedit"] == {"t0": 0.2}
    write_t0(folder, 0.4, "auto", 1.0)
    sd = json.loads((folder / "config.json").read_text())["sdedit"]
    assert sd == {"t0": 0.4, "class": "auto", "guidance": 1.0, "t0_unconditional": 0.2}
    write_t0(folder, 0.16)                                       # an unconditional sweep afterwards
    sd = json.loads((folder / "config.json").read_text())["sdedit"]
    assert sd == {"t0": 0.4, "class": "auto", "guidance": 1.0, "t0_unconditional": 0.16}
    with pytest.raises(UserError, match="class"):
        write_t0(folder, 0.3, 4)


def _bundle_with_classifier(tmp_path, shape=(1, 8, 8)):
    m = random_model(shape=(1, 8, 8), num_classes=3, ch=4)
    folder = save_bundle(tmp_path / "b", m.net, shape=m.shape)
    clf = NoiseClassifier(m.sde, num_classes=3, ch=4, ch_mult=(1, 2))
    save_classifier(folder / "classifier", clf, shape)
    return folder, clf


def test_a_bundle_loads_its_classifier_and_refuses_one_that_does_not_fit(tmp_path):
    folder, clf = _bundle_with_classifier(tmp_path)
    m = load(folder)
    x, t = torch.randn(2, 1, 8, 8), torch.full((2,), 0.3)
    torch.testing.assert_close(m.classifier(x, t), clf.eval()(x, t))
    assert load(save_bundle(tmp_path / "plain", m.net, shape=m.shape)).classifier is None
    bad, _ = _bundle_with_classifier(tmp_path / "bad", shape=(1, 16, 16))
    with pytest.raises(UserError, match="does not fit"):
        load(bad)


def test_cli_edit_refuses_bad_classes_on_one_line(tmp_path, capsys):
    from PIL import Image
    folder = save_bundle(tmp_path / "b", random_model(shape=(1, 8, 8), num_classes=3, ch=4).net, shape=(1, 8, 8))
    guide = tmp_path / "g.png"
    Image.new("L", (8, 8), 128).save(guide)
    for args, words in [(["--class", "auto"], "no classifier"), (["--class", "seven"], "'auto' or 'none'"),
                        (["--class", "1", "--guidance-scale", "-2"], "guidance must be")]:
        capsys.readouterr()
        try:
            code = main(["edit", "--model", str(folder), "--guide", str(guide), "--out", str(tmp_path / "o.png"),
                         "--steps", "2", *args])
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err.strip()
        assert code == 2 and words in err and len(err.splitlines()) <= 2, err
        assert not (tmp_path / "o.png").exists()


def test_cli_edit_reads_the_class_by_default(tmp_path, capsys):
    from PIL import Image
    folder, _ = _bundle_with_classifier(tmp_path)
    write_t0(folder, 0.3, "auto", 1.0)
    guide = tmp_path / "g.png"
    Image.new("L", (8, 8), 200).save(guide)
    assert main(["edit", "--model", str(folder), "--guide", str(guide), "--out", str(tmp_path / "o.png"),
                 "--steps", "2"]) in (0, None)
    out = capsys.readouterr().out
    assert "t0=0.3 class " in out and "(read) guidance 1" in out and (tmp_path / "o.png").is_file()
    assert main(["edit", "--model", str(folder), "--guide", str(guide), "--out", str(tmp_path / "p.png"),
                 "--steps", "2", "--class", "none"]) in (0, None)
    assert "class" not in capsys.readouterr().out.split("->")[0]


def test_page_offers_reading_the_class_and_parses_it(tmp_path):
    from sdekit.apps.web import server as web
    from sdekit.apps.web.app import App
    folder, _ = _bundle_with_classifier(tmp_path)
    write_t0(folder, 0.3, "auto", 1.0)
    m = load(folder)
    info = App(m).info()
    assert info["reads_class"] and info["defaults"]["edit"]["label"] == "auto" and info["defaults"]["edit"]["t0"] == 0.3
    assert info["defaults"]["sample"]["label"] == -1
    with pytest.raises(UserError, match="edits only"):
        web.parse_task(m, {"kind": "sample", "label": "auto"})
    plain = random_model(shape=(1, 8, 8), num_classes=3, ch=4)
    with pytest.raises(UserError, match="no classifier"):
        web.parse_task(plain, {"kind": "edit", "label": "auto", "image": "x"})


MNIST = __import__("pathlib").Path(__import__("os").environ.get("SDEKIT_MNIST", "/work/shared/data/mnist"))


@pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason="MNIST's idx files are not here")
def test_the_default_edit_of_the_bundled_model_keeps_the_drawn_digit():
    """The page's failure case: a clean drawn digit turned into another one. The shipped stroke paintings
    (a 7 among them), three seeds each, at the bundled model's default edit, read by the judge."""
    from sdekit.tasks.judge import load_judge, predict
    from sdekit.tasks.strokes import package
    m = sdekit.load()
    u, y = package(28)
    u, y = u.repeat(3, 1, 1, 1), y.repeat(3)
    x, g = m.from_unit(u), torch.Generator().manual_seed(0)
    fn, read, w = edit_condition(m, x, generator=g)
    assert torch.equal(read, y) and w == 2.0 and default_t0(m) == 0.4
    out = m.to_unit(sdedit(m.sde, fn, x, generator=g, model=m))
    kept = int((predict(load_judge(f"mnist:{MNIST}"), out) == y).sum())
    assert kept >= len(y) - 1, f"{kept} of {len(y)} edits keep the drawn digit"

"""Imputation, colorization and guidance against exact Gaussian-mixture answers."""
import json

import pytest
import torch

import sdekit
from sdekit.models.bundle import random_model
from sdekit.tasks.guidance import (DECOUPLE, classifier_free_score, classifier_guided_score, colorize, couple, decouple,
                             impute, inpaint, renoise)
from sdekit.models.nets.classifier import (NoiseClassifier, accuracy_by_noise, load_classifier, save_classifier,
                                    train_classifier)

from conftest import energy_distance

SDES = {"vp": sdekit.VPSDE(), "ve": sdekit.VESDE(), "subvp": sdekit.SubVPSDE(), "edm": sdekit.EDMSDE()}


def mixture():
    return sdekit.GaussianMixture(torch.tensor([[-1.5, -1.5], [1.5, 1.5], [1.5, -1.0]]),
                                  torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.4, 0.3, 0.3]))


def exact_conditional(gmm, x1: float, n: int, g) -> torch.Tensor:
    """Samples of p(x2 | x1) for an isotropic 2-D mixture: a 1-D mixture with posterior weights."""
    m, s = gmm.means, gmm.stds
    logw = gmm.weights.log() - 0.5 * (x1 - m[:, 0]) ** 2 / s ** 2 - s.log()
    k = torch.multinomial(logw.softmax(0), n, replacement=True, generator=g)
    return (m[k, 1] + s[k] * torch.randn(n, generator=g, dtype=torch.float64))[:, None]


def test_renoise_is_the_forward_transition(gen):
    """x(u) ~ p_u sent to t > u by renoise is distributed as p_t (exact marginals of a mixture)."""
    gmm = mixture()
    for sde in SDES.values():
        u, t = sde.eps + 0.2 * (sde.T - sde.eps), sde.eps + 0.5 * (sde.T - sde.eps)
        x0 = gmm.sample(1500, generator=gen).double()
        mean, std = sde.marginal_prob(x0, torch.full((1500,), u, dtype=torch.float64))
        xu = mean + std[:, None] * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        xt = renoise(sde, xu, u, t, gen)
        mean, std = sde.marginal_prob(gmm.sample(1500, generator=gen).double(), torch.full((1500,), t, dtype=torch.float64))
        ref = mean + std[:, None] * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        scale = float(std[0]) + 1
        assert energy_distance(xt, ref) < 0.01 * scale


def test_imputation_of_one_coordinate(gen):
    """x1 known, x2 imputed, against p(x2 | x1). Replacement alone is only approximate when the mixture
    couples the coordinates (it commits to components before the known part is informative);
    resampling (RePaint) moves it towards the exact conditional."""
    sde, gmm, n, x1 = SDES["vp"], mixture(), 300, 1.0
    known = torch.zeros(n, 2, dtype=torch.float64)
    known[:, 0] = x1
    ref = exact_conditional(gmm, x1, n, gen)
    floor = energy_distance(ref, exact_conditional(gmm, x1, n, gen))
    err = {}
    for r in (0, 10):
        out = inpaint(sde, gmm.score_fn(sde), known, torch.tensor([1.0, 0.0]), steps=10, sampler="ddim",
                      resample=r, generator=gen)
        assert torch.equal(out[:, 0], known[:, 0])
        err[r] = energy_distance(out[:, 1:], ref)
    assert err[0] < 0.5 and err[10] < 0.6 * err[0] and err[10] > floor


def test_imputation_is_exact_without_coupling(gen):
    """Independent coordinates (one Gaussian): the imputed part follows p(x2) exactly, for each SDE."""
    gmm = sdekit.GaussianMixture(torch.tensor([[0.5, -1.0]]), 0.6)
    for name, sde in SDES.items():
        known = torch.full((600, 2), 2.0, dtype=torch.float64)
        out = inpaint(sde, gmm.score_fn(sde), known, torch.tensor([1.0, 0.0]), steps=30, sampler="heun", generator=gen)
        ref = gmm.sample(600, generator=gen).double()[:, 1:]
        floor = energy_distance(ref, gmm.sample(600, generator=gen).double()[:, 1:])
        assert energy_distance(out[:, 1:], ref) < 4 * floor + 0.01, name


@pytest.mark.parametrize("sampler", ["pc", "em", "reverse_diffusion", "ancestral", "ode", "ddim", "heun", "dpm_solver"])
def test_every_sampler_keeps_the_known_pixels(sampler, gen):
    sde = SDES["subvp"]
    gmm = sdekit.GaussianMixture(torch.randn(3, 1, 4, 4, generator=gen), 0.3)
    image = gmm.sample(2, generator=gen)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    out = inpaint(sde, gmm.score_fn(sde), image, mask, steps=4, sampler=sampler, generator=gen,
                  resample=0 if sampler == "ode" else 1)
    assert out.shape == image.shape and torch.isfinite(out).all()
    assert torch.allclose(out[..., :2], image[..., :2])


def test_decoupling_is_orthogonal_with_grey_first(gen):
    assert torch.allclose(DECOUPLE @ DECOUPLE.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    x = torch.randn(4, 3, 5, 5, generator=gen, dtype=torch.float64)
    assert torch.allclose(couple(decouple(x)), x)
    assert torch.allclose(decouple(x)[:, 0], 3 ** 0.5 * x.mean(1))


def test_colorize_matches_the_exact_colour_conditional(gen):
    """3-channel 1x1 'images' from a mixture: colours given grey follow the exact conditional."""
    sde = SDES["ve"]
    means = torch.tensor([[0.8, -0.6, -0.6], [-0.6, 0.8, -0.6], [-0.6, -0.6, 0.9]]).reshape(3, 3, 1, 1)
    gmm = sdekit.GaussianMixture(means, 0.25)
    n, grey = 400, -0.2
    gray = torch.full((n, 1, 1, 1), grey, dtype=torch.float64)
    out = colorize(sde, gmm.score_fn(sde), gray, steps=10, sampler="ddim", resample=10, generator=gen)
    assert torch.allclose(out.mean(1, keepdim=True), gray)
    # exact: in decoupled coordinates the mixture has means M^T mu and the same isotropic stds
    dm = decouple(gmm.means.reshape(3, 3, 1, 1)).reshape(3, 3)
    logw = gmm.weights.log() - 0.5 * (3 ** 0.5 * grey - dm[:, 0]) ** 2 / gmm.stds ** 2
    k = torch.multinomial(logw.softmax(0), n, replacement=True, generator=gen)
    ref = dm[k, 1:] + gmm.stds[k, None] * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    err = energy_distance(decouple(out).reshape(n, 3)[:, 1:], ref)
    assert err < 0.05


def test_colorize_rejects_non_grey():
    sde, gmm = SDES["vp"], sdekit.GaussianMixture(torch.zeros(1, 3, 2, 2), 1.0)
    with pytest.raises(sdekit.UserError):
        colorize(sde, gmm.score_fn(sde), torch.zeros(1, 2, 2, 2), steps=2)


def test_classifier_guidance_with_the_exact_classifier_is_the_component_score(gen):
    """score + grad log p_t(k | x) = grad log p_t(x | k): exact, and sampling gives component k."""
    gmm = mixture()
    for sde in SDES.values():
        clf = lambda x, t: gmm.class_log_prob(sde, x, t)  # noqa: E731
        guided = classifier_guided_score(gmm.score_fn(sde), clf, 2, scale=1.0)
        x = torch.randn(16, 2, generator=gen, dtype=torch.float64) * 2
        t = torch.full((16,), 0.3 * sde.T, dtype=torch.float64)
        assert torch.allclose(guided(x, t), gmm.score_fn(sde, component=2)(x, t), atol=1e-8)
    sde = SDES["vp"]
    guided = classifier_guided_score(gmm.score_fn(sde), lambda x, t: gmm.class_log_prob(sde, x, t), 0, 1.0)
    out = sdekit.sample(sde, guided, (500, 2), sampler="heun", steps=30, generator=gen, dtype=torch.float64)
    ref = gmm.component(0).sample(500, generator=gen).double()
    floor = energy_distance(ref, gmm.component(0).sample(500, generator=gen).double())
    assert energy_distance(out, ref) < 4 * floor + 0.01
    sharp = classifier_guided_score(gmm.score_fn(sde), lambda x, t: gmm.class_log_prob(sde, x, t), 0, 4.0)
    out4 = sdekit.sample(sde, sharp, (300, 2), sampler="heun", steps=30, generator=gen, dtype=torch.float64)
    assert out4.std(0).max() < out.std(0).max()                     # scale > 1 sharpens p(y|x)^w


def test_classifier_free_combination(gen):
    gmm, sde = mixture(), SDES["ve"]

    def cond_score(x, t, class_labels=None):
        k = int(class_labels[0])
        return gmm.score_fn(sde, component=k if k >= 0 else None)(x, t)

    x, t = torch.randn(8, 2, generator=gen, dtype=torch.float64), torch.full((8,), 0.4, dtype=torch.float64)
    c, u = gmm.score_fn(sde, component=1)(x, t), gmm.score_fn(sde)(x, t)
    assert torch.allclose(classifier_free_score(cond_score, 1, 0.0)(x, t), c)
    assert torch.allclose(classifier_free_score(cond_score, 1, 2.0)(x, t), 3 * c - 2 * u)
    model = random_model((1, 8, 8), num_classes=3)
    xm = torch.randn(2, 1, 8, 8, generator=gen)
    a = classifier_free_score(model.score_fn, 1, 1.5)(xm, torch.full((2,), 0.5))
    assert torch.allclose(a, model.score_fn(xm, 0.5, class_labels=1, guidance=1.5), atol=1e-5)


def test_noise_classifier_learns(gen):
    """Two classes (bright / dark images): accurate at low noise, near chance at the prior."""
    sde = SDES["vp"]
    labels = torch.randint(0, 2, (256,), generator=gen)
    x = (labels.float() * 2 - 1)[:, None, None, None] * 0.8 + 0.1 * torch.randn(256, 1, 4, 4, generator=gen)
    torch.manual_seed(0)
    net = NoiseClassifier(sde, in_channels=1, num_classes=2, ch=4, ch_mult=(1,), dropout=0.0)
    train_classifier(net, x, labels, steps=60, batch_size=32, lr=1e-2, progress=False)
    acc = accuracy_by_noise(net, x, labels, sigmas=(0.1, 100.0))
    assert acc[0.1] > 0.95 and acc[100.0] < 0.75


def test_noise_classifier_round_trips(tmp_path, gen):
    torch.manual_seed(0)
    net = NoiseClassifier(SDES["vp"], in_channels=1, num_classes=2, ch=4, ch_mult=(1,)).eval()
    x = torch.randn(4, 1, 4, 4, generator=gen)
    save_classifier(tmp_path / "clf", net, (1, 4, 4))
    back = load_classifier(tmp_path / "clf")
    t = torch.full((4,), 0.3)
    assert torch.allclose(back(x, t), net(x, t), atol=1e-6)
    assert json.loads((tmp_path / "clf" / "config.json").read_text())["num_classes"] == 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{")
    with pytest.raises(sdekit.UserError):
        load_classifier(tmp_path / "bad")
    with pytest.raises(sdekit.UserError):
        load_classifier(tmp_path / "missing")


def test_bundled_digits_classifier_loads():
    net = load_classifier()
    logits = net(torch.zeros(2, 1, 16, 16), torch.full((2,), 0.5))
    assert logits.shape == (2, 10)


def test_bad_input():
    sde, gmm = SDES["vp"], mixture()
    x = torch.zeros(4, 2)
    with pytest.raises(sdekit.UserError):
        inpaint(sde, gmm.score_fn(sde), x, torch.ones(3), steps=2)
    with pytest.raises(sdekit.UserError):
        inpaint(sde, gmm.score_fn(sde), x, torch.tensor([2.0, 0.0]), steps=2)
    with pytest.raises(sdekit.UserError):
        inpaint(sde, gmm.score_fn(sde), x, torch.ones(2), steps=2, sampler="bogus")
    with pytest.raises(sdekit.UserError):
        impute(sde, gmm.score_fn(sde), x, torch.ones(2), steps=0)


def test_cli_inpaint_colorize_likelihood(tmp_path, capsys):
    from PIL import Image

    from sdekit.models.bundle import save_bundle
    from sdekit.apps.cli import main
    m = random_model((1, 8, 8), ch=8)
    save_bundle(tmp_path / "m", m.net, shape=(1, 8, 8))
    Image.fromarray((torch.rand(8, 8, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()).save(tmp_path / "a.png")
    out = tmp_path / "o.png"
    assert main(["inpaint", "--model", str(tmp_path / "m"), "--image", str(tmp_path / "a.png"), "--mask", "left",
                 "--out", str(out), "--sampler", "ddim", "--steps", "2", "-n", "2", "--resample", "1"]) == 0
    assert Image.open(out).size[0] > 8
    assert main(["colorize", "--model", str(tmp_path / "m"), "--image", str(tmp_path / "a.png"),
                 "--out", str(tmp_path / "c.png")]) == 2
    assert "3-channel" in capsys.readouterr().err and not (tmp_path / "c.png").exists()
    assert main(["inpaint", "--model", str(tmp_path / "m"), "--image", str(tmp_path / "missing.png"), "--mask", "left",
                 "--out", str(out)]) == 2
    assert main(["likelihood", "--model", str(tmp_path / "m"), "--data", "digits", "-n", "2", "--solver", "heun",
                 "--steps", "2"]) == 0                                  # digits resized to the model's 8x8
    assert "bits/dim" in capsys.readouterr().out


def test_sample_cli_classifier_guidance_draws_the_class(tmp_path):
    """`sdekit sample --classifier digits --class 3 --guidance-scale w` on the digits model: the guided
    samples are judged 3 far more often than the unguided model's one in ten."""
    import numpy as np

    from sdekit.apps.cli import main
    from sdekit.tasks.judge import load_judge, predict
    out = tmp_path / "threes.npz"
    assert main(["sample", "--model", "digits", "--classifier", "digits", "--class", "3", "--guidance-scale", "2",
                 "-n", "24", "--steps", "20", "--out", str(out)]) == 0
    x = torch.from_numpy(np.load(out)["samples"]).permute(0, 3, 1, 2).float() / 255
    assert float((predict(load_judge("digits"), x) == 3).float().mean()) >= 0.6


@pytest.mark.parametrize("args, msg", [
    (["--classifier", "digits"], "(1, 16, 16)"),                       # the default MNIST model draws 28x28
    (["--model", "digits", "--classifier", "model"], "ships no classifier"),
    (["--model", "digits", "--classifier", "digits", "--class", "12"], "0..9"),
])
def test_sample_cli_classifier_guidance_refusals(tmp_path, capsys, args, msg):
    from sdekit.apps.cli import main
    base = ["sample", "--class", "3", "--guidance-scale", "1", "-n", "2", "--steps", "2", "--out", str(tmp_path / "x.png")]
    assert main(base + args) == 2
    assert msg in capsys.readouterr().err and not (tmp_path / "x.png").exists()

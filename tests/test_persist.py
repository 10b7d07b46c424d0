"""Saved folders are never trusted: every config field of a bundle, classifier or feature network is
checked (type, range, agreement with the network and the weights), one UserError line each."""
import ast
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import sdekit
from sdekit.models.bundle import load, random_model, save_bundle
from sdekit.apps.cli import main
from sdekit.core.errors import UserError
from sdekit.models.nets.classifier import NoiseClassifier, load_classifier, save_classifier
from sdekit.models.nets.features import FEATURES_DIR, load_features
from sdekit.core.persist import CHECKSUM, read_config, read_tensors, save_folder


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    m = random_model(num_classes=10, ch=8)
    return save_bundle(tmp_path_factory.mktemp("b") / "m", m.net, shape=m.shape, name="tiny")


def _edited(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    edit(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _one_line_error(fn) -> str:
    """The message of the UserError ``fn`` raises, checked to be one line."""
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert len(msg.splitlines()) == 1, msg
    return msg


def _set(path, value):
    def edit(cfg):
        *keys, last = path.split(".")
        d = cfg
        for k in keys:
            d = d[k]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value
    return edit


BUNDLE_DEFECTS = [
    ("shape", [3, 16, 16], "does not fit the U-Net, which takes [1, 16, 16]"),    # 3 channels over 1-channel weights
    ("shape", [1, 32, 32], "does not fit the U-Net, which takes [1, 16, 16]"),    # 32x32 over a 16x16 network
    ("shape", "16", "shape must be"),
    ("shape", [1, 16, 0], "shape must be"),
    ("shape", [1, 16, 16.5], "shape must be"),
    ("shape", KeyError, "'shape' is missing"),
    ("num_classes", 5, "num_classes 5 is not the network's 10"),
    ("num_classes", -1, "num_classes must be"),
    ("num_classes", True, "num_classes must be"),
    ("data_range", [1.0, -1.0], "data_range must be"),
    ("data_range", [0.0], "data_range must be"),
    ("sde.beta_min", "0.1", "sde must be"),
    ("sde.N", 0, "sde must be"),
    ("sde.name", "ou", "unknown SDE"),
    ("sde.beta_max", 0.01, "beta_min < beta_max"),
    ("sde.gamma", 1.0, "invalid model config"),
    ("sde", [], "sde must be"),
    ("network.type", "resnet", "unknown network type"),
    ("network.ch", 16, "another architecture"),
    ("network.ch", 10 ** 7, "another architecture"),          # built on the meta device: no memory spent
    ("network.ch", 8.5, "invalid model config"),
    ("network.dropout", 2.0, "dropout"),
    ("network.resolution", 12, "does not fit"),
    ("network.bogus", 1, "invalid model config"),
    ("network", KeyError, "'network' is missing"),
    ("precond.kind", "v", "unknown preconditioning"),
    ("precond.sigma_data", -0.5, "precond must be"),
    ("dtype", "int8", "dtype must be"),
    ("name", 7, "name must be"),
    ("step", -3, "step must be"),
    ("version", 2, "version 2"),
    ("sdedit", {"t0": 1.5}, "sdedit must be"),
    ("sdedit", 0.3, "sdedit must be"),
    ("format", "sdekit-classifier", "not an sdekit model bundle"),
]


@pytest.mark.parametrize("key,value,pattern", BUNDLE_DEFECTS, ids=[f"{k}={v!r}"[:40] for k, v, _ in BUNDLE_DEFECTS])
def test_every_bundle_field_is_checked(bundle, tmp_path, key, value, pattern):
    bad = _edited(bundle, tmp_path / "bad", _set(key, value))
    msg = _one_line_error(lambda: load(bad))
    assert pattern in msg and str(bad) in msg, msg


def test_class_embedding_must_match_num_classes(bundle, tmp_path):
    def edit(cfg):
        cfg["num_classes"] = cfg["network"]["num_classes"] = 5          # consistent config, 11-row embedding
    assert "another architecture" in _one_line_error(lambda: load(_edited(bundle, tmp_path / "bad", edit)))


def test_non_finite_config_values_and_weights_are_refused(bundle, tmp_path):
    bad = tmp_path / "nan"
    shutil.copytree(bundle, bad)
    text = (bad / "config.json").read_text().replace('"beta_max": 20.0', '"beta_max": NaN')
    (bad / "config.json").write_text(text)
    assert "invalid JSON" in _one_line_error(lambda: load(bad))
    w = tmp_path / "w"
    shutil.copytree(bundle, w)
    t = load_file(str(w / "model.safetensors"))
    t["net.conv_in.weight"][0, 0, 0, 0] = float("nan")
    save_file(t, str(w / "model.safetensors"))
    assert "NaN or infinite" in _one_line_error(lambda: load(w))


def test_weights_of_another_kind_are_refused(bundle, tmp_path):
    w = tmp_path / "w"
    shutil.copytree(bundle, w)
    t = load_file(str(w / "model.safetensors"))
    t["net.conv_in.weight"] = t["net.conv_in.weight"].to(torch.int32)
    save_file(t, str(w / "model.safetensors"))
    assert "torch.int32" in _one_line_error(lambda: load(w))


def test_huge_or_unreadable_config(bundle, tmp_path):
    big = tmp_path / "big"
    shutil.copytree(bundle, big)
    (big / "config.json").write_text(" " * (2 << 20) + "{}")
    assert "too large" in _one_line_error(lambda: load(big))
    (big / "config.json").write_bytes(b"\xff\xfe{")
    assert "unreadable" in _one_line_error(lambda: load(big))
    (big / "config.json").write_text("[1, 2]")
    assert "not an sdekit model bundle" in _one_line_error(lambda: load(big))


DISCRETE_VP = [dict(alphas_cumprod=torch.linspace(0.99, 0.01, 30)), dict(betas=torch.full((20,), 0.05)),
               dict(schedule="linear", N=50), dict(schedule="squaredcos_cap_v2", N=40)]


@pytest.mark.parametrize("spec", DISCRETE_VP, ids=["alphas_cumprod", "betas", "linear", "cosine"])
def test_a_discrete_vp_bundle_round_trips(tmp_path, spec):
    from sdekit.models.nets import Preconditioned
    from sdekit.core.sde import DiscreteVPSDE
    sde = DiscreteVPSDE(**spec)
    net = Preconditioned(random_model(shape=(1, 8, 8)).net.net, sde)
    back = load(save_bundle(tmp_path / "dvp", net, shape=(1, 8, 8)))
    assert type(back.sde) is DiscreteVPSDE and back.sde.config() == sde.config()
    torch.testing.assert_close(back.sde.alphas_cumprod, sde.alphas_cumprod)
    x, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0.2, 0.7])
    torch.testing.assert_close(back.score_fn(x, t), sdekit.models.bundle.Model(net, back.config).score_fn(x, t))


@pytest.mark.parametrize("key,value,pattern", [("sde.alphas_cumprod", [0.5, 0.9], "strictly decreasing"),
                                               ("sde.alphas_cumprod", [0.9, "0.5"], "sde must be"),
                                               ("sde.alphas_cumprod", [], "sde must be"),
                                               ("sde.schedule", 3, "sde must be")])
def test_a_bad_discrete_vp_schedule_is_refused(tmp_path, key, value, pattern):
    from sdekit.models.nets import Preconditioned
    from sdekit.core.sde import DiscreteVPSDE
    net = Preconditioned(random_model(shape=(1, 8, 8)).net.net, DiscreteVPSDE(torch.linspace(0.99, 0.01, 30)))
    good = save_bundle(tmp_path / "dvp", net, shape=(1, 8, 8))
    edit = _set(key, value) if key != "sde.schedule" else (lambda cfg: cfg["sde"].update(schedule=3))
    bad = _edited(good, tmp_path / "bad", edit)
    msg = _one_line_error(lambda: load(bad))
    assert pattern in msg and str(bad) in msg, msg


@pytest.mark.parametrize("shape", [[3, 16, 16], [1, 32, 32]])
def test_sample_cli_refuses_a_config_at_odds_with_its_weights(bundle, tmp_path, capsys, shape):
    bad = _edited(bundle, tmp_path / "bad", _set("shape", shape))
    out = tmp_path / "o.png"
    capsys.readouterr()
    assert main(["sample", "--model", str(bad), "-n", "2", "--steps", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not fit" in err, err
    assert not out.exists()


def test_good_bundles_still_load(bundle, tmp_path):
    m = load(bundle)
    assert m.shape == (1, 16, 16) and m.num_classes == 10 and m.name == "tiny"
    assert load(bundle / "config.json").name == "tiny"
    assert sdekit.load("digits").shape == (1, 16, 16)
    vec = random_model(shape=(1, 8, 8)).net
    assert load(save_bundle(tmp_path / "v", vec, shape=(1, 8, 8))).shape == (1, 8, 8)


# ---- classifiers and feature networks ---------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    torch.manual_seed(0)
    net = NoiseClassifier(sdekit.VPSDE(), in_channels=1, num_classes=3, ch=4, ch_mult=(1,))
    return save_classifier(tmp_path_factory.mktemp("c") / "clf", net, (1, 4, 4))


CLASSIFIER_DEFECTS = [
    ("shape", [3, 4, 4], "does not fit the classifier"),
    ("shape", [1, 4], "does not fit the classifier"),
    ("num_classes", 5, "num_classes 5 is not the network's 3"),
    ("num_classes", KeyError, "'num_classes' is missing"),
    ("network.ch", 8, "another architecture"),
    ("network.num_classes", 4, "num_classes 3 is not the network's 4"),
    ("network.ch_mult", 7, "invalid classifier config"),
    ("sde.name", "ou", "unknown SDE"),
    ("data_range", [0, 0], "data_range must be"),
    ("format", "sdekit-bundle", "not an sdekit classifier"),
]


@pytest.mark.parametrize("key,value,pattern", CLASSIFIER_DEFECTS, ids=[f"{k}={v!r}" for k, v, _ in CLASSIFIER_DEFECTS])
def test_every_classifier_field_is_checked(classifier, tmp_path, key, value, pattern):
    bad = _edited(classifier, tmp_path / "bad", _set(key, value))
    assert pattern in _one_line_error(lambda: load_classifier(bad))


def test_classifier_round_trip_and_missing_folder(classifier, tmp_path):
    net = load_classifier(classifier)
    assert net.shape == (1, 4, 4) and net.num_classes == 3
    assert "not a classifier (no config.json)" in _one_line_error(lambda: load_classifier(tmp_path / "none"))


FEATURE_DEFECTS = [
    ("network.size", 28, "another architecture"),
    ("network.num_features", 32, "another architecture"),
    ("network.depth", 3, "invalid feature network config"),
    ("network", KeyError, "'network' is missing"),
    ("test_accuracy", 1.5, "test_accuracy must be"),
    ("format", "sdekit-bundle", "not an sdekit feature network"),
]


@pytest.mark.parametrize("key,value,pattern", FEATURE_DEFECTS, ids=[f"{k}={v!r}" for k, v, _ in FEATURE_DEFECTS])
def test_every_feature_network_field_is_checked(tmp_path, key, value, pattern):
    bad = _edited(FEATURES_DIR, tmp_path / "bad", _set(key, value))
    assert pattern in _one_line_error(lambda: load_features(bad))


def test_truncated_weights_are_one_line(tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(FEATURES_DIR, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 3])
    assert "corrupt or truncated feature network" in _one_line_error(lambda: load_features(bad))
    (bad / "model.safetensors").unlink()
    assert "no such file" in _one_line_error(lambda: load_features(bad))


# ---- the module itself ---------------------------------------------------------------------------------

def test_save_folder_round_trip(tmp_path):
    t = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2])}
    save_folder(tmp_path / "f", {"format": "x", "k": [1, 2]}, t, dtype=torch.float16)
    back, meta = read_tensors(tmp_path / "f" / "model.safetensors")
    assert back["a"].dtype == torch.float16 and back["b"].dtype == torch.int64 and meta["format"] == "x" and set(meta) == {"format", CHECKSUM}
    assert read_config(tmp_path / "f", "x", "thing") == {"format": "x", "k": [1, 2]}
    shapes, _ = read_tensors(tmp_path / "f" / "model.safetensors", header_only=True)
    assert shapes == {"a": (2, 3), "b": (2,)}
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["config.json", "model.safetensors"]


def test_nets_do_not_import_the_bundle_layer():
    nets = Path(sdekit.__file__).parent / "nets"
    for path in nets.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "bundle" not in (node.module or ""), f"{path.name} imports {node.module}"

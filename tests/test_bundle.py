"""Model bundles: save / load round trip, the bundled model, and bad input."""
import json
import shutil

import pytest
import torch

import sdekit
from sdekit.models.bundle import BUNDLED, load, random_model, save_bundle
from sdekit.core.errors import UserError


def _xt(n=4, shape=(1, 16, 16)):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, *shape, generator=g), torch.rand(n, generator=g) * 0.9 + 0.05


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 0.0), (torch.float16, 1e-2)])
def test_roundtrip(tmp_path, dtype, tol):
    m = random_model(num_classes=10, sde="ve")
    save_bundle(tmp_path / "b", m.net, shape=m.shape, name="rt", dtype=dtype)
    m2 = load(tmp_path / "b")
    assert m2.name == "rt" and m2.shape == (1, 16, 16) and m2.num_classes == 10
    assert m2.sde.config() == m.sde.config()
    assert next(m2.net.parameters()).dtype == torch.float32
    x, t = _xt()
    ref = m.score_fn(x, t, class_labels=torch.tensor([0, 1, 2, -1]))
    got = m2.score_fn(x, t, class_labels=torch.tensor([0, 1, 2, -1]))
    assert (got - ref).abs().max() <= tol * ref.abs().max()


def test_guidance_is_the_cfg_combination():
    m = random_model(num_classes=10)
    x, t = _xt()
    c, u = m.score_fn(x, t, class_labels=3), m.score_fn(x, t)
    torch.testing.assert_close(m.score_fn(x, t, class_labels=3, guidance=2.0), 3 * c - 2 * u, rtol=1e-5, atol=1e-5)
    assert (c - u).abs().max() > 0
    torch.testing.assert_close(m.score_fn(x, t, class_labels=-1), u)


def test_transform_and_labels():
    m = random_model()
    u = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(m.from_unit(u), 2 * u - 1)
    torch.testing.assert_close(m.to_unit(m.from_unit(u)), u)
    assert m.to_unit(torch.full((1,), 5.0)).item() == 1.0
    with pytest.raises(UserError, match="unconditional"):
        m.score_fn(*_xt(), class_labels=1)
    with pytest.raises(UserError, match="class labels"):
        random_model(num_classes=3).score_fn(*_xt(), class_labels=3)


def test_the_score_takes_only_batches_of_the_model_shape():
    m = load("digits")                                           # a 16x16 network
    for x in (torch.zeros(2, 1, 28, 28), torch.zeros(1, 16, 16), torch.zeros(16, 16)):
        shape = str(list(x.shape))
        for call in (lambda: m.score_fn(x, 0.5), lambda: m.conditional(3, 2.0)(x, 0.5), lambda: m.denoise(x, 0.5)):
            with pytest.raises(UserError, match=r"shape \[B, 1, 16, 16\], got \[") as e:
                call()
            assert "\n" not in str(e.value)
        assert shape in str(pytest.raises(UserError, m.score_fn, x, 0.5).value)
    with pytest.raises(UserError, match=r"\[B, 1, 16, 16\], got \[1, 16, 16\]"):    # a guide without its batch
        sdekit.sdedit(m.sde, m.score_fn, torch.zeros(1, 16, 16), t0=0.5, steps=2)
    with pytest.raises(UserError, match=r"got \[2, 1, 28, 28\]"):
        sdekit.sample(m.sde, m.score_fn, (2, 1, 28, 28), sampler="heun", steps=2)
    # the guided batch (conditional and unconditional halves in one call) still passes
    x, t = _xt(3)
    c, u = m.score_fn(x, t, class_labels=3), m.score_fn(x, t)
    torch.testing.assert_close(m.conditional(3, 2.0)(x, t), 3 * c - 2 * u, rtol=1e-4, atol=1e-4)
    assert m.sample(2, sampler="heun", steps=2, class_labels=3, guidance=1.0).shape == (2, 1, 16, 16)

def test_random_model_is_deterministic_and_samples():
    a, b = random_model(seed=3), random_model(seed=3)
    x, t = _xt()
    torch.testing.assert_close(a.score_fn(x, t), b.score_fn(x, t))
    out = a.sample(3, steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 1, 16, 16) and torch.isfinite(out).all()
    assert random_model(shape=(3, 8, 8)).score_fn(torch.randn(2, 3, 8, 8), torch.rand(2)).shape == (2, 3, 8, 8)


def test_bad_bundles(tmp_path):
    m = random_model()
    good = save_bundle(tmp_path / "good", m.net, shape=m.shape)
    with pytest.raises(UserError, match="not a model bundle"):
        load(tmp_path / "nowhere")
    trunc = tmp_path / "trunc"
    shutil.copytree(good, trunc)
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load(trunc)
    other = tmp_path / "other"
    shutil.copytree(good, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["network"]["ch"] = 16
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="another architecture"):
        load(other)
    (other / "config.json").write_text("{")
    with pytest.raises(UserError, match="invalid JSON"):
        load(other)


def test_bundled_models_load():
    assert (BUNDLED / "config.json").exists() and (BUNDLED / "model.safetensors").exists()
    m = sdekit.load("digits")
    assert m.shape == (1, 16, 16) and m.num_classes == 10
    default = sdekit.load()
    assert default.shape == (1, 28, 28) and default.num_classes == 10 and default.name == "mnist"
    assert sdekit.load("mnist").shape == default.shape
    from sdekit.tasks.sdedit import default_t0
    assert 0 < default_t0(default) <= 1 and default.config.get("sdedit", {}).get("t0") == default_t0(default)
    x, t = _xt(2)
    assert torch.isfinite(m.score_fn(x, t)).all()



def test_load_checks_the_device_and_the_precision():
    for device, message in (("cuda:99", "cuda:99: this machine has"), ("nowhere", "not a torch device")):
        with pytest.raises(UserError, match=message) as e:
            load("digits", device=device)
        assert "\n" not in str(e.value)
    for dtype in ("int8", torch.int8, "half8", 16):
        with pytest.raises(UserError, match="dtype must be one of float32, float16, bfloat16, float64"):
            load("digits", dtype=dtype)
    for dtype in ("float16", "bfloat16", "float64", torch.float64):
        m = load("digits", device=torch.device("cpu"), dtype=dtype)
        assert m.dtype == getattr(torch, str(dtype).removeprefix("torch.")) and m.device.type == "cpu"

# ---- sdekit sample --------------------------------------------------------------------------------

@pytest.fixture
def bundle_dir(tmp_path):
    m = random_model(num_classes=10)
    return save_bundle(tmp_path / "m", m.net, shape=m.shape)


def test_generate_is_chunk_independent(bundle_dir):
    from sdekit.models.bundle import generate
    m = load(bundle_dir)
    a = generate(m, 7, steps=3, seed=5, batch_size=3)
    b = generate(m, 9, steps=3, seed=5, batch_size=3)
    assert a.shape == (7, 1, 16, 16)
    torch.testing.assert_close(a[:6], b[:6])                    # chunks 0 and 1 are the same draws
    assert not torch.allclose(a, generate(m, 7, steps=3, seed=6, batch_size=3))


def test_sample_cli_png_and_npz(bundle_dir, tmp_path, capsys):
    import numpy as np
    from PIL import Image
    from sdekit.apps.cli import main
    assert main(["sample", "--model", str(bundle_dir), "-n", "20", "--steps", "2", "--class", "all",
                 "--out", str(tmp_path / "g.png"), "--scale", "1"]) == 0
    assert Image.open(tmp_path / "g.png").size == (10 * 17 + 1, 2 * 17 + 1)
    assert main(["sample", "--model", str(bundle_dir), "-n", "5", "--steps", "2", "--class", "3",
                 "--out", str(tmp_path / "s.npz")]) == 0
    z = np.load(tmp_path / "s.npz")
    assert z["samples"].shape == (5, 16, 16, 1) and z["samples"].dtype == np.uint8 and (z["labels"] == 3).all()
    for change, msg in [({"--class": "10"}, "0..9"), ({"--out": str(tmp_path / "x.txt")}, ".tiff or .npz"),
                        ({"--model": str(tmp_path / "none")}, "not a model bundle"),
                        ({"--sampler": "rk4"}, "unknown sampler")]:
        opts = {"--model": str(bundle_dir), "-n": "2", "--steps": "2", "--out": str(tmp_path / "e.png"), **change}
        capsys.readouterr()
        assert main(["sample", *[v for kv in opts.items() for v in kv]]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
    unconditional = save_bundle(tmp_path / "u", random_model().net, shape=(1, 16, 16))
    assert main(["sample", "--model", str(unconditional), "--class", "1", "--out", str(tmp_path / "e.png")]) == 2
    assert "unconditional" in capsys.readouterr().err
    assert not (tmp_path / "e.png").exists()


def test_sample_under_torchrun_matches_one_process(bundle_dir, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    import numpy as np
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = ["-m", "sdekit.apps.cli", "sample", "--model", str(bundle_dir), "-n", "10", "--steps", "2", "--batch-size", "3"]
    one = subprocess.run([sys.executable, *base, "--out", str(tmp_path / "one.npz")], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node=2", "--master_port=29541",
                          *base, "--out", str(tmp_path / "two.npz")], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("10 samples") == 1
    assert np.array_equal(np.load(tmp_path / "one.npz")["samples"], np.load(tmp_path / "two.npz")["samples"])


def test_score_is_differentiable_in_x_only():
    m = random_model()
    x, t = _xt(2)
    x.requires_grad_(True)
    (m.score_fn(x, t) * torch.randn_like(x)).sum().backward()     # e.g. Hutchinson divergence
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.net.parameters())


def test_export_bundle_stores_float16_and_keeps_config(tmp_path):
    from safetensors.torch import load_file
    from sdekit.models.bundle import export_bundle
    m = random_model(num_classes=10)
    save_bundle(tmp_path / "run", m.net, shape=m.shape, name="run", extra={"step": 7})
    export_bundle(tmp_path / "run", tmp_path / "asset", name="digits")
    w = load_file(str(tmp_path / "asset" / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in w.values() if v.is_floating_point())
    e = load(tmp_path / "asset")
    assert e.name == "digits" and e.config["step"] == 7 and e.num_classes == 10
    x, t = _xt()
    torch.testing.assert_close(e.score_fn(x, t), m.score_fn(x, t), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("sampler", ["heun", "reverse_diffusion", "ddim"])
def test_a_sample_does_not_depend_on_the_batch_it_is_drawn_in(sampler):
    """Each sample has its own noise stream seeded by (seed, i): the same samples whatever the batch
    size (once, chunk c was seeded by (seed, c), so --batch-size changed every sample)."""
    from sdekit.models.bundle import generate
    m = random_model(num_classes=10)
    a = generate(m, 5, sampler, 3, seed=7, batch_size=5, eta=1.0) if sampler == "ddim" else \
        generate(m, 5, sampler, 3, seed=7, batch_size=5)
    b = generate(m, 5, sampler, 3, seed=7, batch_size=2, eta=1.0) if sampler == "ddim" else \
        generate(m, 5, sampler, 3, seed=7, batch_size=2)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    c = generate(m, 5, sampler, 3, seed=8, batch_size=5)
    assert not torch.allclose(a, c)

"""The held-out subsets shipped with the package: their files, their maker (rerun on tiny folders written
here, and on the shared data where present), likelihood and evaluate without a data folder, training
refused without one, --download, and evaluate --judge with a judge trained here."""
import gzip
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdekit import UserError
from sdekit.apps.cli import main
from sdekit.data.heldout import HELDOUT_DIR, PER_CLASS, SUBSETS, load_heldout, make_heldout, shipped
from sdekit.tasks.judge import held_out, judged_folder, split, train_features

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST = Path(os.environ.get("SDEKIT_MNIST", SHARED / "mnist"))
EMOJI = SHARED / "emoji"
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason="no MNIST files here")
needs_emoji = pytest.mark.skipif(not (EMOJI / "emoji.json").is_file(), reason="no emoji folder here")


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---- the shipped files ---------------------------------------------------------------------------------

def test_shipped_files_hold_what_the_readme_says():
    mn, em = _npz(HELDOUT_DIR / "mnist.npz"), _npz(HELDOUT_DIR / "emoji.npz")
    assert mn.keys() == {"images", "labels", "index"} and em.keys() == {"images", "labels"}
    assert mn["images"].dtype == em["images"].dtype == np.uint8
    assert mn["images"].shape == (1000, 1, 28, 28) and em["images"].shape == (880, 3, 32, 32)
    assert np.bincount(mn["labels"], minlength=10).tolist() == [PER_CLASS] * 10
    idx = mn["index"].astype(np.int64)
    assert mn["index"].dtype == np.uint16 and (np.diff(idx) > 0).all() and idx[-1] < 10000
    assert em["labels"].max() < 9 and len(np.unique(em["labels"])) == 9
    # the same 880 images the shipped emoji judge was measured on
    assert json.loads((HELDOUT_DIR.parent / "emoji-features" / "config.json").read_text())["test_images"] == 880
    assert sum(p.stat().st_size for p in HELDOUT_DIR.iterdir()) < 1_500_000
    readme = (HELDOUT_DIR / "README.md").read_text()
    for words in ("CC BY-SA 3.0", "CC BY 4.0", "Apache License 2.0", "python -m sdekit.data.heldout", "allow_pickle=False"):
        assert words in readme


def test_load_heldout_in_model_space_at_other_sizes():
    d = load_heldout("mnist")
    raw = _npz(HELDOUT_DIR / "mnist.npz")
    assert d.shape == (1, 28, 28) and d.num_classes == 10 and d.labels.dtype == torch.int64
    assert torch.equal(d.x, torch.from_numpy(raw["images"]).float() / 255 * 2 - 1)
    e = load_heldout("EMOJI", 16)
    full = load_heldout("emoji").x
    assert e.shape == (3, 16, 16) and torch.allclose(e.x, full.reshape(880, 3, 16, 2, 16, 2).mean((3, 5)), atol=1e-6)
    assert load_heldout("mnist", 16, 3).shape == (3, 16, 16)
    with pytest.raises(UserError, match="size must divide"):
        load_heldout("emoji", 64)
    for spec in ("mnist:/x", "digits", "cifar10"):
        assert shipped(spec) is None
        with pytest.raises(UserError, match="no shipped held-out subset"):
            load_heldout(spec)


def test_held_out_halves_the_subset_and_has_no_training_images():
    h = held_out("mnist")
    assert len(h.reference) == len(h.real) == 500 and h.train is None and "1000 MNIST test images" in h.note
    u = (load_heldout("mnist").x + 1) / 2
    rows = {bytes(im.numpy()) for im in u}
    ref, real = {bytes(im.numpy()) for im in h.reference}, {bytes(im.numpy()) for im in h.real}
    assert ref | real <= rows and not ref & real


# ---- the maker, on tiny folders ----------------------------------------------------------------------

def _idx(path, a):
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())


def _tiny_mnist(root):
    g = np.random.default_rng(0)
    labels = np.concatenate([np.full(PER_CLASS + 3, c) for c in range(10)]).astype(np.uint8)
    g.shuffle(labels)
    images = g.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    root.mkdir()
    _idx(root / "t10k-images-idx3-ubyte.gz", images)
    _idx(root / "t10k-labels-idx1-ubyte.gz", labels)
    return images, labels


def _tiny_emoji(root):
    """emoji.json and both styles: one held-out emoji with a skin tone, one kept, a Component."""
    code = lambda keep: next(f"{c:X}" for c in range(0x1F600, 0x1F700) if (zlib.crc32(f"{c:X}".encode()) % 10 == 0) != keep)
    held, kept = code(False), code(True)
    entries = [{"unified": held, "image": f"{held.lower()}.png", "category": "Animals & Nature",
                "skin_variations": {"1F3FB": {"image": f"{held.lower()}-1f3fb.png"}}},
               {"unified": kept, "image": f"{kept.lower()}.png", "category": "Flags"},
               {"unified": "1F3FB", "image": "1f3fb.png", "category": "Component"}]
    root.mkdir()
    (root / "emoji.json").write_text(json.dumps(entries))
    g = np.random.default_rng(1)
    pictures = {}
    for style in ("twemoji-64", "noto-64"):
        (root / style).mkdir()
        for name in (f"{held.lower()}.png", f"{held.lower()}-1f3fb.png", f"{kept.lower()}.png", "1f3fb.png"):
            a = g.integers(0, 256, (64, 64, 4), dtype=np.uint8)
            Image.fromarray(a, "RGBA").save(root / style / name)
            pictures[style, name] = a
    order = [pictures[s, n] for s in ("twemoji-64", "noto-64") for n in (f"{held.lower()}.png", f"{held.lower()}-1f3fb.png")]
    return order


def _reference_emoji(rgba):
    """Written out here: premultiplied colour and alpha, 2x2 means, over white, 8 bits."""
    a = rgba.astype(np.float64) / 255
    pm = np.concatenate([a[..., :3] * a[..., 3:], a[..., 3:]], -1).reshape(32, 2, 32, 2, 4).mean((1, 3))
    rgb = pm[..., :3] + (1 - pm[..., 3:])
    return np.rint(rgb * 255).astype(np.uint8).transpose(2, 0, 1)


def test_maker_on_tiny_folders(tmp_path):
    images, labels = _tiny_mnist(tmp_path / "mnist")
    order = _tiny_emoji(tmp_path / "emoji")
    out = tmp_path / "out"
    assert make_heldout(out, tmp_path / "mnist", tmp_path / "emoji") == [out / "mnist.npz", out / "emoji.npz"]
    mn, em = _npz(out / "mnist.npz"), _npz(out / "emoji.npz")
    first = sorted(i for c in range(10) for i in [j for j in range(len(labels)) if labels[j] == c][:PER_CLASS])
    assert mn["index"].tolist() == first
    assert np.array_equal(mn["images"][:, 0], images[first]) and np.array_equal(mn["labels"], labels[first])
    assert em["images"].shape == (4, 3, 32, 32) and em["labels"].tolist() == [2] * 4     # the held-out emoji only
    got = em["images"].astype(int)
    want = np.stack([_reference_emoji(a) for a in order]).astype(int)
    assert np.abs(got - want).max() <= 1 and (got == want).mean() > 0.99    # float32 against float64 at .5
    again = tmp_path / "again"
    make_heldout(again, mnist_dir=tmp_path / "mnist")
    assert sorted(p.name for p in again.iterdir()) == ["mnist.npz"]
    assert all(np.array_equal(v, _npz(again / "mnist.npz")[k]) for k, v in mn.items())
    with pytest.raises(UserError, match="fewer than"):
        from sdekit.data.heldout import mnist_subset
        mnist_subset(tmp_path / "mnist", per_class=PER_CLASS + 4)


@needs_mnist
@needs_emoji
def test_maker_reproduces_the_shipped_files_from_the_data(tmp_path):
    make_heldout(tmp_path, MNIST, EMOJI)
    for name in ("mnist.npz", "emoji.npz"):
        new, old = _npz(tmp_path / name), _npz(HELDOUT_DIR / name)
        assert new.keys() == old.keys() and all(np.array_equal(new[k], old[k]) for k in new)
    _, _, te, te_y = split(f"mnist:{MNIST}")
    raw = _npz(HELDOUT_DIR / "mnist.npz")
    idx = torch.from_numpy(raw["index"].astype(np.int64))
    assert torch.equal(te[idx], torch.from_numpy(raw["images"]).float() / 255)
    assert torch.equal(te_y[idx], torch.from_numpy(raw["labels"].astype(np.int64)))
    full, sub = held_out(f"emoji:{EMOJI}"), held_out("emoji")           # the same halves, to 8 bits
    assert (full.reference - sub.reference).abs().max() <= 0.5 / 255 + 1e-6


# ---- the commands ------------------------------------------------------------------------------------

def test_likelihood_without_a_data_folder(capsys):
    code = main(["likelihood", "--model", "emoji", "-n", "2", "--solver", "heun", "--steps", "2"])
    out, err = capsys.readouterr()
    assert code == 0 and "the shipped held-out subset: 880 held-out emoji" in err and "emoji:DIR" in err
    assert "2 data points of emoji" in out and "bits/dim" in out


def test_evaluate_emoji_on_the_shipped_subset(tmp_path, capsys):
    out = tmp_path / "e"
    code = main(["evaluate", "--model", "emoji", "-n", "4", "--t0", "0.5", "--strokes", "simulated",
                 "--steps-per-unit", "4", "--n-reference", "100", "--batch-size", "4", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "note: the shipped held-out subset: 880 held-out emoji" in err and "no nearest-training-image" in err
    report = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in report["rows"]] == ["SDEdit", "raw strokes", "real images (real vs real)",
                                                     "plain samples (no guide)"]
    assert report["meta"]["n_reference"] == 100 and report["meta"]["data"] == "emoji"
    assert all(r["fidelity"] is not None for r in report["rows"])
    assert "Note: the shipped held-out subset" in (out / "results.md").read_text()


def test_training_needs_the_data_folder(tmp_path, capsys):
    code = main(["train", "--data", "mnist", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "mnist:DIR" in err and not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize("extra, msg", [(["--data", "mnist"], "needs the folder to fetch into: --data mnist:DIR"),
                                        (["--data", "emoji:/x"], "emoji-datasource"),
                                        (["--data", "digits"], "fetches mnist")])
def test_download_refusals(capsys, extra, msg):
    assert main(["likelihood", "--download", "-n", "2"] + extra) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


@needs_mnist
def test_download_checks_files_already_there(capsys):
    # the shared copy's image files were re-compressed: accepted by the MD5 of their decompressed bytes
    code = main(["likelihood", "--data", f"mnist:{MNIST}", "--download", "-n", "2", "--solver", "heun", "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 0 and f"fetching mnist into {MNIST.resolve()}" in err, err


# ---- a judge of other data ----------------------------------------------------------------------------

def _shapes(root, n=20):
    """A labelled folder: red squares and blue discs on grey, 24x24 RGB, n of each at random places."""
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[:24, :24]
    for name, colour in (("discs", (40, 60, 230)), ("squares", (230, 40, 40))):
        (root / name).mkdir(parents=True)
        for i in range(n):
            a = np.full((24, 24, 3), 128, np.uint8)
            cy, cx, r = *g.integers(7, 17, 2), g.integers(3, 6)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r if name == "discs" else (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
            a[inside] = colour
            Image.fromarray(a).save(root / name / f"{i}.png")
    return f"folder:{root}"


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    root = tmp_path_factory.mktemp("judge")
    data = _shapes(root / "shapes")
    cfg = train_features(root / "judge", epochs=1, seed=3, progress=False, data=data, size=16, channels=3)
    return data, root / "judge", cfg


def test_judge_of_other_data_round_trips(judge):
    data, folder, cfg = judge
    spec = judged_folder(folder)
    assert (spec.name, spec.size, spec.channels, spec.num_classes, spec.split_seed) == (data, 16, 3, 2, 3)
    assert cfg["train_images"] == 32 and cfg["test_images"] == 8 and not spec.real_from_test
    h = held_out(data, 16, spec)
    _, _, te, _ = split(data, 3, 16, 3)
    assert torch.equal(h.reference, te)                           # the judge's own held-out 20 %
    with pytest.raises(UserError, match="labelled images"):
        flat = folder.parent / "flat"
        flat.mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "a.png")
        train_features(folder.parent / "j2", epochs=1, progress=False, data=f"folder:{flat}")


def test_evaluate_with_a_judge_of_other_data(judge, tmp_path, capsys):
    from sdekit.models.bundle import random_model, save_bundle
    data, folder, _ = judge
    net = random_model((3, 16, 16), num_classes=2, ch=4)
    same = save_bundle(tmp_path / "same", net.net, shape=net.shape, data=data)
    other = save_bundle(tmp_path / "other", net.net, shape=net.shape, data="folder:/elsewhere")
    base = ["-n", "4", "--t0", "0.5", "--strokes", "simulated", "--steps-per-unit", "4", "--class", "none"]
    assert main(["evaluate", "--model", str(same)] + base + ["--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no judge" in err and "sdekit train-features --data" in err and "--judge DIR" in err, err
    for model, fidelity in ((same, True), (other, False)):
        out = tmp_path / f"e-{model.name}"
        assert main(["evaluate", "--model", str(model), "--judge", str(folder)] + base + ["--out", str(out)]) == 0
        err = capsys.readouterr().err
        report = json.loads((out / "results.json").read_text())
        methods = [r["method"] for r in report["rows"]]
        assert "nearest training image" in methods and report["meta"]["n_reference"] == 8
        assert all((r["fidelity"] is not None) == fidelity for r in report["rows"])
        assert ("no class fidelity" in err) != fidelity
        assert all(r["kid"]["lo"] <= r["kid"]["value"] <= r["kid"]["hi"] for r in report["rows"])

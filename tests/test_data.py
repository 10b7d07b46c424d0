"""Datasets from tiny files written in each standard format, and picture grids."""
import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from sdekit.data.datasets import (TOYS, cifar10, digits, grid, image_folder, load_dataset, mnist, read_idx,
                         save_grid, toy)
from sdekit.core.errors import UserError


def test_digits_at_8_and_16():
    from sklearn.datasets import load_digits
    ref = load_digits()
    d8 = digits(size=8)
    torch.testing.assert_close(d8.x[:, 0], torch.tensor(ref.images / 16.0 * 2 - 1, dtype=torch.float32))
    d = load_dataset("digits")
    assert d.shape == (1, 16, 16) and len(d) == 1797 and d.num_classes == 10
    assert d.x.min() >= -1 and d.x.max() <= 1
    assert torch.equal(d.labels, torch.tensor(ref.target))
    # light strokes on a dark background, and the upsampled mean stays the 8x8 mean
    assert (d.x < -0.9).float().mean() > 0.3 and d.x.mean() < -0.3
    torch.testing.assert_close(d.x.mean(), d8.x.mean(), atol=0.02, rtol=0)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toys(name):
    d = load_dataset(f"toy:{name}")
    assert d.x.shape == (8192, 1 if name == "bimodal" else 2) and d.labels is None and not d.is_image
    assert torch.isfinite(d.x).all() and 0.3 < d.x.std() < 3
    torch.testing.assert_close(toy(name).x, d.x)                   # deterministic


def test_bimodal_weights():
    x = toy("bimodal", n=20000).x[:, 0]
    assert (x > 0).float().mean().item() == pytest.approx(0.6, abs=0.02)


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_with_classes_and_channels(tmp_path):
    a = np.zeros((8, 8, 3), np.uint8)
    a[:, :, 0] = 255                                              # pure red
    _png(tmp_path / "cats" / "a.png", a)
    _png(tmp_path / "dogs" / "b.png", np.full((12, 8), 255, np.uint8))   # grey, not square
    d = load_dataset(f"folder:{tmp_path}", size=4)
    assert d.shape == (3, 4, 4) and d.num_classes == 2 and d.labels.tolist() == [0, 1]
    torch.testing.assert_close(d.x[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    torch.testing.assert_close(d.x[1], torch.ones(3, 4, 4))
    g = image_folder(tmp_path, size=4, channels=1)
    assert g.shape == (1, 4, 4)
    assert g.x[0, 0, 0, 0].item() == pytest.approx(2 * 76 / 255 - 1, abs=0.01)  # luma of red


def test_image_folder_bad_input(tmp_path):
    with pytest.raises(UserError, match="no images"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(UserError, match="no such folder"):
        load_dataset(f"folder:{tmp_path}/missing")
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="not an image"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("imagenet")


def _idx(path, arr, gz=False):
    head = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = head + arr.astype(np.uint8).tobytes()
    (gzip.open(path, "wb") if gz else open(path, "wb")).write(data)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    imgs = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    suffix = ".gz" if gz else ""
    _idx(tmp_path / f"train-images-idx3-ubyte{suffix}", imgs, gz)
    _idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.array([7, 0, 3]), gz)
    d = load_dataset(f"fashion-mnist:{tmp_path}")
    assert d.shape == (1, 28, 28) and d.labels.tolist() == [7, 0, 3] and d.name == "fashion-mnist"
    torch.testing.assert_close(d.x[:, 0], torch.tensor(imgs / 255.0 * 2 - 1, dtype=torch.float32))
    assert mnist(tmp_path, size=16).shape == (1, 16, 16)


def test_idx_truncated_and_missing(tmp_path):
    _idx(tmp_path / "f", np.zeros((2, 4, 4)))
    (tmp_path / "f").write_bytes((tmp_path / "f").read_bytes()[:-3])
    with pytest.raises(UserError, match="truncated"):
        read_idx(tmp_path / "f")
    with pytest.raises(UserError, match="found"):
        load_dataset(f"mnist:{tmp_path}")
    (tmp_path / "h").write_bytes(bytes([0, 0, 8, 3, 0, 0]))            # cut inside the sizes
    with pytest.raises(UserError, match="not an idx file"):
        read_idx(tmp_path / "h")
    (tmp_path / "g.gz").write_bytes(b"not gzip")
    with pytest.raises(UserError, match="gzip"):
        read_idx(tmp_path / "g.gz")


def test_cifar10_binary(tmp_path):
    rng = np.random.default_rng(0)
    want = []
    for i in range(1, 6):
        recs = rng.integers(0, 256, size=(2, 3073), dtype=np.uint8)
        recs[:, 0] = [i, 9 - i]
        want.append(recs)
        (tmp_path / f"data_batch_{i}.bin").write_bytes(recs.tobytes())
    d = load_dataset(f"cifar10:{tmp_path}")
    w = np.concatenate(want)
    assert d.shape == (3, 32, 32) and len(d) == 10 and d.labels.tolist() == w[:, 0].tolist()
    torch.testing.assert_close(d.x[3, 1, 2, 5], torch.tensor(w[3, 1 + 1024 + 2 * 32 + 5] / 255 * 2 - 1, dtype=torch.float32))
    (tmp_path / "data_batch_2.bin").write_bytes(want[1].tobytes()[:-1])
    with pytest.raises(UserError, match="truncated"):
        cifar10(tmp_path)


def test_grid_png_roundtrip(tmp_path):
    u = torch.rand(5, 1, 3, 4)
    a = grid(u, nrow=3, pad=1)
    assert a.shape == (2 * 4 + 1, 3 * 5 + 1, 1)
    np.testing.assert_array_equal(a[1 + 4: 1 + 4 + 3, 1 + 5: 1 + 5 + 4, 0], (u[4, 0].numpy() * 255 + 0.5).astype(np.uint8))
    p = save_grid(tmp_path / "g.png", u, nrow=3, scale=2)
    im = np.asarray(Image.open(p))
    assert im.shape == (18, 32) and np.array_equal(im[::2, ::2], a[..., 0])


def test_fetch_verifies_checksums(tmp_path):
    import hashlib
    import io
    import tarfile
    from sdekit.data.datasets import SOURCES, fetch
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    # a CIFAR-10-like archive served from a file:// mirror, its MD5 registered in place of the real one
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(1, 6):
            data = bytes([i]) + bytes(3072)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/data_batch_{i}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (mirror / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())
    good = hashlib.md5(buf.getvalue()).hexdigest()
    old = SOURCES["cifar10"]
    try:
        SOURCES["cifar10"] = (old[0], {"cifar-10-binary.tar.gz": "0" * 32})
        with pytest.raises(UserError, match="checksum mismatch"):
            fetch("cifar10", tmp_path / "bad", mirrors=[mirror.as_uri() + "/"])
        assert not (tmp_path / "bad" / "cifar-10-binary.tar.gz").exists()
        SOURCES["cifar10"] = (old[0], {"cifar-10-binary.tar.gz": good})
        with pytest.raises(UserError, match="could not download"):
            fetch("cifar10", tmp_path / "off", mirrors=[(tmp_path / "nowhere").as_uri() + "/"])
        fetch("cifar10", tmp_path / "ok", mirrors=[mirror.as_uri() + "/"])
    finally:
        SOURCES["cifar10"] = old
    d = cifar10(tmp_path / "ok")
    assert len(d) == 5 and d.labels.tolist() == [1, 2, 3, 4, 5]

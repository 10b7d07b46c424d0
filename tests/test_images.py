import numpy as np
import pytest
import torch
from PIL import Image

from sdekit import UserError
from sdekit.images import load_image, load_mask, save_image, to_pil


def _save(tmp_path, im, name="g.png", **kw):
    p = tmp_path / name
    im.save(p, **kw)
    return p


def test_grey_png_is_resized_by_area(tmp_path):
    a = np.zeros((64, 64), np.uint8)
    a[:, 32:] = 255                                   # right half white
    img = load_image(_save(tmp_path, Image.fromarray(a, "L")), (1, 16, 16))
    assert img.pixels.shape == (1, 1, 16, 16) and img.alpha is None and img.size == (64, 64)
    assert img.pixels[..., :7].max() < 0.05 and img.pixels[..., 9:].min() > 0.95


def test_rgb_to_grey_uses_luma(tmp_path):
    a = np.zeros((8, 8, 3), np.uint8)
    a[..., 1] = 255                                   # pure green
    img = load_image(_save(tmp_path, Image.fromarray(a, "RGB")), (1, 8, 8))
    assert torch.allclose(img.pixels, torch.full((1, 1, 8, 8), 0.587), atol=2 / 255)
    img3 = load_image(_save(tmp_path, Image.fromarray(a, "RGB"), "c.png"), (3, 8, 8))
    assert torch.allclose(img3.pixels[0, 1], torch.ones(8, 8))


def test_grey_to_three_channels(tmp_path):
    img = load_image(_save(tmp_path, Image.new("L", (8, 8), 128)), (3, 8, 8))
    assert img.pixels.shape == (1, 3, 8, 8) and torch.allclose(img.pixels, torch.full_like(img.pixels, 128 / 255))


def test_rgba_alpha_becomes_the_mask(tmp_path):
    a = np.full((32, 32, 4), 255, np.uint8)
    a[16:, :, 3] = 0                                  # bottom half transparent
    img = load_image(_save(tmp_path, Image.fromarray(a, "RGBA")), (1, 16, 16))
    assert img.alpha is not None
    assert img.alpha[..., :8, :].min() == 1 and img.alpha[..., 8:, :].max() == 0
    assert img.pixels[..., 10:, :].max() < 0.01          # transparent colour composited over black


def test_opaque_rgba_has_no_mask(tmp_path):
    img = load_image(_save(tmp_path, Image.new("RGBA", (8, 8), (10, 20, 30, 255))), (1, 8, 8))
    assert img.alpha is None


def test_palette_image(tmp_path):
    im = Image.new("P", (10, 10), 1)
    im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    img = load_image(_save(tmp_path, im), (1, 5, 5))
    assert torch.allclose(img.pixels, torch.ones(1, 1, 5, 5))


def test_sixteen_bit_grey(tmp_path):
    a = np.full((8, 8), 65535, np.uint16)
    img = load_image(_save(tmp_path, Image.fromarray(a)), (1, 8, 8))
    assert img.pixels.min() > 0.99


def test_non_square_is_centre_cropped(tmp_path):
    a = np.zeros((16, 48), np.uint8)
    a[:, 16:32] = 255                                 # white centre third: all that survives the crop
    img = load_image(_save(tmp_path, Image.fromarray(a, "L")), (1, 16, 16))
    assert img.pixels.min() > 0.95


def test_jpeg(tmp_path):
    img = load_image(_save(tmp_path, Image.new("RGB", (20, 20), (200, 200, 200)), "g.jpg"), (1, 16, 16))
    assert abs(float(img.pixels.mean()) - 200 / 255) < 0.02


def test_mask_file_threshold_and_size(tmp_path):
    a = np.zeros((32, 32), np.uint8)
    a[:, :16] = 255
    m = load_mask(_save(tmp_path, Image.fromarray(a, "L"), "m.png"), (16, 16))
    assert m.shape == (1, 1, 16, 16) and set(m.unique().tolist()) == {0.0, 1.0}
    assert m[..., :8].min() == 1 and m[..., 8:].max() == 0


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "t.png").write_text("not an image")
    with pytest.raises(UserError, match="not an image"):
        load_image(tmp_path / "t.png")
    good = _save(tmp_path, Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "r.png")
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated"):
        load_image(tmp_path / "trunc.png")
    with pytest.raises(UserError, match="folder"):
        load_image(tmp_path)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    p = _save(tmp_path, Image.new("L", (400, 300)), "big.png")
    with pytest.raises(UserError, match="too large"):
        load_image(p, max_pixels=100_000)
    # a header claiming an enormous size is refused without reading the pixels
    big = Image.new("1", (30000, 30000))
    p2 = tmp_path / "bomb.png"
    big.save(p2, optimize=True)
    with pytest.raises(UserError, match="too large|bomb"):
        load_image(p2)


def test_save_is_atomic_and_refuses_overwrite(tmp_path):
    u = torch.rand(1, 1, 8, 8)
    p = save_image(tmp_path / "o.png", u)
    back = np.asarray(Image.open(p), dtype=np.float32) / 255
    assert np.allclose(back, u[0, 0].numpy(), atol=1 / 255)
    with pytest.raises(UserError, match="exists"):
        save_image(p, u, overwrite=False)
    save_image(tmp_path / "big.png", u, size=(32, 32))
    assert Image.open(tmp_path / "big.png").size == (32, 32)
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []
    assert to_pil(torch.rand(3, 4, 4)).mode == "RGB"

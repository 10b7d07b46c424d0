import numpy as np
import pytest
import torch
from PIL import Image

from sdekit import UserError
from sdekit.data.images import load_image, load_mask, save_image, to_pil


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


# ---- what a viewer shows: orientation, every mode and bit depth --------------------------------------

def _rotated(tmp_path, fmt="JPEG", name="rot.jpg"):
    """A 64x32 frame with a 4-pixel bar along its top edge, EXIF orientation 6: a viewer turns it
    90 degrees clockwise and shows a 32x64 picture with the bar on the right."""
    a = np.zeros((32, 64), np.uint8)
    a[:4] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / name
    Image.fromarray(a, "L").save(p, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return p


@pytest.mark.parametrize("fmt,name", [("JPEG", "r.jpg"), ("PNG", "r.png"), ("WEBP", "r.webp")])
def test_exif_orientation_is_applied(tmp_path, fmt, name):
    from sdekit.data.images import image_size
    p = _rotated(tmp_path, fmt, name)
    img = load_image(p, (1, 64, 32))                   # the picture's own aspect: nothing is cropped
    assert img.size == (32, 64) and image_size(p) == (32, 64)
    assert img.pixels[..., -3:].min() > 0.8            # the bar is on the right
    assert img.pixels[..., :-5].max() < 0.2
    assert load_mask(p, (64, 32))[..., -3:].min() == 1 and load_mask(p, (64, 32))[..., :-5].max() == 0


def test_data_folder_reads_the_upright_picture(tmp_path):
    from sdekit.data.datasets import image_folder
    _rotated(tmp_path)
    x = image_folder(tmp_path, size=8, channels=1).x   # model space [-1, 1]
    assert x[0, 0, :, -1].min() > 0.5 and x[0, 0, :, 0].max() < -0.5


def _tiff(tmp_path, im, name):
    p = tmp_path / name
    im.save(p, format="TIFF")
    return p


@pytest.mark.parametrize("make,value", [
    (lambda: Image.fromarray(np.full((4, 4), 200, np.uint16)), 200 / 65535),        # 16-bit grey, PNG I;16
    (lambda: Image.fromarray(np.full((4, 4), 50000, np.uint16)), 50000 / 65535),
    (lambda: Image.new("1", (4, 4), 1), 1.0),
])
def test_bit_depth_scales_by_full_scale_not_by_content(tmp_path, make, value):
    img = load_image(_save(tmp_path, make()), (1, 4, 4))
    assert torch.allclose(img.pixels, torch.full((1, 1, 4, 4), value), atol=1e-4)


@pytest.mark.parametrize("mode,fill,value", [("I", 30000, 30000 / 65535), ("I;16", 300, 300 / 65535),
                                             ("I;16B", 300, 300 / 65535), ("F", 0.25, 0.25), ("F", 7.0, 1.0),
                                             ("LAB", (128, 128, 128), 119 / 255), ("CMYK", (0, 0, 0, 128), 127 / 255)])
def test_tiff_modes(tmp_path, mode, fill, value):
    img = load_image(_tiff(tmp_path, Image.new(mode, (4, 4), fill), "m.tif"), (1, 4, 4))
    assert torch.allclose(img.pixels, torch.full((1, 1, 4, 4), value), atol=1.5 / 255), img.pixels.flatten()[:2]


def test_cmyk_jpeg_follows_pillow_conversion(tmp_path):
    im = Image.new("CMYK", (8, 8), (0, 255, 0, 0))                 # magenta
    img = load_image(_save(tmp_path, im, "c.jpg"), (3, 8, 8))
    want = torch.tensor(Image.open(tmp_path / "c.jpg").convert("RGB").getpixel((4, 4)), dtype=torch.float32) / 255
    assert torch.allclose(img.pixels[0, :, 4, 4], want, atol=1 / 255)


@pytest.mark.parametrize("mode,hole,keep,fmt", [("L", 7, 200, "PNG"), ("RGB", (1, 2, 3), (200, 200, 200), "PNG"),
                                                ("P", 0, 1, "PNG"), ("P", 0, 1, "GIF")])
def test_transparent_colour_key_and_palette_become_the_mask(tmp_path, mode, hole, keep, fmt):
    im = Image.new(mode, (8, 8), keep)
    if mode == "P":
        im.putpalette([9, 9, 9, 200, 200, 200] + [0] * 762)
    im.paste(hole, (0, 4, 8, 8))                                   # bottom half: the transparent value
    p = tmp_path / f"t.{fmt.lower()}"
    im.save(p, format=fmt, transparency=hole)
    img = load_image(p, (1, 8, 8))
    assert img.alpha is not None
    assert img.alpha[..., :4, :].min() == 1 and img.alpha[..., 4:, :].max() == 0
    assert img.pixels[..., 4:, :].max() == 0                        # over black
    assert abs(float(img.pixels[..., :4, :].mean()) - 200 / 255) < 2 / 255


def test_la_is_composited_over_black(tmp_path):
    a = np.zeros((8, 8, 2), np.uint8)
    a[..., 0] = 200
    a[:4, :, 1] = 255
    a[4:, :, 1] = 100                                              # bottom: 100/255 opaque
    img = load_image(_save(tmp_path, Image.fromarray(a, "LA")), (1, 8, 8))
    assert img.alpha[..., :4, :].min() == 1 and img.alpha[..., 4:, :].max() == 0
    assert abs(float(img.pixels[0, 0, 6, 3]) - 200 * 100 / 255 / 255) < 2 / 255


# ---- formats, truncation, size limits -------------------------------------------------------------

def test_only_the_listed_raster_formats_are_decoded(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin
    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"
    (tmp_path / "x.png").write_bytes(eps)                           # an EPS in disguise
    with pytest.raises(UserError, match="not an image file of a supported format"):
        load_image(tmp_path / "x.png")
    Image.new("L", (4, 4), 9).save(tmp_path / "p.ppm")             # Pillow reads PPM; sdekit does not
    with pytest.raises(UserError, match="supported format"):
        load_image(tmp_path / "p.ppm")
    from sdekit.data.datasets import image_folder
    with pytest.raises(UserError, match="supported format"):
        image_folder(tmp_path)
    assert calls == []


def test_png_cut_before_its_end_is_refused(tmp_path):
    data = _save(tmp_path, Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32), np.uint8))).read_bytes()
    for cut in (len(data) // 2, len(data) - 12):                    # inside the pixels; the IEND chunk missing
        (tmp_path / "c.png").write_bytes(data[:cut])
        with pytest.raises(UserError, match="truncated"):
            load_image(tmp_path / "c.png")


def _png_header_only(w, h, color_type=6):
    import struct
    import zlib
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 32)) + chunk(b"IEND", b""))


def test_declared_size_is_checked_before_decoding(tmp_path, monkeypatch):
    from PIL import ImageFile
    from sdekit.data.images import MAX_PIXELS
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    (tmp_path / "h.png").write_bytes(_png_header_only(4097, 4096))
    assert 4097 * 4096 > MAX_PIXELS
    with pytest.raises(UserError, match="too large"):
        load_image(tmp_path / "h.png")
    with pytest.raises(UserError, match="too large"):
        load_image((tmp_path / "h.png").read_bytes())
    assert decoded == []


def test_a_header_that_lies_costs_no_more_than_its_pixels(tmp_path):
    """A 96-byte PNG declaring 4096x4096 RGBA is refused, and so is decoding one for real at more than
    a few bytes per pixel: peak memory stays far below the ~700 MB a float pipeline costs."""
    import subprocess
    import sys
    import zlib
    import struct
    (tmp_path / "lie.png").write_bytes(_png_header_only(4096, 4096))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    rows = zlib.compress(b"\0" * (4096 * 4 + 1) * 4096, 9)
    (tmp_path / "real.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4096, 4096, 8, 6, 0, 0, 0))
                                        + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    assert len((tmp_path / "lie.png").read_bytes()) < 100
    code = ("import resource, sys\n"
            "from sdekit.data.images import load_image\nfrom sdekit.core.errors import UserError\n"
            "load_image(sys.argv[2], (1, 16, 16))\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    load_image(sys.argv[1], (1, 16, 16)); print('decoded')\n"
            "except UserError as e:\n    print('refused', e)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n")
    Image.new("RGBA", (4, 4)).save(tmp_path / "small.png")
    for name, verdict in (("lie.png", "refused"), ("real.png", "decoded")):
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / name), str(tmp_path / "small.png")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.split("\n")
        assert lines[0].startswith(verdict), r.stdout
        assert int(lines[-2]) < 400, f"{name}: {lines[-2]} MB"          # 4096 x 4096 x 4 bytes = 64 MB


# ---- geometry: the crop and its inverse -----------------------------------------------------------

def test_crop_box():
    from sdekit.data.images import crop_box
    assert crop_box((160, 40), (16, 16)) == (60, 0, 100, 40)
    assert crop_box((40, 160), (16, 16)) == (0, 60, 40, 100)
    assert crop_box((32, 64), (64, 32)) == (0, 0, 32, 64)
    assert crop_box((100, 100), (16, 32)) == (0, 25, 100, 75)


def test_restore_lines_up_with_the_guide(tmp_path):
    """A 160x40 guide: the model sees the centre 40x40; restoring its pixels gives back the guide's
    frame, the middle bar where it was and as wide, and the left bar (never seen) kept."""
    from sdekit.data.images import restore
    g = np.zeros((40, 160), np.uint8)
    g[:, 76:84] = 255
    g[:, 0:6] = 255
    img = load_image(_save(tmp_path, Image.fromarray(g, "L")), (1, 16, 16))
    assert img.box == (60, 0, 100, 40)
    back = np.asarray(restore(img, img.pixels), dtype=np.float32) / 255
    assert back.shape == (40, 160)
    bright = np.flatnonzero(back[20] > 0.5)
    assert back[:, 0:6].min() == 1 and back[:, 6:60].max() == 0
    middle = bright[bright > 10]
    assert 6 <= len(middle) <= 10 and abs(middle.mean() - 79.5) <= 1.0


def test_picture_scale_and_output_limit():
    from sdekit.data.images import MAX_OUTPUT_PIXELS, check_picture_size, picture
    im = picture(torch.rand(5, 1, 16, 16), nrow=5, scale=3)
    assert im.size == ((5 * 17 + 1) * 3, 18 * 3)
    with pytest.raises(UserError, match="smaller --scale"):
        check_picture_size(MAX_OUTPUT_PIXELS + 1, 1)


def test_bytes_and_file_objects_are_read_like_files(tmp_path):
    import io
    p = _save(tmp_path, Image.new("L", (8, 8), 100))
    a = load_image(p, (1, 8, 8)).pixels
    assert torch.equal(load_image(p.read_bytes(), (1, 8, 8)).pixels, a)
    assert torch.equal(load_image(io.BytesIO(p.read_bytes()), (1, 8, 8)).pixels, a)
    with pytest.raises(UserError, match="^image: not an image"):
        load_image(b"nope")


def test_sixteen_bit_grey_with_a_transparent_value(tmp_path):
    a = np.full((8, 8), 40000, np.uint16)
    a[4:] = 7
    Image.fromarray(a).save(tmp_path / "t.png", transparency=7)
    img = load_image(tmp_path / "t.png", (1, 8, 8))
    assert img.alpha[..., :4, :].min() == 1 and img.alpha[..., 4:, :].max() == 0
    assert torch.allclose(img.pixels[..., :4, :], torch.tensor(40000 / 65535), atol=1e-4)
    assert img.pixels[..., 4:, :].max() == 0

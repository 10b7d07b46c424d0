"""A grey guide drawn the other way round is recognised from its border and follows the model's polarity."""
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from sdekit.apps.cli import main
from sdekit.data.images import follow_polarity, load_image, reversed_polarity


def digit_two(size=112, ink=255, paper=0):
    """A '2'-like stroke: top bar, diagonal, bottom bar, in ``ink`` on ``paper``."""
    im = Image.new("L", (size, size), paper)
    a = np.asarray(im).copy()
    s = size // 7
    a[s:2 * s, 2 * s:5 * s] = ink
    for k in range(2 * s, 5 * s):
        c = 5 * s - (k - 2 * s)
        a[k, max(c - s // 2, 0):c + s // 2] = ink
    a[5 * s:6 * s, 2 * s:5 * s] = ink
    return Image.fromarray(a, "L")


def as_png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_border_decides_and_only_clear_cases_flip():
    light = load_image(as_png(digit_two()), (1, 16, 16)).pixels
    assert not reversed_polarity(light, (0.0,))              # light on dark for a dark model: as drawn
    assert reversed_polarity(1 - light, (0.0,))              # dark on light: the other way round
    assert reversed_polarity(light, (1.0,)) and not reversed_polarity(1 - light, (1.0,))
    grey = torch.full((1, 1, 16, 16), 0.5)
    assert not reversed_polarity(grey, (0.0,))               # a mid-grey border is neither
    assert not reversed_polarity(torch.ones(1, 3, 16, 16), (0.0, 0.0, 0.0))   # colour guides are never inverted


def test_follow_polarity_inverts_pixels_and_the_frame_restore_pastes_into():
    img = load_image(as_png(ImageOps.invert(digit_two())), (1, 16, 16))
    out, inverted = follow_polarity(img, (0.0,))
    assert inverted
    torch.testing.assert_close(out.pixels, 1 - img.pixels)
    assert np.asarray(out.frame.convert("L"))[0, 0] == 255 - np.asarray(img.frame.convert("L"))[0, 0]
    same, inverted = follow_polarity(out, (0.0,))
    assert not inverted and same is out


def test_edit_inverts_a_dark_on_light_guide_with_a_note_and_keep_polarity_turns_it_off(tmp_path, capsys):
    guide = tmp_path / "two.png"
    ImageOps.invert(digit_two()).save(guide)
    base = ["edit", "--model", "digits", "--guide", str(guide), "--steps", "4", "--t0", "0.3", "--seed", "0"]
    assert main(base + ["--out", str(tmp_path / "a.png")]) == 0
    said = capsys.readouterr().out
    assert "inverted to the model's light strokes on dark" in said
    out = np.asarray(Image.open(tmp_path / "a.png").convert("L"), dtype=np.float32) / 255
    assert np.median(np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])) < 0.25   # the model's dark ground
    assert main(base + ["--out", str(tmp_path / "b.png"), "--keep-polarity"]) == 0
    assert "inverted" not in capsys.readouterr().out

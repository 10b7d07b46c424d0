"""The emoji loader: alpha over white, the box filter, the categories and the held-out split, on a tiny
folder of the shared layout written here (and the shared data's split, where present)."""
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdekit.data.datasets import EMOJI_CATEGORIES, emoji, emoji_split, load_dataset
from sdekit.core.errors import UserError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "emoji"


def _held_out_code():
    """A code point the rule holds out, and one it keeps."""
    held = next(f"{c:X}" for c in range(0x1F600, 0x1F700) if zlib.crc32(f"{c:X}".encode()) % 10 == 0)
    kept = next(f"{c:X}" for c in range(0x1F600, 0x1F700) if zlib.crc32(f"{c:X}".encode()) % 10 != 0)
    return held, kept


def _folder(tmp_path):
    held, kept = _held_out_code()
    entries = [
        {"unified": kept, "image": f"{kept.lower()}.png", "category": "Food & Drink",
         "skin_variations": {"1F3FB": {"unified": f"{kept}-1F3FB", "image": f"{kept.lower()}-1f3fb.png"}}},
        {"unified": held, "image": f"{held.lower()}.png", "category": "Flags", "skin_variations": None},
        {"unified": "1F3FB", "image": "1f3fb.png", "category": "Component"},
    ]
    (tmp_path / "emoji.json").write_text(json.dumps(entries))
    rng = np.random.default_rng(0)
    for style in ("twemoji-64", "noto-64"):
        (tmp_path / style).mkdir()
        for name in [f"{kept.lower()}.png", f"{kept.lower()}-1f3fb.png", f"{held.lower()}.png", "1f3fb.png"]:
            a = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
            Image.fromarray(a, "RGBA").save(tmp_path / style / name)
    return tmp_path, held, kept


def test_alpha_over_white_then_box_filter(tmp_path):
    root, held, kept = _folder(tmp_path)
    d = emoji(root, size=16)
    assert d.x.shape == (4, 3, 16, 16) and d.num_classes == 9           # 2 images x 2 styles in train
    assert d.labels.tolist() == [EMOJI_CATEGORIES.index("Food & Drink")] * 4
    a = np.asarray(Image.open(root / "twemoji-64" / f"{kept.lower()}.png"), dtype=np.float64) / 255
    rgb, alpha = a[..., :3] * a[..., 3:], a[..., 3:]
    box = lambda v: v.reshape(16, 4, 16, 4, -1).mean((1, 3))
    expect = box(rgb) + 1 - box(alpha)                                    # premultiplied box filter over white
    got = (d.x[0].permute(1, 2, 0).double() + 1) / 2
    np.testing.assert_allclose(got.numpy(), expect, atol=1e-5)


def test_split_keeps_styles_and_skin_tones_together(tmp_path):
    root, held, kept = _folder(tmp_path)
    assert emoji_split(held) == "test" and emoji_split(kept) == "train"
    test = emoji(root, size=8, split="test")
    assert len(test) == 2 and test.labels.tolist() == [EMOJI_CATEGORIES.index("Flags")] * 2
    assert len(emoji(root, size=8, split="all")) == 6          # Component dropped
    assert load_dataset(f"emoji:{root}", size=64).shape == (3, 64, 64)


def test_bad_input(tmp_path):
    root, *_ = _folder(tmp_path)
    for kwargs in ({"size": 24}, {"split": "dev"}):
        with pytest.raises(UserError):
            emoji(root, **kwargs)
    with pytest.raises(UserError, match="emoji.json"):
        emoji(tmp_path / "twemoji-64")
    with pytest.raises(UserError, match="emoji:DIR"):
        load_dataset("emoji")


@pytest.mark.skipif(not (SHARED / "emoji.json").is_file(), reason="shared emoji data not present")
def test_shared_split_is_about_a_tenth():
    meta = json.loads((SHARED / "emoji.json").read_text())
    held = [e for e in meta if e["category"] != "Component" and emoji_split(e["unified"]) == "test"]
    frac = len(held) / sum(e["category"] != "Component" for e in meta)
    assert 0.07 < frac < 0.13

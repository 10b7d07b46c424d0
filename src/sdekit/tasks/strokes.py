"""Held-out stroke paintings, for evaluating SDEdit; none is ever used in training.

Three sets, each returning ``(images, labels)``: pixels in [0, 1] of shape [N, C, size, size]
(digits: light strokes on black, as MNIST; emoji: colour on white) and the class each shows, int64 [N].

* :func:`pen`: digits drawn as pen strokes, the way a person draws them with a mouse: polylines,
  arcs and curves per digit 0-9 (two to three ways of writing each), with random stroke width,
  slant, rotation, size, aspect, position, brightness and hand tremor, rendered anti-aliased by
  Pillow (drawn at 4x and area-averaged down). Image i depends only on (seed, i): the first k of
  ``pen(n, seed)`` are ``pen(k, seed)``; labels cycle 0, 1, ..., 9.
* :func:`simulated`: the paper's simulation (Meng et al. 2022, App. D) of held-out real images:
  median filter, then colour quantisation to a few flat colours (:func:`sdekit.tasks.sdedit.simulate_strokes`),
  with the dataset's own window and number of colours (:data:`SIMULATION`: 3x3 and 3 grey levels for
  digits; 5x5 and 6 colours for 32x32 emoji, where a 3x3 window keeps their drawn detail: the paper's
  23 px window at 256 px is 9 % of the width). The images come from the held-out split (for MNIST
  and emoji the half that is not the KID reference, see :func:`sdekit.tasks.judge.held_out`).
* :func:`package`: the stroke paintings shipped in ``sdekit/assets/strokes`` (digits, labelled by their
  file names, "three_colour.png" -> 3) and ``sdekit/assets/strokes/emoji`` (colour guides painted with
  a round brush on white, labelled by the first word of their category: "food_apple.png" -> Food &
  Drink), converted by the guide rule of :mod:`sdekit.data.images`.

:data:`STROKE_SETS` names them for ``sdekit evaluate --strokes``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from sdekit.core.errors import UserError
from sdekit.core.assets import ASSETS
from sdekit.tasks.judge import held_out
from sdekit.tasks.sdedit import simulate_strokes
from sdekit.data.images import load_image
from sdekit.data.datasets import EMOJI_CATEGORIES, short_name

__all__ = ["pen", "simulated", "simulate_from", "package", "glyphs", "STROKE_SETS", "STROKES_DIR", "SIMULATION",
           "PACKAGED", "CATEGORY_WORDS", "SIMULATION_BY_CHANNELS"]

STROKES_DIR = ASSETS / "strokes"
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CATEGORY_WORDS = tuple(short_name(c) for c in EMOJI_CATEGORIES)   # smileys, people, ..., flags
SIMULATION = {"digits": (3, 3), "mnist": (3, 3), "emoji": (5, 6)}    # data -> (median window, colours)
SIMULATION_BY_CHANNELS = {1: SIMULATION["digits"], 3: SIMULATION["emoji"]}   # for other data: grey or colour
PACKAGED = {"digits": (STROKES_DIR, NUMBERS, 1), "mnist": (STROKES_DIR, NUMBERS, 1),
            "emoji": (STROKES_DIR / "emoji", CATEGORY_WORDS, 3)}    # data -> (folder, class words, channels)


# ---- the digits as pen strokes, in a box x in [0, 1] (right), y in [0, 1] (down) ------------------

def _arc(cx, cy, rx, ry, a0, a1, k=24):
    """Points on an ellipse from angle a0 to a1 (degrees, counter-clockwise as seen, 0 = right)."""
    a = np.radians(np.linspace(a0, a1, k))
    return np.stack([cx + rx * np.cos(a), cy - ry * np.sin(a)], 1)


def _bezier(*ctrl, k=16):
    """Points on the Bezier curve with control points ``ctrl`` (de Casteljau)."""
    s = np.linspace(0, 1, k)[:, None]
    pts = [np.asarray(c, float) for c in ctrl]
    while len(pts) > 1:
        pts = [(1 - s) * p + s * q for p, q in zip(pts, pts[1:])]
    return pts[0]


def _line(*pts):
    return np.asarray(pts, float)


def _join(*parts):
    """One stroke through several pieces, drawn without lifting the pen."""
    return np.concatenate(parts)


def _eight_in_one():
    th = np.linspace(0, 2 * np.pi, 48)
    return np.stack([0.5 - 0.24 * np.sin(2 * th), 0.5 - 0.5 * np.cos(th)], 1)       # a figure 8 in one stroke


def glyphs() -> list[list[list[np.ndarray]]]:
    """For each digit 0-9, its ways of writing; a way is a list of strokes [K, 2] (x, y) in the box."""
    return [
        [[_arc(0.5, 0.5, 0.3, 0.5, 100, 460)],                                                 # 0
         [_arc(0.5, 0.5, 0.28, 0.5, 80, -290)]],
        [[_line((0.5, 0), (0.5, 1))],                                                           # 1
         [_line((0.3, 0.2), (0.52, 0), (0.52, 1))],
         [_line((0.3, 0.2), (0.52, 0), (0.52, 1)), _line((0.3, 1), (0.74, 1))]],
        [[_join(_arc(0.5, 0.28, 0.3, 0.28, 160, -30), _line((0.2, 1), (0.82, 1)))],               # 2
         [_join(_arc(0.48, 0.28, 0.3, 0.28, 170, -10), _bezier((0.77, 0.35), (0.6, 0.65), (0.18, 1)),
                _line((0.8, 0.97)))]],
        [[_join(_arc(0.48, 0.26, 0.27, 0.26, 150, -90), _arc(0.48, 0.74, 0.3, 0.26, 90, -150))],  # 3
         [_join(_line((0.2, 0), (0.78, 0), (0.42, 0.42)), _arc(0.45, 0.7, 0.32, 0.3, 110, -150))]],
        [[_line((0.55, 0), (0.14, 0.64), (0.86, 0.64)), _line((0.66, 0.25), (0.66, 1))],          # 4
         [_line((0.22, 0), (0.2, 0.56), (0.82, 0.56)), _line((0.7, 0), (0.7, 1))]],
        [[_join(_line((0.76, 0), (0.32, 0), (0.27, 0.44)), _arc(0.47, 0.69, 0.32, 0.31, 130, -155))],  # 5
         [_join(_line((0.32, 0), (0.27, 0.44)), _arc(0.47, 0.69, 0.32, 0.31, 130, -155)),
          _line((0.32, 0), (0.78, 0))]],
        [[_join(_bezier((0.72, 0), (0.22, 0.15), (0.25, 0.72)), _arc(0.5, 0.72, 0.25, 0.27, 180, 530))],  # 6
         [_join(_line((0.65, 0), (0.27, 0.62)), _arc(0.5, 0.73, 0.25, 0.26, 200, 540))]],
        [[_line((0.18, 0), (0.82, 0), (0.4, 1))],                                                 # 7
         [_line((0.18, 0.14), (0.18, 0), (0.82, 0), (0.42, 1))],
         [_line((0.18, 0), (0.82, 0), (0.4, 1)), _line((0.35, 0.5), (0.78, 0.5))]],
        [[_arc(0.5, 0.24, 0.22, 0.24, 270, 630), _arc(0.5, 0.74, 0.28, 0.26, 90, 450)],            # 8
         [_eight_in_one()]],
        [[_join(_arc(0.46, 0.27, 0.26, 0.27, 0, 360), _line((0.72, 0.27), (0.66, 1)))],             # 9
         [_join(_arc(0.46, 0.27, 0.26, 0.27, -10, 350), _bezier((0.72, 0.22), (0.72, 0.8), (0.45, 1)))]],
    ]


def _densify(p: np.ndarray, step: float = 0.03) -> np.ndarray:
    """Resample a polyline at about ``step`` spacing, so that tremor acts along it evenly."""
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    if s[-1] == 0:
        return p[:1]
    t = np.linspace(0, s[-1], max(2, int(math.ceil(s[-1] / step)) + 1))
    return np.stack([np.interp(t, s, p[:, 0]), np.interp(t, s, p[:, 1])], 1)


def _hand(way, rng: np.random.Generator, size: int):
    """The strokes of one way of writing, placed on a size x size canvas as one person's hand would:
    returns (strokes in pixel coordinates, stroke width in pixels, brightness in (0, 1])."""
    h = rng.uniform(0.5, 0.8) * size                      # glyph height: 14-22 px on a 28 px canvas
    w = h * rng.uniform(0.75, 1.15)
    slant = rng.uniform(-0.15, 0.4)                       # x shift per unit of height, right-leaning
    rot = np.radians(rng.uniform(-10, 10))
    c, s = math.cos(rot), math.sin(rot)
    centre = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
    out = []
    for p in way:
        q = _densify(p)
        tremor = rng.normal(0, 0.012, q.shape)
        q = q + (tremor + np.roll(tremor, 1, 0) + np.roll(tremor, -1, 0)) / 3   # smooth hand shake
        x = (q[:, 0] - 0.5 + slant * (0.5 - q[:, 1])) * w
        y = (q[:, 1] - 0.5) * h
        out.append(np.stack([c * x - s * y, s * x + c * y], 1))
    width = rng.uniform(1.4, 3.2) * size / 28
    lo, hi = np.concatenate(out).min(0), np.concatenate(out).max(0)
    room = size - width - 2                                # the whole glyph stays on the canvas
    k = min(1.0, room / max(hi - lo))
    centre = np.clip(centre, k * (hi - lo) / 2 + width / 2 + 1, size - k * (hi - lo) / 2 - width / 2 - 1)
    return [k * (q - (lo + hi) / 2) + centre for q in out], width, rng.uniform(0.75, 1.0)


def _render(strokes, width: float, brightness: float, size: int, ss: int = 4) -> np.ndarray:
    """Anti-aliased strokes with round caps and joins: drawn at ``ss`` x the size, area-averaged down."""
    from PIL import Image, ImageDraw
    im = Image.new("L", (size * ss, size * ss), 0)
    d = ImageDraw.Draw(im)
    W = max(1, round(width * ss))
    v = round(255 * brightness)
    for p in strokes:
        pts = [tuple(xy) for xy in (p * ss).tolist()]
        d.line(pts, fill=v, width=W, joint="curve")
        for x, y in (pts[0], pts[-1]):
            d.ellipse((x - W / 2, y - W / 2, x + W / 2, y + W / 2), fill=v)
    return np.asarray(im.resize((size, size), Image.BOX), dtype=np.float32) / 255


def pen(n: int, seed: int = 0, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """n digits drawn as pen strokes (see the module docstring): images [n, 1, size, size] in [0, 1],
    labels [n] = 0, 1, ..., 9, 0, 1, ... Deterministic per (seed, index). UserError if n < 1 or size < 8."""
    if int(n) != n or n < 1:
        raise UserError(f"n must be a positive integer, got {n}")
    if int(size) != size or size < 8:
        raise UserError(f"size must be an integer of at least 8 pixels, got {size}")
    ways = glyphs()
    labels = torch.arange(n) % 10
    images = []
    for i, y in enumerate(labels.tolist()):
        rng = np.random.default_rng([seed, i])
        way = ways[y][rng.integers(len(ways[y]))]
        images.append(_render(*_hand(way, rng, size), size))
    return torch.from_numpy(np.stack(images))[:, None], labels


def _dataset(data) -> str:
    name = str(data).partition(":")[0].lower()
    if name not in SIMULATION:
        raise UserError(f"no stroke paintings for data {data!r}; sdekit has them for {', '.join(SIMULATION)}")
    return name


def simulated(n: int, data: str, seed: int = 0, size: int = 28, median: int | None = None,
              colors: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stroke paintings simulated from n held-out real images of ``data`` ("mnist:DIR", "emoji:DIR":
    their held-out splits; "digits"), picked by ``seed``: a ``median`` x ``median`` median filter, then
    ``colors`` flat colours per image (defaults: the dataset's, :data:`SIMULATION`).
    At 28x28 a 3x3 median keeps MNIST's 2-3 px pen lines while smoothing them into blocky strokes
    (5x5 erases them). Images [n, C, size, size] in [0, 1], labels [n]."""
    real, labels = held_out(data, size).pick(n, seed)
    return simulate_from(real, median, colors, data), labels


def simulate_from(real: torch.Tensor, median: int | None = None, colors: int | None = None,
                  data: str = "mnist") -> torch.Tensor:
    """The stroke paintings :func:`simulated` makes of given real images [N, C, H, W] in [0, 1]. Data
    without its own :data:`SIMULATION` entry need both ``median`` and ``colors`` (e.g. the grey or colour
    ones of :data:`SIMULATION_BY_CHANNELS`); UserError without them."""
    m, k = (median, colors) if median and colors else SIMULATION[_dataset(data)]
    return simulate_strokes(real, median=median or m, colors=colors or k).clamp(0, 1)


def package(size: int = 28, folder=None, data: str = "mnist") -> tuple[torch.Tensor, torch.Tensor]:
    """The stroke paintings in ``folder`` (default the package's for ``data``, :data:`PACKAGED`),
    converted to [N, C, size, size] in [0, 1] (C: the data's channels) by
    :func:`sdekit.data.images.load_image`, labelled by the class word that starts each file name (digits:
    zero ... nine; emoji: the first word of the category). UserError if a name starts with no class
    word or the folder holds no PNG."""
    default, words, channels = PACKAGED[_dataset(data)]
    folder = default if folder is None else folder
    files = sorted(Path(folder).glob("*.png"))
    if not files:
        raise UserError(f"{folder}: no stroke paintings (*.png)")
    labels = []
    for f in files:
        word = f.stem.split("_")[0].lower()
        if word not in words:
            raise UserError(f"{f}: the file name must start with a class word ({', '.join(words)})")
        labels.append(words.index(word))
    u = torch.cat([load_image(f, (channels, size, size)).pixels for f in files])
    return u, torch.tensor(labels)


STROKE_SETS = {"pen": pen, "simulated": simulated, "package": package}

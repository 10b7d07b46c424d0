"""Named training recipes: a quick one that shows data-like samples within minutes on a CPU, and each shipped
model's own, read from the ``"train"`` record of its bundle's config.json (the hyper-parameters it was trained
with), so a recipe and the model it made never disagree.

``sdekit train --recipe NAME`` starts from the recipe's values; flags given beside it override them.
"""
from __future__ import annotations

import json

from sdekit.core.errors import UserError
from sdekit.models.bundle import BUNDLED_MODELS

__all__ = ["QUICK", "recipe", "recipe_names"]

# A small U-Net (about 0.15 M parameters) with the recommended VP + EDM loss: on the 16x16 digits at one CPU
# thread about 2000 steps of 32 images take a few minutes and give recognisable digits.
QUICK = {"sde": "vp", "loss": "edm", "precond": "edm", "P_mean": -0.8, "P_std": 1.4, "ch": 16, "ch_mult": (1, 2),
         "num_res_blocks": 1, "attn": (), "dropout": 0.0, "batch_size": 32, "lr": 1e-3, "warmup": 100,
         "ema": 0.995, "steps": 2000, "sample_every": 250, "ckpt_every": 250, "log_every": 25}

NOT_FROM_BUNDLE = ("data", "image_size", "channels", "teacher", "init")   # where and what, not how: the user's


def recipe_names() -> tuple[str, ...]:
    """"quick" and the shipped models whose bundle records how it was trained."""
    return ("quick", *(n for n in BUNDLED_MODELS if _train_record(n) is not None))


def _train_record(name: str) -> dict | None:
    path = BUNDLED_MODELS[name] / "config.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("train")


def recipe(name: str) -> dict:
    """The TrainConfig fields of recipe ``name`` (tuples for the list-valued ones). A shipped model's recipe
    is its recorded hyper-parameters without its data, size and teacher (those of the run at hand), except that
    a distilled model's recipe keeps its teacher. UserError for an unknown name, listing the known ones."""
    if name == "quick":
        return dict(QUICK)
    record = _train_record(name) if name in BUNDLED_MODELS else None
    if record is None:
        raise UserError(f"unknown recipe {name!r}; choose one of {', '.join(recipe_names())}")
    keep = {k: (tuple(v) if isinstance(v, list) else v) for k, v in record.items()
            if k not in NOT_FROM_BUNDLE or (k == "teacher" and v is not None)}
    return keep


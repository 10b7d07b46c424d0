"""The run's log: log.csv (one row per --log-every steps) and TensorBoard when it is installed."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from sdekit.core.io import atomic_write_text

__all__ = ["LOG_FIELDS", "prepare_log", "tensorboard"]

LOG_FIELDS = ["step", "loss", "lr", "grad_norm", "ema_decay", "img_per_s", "elapsed_s"]


def prepare_log(path: Path, start: int) -> None:
    """Keep the rows of steps <= start (a resumed run rewrites what came after its checkpoint)."""
    rows = []
    if start and path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= start]
    text = io.StringIO()
    w = csv.DictWriter(text, LOG_FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, text.getvalue())


def tensorboard(out: Path):
    """A TensorBoard writer when tensorboard is installed, else None (log.csv has the same numbers)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))

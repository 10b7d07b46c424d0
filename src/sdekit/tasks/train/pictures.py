"""Pictures during training: EMA sample grids for images, scatter plots / histograms for toy data."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from sdekit.data.datasets import Dataset, save_grid
from sdekit.core.io import atomic_path
from sdekit.core.denoisers import Denoiser
from sdekit.policy import TRAINING_PICTURES as PICTURES
from sdekit.models.model import Model
from sdekit.solvers.loop import sample

__all__ = ["sample_pictures", "scatter"]


@torch.no_grad()
def sample_pictures(model: Denoiser, data: Dataset, folder: Path, step: int, seed: int = 0) -> list[Path]:
    """Samples of ``model`` (a network's denoiser: sdekit's Preconditioned, or a diffusers UNet2DModel's) by the
    policy's sampler for them (:data:`sdekit.policy.TRAINING_PICTURES`: Heun, 20 steps) at
    ``folder/stepNNNNNNN.png`` (unconditional, where the model has a null label) and ``-class.png`` (one column
    per class, for a class-conditional model); returns the paths written."""
    m = Model(model, {"shape": list(data.shape), "num_classes": model.num_classes,
                      "data_range": list(data.data_range or (-1, 1))})
    g = torch.Generator().manual_seed(seed)
    paths = []
    if data.is_image:
        n = 64
        if m.null_label or not m.num_classes:
            x = sample(m.sde, m.score_fn, (n, *data.shape), sampler=PICTURES.sampler, steps=PICTURES.steps, generator=g)
            paths.append(save_grid(folder / f"step{step:07d}.png", m.to_unit(x), nrow=8))
        if m.num_classes:
            K = m.num_classes
            y = torch.arange(K).repeat(max(1, 80 // K))
            x = sample(m.sde, m.conditional(y), (len(y), *data.shape), sampler=PICTURES.sampler, steps=PICTURES.steps, generator=g)
            paths.append(save_grid(folder / f"step{step:07d}-class.png", m.to_unit(x), nrow=K))
    else:
        x = sample(m.sde, m.score_fn, (2000, *data.shape), sampler=PICTURES.sampler, steps=PICTURES.steps, generator=g)
        paths.append(scatter(folder / f"step{step:07d}.png", data.x[:2000], x))
    return paths


def scatter(path, data_x: torch.Tensor, x: torch.Tensor) -> Path:
    """Data against samples: histograms for 1-D data, a scatter plot of the first two coordinates else."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4, 4))
    if x.shape[1] == 1:
        bins = np.linspace(float(data_x.min()) - 1, float(data_x.max()) + 1, 80)
        ax.hist(data_x[:, 0].numpy(), bins, density=True, alpha=0.5, label="data")
        ax.hist(x[:, 0].clamp(bins[0], bins[-1]).numpy(), bins, density=True, alpha=0.5, label="samples")
        ax.legend()
    else:
        ax.scatter(*data_x[:, :2].T.numpy(), s=1, alpha=0.3, label="data")
        ax.scatter(*x[:, :2].T.numpy(), s=1, alpha=0.3, label="samples")
        ax.set_aspect("equal")
        ax.legend(markerscale=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return Path(path)

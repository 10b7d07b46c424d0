"""A small score network for toy 1-D / 2-D data: an MLP on [x, embed(c_noise)(, embed(label))]."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sdekit.models.nets.embedding import make_embedding


class ScoreMLP(nn.Module):
    """F(x, c_noise, class_labels) for x of shape [B, d] (or [B, ...], flattened)."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, emb_dim: int = 32,
                 embedding: str = "fourier", embedding_scale: float | None = None, num_classes: int = 0):
        super().__init__()
        self.kwargs = dict(dim=dim, hidden=hidden, depth=depth, emb_dim=emb_dim, embedding=embedding,
                           embedding_scale=embedding_scale, num_classes=num_classes)
        self.num_classes = num_classes
        self.noise_embed = make_embedding(embedding, emb_dim, embedding_scale)
        self.class_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        layers, c = [], dim + emb_dim
        for _ in range(depth):
            layers.append(nn.Linear(c, hidden))
            c = hidden
        self.hidden = nn.ModuleList(layers)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def config(self) -> dict:
        return {"type": "mlp", **self.kwargs}

    def check_shape(self, shape: tuple) -> None:
        """ValueError unless data of ``shape`` has ``dim`` numbers (the MLP flattens a sample)."""
        if math.prod(shape) != self.kwargs["dim"]:
            raise ValueError(f"data shape {list(shape)} does not fit the MLP, which takes {self.kwargs['dim']} numbers")

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None):
        B, dtype = x.shape[0], self.out.weight.dtype          # the whole forward in the weights' dtype
        emb = self.noise_embed(noise_labels.reshape(-1).expand(B)).to(dtype)
        if self.class_embed is not None:
            if class_labels is None:
                class_labels = torch.full((B,), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.class_embed(class_labels.long().reshape(-1).expand(B))
        h = torch.cat([x.reshape(B, -1).to(dtype), emb], dim=1)
        for layer in self.hidden:
            h = F.silu(layer(h))
        return self.out(h).reshape(x.shape)

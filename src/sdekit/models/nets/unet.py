"""A U-Net score network in the spirit of NCSN++ / DDPM++ (Song et al. 2021, Ho et al. 2020).

F(x, c_noise, class_labels) -> tensor shaped like x. Residual blocks with GroupNorm and SiLU, the
noise embedding added in every block, self-attention at chosen resolutions, skip connections
rescaled by 1/sqrt(2) and zero-initialised output layers (DDPM++). An optional class embedding
has one extra "null" row (index num_classes) meaning "no label", so the same network is both
conditional and unconditional (classifier-free guidance, Ho & Salimans 2022).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sdekit.models.nets.embedding import NoiseEmbedding

SQRT_HALF = 1 / math.sqrt(2)


def _groups(c: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if c % g == 0 and c // g >= 2:
            return g
    return 1


def _zero(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.drop = nn.GroupNorm(_groups(c_out), c_out), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return (self.skip(x) + h) * SQRT_HALF


class AttnBlock(nn.Module):
    def __init__(self, c: int, head_dim: int = 32):
        super().__init__()
        self.heads = max(1, c // head_dim)
        self.norm, self.qkv = nn.GroupNorm(_groups(c), c), nn.Conv2d(c, 3 * c, 1)
        self.proj = _zero(nn.Conv2d(c, c, 1))

    def forward(self, x, emb=None):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return (x + self.proj(h)) * SQRT_HALF


class Down(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.conv(x)


class Up(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Score U-Net. ``resolution`` is the input height/width (a multiple of 2^(levels-1))."""

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, resolution: int = 16,
                 ch: int = 64, ch_mult=(1, 2, 2), num_res_blocks: int = 2, attn_resolutions=(8,),
                 dropout: float = 0.1, embedding: str = "fourier", embedding_scale: float | None = None,
                 num_classes: int = 0):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"UNet takes 1 or 3 image channels, got {in_channels}")
        if resolution % 2 ** (len(ch_mult) - 1):
            raise ValueError(f"resolution {resolution} is not divisible by 2^{len(ch_mult) - 1}")
        self.kwargs = dict(in_channels=in_channels, out_channels=out_channels or in_channels,
                           resolution=resolution, ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
                           attn_resolutions=list(attn_resolutions), dropout=dropout, embedding=embedding,
                           embedding_scale=embedding_scale, num_classes=num_classes)
        self.num_classes = num_classes
        emb = 4 * ch
        self.noise_embed = NoiseEmbedding(embedding, ch, emb, embedding_scale)
        self.class_embed = nn.Embedding(num_classes + 1, emb) if num_classes else None   # row num_classes = null

        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down, skips, c, res = nn.ModuleList(), [ch], ch, resolution
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(c, ch * mult, emb, dropout))
                c = ch * mult
                if res in attn_resolutions:
                    self.down.append(AttnBlock(c))
                skips.append(c)
            if level < len(ch_mult) - 1:
                self.down.append(Down(c))
                res //= 2
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, emb, dropout), AttnBlock(c), ResBlock(c, c, emb, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), ch * mult, emb, dropout))
                c = ch * mult
                if res in attn_resolutions:
                    self.up.append(AttnBlock(c))
            if level > 0:
                self.up.append(Up(c))
                res *= 2
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = _zero(nn.Conv2d(c, out_channels or in_channels, 3, padding=1))

    def config(self) -> dict:
        return {"type": "unet", **self.kwargs}

    def check_shape(self, shape: tuple) -> None:
        """ValueError unless data of ``shape`` (C, H, W) is what this network takes:
        C = in_channels and H = W = resolution."""
        C, R = self.kwargs["in_channels"], self.kwargs["resolution"]
        if tuple(shape) != (C, R, R):
            raise ValueError(f"data shape {list(shape)} does not fit the U-Net, which takes [{C}, {R}, {R}]")

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None):
        """F [B, C, H, W] in the weights' dtype (x is cast to it; the noise labels stay precise)."""
        x = x.to(self.conv_in.weight.dtype)
        emb = self.noise_embed(noise_labels.reshape(-1).expand(x.shape[0]))
        if self.class_embed is not None:
            if class_labels is None:
                class_labels = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.class_embed(class_labels.long().reshape(-1).expand(x.shape[0]))
        emb = F.silu(emb)
        h = self.conv_in(x)
        hs = [h]
        for m in self.down:
            h = m(h, emb)
            if not isinstance(m, AttnBlock):
                hs.append(h)
            else:
                hs[-1] = h
        for m in self.mid:
            h = m(h, emb)
        for m in self.up:
            if isinstance(m, ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = m(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))

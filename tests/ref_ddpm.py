"""A minimal re-implementation of the DDPM network in the layout of SDEdit's ``models/diffusion.py``
(the same module names, shapes and computation: Ho et al.'s U-Net), used only to test that
checkpoints written by it convert to a UNet2DModel computing the same function."""
import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    emb = t.float()[:, None] * freq[None, :]
    return torch.cat([emb.sin(), emb.cos()], 1)


def norm(c):
    return nn.GroupNorm(32, c, eps=1e-6)


def swish(x):
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, temb):
        super().__init__()
        self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb, cout)
        self.norm2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x, temb):
        h = self.conv1(swish(self.norm1(x))) + self.temb_proj(swish(temb))[:, :, None, None]
        h = self.conv2(swish(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q = self.q(h).reshape(b, c, -1).permute(0, 2, 1)
        k = self.k(h).reshape(b, c, -1)
        w = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)
        v = self.v(h).reshape(b, c, -1)
        return x + self.proj_out(torch.bmm(v, w.permute(0, 2, 1)).reshape(b, c, hh, ww))


class Down(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(nn.functional.pad(x, (0, 1, 0, 1)))


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


class Model(nn.Module):
    """DDPM's U-Net: ``Model(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, channels)``."""

    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, resolution, channels=3):
        super().__init__()
        self.ch, self.nrb, self.levels = ch, num_res_blocks, len(ch_mult)
        temb = 4 * ch
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, temb), nn.Linear(temb, temb)])
        self.conv_in = nn.Conv2d(channels, ch, 3, padding=1)
        in_mult, res, self.down = (1,) + tuple(ch_mult), resolution, nn.ModuleList()
        for i in range(self.levels):
            level, cin = nn.Module(), ch * in_mult[i]
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                level.block.append(ResnetBlock(cin, ch * ch_mult[i], temb))
                cin = ch * ch_mult[i]
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(cin))
            if i != self.levels - 1:
                level.downsample = Down(cin)
                res //= 2
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = ResnetBlock(cin, cin, temb), AttnBlock(cin), ResnetBlock(cin, cin, temb)
        self.up = nn.ModuleList()
        for i in reversed(range(self.levels)):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for j in range(num_res_blocks + 1):
                skip = ch * (in_mult[i] if j == num_res_blocks else ch_mult[i])
                level.block.append(ResnetBlock(cin + skip, ch * ch_mult[i], temb))
                cin = ch * ch_mult[i]
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(cin))
            if i != 0:
                level.upsample = Up(cin)
                res *= 2
            self.up.insert(0, level)
        self.norm_out, self.conv_out = norm(cin), nn.Conv2d(cin, channels, 3, padding=1)

    def forward(self, x, t):
        emb = timestep_embedding(t, self.ch).to(self.conv_in.weight.dtype)      # float32, then the model's dtype
        temb = self.temb.dense[1](swish(self.temb.dense[0](emb)))
        hs = [self.conv_in(x)]
        for i in range(self.levels):
            for j in range(self.nrb):
                h = self.down[i].block[j](hs[-1], temb)
                if len(self.down[i].attn):
                    h = self.down[i].attn[j](h)
                hs.append(h)
            if i != self.levels - 1:
                hs.append(self.down[i].downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for i in reversed(range(self.levels)):
            for j in range(self.nrb + 1):
                h = self.up[i].block[j](torch.cat([h, hs.pop()], 1), temb)
                if len(self.up[i].attn):
                    h = self.up[i].attn[j](h)
            if i != 0:
                h = self.up[i].upsample(h)
        return self.conv_out(swish(self.norm_out(h)))

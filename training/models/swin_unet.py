"""Swin U-Net (Cao et al. 2021): a U-shaped encoder-decoder of Swin Transformer blocks
(window attention, alternately shifted by half a window; Liu et al. 2021) with patch merging
down and patch expanding up, skip connections concatenated and projected."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int = 96  # Swin-T / Swin-Unet
    depths: tuple[int, ...] = (2, 2, 2, 2)
    heads: tuple[int, ...] = (3, 6, 12, 24)
    window: int = 8  # Swin-Unet uses 7 on 224 px inputs; 8 divides the maps of 512 px tiles
    mlp_ratio: float = 4.0


PRESETS = {"paper": SwinConfig(),
           "tiny": SwinConfig(embed_dim=32, heads=(1, 2, 4, 8))}


class Mlp(nn.Sequential):
    def __init__(self, dim, ratio):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


@lru_cache(maxsize=64)
def _shift_mask(h: int, w: int, hp: int, wp: int, k: int, s: int) -> torch.Tensor:
    """Additive (windows, k*k, k*k) mask blocking attention between tokens of different
    shifted regions and towards padding (Swin's construction, extended to padded maps).
    -1e4 rather than Swin's -100: exp(-100) still leaks a denormal weight in float32, while
    -1e4 gives exactly 0 and stays finite in fp16 (a fully blocked padded query then attends
    uniformly instead of producing NaN)."""
    region = torch.zeros(hp, wp)
    if s:
        cuts = (slice(0, -k), slice(-k, -s), slice(-s, None))
        n = 0
        for a in cuts:
            for b in cuts:
                region[a, b] = n
                n += 1
    valid = torch.zeros(hp, wp, dtype=torch.bool)
    valid[:h, :w] = True
    if s:
        valid = torch.roll(valid, (-s, -s), (0, 1))
    region = region.reshape(hp // k, k, wp // k, k).permute(0, 2, 1, 3).reshape(-1, k * k)
    valid = valid.reshape(hp // k, k, wp // k, k).permute(0, 2, 1, 3).reshape(-1, k * k)
    blocked = (region[:, :, None] != region[:, None, :]) | ~valid[:, None, :]
    return blocked.float() * -1e4


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: bool, mlp_ratio: float):
        super().__init__()
        self.heads, self.window, self.shift = heads, window, shift
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        k = window
        self.rel_bias = nn.Parameter(torch.zeros((2 * k - 1) ** 2, heads))
        nn.init.trunc_normal_(self.rel_bias, std=0.02)
        c = torch.stack(torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")).flatten(1)
        rel = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0) + (k - 1)
        self.register_buffer("rel_index", rel[..., 0] * (2 * k - 1) + rel[..., 1],
                             persistent=False)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C)
        b, h, w, c = x.shape
        k = self.window
        # A map no bigger than the window is one window: shifting it would change nothing.
        s = k // 2 if self.shift and min(h, w) > k else 0
        hp, wp = -(-h // k) * k, -(-w // k) * k
        y = F.pad(self.norm1(x), (0, 0, 0, wp - w, 0, hp - h))
        if s:
            y = torch.roll(y, (-s, -s), (1, 2))
        win = y.reshape(b, hp // k, k, wp // k, k, c).permute(0, 1, 3, 2, 4, 5)
        win = win.reshape(-1, k * k, c)
        qkv = self.qkv(win).reshape(win.shape[0], k * k, 3, self.heads, c // self.heads)
        q, kk, v = qkv.permute(2, 0, 3, 1, 4)
        bias = self.rel_bias[self.rel_index.reshape(-1)].reshape(k * k, k * k, -1)
        bias = bias.permute(2, 0, 1)[None]  # (1, heads, k*k, k*k)
        mask = _shift_mask(h, w, hp, wp, k, s).to(x.device, q.dtype)
        attn_mask = (bias + mask[:, None]).repeat(b, 1, 1, 1)  # windows are batch-major
        out = F.scaled_dot_product_attention(q, kk, v, attn_mask=attn_mask.to(q.dtype))
        out = self.proj(out.transpose(1, 2).reshape(-1, k * k, c))
        out = out.reshape(b, hp // k, wp // k, k, k, c).permute(0, 1, 3, 2, 4, 5)
        out = out.reshape(b, hp, wp, c)
        if s:
            out = torch.roll(out, (s, s), (1, 2))
        x = x + out[:, :h, :w]
        return x + self.mlp(self.norm2(x))


def _stage(dim, depth, heads, cfg):
    return nn.Sequential(*(SwinBlock(dim, heads, cfg.window, i % 2 == 1, cfg.mlp_ratio)
                           for i in range(depth)))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (4C), normalized, projected to 2C: half the resolution."""

    def __init__(self, dim):
        super().__init__()
        self.norm, self.reduce = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      -1)
        return self.reduce(self.norm(x))


class PatchExpand(nn.Module):
    """A linear layer to scale^2 * C_out channels rearranged into a scale x larger map."""

    def __init__(self, dim, out_dim, scale):
        super().__init__()
        self.scale, self.out_dim = scale, out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).reshape(b, h, w, s, s, self.out_dim)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, self.out_dim)
        return self.norm(x)


class SwinUNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int = 2, cfg: SwinConfig = SwinConfig()):
        super().__init__()
        dims = [cfg.embed_dim * 2 ** i for i in range(4)]
        self.embed = nn.Conv2d(in_channels, dims[0], 4, 4)
        self.embed_norm = nn.LayerNorm(dims[0])
        self.encoder = nn.ModuleList(_stage(d, n, h, cfg)
                                     for d, n, h in zip(dims, cfg.depths, cfg.heads))
        self.merges = nn.ModuleList(PatchMerging(d) for d in dims[:3])
        self.bottleneck_norm = nn.LayerNorm(dims[3])
        self.expands = nn.ModuleList(PatchExpand(dims[i + 1], dims[i], 2) for i in range(3))
        self.concat = nn.ModuleList(nn.Linear(2 * d, d) for d in dims[:3])
        self.decoder = nn.ModuleList(_stage(d, n, h, cfg)
                                     for d, n, h in zip(dims[:3], cfg.depths, cfg.heads))
        self.final_norm = nn.LayerNorm(dims[0])
        self.final_expand = PatchExpand(dims[0], dims[0], 4)
        self.head = nn.Conv2d(dims[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed_norm(self.embed(x).permute(0, 2, 3, 1))  # (B, H/4, W/4, C)
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            if i < 3:
                skips.append(x)
                x = self.merges[i](x)
        x = self.bottleneck_norm(x)
        for i in (2, 1, 0):
            x = self.expands[i](x)
            x = self.decoder[i](self.concat[i](torch.cat([x, skips[i]], -1)))
        x = self.final_expand(self.final_norm(x))
        return self.head(x.permute(0, 3, 1, 2))

"""LGT-UNet: the paper's Transformer U-Net (Peng et al. 2023, section 2.3), in plain PyTorch.

Encoder: Twins-SVT-style Local-Global Transformer (Chu et al. 2021): four stages with patch
embeddings of stride 4, 8, 16, 32; in each stage locally-grouped self-attention (LSA) and global
sub-sampled attention (GSA) alternate; a conditional position encoding (PEG, a depth-wise 3x3
convolution) follows the first block of each stage (CPVT). Decoder: UNetFormer-style (Wang et
al. 2022) Local-Global CNN blocks with weighted skip fusion and the Feature Refinement Head.
See ../shared/MODEL.md for the shapes this follows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import BasicBlock, conv_bn
from .blocks import conv_bn_relu as _conv_bn_relu


@dataclass(frozen=True)
class LGTConfig:
    widths: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (2, 2, 10, 4)
    heads: tuple[int, ...] = (2, 4, 8, 16)
    mlp_ratio: float = 4.0
    window: int = 7  # LSA window: Twins-SVT's, so its published weights apply unchanged
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)  # GSA sub-sampling per stage
    patterns: tuple[str, ...] = ("LG", "LG", "LG", "LG")  # Table 3 ablation: LL, LG, GG
    position: str = "cpe"  # "cpe" (paper) or "ape" (learned absolute embedding, ablation)
    decode_dim: int = 64  # UNetFormer's decoder width
    decoder: str = "lgcb"  # Table 3 ablation: "lgcb" (paper), "cnn" (ResNet blocks), "transformer"
    decoder_window: int = 8  # UNetFormer's
    decoder_heads: int = 8  # UNetFormer's decoder blocks
    dropout: float = 0.1


PRESETS = {
    # Widths and strides as the paper's text states them (C1 = 64 ... 512): Twins-SVT-S.
    "paper": LGTConfig(),
    # Twins-SVT-L widths: the size whose total matches the paper's Table 3 (107.5 M).
    "paper-l": LGTConfig(widths=(128, 256, 512, 1024), depths=(2, 2, 18, 2),
                         heads=(4, 8, 16, 32), decode_dim=256),
    # Twins-SVT-B: between the two, for pretrained Twins-SVT-B weights.
    "paper-b": LGTConfig(widths=(96, 192, 384, 768), depths=(2, 2, 18, 2),
                         heads=(3, 6, 12, 24)),
    # A CPU-sized model for the demo and CI: same blocks, fewer and narrower.
    "tiny": LGTConfig(widths=(32, 64, 128, 256), depths=(2, 2, 2, 2), heads=(1, 2, 4, 8),
                      decode_dim=32, decoder_heads=4),
}
# The reference Twins-SVT encoders whose weights each preset takes (timm names).
TWINS_OF_PRESET = {"paper": "twins_svt_small", "paper-b": "twins_svt_base",
                   "paper-l": "twins_svt_large"}


# --------------------------------------------------------------------------------------------
# Encoder: Twins-SVT (Chu et al. 2021) as timm implements it. Module names are timm's, so a
# published Twins-SVT state dict loads into `encoder.` unchanged; given the same weights the
# stage outputs are the reference's (tests/training/test_pretrained.py).

BLOCK_EPS = 1e-6  # Twins' norm_layer for blocks and the final norm; embeddings keep 1e-5


def _to_map(x, h, w):
    return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)


def _to_tokens(x):
    return x.flatten(2).transpose(1, 2)


class PatchEmbed(nn.Module):
    def __init__(self, cin, cout, patch):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, patch, patch)
        self.norm = nn.LayerNorm(cout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(_to_tokens(x)), h, w


class LocallyGroupedAttention(nn.Module):
    """LSA: multi-head self-attention inside non-overlapping k x k windows only. Maps not
    divisible by k are zero-padded at the right and bottom, and the padding takes part in
    attention, as in the reference."""

    def __init__(self, dim, heads, window):
        super().__init__()
        self.heads, self.k = heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        k = self.k
        m = x.reshape(b, h, w, c)
        ph, pw = (-h) % k, (-w) % k
        if ph or pw:
            m = F.pad(m, (0, 0, 0, pw, 0, ph))
        hh, ww = (h + ph) // k, (w + pw) // k
        win = m.reshape(b, hh, k, ww, k, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, k * k, c)
        qkv = self.qkv(win).reshape(win.shape[0], k * k, 3, self.heads, c // self.heads)
        q, kk, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kk, v)
        out = out.transpose(1, 2).reshape(b, hh, ww, k, k, c)
        out = out.permute(0, 1, 3, 2, 4, 5).reshape(b, hh * k, ww * k, c)
        return self.proj(out[:, :h, :w].reshape(b, n, c))


class GlobalSubsampledAttention(nn.Module):
    """GSA: every token queries keys/values from one representative per r x r window (a
    strided convolution, so a map not divisible by r loses its last partial row/column of
    windows, as in the reference)."""

    def __init__(self, dim, heads, sr):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, sr, sr) if sr > 1 else None
        self.norm = nn.LayerNorm(dim) if sr > 1 else None

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        d = c // self.heads
        q = self.q(x).reshape(b, n, self.heads, d).transpose(1, 2)
        src = x if self.sr is None else self.norm(_to_tokens(self.sr(_to_map(x, h, w))))
        kv = self.kv(src).reshape(b, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, ratio):
        super().__init__()
        self.fc1, self.act, self.fc2 = (nn.Linear(dim, int(dim * ratio)), nn.GELU(),
                                        nn.Linear(int(dim * ratio), dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    def __init__(self, dim, heads, kind, cfg: LGTConfig, sr):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=BLOCK_EPS), nn.LayerNorm(dim, eps=BLOCK_EPS)
        self.attn = (LocallyGroupedAttention(dim, heads, cfg.window) if kind == "L"
                     else GlobalSubsampledAttention(dim, heads, sr))
        self.mlp = Mlp(dim, cfg.mlp_ratio)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x))


class PosConv(nn.Module):
    """PEG: x + DWConv3x3(x) on the token map; lets the model take any input size."""

    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim))

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        m = _to_map(x, h, w)
        return _to_tokens(m + self.proj(m))


class AbsPosEmbed(nn.Module):
    """Learned absolute position embedding (Table 3's 'PE' ablation), resized to the map."""

    def __init__(self, dim, ref=16):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, dim, ref, ref))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        p = F.interpolate(self.pos, size=(h, w), mode="bilinear", align_corners=False)
        return x + _to_tokens(p)


class LGTEncoder(nn.Module):
    """Four stages; returns the maps each stage passes on (stages 1-3 un-normalized, as the
    reference passes them to the next stage) and the last one after the final LayerNorm."""

    def __init__(self, in_channels: int, cfg: LGTConfig):
        super().__init__()
        self.patch_embeds, self.blocks, self.pos_block = nn.ModuleList(), nn.ModuleList(), \
            nn.ModuleList()
        cin = in_channels
        for s, (dim, depth, heads, sr, pattern) in enumerate(zip(
                cfg.widths, cfg.depths, cfg.heads, cfg.sr_ratios, cfg.patterns)):
            self.patch_embeds.append(PatchEmbed(cin, dim, 4 if s == 0 else 2))
            kinds = [pattern[i % len(pattern)] for i in range(depth)]
            self.blocks.append(nn.ModuleList(TransformerBlock(dim, heads, k, cfg, sr)
                                             for k in kinds))
            self.pos_block.append(PosConv(dim) if cfg.position == "cpe" else AbsPosEmbed(dim))
            cin = dim
        self.norm = nn.LayerNorm(cin, eps=BLOCK_EPS)

    def forward(self, x: Tensor) -> Tensor:
        feats = []
        for s, (embed, blocks, pos) in enumerate(zip(self.patch_embeds, self.blocks,
                                                     self.pos_block)):
            x, h, w = embed(x)
            for i, blk in enumerate(blocks):
                x = blk(x, h, w)
                if i == 0:
                    x = pos(x, h, w)
            if s == len(self.blocks) - 1:
                x = self.norm(x)
            x = _to_map(x, h, w)
            feats.append(x)
        return feats


# --------------------------------------------------------------------------------------------
# Decoder (UNetFormer)


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return _conv_bn_relu(cin, cout, k, relu=nn.ReLU6)  # UNetFormer uses ReLU6


def separable_conv_bn(cin: int, cout: int, k: int) -> nn.Sequential:
    """Depth-wise k x k, BN, point-wise 1x1; padding (k - 1) // 2 as UNetFormer's."""
    return nn.Sequential(nn.Conv2d(cin, cin, k, 1, (k - 1) // 2, groups=cin, bias=False),
                         nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 1, bias=False))


class GlobalLocalAttention(nn.Module):
    """UNetFormer's GLA, as the authors' code computes it (module names are theirs): window
    attention with relative position bias, a cross-shaped context by column and row average
    pooling over the attention output, a local convolution branch, and a depth-wise
    separable w x w projection. A map not divisible by the window is mirror-padded (edge
    pixels repeated where the map is too small to mirror)."""

    def __init__(self, dim, heads, window):
        super().__init__()
        self.heads, self.ws = heads, window
        k = window
        self.local1, self.local2 = conv_bn(dim, dim, 3), conv_bn(dim, dim, 1)
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * k - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (k - 1)
        self.register_buffer("rel_index", rel[..., 0] * (2 * k - 1) + rel[..., 1], persistent=False)
        # k positions, padding k/2 - 1, over a map mirror-padded by one pixel: the size is kept,
        # and the zero padding counts in the mean, as in the reference.
        self.attn_x = nn.AvgPool2d((k, 1), 1, (k // 2 - 1, 0))
        self.attn_y = nn.AvgPool2d((1, k), 1, (0, k // 2 - 1))
        self.proj = separable_conv_bn(dim, dim, k)  # after a one-pixel mirror pad: size kept

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        local = self.local2(x) + self.local1(x)
        k = self.ws
        xp = _mirror_pad(x, (-w) % k, (-h) % k)
        hp, wp = xp.shape[-2:]
        d = c // self.heads
        qkv = self.qkv(xp).reshape(b, 3, self.heads, d, hp // k, k, wp // k, k)
        qkv = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, -1, self.heads, k * k, d)
        table = self.relative_position_bias_table
        bias = table[self.rel_index.reshape(-1)].reshape(k * k, k * k, -1).permute(2, 0, 1)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias.to(qkv.dtype))
        out = out.reshape(b, hp // k, wp // k, self.heads, k, k, d)
        out = out.permute(0, 3, 6, 1, 4, 2, 5).reshape(b, c, hp, wp)[:, :, :h, :w]
        out = self.attn_x(_mirror_pad(out, 0, 1)) + self.attn_y(_mirror_pad(out, 1, 0)) + local
        return self.proj(_mirror_pad(out, 1, 1))


def _mirror_pad(x, right: int, bottom: int):
    """Mirror-pad at the right and bottom, or repeat edge pixels where the map is too small
    to mirror (the reference fails there)."""
    if not (right or bottom):
        return x
    small = right >= x.shape[-1] or bottom >= x.shape[-2]
    return F.pad(x, (0, right, 0, bottom), mode="replicate" if small else "reflect")


class LGCB(nn.Module):
    """Local-Global CNN block: x + GLA(BN(x)); x + MLP(BN(x))."""

    def __init__(self, dim, heads, window, mlp_ratio=4.0):
        super().__init__()
        self.norm1, self.norm2 = nn.BatchNorm2d(dim), nn.BatchNorm2d(dim)
        self.attn = GlobalLocalAttention(dim, heads, window)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.ReLU6(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class WeightedFusion(nn.Module):
    """x = w0 * ConvBN1x1(skip) + w1 * up(x), w = ReLU(params) normalized, then ConvBNReLU."""

    def __init__(self, skip_dim, dim):
        super().__init__()
        self.pre = conv_bn(skip_dim, dim, 1)
        self.weights = nn.Parameter(torch.ones(2))
        self.post = conv_bn_relu(dim, dim, 3)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        w = F.relu(self.weights)
        w = w / (w.sum() + 1e-8)
        return self.post(w[0] * self.pre(skip) + w[1] * x)


class FeatureRefinementHead(nn.Module):
    """Spatial attention (depth-wise 3x3) + channel attention (reduction 4), a depth-wise
    separable projection, a 1x1 shortcut, ReLU."""

    def __init__(self, skip_dim, dim):
        super().__init__()
        self.fuse = WeightedFusion(skip_dim, dim)
        self.spatial = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim), nn.Sigmoid())
        self.channel = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, dim // 4, 1),
                                     nn.ReLU(), nn.Conv2d(dim // 4, dim, 1), nn.Sigmoid())
        self.shortcut = conv_bn(dim, dim, 1)
        self.proj = separable_conv_bn(dim, dim, 3)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.fuse(x, skip)
        out = self.spatial(x) * x + self.channel(x) * x
        return F.relu(self.proj(out) + self.shortcut(x))


class MapTransformerBlock(nn.Module):
    """The encoder's LSA Transformer block on a decoder map (the 'Transformer' decoder
    ablation of Table 3)."""

    def __init__(self, dim, heads, window):
        super().__init__()
        self.block = TransformerBlock(dim, heads, "L", LGTConfig(window=window), 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        return _to_map(self.block(_to_tokens(x), h, w), h, w)


def decoder_block(kind: str, dim: int, heads: int, window: int) -> nn.Module:
    """One block of the decoder: the paper's LGCB, or a Table 3 ablation's.

    Raises:
        ValueError: an unknown kind. A bug in the registry or a preset, not a user's input:
            users choose a model by name, which training.models.resolve checks first (an
            InputError naming --model).
    """
    if kind == "lgcb":
        return LGCB(dim, heads, window)
    if kind == "cnn":  # a ResNet-18 residual block
        return BasicBlock(dim, dim)
    if kind == "transformer":
        return MapTransformerBlock(dim, heads, window)
    raise ValueError(f"decoder {kind!r}: use lgcb, cnn or transformer")


class UNetFormerDecoder(nn.Module):
    def __init__(self, widths, dim, heads, window, num_classes, dropout, kind="lgcb"):
        super().__init__()
        self.pre4 = conv_bn(widths[3], dim, 1)
        self.b4 = decoder_block(kind, dim, heads, window)
        self.fuse3, self.b3 = WeightedFusion(widths[2], dim), decoder_block(kind, dim, heads,
                                                                            window)
        self.fuse2, self.b2 = WeightedFusion(widths[1], dim), decoder_block(kind, dim, heads,
                                                                            window)
        self.frh = FeatureRefinementHead(widths[0], dim)
        self.head = nn.Sequential(conv_bn_relu(dim, dim, 3), nn.Dropout2d(dropout),
                                  nn.Conv2d(dim, num_classes, 1))

    def forward(self, feats: list[Tensor], size: tuple[int, int]) -> Tensor:
        e1, e2, e3, e4 = feats
        x = self.b4(self.pre4(e4))
        x = self.b3(self.fuse3(x, e3))
        x = self.b2(self.fuse2(x, e2))
        x = self.head(self.frh(x, e1))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class LGTUNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int = 2, cfg: LGTConfig = LGTConfig()):
        super().__init__()
        self.encoder = LGTEncoder(in_channels, cfg)
        self.decoder = UNetFormerDecoder(cfg.widths, cfg.decode_dim, cfg.decoder_heads,
                                         cfg.decoder_window,
                                         num_classes, cfg.dropout, cfg.decoder)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x), x.shape[-2:])

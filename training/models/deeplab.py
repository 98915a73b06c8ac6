"""DeepLab V3+ (Chen et al. 2018) and Attention DeepLab V3+ (Chu et al. 2022: CBAM in a
branch parallel to the ASPP), on a ResNet backbone at output stride 16."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import conv_bn_relu
from .resnet import ResNet


@dataclass(frozen=True)
class DeepLabConfig:
    backbone: str = "resnet50"  # DeepLab V3+'s usual backbone
    width: int = 64  # ResNet stem width
    aspp_dim: int = 256
    rates: tuple[int, ...] = (6, 12, 18)  # for output stride 16
    low_level_dim: int = 48  # projection of the stride-4 feature (Chen et al. 2018)
    cbam: bool = False  # the attention variant
    dropout: float = 0.1


PRESETS = {"paper": DeepLabConfig(),
           "tiny": DeepLabConfig(backbone="resnet18", width=16, aspp_dim=64, low_level_dim=16)}
ATTENTION_PRESETS = {k: DeepLabConfig(**{**v.__dict__, "cbam": True}) for k, v in PRESETS.items()}


class ASPP(nn.Module):
    def __init__(self, cin: int, dim: int, rates):
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(cin, dim, 1)] +
                                      [conv_bn_relu(cin, dim, 3, 1, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, dim, 1, bias=False),
                                  nn.ReLU())
        self.out_dim = dim * (len(rates) + 2)

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear",
                               align_corners=False)
        return torch.cat([b(x) for b in self.branches] + [pooled], 1)


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel, then spatial."""

    def __init__(self, dim: int, reduction: int = 16, kernel: int = 7):
        super().__init__()
        hidden = max(1, dim // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, dim, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        ch = torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(x, 1)) +
                           self.mlp(F.adaptive_max_pool2d(x, 1)))
        x = x * ch
        sp = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial(sp))


class DeepLabV3Plus(nn.Module):
    def __init__(self, in_channels: int, num_classes: int = 2,
                 cfg: DeepLabConfig = DeepLabConfig()):
        super().__init__()
        self.backbone = ResNet(in_channels, cfg.backbone, cfg.width, output_stride=16)
        low_ch, high_ch = self.backbone.channels
        self.aspp = ASPP(high_ch, cfg.aspp_dim, cfg.rates)
        fused = self.aspp.out_dim
        self.cbam = CBAM(high_ch) if cfg.cbam else None
        if cfg.cbam:
            fused += high_ch  # concatenated with the ASPP output before the projection
        self.project = nn.Sequential(conv_bn_relu(fused, cfg.aspp_dim, 1),
                                     nn.Dropout(cfg.dropout))
        self.low = conv_bn_relu(low_ch, cfg.low_level_dim, 1)
        self.decoder = nn.Sequential(conv_bn_relu(cfg.aspp_dim + cfg.low_level_dim,
                                                  cfg.aspp_dim),
                                     conv_bn_relu(cfg.aspp_dim, cfg.aspp_dim),
                                     nn.Conv2d(cfg.aspp_dim, num_classes, 1))

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        low, high = self.backbone(x)
        ctx = self.aspp(high)
        if self.cbam is not None:
            ctx = torch.cat([ctx, self.cbam(high)], 1)
        ctx = F.interpolate(self.project(ctx), size=low.shape[-2:], mode="bilinear",
                            align_corners=False)
        out = self.decoder(torch.cat([ctx, self.low(low)], 1))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)

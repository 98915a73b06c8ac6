"""U-Net (Ronneberger et al. 2015): four poolings and four up-convolutions, double 3x3
convolutions with batch normalization (a now-standard addition), widths 64-1024."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .blocks import DoubleConv


@dataclass(frozen=True)
class UNetConfig:
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024)


PRESETS = {"paper": UNetConfig(), "tiny": UNetConfig(widths=(16, 32, 64, 128, 256))}


class UNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int = 2, cfg: UNetConfig = UNetConfig()):
        super().__init__()
        w = cfg.widths
        self.down = nn.ModuleList([DoubleConv(in_channels, w[0])] +
                                  [DoubleConv(a, b) for a, b in zip(w[:-1], w[1:])])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, 2) for a, b in zip(w[:-1], w[1:]))
        self.merge = nn.ModuleList(DoubleConv(2 * a, a) for a in w[:-1])
        self.head = nn.Conv2d(w[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(reversed(self.up), reversed(self.merge)):
            x = merge(torch.cat([skips.pop(), up(x)], 1))
        return self.head(x)

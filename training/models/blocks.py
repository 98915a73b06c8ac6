"""Convolution building blocks shared by the CNN models (one home for conv-BN-ReLU)."""
from __future__ import annotations

from torch import nn


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, dilation: int = 1,
            groups: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation, groups, bias=False),
                         nn.BatchNorm2d(cout))


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1,
                 relu=nn.ReLU) -> nn.Sequential:
    return nn.Sequential(*conv_bn(cin, cout, k, stride, dilation), relu())


class DoubleConv(nn.Sequential):
    """U-Net's unit: two 3x3 conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout))


class BasicBlock(nn.Module):
    """ResNet-18/34 residual block (He et al. 2016)."""
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(conv_bn_relu(cin, planes, 3, stride, dilation),
                                  conv_bn(planes, cout, 3, 1, dilation))
        self.short = (conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout
                      else nn.Identity())
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.body(x) + self.short(x))


class Bottleneck(nn.Module):
    """ResNet-50/101 bottleneck block."""
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(conv_bn_relu(cin, planes, 1), conv_bn_relu(planes, planes, 3,
                                                                             stride, dilation),
                                  conv_bn(planes, cout, 1))
        self.short = (conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout
                      else nn.Identity())
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.body(x) + self.short(x))

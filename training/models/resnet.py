"""ResNet backbones written here (torchvision is unavailable with the CPU torch wheel):
any number of input bands, output stride 16 or 32 by dilating the last stage."""
from __future__ import annotations

from torch import nn

from .blocks import BasicBlock, Bottleneck, conv_bn_relu

# name -> (block, blocks per stage)
RESNETS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6, 3)),
           "resnet50": (Bottleneck, (3, 4, 6, 3)), "resnet101": (Bottleneck, (3, 4, 23, 3))}


class ResNet(nn.Module):
    """Returns the stride-4 (layer1) and the deepest (layer4) feature maps."""

    def __init__(self, in_channels: int, name: str = "resnet50", width: int = 64,
                 output_stride: int = 16):
        super().__init__()
        block, depths = RESNETS[name]
        self.stem = nn.Sequential(conv_bn_relu(in_channels, width, 7, 2),
                                  nn.MaxPool2d(3, 2, 1))
        cin, layers, dilation = width, [], 1
        for i, n in enumerate(depths):
            stride = 1 if i == 0 else 2
            if output_stride == 16 and i == 3:  # keep stride 16: dilate instead (DeepLab)
                stride, dilation = 1, 2
            planes = width * 2 ** i
            blocks = [block(cin, planes, stride, dilation)]
            cin = planes * block.expansion
            blocks += [block(cin, planes, 1, dilation) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
        self.layers = nn.ModuleList(layers)
        self.channels = (width * block.expansion, cin)  # layer1, layer4

    def forward(self, x):
        x = self.stem(x)
        low = self.layers[0](x)
        x = low
        for layer in self.layers[1:]:
            x = layer(x)
        return low, x

"""ResNet backbones written here (torchvision is unavailable with the CPU torch wheel):
any number of input bands, output stride 16 or 32 by dilating the last stage."""
from __future__ import annotations

from torch import Tensor, nn

from .blocks import BasicBlock, Bottleneck

# name -> (block, blocks per stage)
RESNETS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6, 3)),
           "resnet50": (Bottleneck, (3, 4, 6, 3)), "resnet101": (Bottleneck, (3, 4, 23, 3))}


class ResNet(nn.Module):
    """Returns the stride-4 (layer1) and the deepest (layer4) feature maps. Module names are
    torchvision's (conv1, bn1, layer1..layer4), so its ResNet weights load by name."""

    def __init__(self, in_channels: int, name: str = "resnet50", width: int = 64,
                 output_stride: int = 16):
        super().__init__()
        block, depths = RESNETS[name]
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, dilation = width, 1
        for i, n in enumerate(depths):
            stride, first_dilation = (1 if i == 0 else 2), dilation
            if output_stride == 16 and i == 3:  # keep stride 16: dilate instead (DeepLab),
                stride, dilation = 1, 2  # from the stage's second block on, as torchvision
            planes = width * 2 ** i
            blocks = [block(cin, planes, stride, first_dilation)]
            cin = planes * block.expansion
            blocks += [block(cin, planes, 1, dilation) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.channels = (width * block.expansion, cin)  # layer1, layer4

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        return low, self.layer4(self.layer3(self.layer2(low)))

"""The ImageNet ResNets of He et al. 2016: resnet18, resnet34 (basic blocks), resnet50 (bottleneck).

Layout: 7x7 stride-2 conv stem with 64 channels + BN + ReLU, 3x3 stride-2 max pool; four stages
with 64/128/256/512 base widths, the last three starting with stride 2; adaptive average pool
to 1x1; fully connected layer to the classes. Stage depths: [2, 2, 2, 2] basic blocks for
resnet18, [3, 4, 6, 3] basic blocks for resnet34, [3, 4, 6, 3] bottlenecks for resnet50.

A basic block is conv3x3 -> BN -> ReLU -> conv3x3 -> BN; a bottleneck is conv1x1 -> BN -> ReLU
-> conv3x3 -> BN -> ReLU -> conv1x1 (4x the base width, expansion 4) -> BN. The shortcut is the
identity, or a 1x1 conv + BN projection (option B) where the shape changes. The bottleneck puts
its stride on the 3x3 conv rather than the first 1x1 conv: the "ResNet v1.5" placement that
most current implementations use, a little more accurate than the paper's v1.

Parameters with 1000 classes and 3 channels: resnet18 11,689,512, resnet34 21,797,672, resnet50
25,557,032. Convs have no bias (a BN follows). Init: Kaiming-normal (fan-out, ReLU gain) conv
weights, BN weight 1 and bias 0, PyTorch's default Linear init for the fc layer. Any channel
count and input size work; 64x64 and up is sensible (224x224 for ImageNet).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import image_shape
from .registry import register_model


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class BasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = _projection(in_channels, width, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """conv1x1 -> BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv1x1(4 width) -> BN,
    plus shortcut, then ReLU.
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _projection(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ImageNetResNet(nn.Module):
    """ResNet with a 7x7 stem and four stages; see the module docstring for the layout."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        depths: tuple[int, int, int, int],
        in_channels: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        stages: list[nn.Sequential] = []
        for i, (width, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(channels, width, stride))
                channels = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


_SPECS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def _make_builder(arch: str) -> Callable[..., nn.Module]:
    block, depths = _SPECS[arch]

    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        channels, _, _ = image_shape(arch, input_shape)
        return ImageNetResNet(block, depths, channels, num_classes)

    build.__name__ = f"build_{arch}"
    build.__qualname__ = build.__name__
    build.__doc__ = (
        f"ImageNet {arch} (He et al. 2016): {block.__name__} stages {list(depths)}, projection "
        "shortcuts, v1.5 stride placement; no options; any input size (224x224 for ImageNet)."
    )
    return build


for _arch in _SPECS:
    register_model(_arch)(_make_builder(_arch))

"""The CIFAR ResNets of He et al. 2016 (section 4.2): resnet20, 32, 44, 56 and 110.

Layout, for depth 6n + 2: a 3x3 conv stem with 16 channels + BN + ReLU; three stages of n basic
blocks with 16, 32 and 64 channels, the second and third starting with stride 2; global average
pooling; a linear classifier. A basic block is conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the
shortcut, then ReLU. Convs have no bias because a BN follows each one.

Shortcuts are option A by default, as in the paper's CIFAR experiments: identity, and when a
block downsamples, the input is subsampled with stride 2 and zero-padded with extra channels,
which adds no parameters. Option B (`shortcut="B"`) uses a 1x1 conv + BN projection there.
With 3x32x32 inputs and 10 classes resnet20 has 269,722 parameters with option A and 272,474
with option B (the 2,752 difference is the two projections).

Init: Kaiming-normal (fan-in, ReLU gain) for conv and linear weights, the customary choice
for these nets; zero linear bias; BN weight 1, bias 0. Any channel count and any input size
work (padding keeps every map at least 1x1); 8x8 and up is sensible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from lowdim.errors import LowdimError

from ._common import image_shape
from .registry import register_model

DEPTHS = (20, 32, 44, 56, 110)
_SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: subsample by `stride` and zero-pad channels up to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        # Split the new channels between both ends, as the reference CIFAR implementations do.
        self.pad_front = extra // 2
        self.pad_back = extra - extra // 2

    def forward(self, x: Tensor) -> Tensor:
        # Stride-2 subsampling keeps ceil(H/2) rows, the same as the 3x3/pad-1/stride-2 conv on
        # the residual branch, for odd sizes too.
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_front}, {self.pad_back})"


class BasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images; see the module docstring for the layout and init."""

    def __init__(self, depth: int, in_channels: int, num_classes: int, shortcut: str) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks: list[nn.Module] = []
        width = 16
        for stage, out_width in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(width, out_width, stride, shortcut))
                width = out_width
        # One Sequential per stage keeps parameter names like layer2.0.conv1.weight readable.
        self.layer1 = nn.Sequential(*blocks[:n])
        self.layer2 = nn.Sequential(*blocks[n : 2 * n])
        self.layer3 = nn.Sequential(*blocks[2 * n :])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def _make_builder(depth: int) -> Callable[..., nn.Module]:
    arch = f"resnet{depth}"

    def build(input_shape: tuple[int, ...], num_classes: int, *, shortcut: str = "A") -> nn.Module:
        kind = str(shortcut).strip().upper()
        if kind not in _SHORTCUTS:
            raise LowdimError(
                f"unknown shortcut {shortcut!r} for {arch}; choose one of: A (zero-pad, no "
                "parameters), B (1x1 conv + BN projection)"
            )
        channels, _, _ = image_shape(arch, input_shape)
        return CifarResNet(depth, channels, num_classes, kind)

    build.__name__ = f"build_{arch}"
    build.__qualname__ = build.__name__
    build.__doc__ = (
        f"CIFAR ResNet-{depth} (He et al. 2016): 3 stages of {(depth - 2) // 6} basic blocks with "
        '16/32/64 channels. Option `shortcut` (default "A": zero-pad, parameter-free; "B": '
        "1x1 conv + BN projection when downsampling). Any channel count and input size."
    )
    return build


for _depth in DEPTHS:
    register_model(f"resnet{_depth}")(_make_builder(_depth))

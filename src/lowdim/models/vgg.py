"""VGG with batch norm (Simonyan & Zisserman 2015; BN added as is now standard), CIFAR variant.

Features follow the paper's configurations A (vgg11), B (vgg13), D (vgg16) and E (vgg19): each
number is a conv3x3 with padding 1 + BN + ReLU with that many channels, each "M" a 2x2 max pool
with stride 2. After five pools a 32x32 input is 512x1x1. The common CIFAR variant then replaces
the paper's three 4096-wide fully connected layers with a single Linear(512, num_classes); an
adaptive average pool to 1x1 before it lets larger inputs (e.g. 64x64, 2x2 maps) work too.
Inputs must be at least 32x32, since the fifth pool needs a 2x2 map.

Convs keep their bias, although the BN after each makes it redundant, so parameter counts equal
the standard ones (vgg16 on CIFAR-10: 14,728,266). Init: Kaiming-normal (fan-out, ReLU gain)
conv weights, zero conv biases, BN weight 1 and bias 0, linear weights N(0, 0.01), zero bias.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from lowdim.errors import arg

from ._common import check_min_size, conv_out, image_shape
from .registry import register_model

CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (
        *(64, 64, "M", 128, 128, "M"),
        *(256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    ),
    "vgg19": (
        *(64, 64, "M", 128, 128, "M"),
        *(256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    ),
}


class VGG(nn.Module):
    """Conv3x3+BN+ReLU stacks and max pools per `config`, adaptive avg pool 1x1, Linear."""

    def __init__(self, config: tuple[int | str, ...], in_channels: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                assert isinstance(item, int)
                layers += [nn.Conv2d(width, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU()]
                width = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _side(config: tuple[int | str, ...]) -> Callable[[int], int]:
    def side(s: int) -> int:
        # Padded 3x3 convs keep the size; only the pools shrink it.
        for item in config:
            if item == "M":
                s = conv_out(s, 2, 2)
        return s

    return side


def _make_builder(arch: str) -> Callable[..., nn.Module]:
    config = CONFIGS[arch]

    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        shape = image_shape(arch, input_shape)
        hint = f"pad or resize the images, or use {arg('arch', 'resnet20')}"
        check_min_size(arch, shape, _side(config), hint)
        return VGG(config, shape[0], num_classes)

    build.__name__ = f"build_{arch}"
    build.__qualname__ = build.__name__
    convs = sum(1 for item in config if item != "M")
    build.__doc__ = (
        f"{arch.upper()} with batch norm, CIFAR variant ({convs} conv layers, adaptive avg pool, "
        "Linear(512, num_classes)); no options; inputs of at least 32x32."
    )
    return build


for _arch in CONFIGS:
    register_model(_arch)(_make_builder(_arch))

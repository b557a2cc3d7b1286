"""Small plain convnets: LeNet-5 (intrinsic dimension paper) and the random-bases paper's CNN.

Both use valid (no) padding, so each needs a minimum input size; the builders check it and say
what that size is rather than letting a conv fail deep inside the forward pass. Weights keep
PyTorch's default Conv2d/Linear init (Kaiming-uniform), drawn from the global generator.
"""

from __future__ import annotations

from torch import Tensor, nn

from lowdim.errors import arg

from ._common import check_min_size, conv_out, image_shape
from .registry import register_model

_SMALL_HINT = f"use {arg('arch', 'mlp')} or {arg('arch', 'fc')}"


class LeNet5(nn.Module):
    """conv5x5(6) -> ReLU -> maxpool2 -> conv5x5(16) -> ReLU -> maxpool2 -> flatten ->
    fc(120) -> ReLU -> fc(84) -> ReLU -> fc(num_classes); valid padding throughout.
    """

    def __init__(self, in_channels: int, feature_hw: tuple[int, int], num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * feature_hw[0] * feature_hw[1], 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _lenet_side(s: int) -> int:
    return conv_out(conv_out(conv_out(conv_out(s, 5), 2, 2), 5), 2, 2)


@register_model("lenet")
def build_lenet(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """LeNet-5 as in Li et al. 2018 (intrinsic dimension), valid padding, ReLU, max pooling.

    No options. Needs inputs of at least 16x16. Parameters: 44,426 on MNIST (1x28x28, features
    16x4x4), 62,006 on CIFAR (3x32x32, features 16x5x5).
    """
    shape = image_shape("lenet", input_shape)
    hw = check_min_size("lenet", shape, _lenet_side, _SMALL_HINT)
    return LeNet5(shape[0], hw, num_classes)


class SmallCNN(nn.Module):
    """conv3x3(32) -> ReLU -> maxpool2 -> conv3x3(64) -> ReLU -> maxpool2 -> conv3x3(64) -> ReLU
    -> flatten -> dense(64) -> ReLU -> dense(num_classes); valid padding throughout.
    """

    def __init__(self, in_channels: int, feature_hw: tuple[int, int], num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, kernel_size=3),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * feature_hw[0] * feature_hw[1], 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _cnn_side(s: int) -> int:
    return conv_out(conv_out(conv_out(conv_out(conv_out(s, 3), 2, 2), 3), 2, 2), 3)


@register_model("cnn")
def build_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The CNN of Gressmann et al. 2020 (random bases descent), valid padding.

    No options. Needs inputs of at least 18x18. Parameters: 93,322 on MNIST (1x28x28, features
    64x3x3), 122,570 on CIFAR (3x32x32, features 64x4x4).
    """
    shape = image_shape("cnn", input_shape)
    hw = check_min_size("cnn", shape, _cnn_side, _SMALL_HINT)
    return SmallCNN(shape[0], hw, num_classes)

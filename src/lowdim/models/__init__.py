"""Architectures by name: `build_model(arch, input_shape, num_classes, **options)`.

Families, one module each:

- `mlp`, `fc`: fully connected (`mlp.py`)
- `lenet`, `cnn`: small valid-padding convnets (`convnets.py`)
- `resnet20`, `resnet32`, `resnet44`, `resnet56`, `resnet110`: CIFAR ResNets (`resnet_cifar.py`)
- `vgg11`, `vgg13`, `vgg16`, `vgg19`: VGG with batch norm, CIFAR variant (`vgg.py`)
- `resnet18`, `resnet34`, `resnet50`: ImageNet ResNets (`resnet_imagenet.py`)

New architectures register themselves with `@register_model("name")`.
"""

from __future__ import annotations

# Importing the family modules registers their architectures.
from . import convnets, mlp, resnet_cifar, resnet_imagenet, vgg  # noqa: F401
from .registry import available_archs, build_model, model_options, register_model

__all__ = ["available_archs", "build_model", "model_options", "register_model"]

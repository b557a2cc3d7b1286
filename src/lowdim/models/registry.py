"""The table of architectures, by name, and the one entry point that builds them.

A builder is a function `fn(input_shape, num_classes, *, option=default, ...) -> nn.Module`. Its
keyword-only parameters are the options that arch accepts; `build_model` reads them from the
signature, so an unknown option is caught here, with the valid ones named, before any weight is
drawn from the caller's random stream.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from typing import Any

from torch import nn

from lowdim.errors import LowdimError

Builder = Callable[..., nn.Module]

_REGISTRY: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator that adds `fn(input_shape, num_classes, **options) -> nn.Module` as `name`.

    Names are lower-case (build_model lower-cases what the user types). Registering a name twice
    is a programming error and raises `ValueError`, so two families can never shadow each other.
    """
    key = name.lower()

    def decorate(fn: Builder) -> Builder:
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = fn
        return fn

    return decorate


def available_archs() -> list[str]:
    """Every registered architecture name, sorted."""
    return sorted(_REGISTRY)


def model_options(arch: str) -> dict[str, Any]:
    """The options `arch` accepts, with their defaults (empty if it takes none)."""
    builder = _lookup(arch)
    return {
        p.name: p.default
        for p in inspect.signature(builder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def build_model(
    arch: str, input_shape: tuple[int, ...], num_classes: int, **options: Any
) -> nn.Module:
    """Build architecture `arch` for examples of shape `input_shape` (C, H, W) and `num_classes`.

    The model maps a batch (N, *input_shape) to logits (N, num_classes). Weights are drawn from
    torch's global generator, so the caller seeds it (`torch.manual_seed`) before calling; the
    same seed gives the same weights. Raises `LowdimError` (one-line message) for an unknown
    arch, an option the arch does not take, a bad shape or class count, or an input too small.
    """
    builder = _lookup(arch)
    valid = model_options(arch)
    for key in options:
        if key not in valid:
            choices = ", ".join(sorted(valid)) if valid else "none (it takes no options)"
            raise LowdimError(
                f"unknown option {key!r} for architecture {_normalize(arch)!r}; "
                f"valid options: {choices}"
            )
    shape = _check_shape(input_shape)
    classes = _positive_int(num_classes)
    if classes is None:
        raise LowdimError(f"num_classes must be a positive integer, got {num_classes!r}")
    return builder(shape, classes, **options)


def _normalize(arch: str) -> str:
    return str(arch).strip().lower()


def _lookup(arch: str) -> Builder:
    key = _normalize(arch)
    if key not in _REGISTRY:
        raise LowdimError(
            f"unknown architecture {arch!r}; choose one of: {', '.join(available_archs())}"
        )
    return _REGISTRY[key]


def _positive_int(value: object) -> int | None:
    """`value` as an int if it is a positive integer (numpy ints too), else None."""
    # bool is an int subclass; True as a width or class count is certainly a mistake.
    if isinstance(value, bool):
        return None
    try:
        number = operator.index(value)
    except TypeError:
        return None
    return number if number > 0 else None


def _check_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    try:
        dims = [_positive_int(d) for d in input_shape]
    except TypeError:
        dims = []
    if not dims or None in dims:
        raise LowdimError(
            f"input_shape must be positive integers such as (1, 28, 28), got {input_shape!r}"
        )
    return tuple(d for d in dims if d is not None)

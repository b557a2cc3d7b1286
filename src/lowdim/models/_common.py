"""Shape arithmetic and input checks shared by the convolutional families."""

from __future__ import annotations

from collections.abc import Callable

from lowdim.errors import LowdimError, arg

# The largest side searched when working out an arch's minimum input size; far beyond any
# threshold the models here have (the largest is VGG's 32).
_MAX_SIDE = 4096


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output side of a convolution or pooling window; 0 when the input is too small for it."""
    if size + 2 * padding < kernel:
        return 0
    return (size + 2 * padding - kernel) // stride + 1


def image_shape(arch: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """`input_shape` as (C, H, W), or a LowdimError saying that `arch` needs images."""
    if len(input_shape) != 3:
        raise LowdimError(
            f"{arch} needs image inputs of shape (channels, height, width), got {input_shape}; "
            f"use {arg('arch', 'mlp')} for flat features"
        )
    c, h, w = input_shape
    return c, h, w


def check_min_size(
    arch: str, input_shape: tuple[int, int, int], out_side: Callable[[int], int], hint: str
) -> tuple[int, int]:
    """The (H, W) that `out_side` maps the input to, or a LowdimError if either is below 1.

    `out_side` maps one input side to the side of the last feature map; the message states the
    smallest side that works, found by searching `out_side`, so it cannot disagree with the
    model's own arithmetic.
    """
    _, h, w = input_shape
    oh, ow = out_side(h), out_side(w)
    if oh >= 1 and ow >= 1:
        return oh, ow
    need = next(s for s in range(1, _MAX_SIDE) if out_side(s) >= 1)
    raise LowdimError(f"{arch} needs inputs of at least {need}x{need} pixels, got {h}x{w}; {hint}")

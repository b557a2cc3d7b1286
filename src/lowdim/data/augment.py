"""Batch-level image augmentation, vectorised over the batch (one gather, no per-image loop)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lowdim.errors import LowdimError


class RandomCropFlip:
    """Pad by `padding` pixels (default 4), take a random crop of the original size, then flip
    horizontally with probability 1/2 (unless `flip` is False: random shifts alone, for digits,
    whose mirror images are other symbols).

    `fill` is the per-channel value of the padding (default 0). The CIFAR loaders pass the
    normalised value of a black pixel, which reproduces the usual pipeline that pads the raw
    image with zeros before normalising. Random draws come from the CPU generator passed in,
    so the result does not depend on the device of the batch.
    """

    def __init__(
        self, padding: int = 4, fill: Sequence[float] | float = 0.0, flip: bool = True
    ) -> None:
        if padding < 0:
            raise LowdimError(f"padding {padding} must be a non-negative integer")
        self.padding = padding
        self.fill = fill
        self.flip = bool(flip)

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip})"

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        b, c, h, w = x.shape
        p = self.padding
        offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=g).to(x.device)
        flips = (torch.rand(b, generator=g) < 0.5).to(x.device)  # drawn either way: same shifts
        flips &= self.flip
        if p > 0:
            fill = torch.as_tensor(self.fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
            padded = fill.expand(b, c, h + 2 * p, w + 2 * p).clone()
            padded[:, :, p : p + h, p : p + w] = x
        else:
            padded = x
        rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (B, H)
        cols = torch.arange(w, device=x.device).expand(b, w)
        # A flipped crop reads its columns right to left: flip and crop in the same gather.
        cols = torch.where(flips[:, None], w - 1 - cols, cols) + offsets[:, 1:]  # (B, W)
        batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
        return padded[batch, chan, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]

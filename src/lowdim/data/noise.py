"""Symmetric label noise: a seeded fraction of the labels is redrawn uniformly over all classes."""

from __future__ import annotations

import torch
from torch import Tensor

from lowdim.errors import BadArgument, LowdimError
from lowdim.seeding import generator


def check_fraction(fraction: float, name: str = "corrupt") -> float:
    """`fraction` as a float; a `BadArgument` naming `name` (by default `corrupt`, the option
    of `load_dataset` it checks) if it is not in [0, 1]."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise BadArgument(name, f"{fraction!r} is not a number; use a fraction in [0, 1]") from None
    # NaN fails both comparisons, so it is rejected here too.
    if not 0.0 <= value <= 1.0:
        raise BadArgument(name, f"{fraction} is outside [0, 1]")
    return value


def corrupt_labels(
    labels: Tensor, num_classes: int, fraction: float, seed: int, salt: str = ""
) -> Tensor:
    """A copy of `labels` in which `round(fraction * N)` positions hold a uniformly drawn class.

    The positions are the first ones of a seeded permutation, and each chosen position gets a
    uniform draw over all `num_classes` classes, which may equal its old label: the fraction of
    labels that actually change is therefore about `fraction * (1 - 1 / num_classes)`.

    The result is a pure function of `(labels, num_classes, fraction, seed, salt)`; `salt`
    (default `""`) separates datasets (`load_dataset` passes the dataset name). The random
    stream does not depend on `fraction`, so the noisy positions for a smaller fraction are a
    subset of those for a larger one, with the same replacement labels: sweeps over the noise
    level are nested rather than independent.

    Raises `LowdimError` if `fraction` is outside [0, 1] or `labels` is not a 1-D integer tensor.
    """
    fraction = check_fraction(fraction, "fraction")
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise LowdimError(
            f"labels must be a 1-D integer tensor, got dtype {labels.dtype} shape "
            f"{tuple(labels.shape)}"
        )
    if num_classes < 1:
        raise LowdimError(f"num_classes {num_classes} must be at least 1")
    n = labels.numel()
    count = round(fraction * n)
    out = labels.clone()
    if count == 0:
        return out
    # Draw on the CPU so the noise is identical whatever device the labels live on.
    g = generator("label-noise", salt, seed)
    order = torch.randperm(n, generator=g)
    draws = torch.randint(0, num_classes, (n,), generator=g, dtype=torch.int64)
    chosen = order[:count]
    out[chosen.to(out.device)] = draws[chosen].to(device=out.device, dtype=out.dtype)
    return out

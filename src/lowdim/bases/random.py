"""Random bases by name, and per-compartment (e.g. per-layer) block bases: what the command
line builds from a basis kind, --dim and a seed."""

from __future__ import annotations

import math

import torch

from ..errors import LowdimError
from ..seeding import derive_seed
from .base import Basis
from .blocks import BlockBasis
from .fastfood import FastfoodBasis
from .gaussian import GaussianBasis, check_dims
from .sparse import SparseBasis

RANDOM_KINDS = ("dense", "orthogonal", "sparse", "fastfood")
COMPARTMENT_RULES = ("layer", "param", "chunk")
SPLIT_RULES = ("proportional", "equal")


def random_basis(
    kind: str,
    num_params: int,
    dim: int,
    seed: int = 0,
    *,
    device: str | torch.device = "cpu",
    store_tensors: bool = False,
) -> Basis:
    """A random basis with d = `dim` unit-norm columns in D = `num_params` dimensions, float32.

    kind: "dense" (Gaussian columns), "orthogonal" (orthonormal Gaussian columns), "sparse"
    (Li et al.'s very sparse projection, density 1/sqrt(d)) or "fastfood" (O(D) memory; unit
    norm to rounding where measuring the columns is cheap, else within about 1%).
    seed defaults to 0, device to "cpu", store_tensors (save the tensors, not only the seed)
    to False.
    """
    if kind not in RANDOM_KINDS:
        raise LowdimError(f"unknown random basis {kind!r}; choose one of {', '.join(RANDOM_KINDS)}")
    check_dims(num_params, dim)
    options = {"device": device, "store_tensors": store_tensors}
    if kind in ("dense", "orthogonal"):
        return GaussianBasis(num_params, dim, seed, orthogonal=kind == "orthogonal", **options)
    if kind == "sparse":
        return SparseBasis(num_params, dim, seed, **options)
    return FastfoodBasis(num_params, dim, seed, **options)


def compartments(
    layout: list[dict], rule: str = "layer", chunk: int | None = None
) -> list[tuple[str, int, int]]:
    """(name, offset, length) groups covering a flat parameter layout, in order.

    layout: the list of {"name", "shape", "offset"} that `FlatParams.layout()` returns, with
    the parameters contiguous and in order. rule (default "layer"):
      "layer": consecutive parameters of the same module (the name without its last dotted
               part, so `layers.0.weight` and `layers.0.bias` form `layers.0`; parameters of
               the top-level module form "(top)");
      "param": one compartment per parameter, named after it;
      "chunk": consecutive chunks of `chunk` parameters (the last one shorter), "chunk{i}".
    """
    if rule not in COMPARTMENT_RULES:
        raise LowdimError(f"unknown compartment rule {rule!r}; choose one of layer, param, chunk")
    end = 0
    for entry in layout:
        if entry["offset"] != end:
            raise LowdimError(
                f"the layout is not contiguous: {entry['name']} starts at {entry['offset']}, "
                f"not {end}"
            )
        end += math.prod(entry["shape"])
    if end == 0:
        raise LowdimError("the layout has no parameters")
    if rule == "chunk":
        if chunk is None or int(chunk) < 1:
            raise LowdimError(f"--chunk {chunk} must be a positive number of parameters")
        size = int(chunk)
        return [(f"chunk{i}", o, min(size, end - o)) for i, o in enumerate(range(0, end, size))]
    groups: list[tuple[str, int, int]] = []
    for entry in layout:
        numel = math.prod(entry["shape"])
        if numel == 0:
            continue  # an empty parameter has no coordinates to give
        name = entry["name"]
        if rule == "layer":
            name = name.rpartition(".")[0] or "(top)"
        if groups and rule == "layer" and groups[-1][0] == name:
            groups[-1] = (name, groups[-1][1], groups[-1][2] + numel)
        else:
            groups.append((name, entry["offset"], numel))
    return groups


def _water_fill(total: int, sizes: list[int]) -> list[int]:
    """Equal shares of `total`, except that a compartment smaller than its share gets its
    size and the rest is shared again among the others (the remainder one each, in order)."""
    dims, left, open_ = [0] * len(sizes), total, list(range(len(sizes)))
    while open_:
        share = left // len(open_)
        full = [i for i in open_ if sizes[i] <= share]
        if not full:
            extra = left - share * len(open_)
            for rank, i in enumerate(open_):
                dims[i] = share + (1 if rank < extra else 0)
            break
        for i in full:
            dims[i] = sizes[i]
            left -= sizes[i]
        open_ = [i for i in open_ if sizes[i] > share]
    return dims


def split_dim(total: int, sizes: list[int], rule: str = "proportional") -> list[int]:
    """Split d = `total` coordinates over compartments of the given sizes.

    "proportional" (default): quotas total * size / sum(sizes), rounded by largest remainder,
    a quota under 1 lifted to 1 and the overshoot taken back from the smallest remainders.
    "equal": equal shares, a compartment smaller than its share filled and the rest shared
    among the others, the remainder one more each to the first ones. Both give every
    compartment between 1 and its size, summing to `total`, which must be between k (the
    number of compartments) and the sum of the sizes.
    """
    if rule not in SPLIT_RULES:
        raise LowdimError(f"unknown split rule {rule!r}; choose one of proportional, equal")
    if not sizes or min(sizes) < 1:
        raise LowdimError(f"compartment sizes must be positive, got {sizes}")
    k, capacity = len(sizes), sum(sizes)
    if not k <= total <= capacity:
        raise LowdimError(
            f"--dim {total} cannot be split over {k} compartments: it must be between {k} "
            f"(one each) and {capacity} (their total size)"
        )
    if rule == "equal":
        return _water_fill(total, sizes)
    # quota_i = total * size_i / capacity, kept as exact integers scaled by capacity
    scaled = [total * s for s in sizes]
    dims = [max(1, q // capacity) for q in scaled]
    # most underserved first when adding, most overserved first when removing; a quota is at
    # most its size, so adding one to a floor never passes it
    order = sorted(range(k), key=lambda i: dims[i] * capacity - scaled[i])
    short = total - sum(dims)
    for i in order[: max(0, short)]:
        dims[i] += 1
    while short < 0:  # lifting quotas under 1 to 1 overshot: take back the least needed
        for i in reversed(order):
            if dims[i] > 1 and short < 0:
                dims[i] -= 1
                short += 1
    return dims


def per_compartment_basis(
    kind: str,
    layout: list[dict],
    dim: int | list[int],
    seed: int = 0,
    *,
    rule: str = "layer",
    split: str = "proportional",
    device: str | torch.device = "cpu",
    store_tensors: bool = False,
    chunk: int | None = None,
) -> BlockBasis:
    """A block basis with one random basis of `kind` per compartment (see `compartments`).

    dim: one number per compartment, or a total split over them by `split_dim(dim, sizes,
    split)`. Compartment i gets the seed derive_seed(seed, i), so its subspace does not depend
    on the others. rule, split, device, store_tensors and chunk default to "layer",
    "proportional", "cpu", False and None.
    """
    if kind not in RANDOM_KINDS:
        raise LowdimError(f"unknown random basis {kind!r}; choose one of {', '.join(RANDOM_KINDS)}")
    groups = compartments(layout, rule, chunk)
    sizes = [n for _, _, n in groups]
    if isinstance(dim, int):
        dims = split_dim(dim, sizes, split)
    else:
        dims = [int(x) for x in dim]
        if len(dims) != len(groups):
            raise LowdimError(
                f"{len(dims)} dims given for {len(groups)} compartments ({rule} rule); give "
                f"one per compartment or a single total"
            )
    blocks = []
    for i, ((name, offset, length), d) in enumerate(zip(groups, dims, strict=True)):
        if not 1 <= d <= length:
            raise LowdimError(f"--dim {d} for compartment {name} must be between 1 and {length}")
        basis = random_basis(
            kind, length, d, derive_seed(seed, i), device=device, store_tensors=store_tensors
        )
        blocks.append((offset, length, basis))
    return BlockBasis(blocks)

"""Compartments: slices of the flat parameter vector theta, each with its own coordinates.

A compartment is a half-open slice [offset, offset + length) of theta and the number d_k of
coordinates it gets. Compartments that tile 0..D give a block-diagonal basis
P = diag(P_1, ..., P_k) with d = sum d_k (see `BlockBasis`), whatever the kind of each P_k:
fixed random, redrawn every step (RBD), or anything else. One vocabulary for all of them:

    by     "all"    one compartment, all of theta;
           "layer"  consecutive parameters of the same module (the parameter name without
                    its last dotted part: `rnn.weight_ih_l0` and `rnn.bias_hh_l0` form
                    `rnn`; parameters of the top-level module form "(top)");
           "param"  one compartment per parameter tensor, named after it;
           "chunk"  consecutive chunks of `chunk_size` parameters (the last one shorter).
    split  "size"   d in proportion to the compartments' sizes (largest remainder);
           "equal"  d in equal shares (a compartment smaller than its share filled);
           "each"   d for every compartment, capped at its size (d x k in all).

Parameters with no entries are skipped: they have no coordinates to give.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torch import nn

from ..errors import BadArgument
from ..params import FlatParams, param_specs, trainable_parameters

COMPARTMENT_RULES = ("all", "layer", "param", "chunk")
SPLITS = ("size", "equal", "each")


@dataclass(frozen=True)
class Compartment:
    """theta[offset : offset + length], with `dim` coordinates (None: not assigned yet)."""

    name: str
    offset: int
    length: int
    dim: int | None = None

    def __post_init__(self) -> None:
        if self.offset < 0 or self.length < 1:
            raise BadArgument(
                "compartments",
                f"need offset >= 0 and length >= 1, got {self.name!r} at "
                f"{self.offset} of length {self.length}",
            )
        if self.dim is not None and not 1 <= self.dim <= self.length:
            raise BadArgument(
                "dim",
                f"{self.dim} for compartment {self.name} must be between 1 and its "
                f"length {self.length}",
            )

    def as_dict(self) -> dict:
        """{"name", "offset", "length", "dim"}: JSON-ready, and `Compartment(**d)` again."""
        return asdict(self)


def tiling_problem(spans: list[tuple[int, int]], what: str = "slice") -> tuple[int, str | None]:
    """(the end of the tiled range, what is wrong or None) for (offset, length) slices that
    should tile 0..end without gaps or overlap, in any order; `what` names a slice."""
    end = 0
    for offset, length in sorted(spans):
        if offset < end:
            return end, f"the {what} at offset {offset} overlaps the one ending at {end}"
        if offset > end:
            return end, f"parameters {end}..{offset - 1} are in no {what}"
        if length < 1:
            return end, f"the {what} at offset {offset} has length {length}"
        end = offset + length
    return end, None


def check_tiling(compartments: list[Compartment], num_params: int) -> None:
    """BadArgument("compartments") unless they tile 0..num_params exactly."""
    end, problem = tiling_problem([(c.offset, c.length) for c in compartments], "compartment")
    if problem is None and end != num_params:
        problem = f"they cover 0..{end - 1}, not D = {num_params}"
    if problem is not None:
        raise BadArgument("compartments", f"must tile the parameters: {problem}")


def _entries(source) -> list[tuple[str, int, int]]:
    """(name, offset, numel) of each parameter of a module (its trainable parameters in
    `named_parameters()` order, shared ones once: the order `FlatParams` uses), of a
    `FlatParams`, or of a layout (the list of {"name", "shape", "offset"} that
    `FlatParams.layout()` gives, contiguous and in order)."""
    if isinstance(source, FlatParams):
        return [(s.name, s.offset, s.numel) for s in source.specs]
    if isinstance(source, nn.Module):  # theta's parameters, read without re-homing them
        return [(s.name, s.offset, s.numel) for s in param_specs(trainable_parameters(source))]
    if not isinstance(source, (list, tuple)):
        raise BadArgument(
            "source", f"must be an nn.Module, a FlatParams or a layout, got {type(source).__name__}"
        )
    entries, end = [], 0
    for entry in source:
        if entry["offset"] != end:
            raise BadArgument(
                "source",
                f"is not contiguous: {entry['name']} starts at {entry['offset']}, not {end}",
            )
        entries.append((entry["name"], end, math.prod(entry["shape"])))
        end += entries[-1][2]
    return entries


def compartments_of(
    source,
    by: str = "layer",
    dim: int | list[int] | None = None,
    split: str = "size",
    chunk_size: int | None = None,
) -> list[Compartment]:
    """The compartments of a model's parameters, in order (see the module doc for the rules).

    source: an `nn.Module` (its trainable parameters), a `FlatParams` or a layout.
    by: "all", "layer" (default), "param" or "chunk" (with `chunk_size`, default None).
    dim: None (default: compartments without dims), a total split over them by `split`
        (default "size"), or one number per compartment.
    """
    if by not in COMPARTMENT_RULES:
        raise BadArgument("by", f"must be one of {', '.join(COMPARTMENT_RULES)}, got {by!r}")
    entries = [e for e in _entries(source) if e[2] > 0]
    if not entries:
        raise BadArgument("source", "has no trainable parameters")
    total = entries[-1][1] + entries[-1][2]
    if by == "all":
        spans = [("all", 0, total)]
    elif by == "chunk":
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise BadArgument(
                "chunk_size", f"must be a positive number of parameters, got {chunk_size}"
            )
        spans = [
            (f"chunk{i}", o, min(chunk_size, total - o))
            for i, o in enumerate(range(0, total, chunk_size))
        ]
    else:
        spans = []
        for name, offset, numel in entries:
            if by == "layer":
                name = name.rpartition(".")[0] or "(top)"
            if by == "layer" and spans and spans[-1][0] == name:
                spans[-1] = (name, spans[-1][1], spans[-1][2] + numel)
            else:
                spans.append((name, offset, numel))
    if dim is None:
        return [Compartment(n, o, k) for n, o, k in spans]
    sizes = [k for _, _, k in spans]
    if isinstance(dim, int):
        dims = split_dim(dim, sizes, split)
    else:
        dims = [int(x) for x in dim]
        if len(dims) != len(spans):
            raise BadArgument(
                "dim",
                f"gives {len(dims)} dims for {len(spans)} compartments (by {by}); give "
                "one per compartment or a single total",
            )
    return [Compartment(n, o, k, d) for (n, o, k), d in zip(spans, dims, strict=True)]


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


def split_dim(total: int, sizes: list[int], split: str = "size") -> list[int]:
    """d_k for compartments of the given sizes from d = `total`.

    "size" (default): quotas total * size / sum(sizes), rounded by largest remainder, a quota
    under 1 lifted to 1 and the overshoot taken back from the smallest remainders.
    "equal": equal shares, a compartment smaller than its share filled and the rest shared
    among the others, the remainder one more each to the first ones.
    Both give every compartment between 1 and its size, summing to `total`, which must be
    between k (the number of compartments) and the sum of the sizes.
    "each": min(total, size) for every compartment (total >= 1).
    """
    if split not in SPLITS:
        raise BadArgument("split", f"must be one of {', '.join(SPLITS)}, got {split!r}")
    if not sizes or min(sizes) < 1:
        raise BadArgument("sizes", f"must be positive, got {sizes}")
    k, capacity = len(sizes), sum(sizes)
    if split == "each":
        if total < 1:
            raise BadArgument("dim", f"{total} must be at least 1")
        return [min(total, s) for s in sizes]
    if not k <= total <= capacity:
        raise BadArgument(
            "dim",
            f"{total} cannot be split over {k} compartments: it must be between {k} "
            f"(one each) and {capacity} (their total size)",
        )
    if split == "equal":
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


def as_compartments(
    compartments, num_params: int, dim: int | None, split: str = "size"
) -> list[Compartment]:
    """Compartments with dims that tile 0..num_params, from what a caller gives:
    None (one compartment "all" with `dim`), `Compartment`s (those without dims get `dim`
    split over them by `split`, default "size"), or (offset, length, d_k) tuples (the old
    form, named block0, block1, ...). With dims given, `dim` is None or their sum."""
    if compartments is None:
        if dim is None:
            raise BadArgument("dim", "must be given when there are no compartments")
        compartments = [Compartment("all", 0, num_params)]
    parts = [
        c if isinstance(c, Compartment) else Compartment(f"block{i}", *map(int, c))
        for i, c in enumerate(compartments)
    ]
    if not parts:
        raise BadArgument("compartments", "is empty")
    check_tiling(parts, num_params)
    given = [c.dim is not None for c in parts]
    if not any(given):
        if dim is None:
            raise BadArgument("dim", "must be given when the compartments have no dims")
        if not 1 <= dim <= num_params:
            raise BadArgument("dim", f"{dim} must be between 1 and D = {num_params}")
        dims = split_dim(dim, [c.length for c in parts], split)
        return [
            Compartment(c.name, c.offset, c.length, d) for c, d in zip(parts, dims, strict=True)
        ]
    if not all(given):
        raise BadArgument("compartments", "give every compartment a dim, or none of them")
    if dim is not None and dim != sum(c.dim for c in parts):
        raise BadArgument(
            "dim", f"is {dim} but the compartments' dims sum to {sum(c.dim for c in parts)}"
        )
    return parts

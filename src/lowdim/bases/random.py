"""Random bases by name, and per-compartment (e.g. per-layer) block bases: what the command
line builds from a basis kind, --dim and a seed. Compartments are those of `compartments`."""

from __future__ import annotations

import torch

from ..errors import LowdimError
from ..seeding import derive_seed
from .base import Basis
from .blocks import BlockBasis
from .compartments import compartments_of
from .fastfood import FastfoodBasis
from .gaussian import GaussianBasis, check_dims
from .sparse import SparseBasis

RANDOM_KINDS = ("dense", "orthogonal", "sparse", "fastfood")


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


def per_compartment_basis(
    kind: str,
    source,
    dim: int | list[int],
    seed: int = 0,
    *,
    by: str = "layer",
    split: str = "size",
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    store_tensors: bool = False,
) -> BlockBasis:
    """A block basis with one random basis of `kind` per compartment.

    source: an `nn.Module`, a `FlatParams` or its layout; by, split, chunk_size: the
    compartment rules of `compartments_of` (defaults "layer", "size", None). dim: one number
    per compartment, or a total split over them. Compartment i gets the seed
    derive_seed(seed, i), so its subspace does not depend on the others. device and
    store_tensors default to "cpu" and False.
    """
    if kind not in RANDOM_KINDS:
        raise LowdimError(f"unknown random basis {kind!r}; choose one of {', '.join(RANDOM_KINDS)}")
    parts = compartments_of(source, by, dim, split, chunk_size)
    return BlockBasis.from_compartments(
        parts,
        lambda i, c: random_basis(
            kind, c.length, c.dim, derive_seed(seed, i), device=device, store_tensors=store_tensors
        ),
    )

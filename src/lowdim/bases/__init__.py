"""Bases: P, a D x d matrix, with expand(c) = P c and project(g) = P^T g. One kind per file."""

from .base import Basis, basis_from_state, expand_differentiable, load_basis
from .blocks import BlockBasis
from .dense import DenseBasis
from .fastfood import FastfoodBasis
from .gaussian import GaussianBasis
from .hadamard import fwht
from .pca import PCABasis, pca_of_rows, trajectory_pca
from .random import RANDOM_KINDS, compartments, per_compartment_basis, random_basis, split_dim
from .sparse import SparseBasis

__all__ = [
    "RANDOM_KINDS",
    "Basis",
    "BlockBasis",
    "DenseBasis",
    "FastfoodBasis",
    "GaussianBasis",
    "PCABasis",
    "SparseBasis",
    "basis_from_state",
    "compartments",
    "expand_differentiable",
    "fwht",
    "load_basis",
    "pca_of_rows",
    "per_compartment_basis",
    "random_basis",
    "split_dim",
    "trajectory_pca",
]

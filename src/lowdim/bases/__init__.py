"""Bases: P, a D x d matrix, with expand(c) = P c and project(g) = P^T g. One kind per file."""

from .base import Basis, basis_from_state, load_basis
from .dense import DenseBasis
from .pca import PCABasis, pca_of_rows, trajectory_pca

__all__ = [
    "Basis",
    "DenseBasis",
    "PCABasis",
    "basis_from_state",
    "load_basis",
    "pca_of_rows",
    "trajectory_pca",
]

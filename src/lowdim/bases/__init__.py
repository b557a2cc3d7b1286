"""Bases: P, a D x d matrix, with expand(c) = P c and project(g) = P^T g. One kind per file."""

from .base import Basis, basis_from_state, expand_differentiable, load_basis
from .blocks import BlockBasis
from .compartments import COMPARTMENT_RULES, SPLITS, Compartment, compartments_of, split_dim
from .dense import DenseBasis
from .fastfood import FastfoodBasis
from .gaussian import GaussianBasis
from .hadamard import fwht
from .pca import PCABasis, pca_of_rows, trajectory_pca
from .random import RANDOM_KINDS, per_compartment_basis, random_basis
from .redrawn import RedrawnBasis, redrawn_basis
from .redrawn_hadamard import RedrawnHadamardBasis
from .span import LayerDeviationBasis, SpanBasis, layer_deviations, span_of_rows, trajectory_span
from .sparse import SparseBasis

__all__ = [
    "COMPARTMENT_RULES",
    "RANDOM_KINDS",
    "SPLITS",
    "Basis",
    "BlockBasis",
    "Compartment",
    "DenseBasis",
    "FastfoodBasis",
    "GaussianBasis",
    "LayerDeviationBasis",
    "PCABasis",
    "RedrawnBasis",
    "RedrawnHadamardBasis",
    "SpanBasis",
    "SparseBasis",
    "basis_from_state",
    "compartments_of",
    "expand_differentiable",
    "fwht",
    "layer_deviations",
    "load_basis",
    "pca_of_rows",
    "per_compartment_basis",
    "random_basis",
    "redrawn_basis",
    "span_of_rows",
    "split_dim",
    "trajectory_pca",
    "trajectory_span",
]

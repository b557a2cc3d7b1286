"""lowdim: train neural networks in tiny subspaces, theta = anchor + P c.

The public API, re-exported: datasets, the model zoo, flat parameter views, trajectory recording,
the training loop, bases, the subspace optimisers, the reparametrisation wrapper and the
intrinsic-dimension sweep.
"""

from .bases import (
    Basis,
    Compartment,
    DenseBasis,
    PCABasis,
    RedrawnBasis,
    compartments_of,
    load_basis,
    pca_of_rows,
    per_compartment_basis,
    random_basis,
    span_of_rows,
    trajectory_pca,
    trajectory_span,
)
from .compress_zoo import load_subspace_model, save_subspace_model
from .data import DATASETS, Data, Split, corrupt_labels, load_dataset
from .errors import LowdimError
from .jobs import (
    IntrinsicConfig,
    RBDConfig,
    SGDConfig,
    SubspaceConfig,
    measure_intrinsic_dim,
    train_in_subspace,
    train_rbd,
    train_sgd,
)
from .models import available_archs, build_model, register_model
from .optim import PBFGS, PSGD, RBD
from .params import FlatParams, ParamSpec
from .subspace_model import SubspaceModel
from .train import build_optimizer, build_schedule, evaluate, fit
from .trajectory import Trajectory, TrajectoryRecorder

__all__ = [
    "IntrinsicConfig",
    "SubspaceModel",
    "load_subspace_model",
    "measure_intrinsic_dim",
    "per_compartment_basis",
    "Compartment",
    "RedrawnBasis",
    "compartments_of",
    "random_basis",
    "save_subspace_model",
    "Basis",
    "DenseBasis",
    "PBFGS",
    "PCABasis",
    "PSGD",
    "RBD",
    "SubspaceConfig",
    "RBDConfig",
    "train_rbd",
    "load_basis",
    "pca_of_rows",
    "train_in_subspace",
    "span_of_rows",
    "trajectory_pca",
    "trajectory_span",
    "DATASETS",
    "Data",
    "FlatParams",
    "LowdimError",
    "ParamSpec",
    "SGDConfig",
    "Split",
    "Trajectory",
    "TrajectoryRecorder",
    "available_archs",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "corrupt_labels",
    "evaluate",
    "fit",
    "load_dataset",
    "register_model",
    "train_sgd",
]

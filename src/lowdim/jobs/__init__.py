"""The jobs: what each `lowdim` command runs, above the library and below the CLI.

    sampling.py      train-sgd: ordinary training that records the trajectory (DLDR stage 1)
    subspace.py      train-psgd, train-pbfgs, twa: training in a subspace of that trajectory
                     (options in subspace_config.py), with its two methods:
    dldr.py, twa.py  PCA + P-SGD or P-BFGS; the checkpoints' span from their average (TWA)
    intrinsic.py     intrinsic-dim: random subspaces of growing d, and d_int90; one point of
                     the sweep in intrinsic_points.py, the search over d in intrinsic_sweep.py
    random_bases.py  rbd: random bases descent
    common.py        what they share: the device, the model, the held-out examples
    rundir.py        a run's folder: options, resume, atomic outputs, summary
    comparison.py    report: the table and figure over a run and its subspace runs
    integrity.py     verify: which files of a run folder are damaged
    plots.py         the figures the jobs write

A job reads options (a config dataclass), checks them all, writes a run folder and returns its
summary; it calls only the library (`lowdim.bases`, `lowdim.optim`, `lowdim.train`, ...), never
argparse.
"""

from .intrinsic import IntrinsicConfig, measure_intrinsic_dim
from .random_bases import RBDConfig, train_rbd
from .sampling import SGDConfig, train_sgd
from .subspace import SubspaceConfig, train_in_subspace

__all__ = [
    "IntrinsicConfig",
    "RBDConfig",
    "SGDConfig",
    "SubspaceConfig",
    "measure_intrinsic_dim",
    "train_in_subspace",
    "train_rbd",
    "train_sgd",
]

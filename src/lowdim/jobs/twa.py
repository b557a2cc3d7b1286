"""Trainable weight averaging (TWA) as a method of `train_in_subspace`.

Job layer. Two variants (`SubspaceConfig.variant`):
  - "iclr": the span of the window's checkpoints, orthonormalised in float64 (Householder QR),
    anchored at their plain average; projected SGD with momentum;
  - "journal": per-layer unit deviations of the checkpoints from their mean, one coefficient
    per layer and checkpoint; projected AdamW with a cosine schedule after a 20% warm-up.
Both start from the plain average, whose accuracy with BatchNorm statistics recomputed (SWA)
the summary reports as the baseline `swa_test_acc`. The subspace job
(`lowdim.jobs.subspace`) calls `check_window`, `extract`, `describe`, `baseline`,
`optimizer`, `summary` in this order, as for DLDR (`dldr.py`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..bases import Basis
from ..bases.sharded import shard_span_basis
from ..bases.span import layer_deviations, trajectory_span
from ..optim import PSGD, PAdamW
from ..params import FlatParams
from ..train import evaluate
from ..train.bn import recompute_batchnorm
from ..trajectory import Trajectory

if TYPE_CHECKING:
    from .subspace import Window
    from .subspace_config import SubspaceConfig


def check_window(cfg: SubspaceConfig, snapshots: int) -> None:
    """Any window with a snapshot spans a subspace (the trajectory refuses empty windows)."""


def extract(
    trajectory: Trajectory, window: Window, cfg: SubspaceConfig, shard: tuple[int, int] | None
) -> Basis:
    """The span of the window (journal: per-layer deviations from its mean); with `shard` =
    (lo, hi), this process's slice of the span. The snapshots' crc32 and finiteness are
    checked first, in one pass (small beside a QR or a sharded exchange)."""
    start, _, stride = window.spec
    trajectory.verify(start, window.end, stride)
    if shard is not None:
        lo, hi = shard
        block = torch.from_numpy(np.asarray(window.rows[:, lo:hi], dtype=np.float64))
        return shard_span_basis(block, lo, hi, window.rows.shape[1], window.spec)
    if cfg.variant == "journal":
        rows = torch.from_numpy(np.asarray(window.rows, dtype=np.float64))
        return layer_deviations(rows, trajectory.layout, window=window.spec)
    return trajectory_span(trajectory, start=start, end=window.end, stride=stride)


def describe(basis: Basis, cfg: SubspaceConfig, folder: Path) -> None:
    """TWA writes no figure of its basis."""


def baseline(model: nn.Module, train, test, device) -> dict:
    """SWA: the plain average (the model, placed at the anchor) with BatchNorm recomputed."""
    average = copy.deepcopy(model)
    recompute_batchnorm(average, train, device=device)
    swa_test_loss, swa_test_acc = evaluate(average, test, device=device)
    return {"swa_test_loss": swa_test_loss, "swa_test_acc": swa_test_acc}


def optimizer(cfg: SubspaceConfig, flat: FlatParams, basis: Basis, model: nn.Module, train):
    """(projected SGD with momentum, or projected AdamW for the journal variant; None)."""
    if cfg.journal:
        return PAdamW(flat, basis, lr=cfg.lr, weight_decay=cfg.weight_decay), None
    opt = PSGD(flat, basis, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return opt, None


def summary(cfg: SubspaceConfig, basis: Basis, optimizer) -> dict:
    """The variant, and for the orthonormal span how far its columns are from orthonormal."""
    out = {"variant": cfg.variant}
    if cfg.variant == "iclr":
        out["orthogonality_error"] = basis.orthogonality_error()
    return out

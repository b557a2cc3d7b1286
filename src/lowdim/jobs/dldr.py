"""DLDR's stages 2 and 3 as a method of `train_in_subspace`: PCA of the trajectory, then P-SGD
or P-BFGS from the window's first snapshot (the paper trains from the initialisation).

Job layer. Like `twa.py`, this module is one method of the subspace job
(`lowdim.jobs.subspace`), which calls, in this order: `check_window`, `extract`, `describe`,
`baseline`, `optimizer`, `summary`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from ..bases import Basis, trajectory_pca
from ..bases.sharded import shard_pca_basis
from ..errors import BadArgument
from ..optim import PBFGS, PSGD
from ..params import FlatParams
from ..trajectory import Trajectory
from .plots import plot_spectrum

if TYPE_CHECKING:
    from .subspace import Window
    from .subspace_config import SubspaceConfig


def check_window(cfg: SubspaceConfig, snapshots: int) -> None:
    """Centred PCA of n snapshots has at most n - 1 components."""
    if not 1 <= cfg.n_components <= snapshots - 1:
        raise BadArgument(
            "n_components",
            f"{cfg.n_components} is not possible with the {snapshots} snapshots of the window: "
            f"centred PCA gives between 1 and {snapshots - 1} components",
        )


def extract(
    trajectory: Trajectory, window: Window, cfg: SubspaceConfig, shard: tuple[int, int] | None
) -> Basis:
    """The window's top `cfg.n_components` PCA directions, anchored at its first snapshot; with
    `shard` = (lo, hi), this process's slice of them (partial Gram matrices summed across
    processes). PCA of the whole window checks crc32 and finiteness inside its Gram pass."""
    if shard is None:
        start, _, stride = window.spec
        return trajectory_pca(
            trajectory, cfg.n_components, start=start, end=window.end, stride=stride
        )
    trajectory.verify(window.spec[0], window.end, window.spec[2])
    lo, hi = shard
    return shard_pca_basis(
        window.rows[:, lo:hi], cfg.n_components, lo, hi, window.rows.shape[1], window.spec
    )


def describe(basis: Basis, cfg: SubspaceConfig, folder: Path) -> None:
    """spectrum.png: the explained variance of each component."""
    plot_spectrum(
        basis.explained_variance_ratio,
        folder / "spectrum.png",
        title=f"PCA of snapshots {cfg.params_start}..{basis.window[1] - 1}",
    )


def baseline(model: nn.Module, train, test, device) -> dict:
    """DLDR reports no baseline of its own (the train-sgd run is its baseline)."""
    return {}


def optimizer(cfg: SubspaceConfig, flat: FlatParams, basis: Basis, model: nn.Module, train):
    """(P-SGD or P-BFGS, the metrics it adds to each epoch's record or None)."""
    if cfg.method == "psgd":
        return PSGD(
            flat, basis, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        ), None
    steps_per_epoch = -(-train.num_batches(cfg.batch_size) // cfg.accumulate)
    opt = PBFGS(
        flat,
        basis,
        lr=cfg.lr,
        sigma=cfg.sigma,
        shrink=cfg.shrink,
        max_tries=cfg.max_tries,
        reset_every=steps_per_epoch if cfg.reset_every_epoch else 0,
        residual_alpha=cfg.residual_alpha,
        residual_gamma=cfg.residual_gamma,
        module=model,
    )
    return opt, opt.counters


def summary(cfg: SubspaceConfig, basis: Basis, optimizer) -> dict:
    """The explained variance of the basis, and P-BFGS's step counters."""
    out = {"explained_variance": float(basis.explained_variance_ratio.sum())}
    if isinstance(optimizer, PBFGS):
        out.update(optimizer.counters())
    return out

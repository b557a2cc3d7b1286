"""One point of an intrinsic-dim sweep: a subspace model of d coordinates, trained alone.

Job layer: `measure_intrinsic_dim` (in `intrinsic.py`) checks the options and trains the
baseline, and `Sweep` (in `intrinsic_sweep.py`) chooses the d to train; this module builds the
network a run starts from (the zoo's, or the user's `model=`) and trains one subspace model,
theta = theta_0 + P c with P drawn from (seed, d), in its own resumable folder
points/d<d>-s<seed>/, leaving its summary and its compressed subspace.safetensors there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import distributed
from ..compress import save_subspace
from ..compress_zoo import save_subspace_model
from ..data import Data
from ..errors import BadArgument
from ..io import atomic_write_json
from ..seeding import derive_seed
from ..subspace_model import SubspaceModel
from ..train import build_optimizer, fit
from .common import model_for, resolve_device
from .rundir import check_summary, read_json_object
from .sampling import SGDConfig

if TYPE_CHECKING:
    from ..train.loop import FitResult
    from .intrinsic import IntrinsicConfig

# The user's network, as `measure_intrinsic_dim(model=)` takes it: a module (every run starts
# from its weights), a function building a fresh one (called under each run's seed), or None
# (the zoo's `cfg.arch`).
ModelArg = nn.Module | Callable[[], nn.Module] | None

# What a finished point's summary.json holds (checked when a resumed sweep reads it back).
POINT_KEYS = {"dim": int, "seed": int, "test_acc": float, "wall_seconds": float}


def sgd_config(cfg: IntrinsicConfig, seed: int, epochs: int = 1) -> SGDConfig:
    """The sweep's protocol on all D weights: the direct-training baseline's options, and the
    zoo's network of a run seeded `seed` (`model_for`). `epochs` defaults to 1."""
    return SGDConfig(
        dataset=cfg.dataset,
        arch=cfg.arch,
        hidden=cfg.hidden,
        epochs=epochs,
        optimizer="adam",
        lr=cfg.baseline_lr,
        beta2=cfg.beta2,
        weight_decay=cfg.l2,
        schedule="constant",
        batch_size=cfg.batch_size,
        seed=seed,
        data_dir=cfg.data_dir,
        device=cfg.device,
        autocast=cfg.autocast,
    )


def build_module(model: nn.Module | Callable[[], nn.Module], seed: int) -> nn.Module:
    """A fresh copy of the user's network for one run: a module is deep-copied (so every run
    starts from its weights, and the caller's module is never trained); a function is called
    under `torch.manual_seed(seed)`, so each seed has its own initialisation, as the zoo's nets
    do. BadArgument("model") for anything else."""
    if isinstance(model, nn.Module):
        return copy.deepcopy(model)
    if not callable(model):
        raise BadArgument(
            "model",
            f"must be an nn.Module or a function that builds one, got {type(model).__name__}",
        )
    torch.manual_seed(seed)
    built = model()
    if not isinstance(built, nn.Module):
        raise BadArgument("model", f"must build an nn.Module, got {type(built).__name__}")
    return built


def point_module(
    cfg: IntrinsicConfig, data: Data, seed: int, device: torch.device, model: ModelArg = None
) -> nn.Module:
    """The network a run seeded `seed` starts from, on `device`: the user's (`build_module`),
    or the zoo's `cfg.arch` built under `seed` when `model` is None (the default)."""
    if model is None:
        return model_for(sgd_config(cfg, seed), data, device)
    return build_module(model, seed).to(device)


def point_model(cfg: IntrinsicConfig, module: nn.Module, dim: int, seed: int) -> SubspaceModel:
    """`module` in the random subspace of one point, seeded by (seed, d): the basis global or
    one per layer (`cfg.per_layer`), with SAID's scales counted in d (`cfg.layer_scales`) and
    the `cfg.direct` parameters trained beside it."""
    return SubspaceModel.random(
        module,
        cfg.projection,
        dim,
        derive_seed("intrinsic", seed, dim),
        compartments="layer" if cfg.per_layer else None,
        direct=cfg.direct,
        layer_scales=cfg.layer_scales,
    )


def _fit_point(
    cfg: IntrinsicConfig,
    sub: SubspaceModel,
    data: Data,
    seed: int,
    device: torch.device,
    folder: Path,
    progress: bool,
    checkpoint_every: int,
) -> FitResult:
    """Adam on the d coordinates, with L2 on the full weights, resuming from `folder`."""
    optimizer = build_optimizer("adam", sub.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2))
    return fit(
        sub,
        optimizer,
        data.train.to(device),
        data.test.to(device),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=seed,
        device=device,
        run_dir=folder,
        resume=True,
        progress=progress,
        # without L2 (fine-tuning) no pass over theta for a zero term
        regularizer=(lambda: 0.5 * cfg.l2 * sub.l2_penalty()) if cfg.l2 else None,
        checkpoint_every=checkpoint_every,
        autocast=cfg.autocast,
    )


def save_point(
    path: Path,
    sub: SubspaceModel,
    cfg: IntrinsicConfig,
    data: Data,
    seed: int,
    test_acc: float,
    model: ModelArg = None,
) -> None:
    """The trained point as a compressed file: the zoo's (`save_subspace_model`, which
    `lowdim compress` and `evaluate` read), or, for the user's network (`model` not None;
    default None), a plain `save_subspace` that `SubspaceModel.load` restores onto a module
    rebuilt as `build_module` built it (its anchor seed recorded when `model` is a function)."""
    if model is None:
        save_subspace_model(
            path,
            sub,
            arch=cfg.arch,
            hidden=cfg.hidden,
            dataset=cfg.dataset,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            anchor_seed=seed,
            test_acc=test_acc,
        )
        return
    anchor_seed = None if isinstance(model, nn.Module) else seed
    extra = {"dataset": data.name, "test_acc": test_acc}
    save_subspace(path, sub, anchor_seed=anchor_seed, extra=extra)


def train_point(
    cfg: IntrinsicConfig,
    data: Data,
    dim: int,
    seed: int,
    folder: Path,
    progress: bool = True,
    checkpoint_every: int = 0,
    model: ModelArg = None,
) -> dict:
    """Train one subspace model (d = dim, anchor and basis from `seed`) in `folder`; return its
    row. A finished point is read back, never retrained. `progress` (default True): per-epoch
    lines; `checkpoint_every` (default 0): see `fit`; `model` (default None, the zoo's
    `cfg.arch`): the user's network, as `point_module` takes it."""
    if (folder / "summary.json").exists():
        row = read_json_object(folder / "summary.json", "point's summary")
        return check_summary(row, folder / "summary.json", POINT_KEYS)
    device = resolve_device(cfg.device)
    sub = point_model(cfg, point_module(cfg, data, seed, device, model), dim, seed)
    result = _fit_point(cfg, sub, data, seed, device, folder, progress, checkpoint_every)
    row = {
        "dim": dim,
        "seed": seed,
        "test_acc": result.test_acc,
        "test_loss": result.test_loss,
        "train_acc": result.train_acc,
        "wall_seconds": result.wall_seconds,
    }
    if not distributed.is_main():
        return row
    save_point(folder / "subspace.safetensors", sub, cfg, data, seed, result.test_acc, model)
    atomic_write_json(folder / "summary.json", row)
    return row

"""Ordinary training with trajectory recording: stage 1 of DLDR, and the baseline of every method.

`train_sgd(SGDConfig(...), save_dir)` is what `lowdim train-sgd` runs. It writes into save_dir:

    config.json          the options
    metrics.jsonl        one record per epoch
    checkpoint/          the training state at the last finished epoch (for --resume)
    trajectory/          the parameter snapshots (see lowdim.trajectory)
    model.safetensors    the final weights (parameters and buffers)
    curves.png           loss and accuracy per epoch
    summary.json         the result (written last)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from ..data import Data, Split, StreamSplit, load_dataset
from ..errors import BadArgument, check_finite, check_seed
from ..params import FlatParams
from ..train import FitResult, build_optimizer, build_schedule, fit
from ..train.loop import check_checkpoint_every
from ..train.precision import autocast_of
from .common import arch_of, holdout_split, labels_digest, model_for, resolve_device
from .rundir import RunDir


@dataclass
class SGDConfig:
    """The options of a `train-sgd` run.

    Defaults follow the DLDR paper's sampling stage (momentum 0.9, weight decay 1e-4, batch 128,
    one snapshot per epoch) except the epoch count (paper: 150) and the learning rate: 0.05
    suits the small nets of the zoo (mlp, fc, lenet, cnn); the paper's CIFAR ResNets use 0.1.
    """

    dataset: str = "digits"
    arch: str = "mlp"
    epochs: int = 10
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128
    optimizer: str = "sgd"
    schedule: str = "multistep"
    lr_milestones: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    corrupt: float = 0.0
    seed: int = 0
    samples_per_epoch: int = 1
    hidden: list[int] | None = None
    data_dir: str | None = None
    download: bool = False
    device: str | None = None
    autocast: str | None = None  # bf16 or fp16: the forward passes under autocast
    tensorboard: bool = False
    init_from: str | None = None
    holdout: float = 0.0
    beta2: float = 0.999


def check_config(cfg: SGDConfig) -> None:
    """One-line errors for options out of range (every float must also be finite)."""
    check_finite(
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        lr_gamma=cfg.lr_gamma,
        corrupt=cfg.corrupt,
        holdout=cfg.holdout,
        beta2=cfg.beta2,
    )
    check_seed(cfg.seed)
    if not 0.0 <= cfg.momentum < 1.0:
        raise BadArgument("momentum", f"{cfg.momentum} is outside the valid range [0, 1)")
    if not 0.0 <= cfg.beta2 < 1.0:
        raise BadArgument("beta2", f"{cfg.beta2} is outside the valid range [0, 1)")
    if cfg.epochs <= 0:
        raise BadArgument("epochs", f"must be a positive integer, got {cfg.epochs}")
    if cfg.batch_size <= 0:
        raise BadArgument("batch_size", f"must be a positive integer, got {cfg.batch_size}")
    if not 0.0 <= cfg.corrupt <= 1.0:
        raise BadArgument("corrupt", f"{cfg.corrupt} is outside the valid range [0, 1]")
    if cfg.samples_per_epoch < 1:
        raise BadArgument("samples_per_epoch", f"must be >= 1, got {cfg.samples_per_epoch}")
    if not 0.0 <= cfg.holdout < 1.0:
        raise BadArgument("holdout", f"{cfg.holdout} is outside the valid range [0, 1)")


class _Training(NamedTuple):
    """What a run trains, and with what: made before anything is written to its folder."""

    model: nn.Module
    flat: FlatParams
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    train: Split | StreamSplit  # the training split less the held-out examples
    test: Split | StreamSplit


def _load_data(cfg: SGDConfig) -> Data:
    """The dataset named in `cfg`, with its label noise (`corrupt`, drawn from `seed`)."""
    return load_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        download=cfg.download,
        corrupt=cfg.corrupt,
        seed=cfg.seed,
    )


def _prepare(
    cfg: SGDConfig, data: Data, model: nn.Module | None, device: torch.device
) -> _Training:
    """The model (`model` as given, else the zoo's `cfg.arch`), on `device`; its optimiser
    (`cfg.optimizer`) and learning-rate schedule (`cfg.schedule`); the examples it trains on
    (`data.train` less the `cfg.holdout` fraction) and the test split."""
    model = model_for(cfg, data, device) if model is None else model.to(device)
    flat = FlatParams(model)
    optimizer = build_optimizer(
        cfg.optimizer,
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        betas=(0.9, cfg.beta2),
    )
    scheduler = build_schedule(
        cfg.schedule, optimizer, epochs=cfg.epochs, milestones=cfg.lr_milestones, gamma=cfg.lr_gamma
    )
    train, _ = holdout_split(data.train, cfg.holdout, cfg.seed)
    return _Training(model, flat, optimizer, scheduler, train, data.test)


def _fit(
    cfg: SGDConfig,
    run: RunDir,
    parts: _Training,
    device: torch.device,
    *,
    progress: bool,
    checkpoint_every: int,
) -> FitResult:
    """`lowdim.train.fit` with the run's options, recording `cfg.samples_per_epoch` snapshots
    an epoch into the run's trajectory/ folder."""
    return fit(
        parts.model,
        parts.optimizer,
        parts.train.to(device),
        parts.test.to(device),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        scheduler=parts.scheduler,
        device=device,
        run_dir=run.path,
        resume=run.resumed,
        flat=parts.flat,
        trajectory_dir=run.path / "trajectory",
        samples_per_epoch=cfg.samples_per_epoch,
        progress=progress,
        tensorboard=cfg.tensorboard,
        checkpoint_every=checkpoint_every,
        autocast=cfg.autocast,
    )


def _summary(
    cfg: SGDConfig, result: FitResult, flat: FlatParams, data: Data, device: torch.device
) -> dict:
    """The run's summary.json: the keys every run has, then the seed, the device and the digest
    of the training labels (later stages check they see the same ones)."""
    return {
        "method": "sgd",
        "dataset": cfg.dataset,
        "arch": cfg.arch,
        **result.metrics(),
        "num_params": flat.numel,
        "subspace_dim": flat.numel,
        "snapshots": result.snapshots,
        "corrupt": cfg.corrupt,
        "effective_noise_rate": data.effective_noise_rate,
        "seed": cfg.seed,
        "device": str(device),
        "train_labels_sha256": labels_digest(data.train.y),
    }


def train_sgd(
    cfg: SGDConfig,
    save_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    data: Data | None = None,
    model: nn.Module | None = None,
    checkpoint_every: int = 0,
) -> dict:
    """Train with SGD (or Adam/AdamW) while recording the trajectory; return the summary dict.

    Every option is checked, the data loaded and the model built before anything is written to
    `save_dir`. `data` (default None: the dataset named in `cfg`) replaces that dataset with
    your own tensors, as a `lowdim.data.Data` (its `name` is recorded as the run's dataset),
    and `model` (default None: the zoo's `cfg.arch`, initialised from `cfg.seed`) the zoo's
    network with your own module, initialised as you built it (its class name is recorded as
    the run's arch); the later stages (`train_in_subspace`) then take the same `data=` and a
    freshly built `model=`. With `resume` (default False), a killed run continues from its last
    checkpoint and ends with the same weights as an uninterrupted one (on the CPU; GPU kernels
    may be non-deterministic), and a finished one returns its summary. `progress` (default
    True) shows progress bars. `checkpoint_every` N (default 0) also checkpoints after every N
    steps inside an epoch (see `fit`): it changes when a kill loses work, never the result.
    """
    check_config(cfg)
    check_checkpoint_every(checkpoint_every)
    device = resolve_device(cfg.device)
    autocast_of(cfg.autocast)  # a bad name fails here too
    # the run records what it trains on, not the names of what it replaced
    cfg = replace(cfg, dataset=data.name if data else cfg.dataset, arch=arch_of(model, cfg.arch))
    run = RunDir(save_dir, asdict(cfg), resume=resume, defaults=asdict(SGDConfig()))
    if run.finished:
        return run.read_summary()
    data = _load_data(cfg) if data is None else data
    parts = _prepare(cfg, data, model, device)
    run.start()
    result = _fit(cfg, run, parts, device, progress=progress, checkpoint_every=checkpoint_every)
    title = f"{cfg.arch} on {cfg.dataset}"
    run.save_outputs(parts.model, result.history, arch=cfg.arch, dataset=cfg.dataset, title=title)
    summary = _summary(cfg, result, parts.flat, data, device)
    run.write_summary(summary)
    return summary

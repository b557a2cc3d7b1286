"""The `lowdim rbd` job: random bases descent on one process, through the one training loop.

Writes into save_dir, as train-sgd does: config.json, metrics.jsonl (with the cosine between
the last step and the true gradient), checkpoint/, model.safetensors, curves.png, summary.json
(the usual keys, `subspace_dim` = d, plus `world_size` and `bytes_sent_per_step`).

`train_rbd` reads as its steps: check the options (`check_config`), load the data and build
the model, make the optimiser over the model's compartments (`rbd_compartments`), claim the run
folder (`RunDir`), train (`lowdim.train.fit`), then save the weights, curves and summary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .. import distributed
from ..bases.compartments import SPLITS, Compartment, compartments_of
from ..bases.directions import check_choice
from ..data import Data, RandomCropFlip, Split, StreamSplit, load_dataset
from ..errors import BadArgument, check_seed
from ..optim.optimizer import check_rates
from ..optim.rbd import DISTRIBUTIONS, MODES, NORMALISATIONS, RBD
from ..params import FlatParams
from ..train import FitResult, fit
from ..train.loop import check_checkpoint_every
from ..train.precision import autocast_of
from .common import arch_of, model_for, resolve_device
from .rundir import RunDir
from .sampling import SGDConfig

COMPARTMENT_RULES = ("none", "layer", "param", "chunk")


@dataclass
class RBDConfig:
    """Defaults follow the paper: d = 250, batch 32, plain SGD without momentum or schedule
    (its learning rates are per task; 1.0 is its FC-MNIST rate); epochs 10 (paper: 100).
    `mode` and `keep_directions` are those of `lowdim.optim.RBD`; under torchrun
    `batch_size` is per process. `shift` N > 0 augments the training images with random
    shifts of up to N pixels (padded with the darkest pixel value and cropped back; no flips,
    which would turn digits into other symbols); default 0, none."""

    dataset: str = "digits"
    arch: str = "fc"
    hidden: list[int] | None = None
    dim: int = 250
    compartments: str = "none"
    chunk_size: int = 0
    split: str = "size"
    distribution: str = "hadamard"
    normalise: str = "sqrt"
    fixed_basis: bool = False
    mode: str = "independent"
    keep_directions: bool = False
    shift: int = 0
    epochs: int = 10
    lr: float = 1.0
    batch_size: int = 32
    seed: int = 0
    data_dir: str | None = None
    device: str | None = None
    autocast: str | None = None  # bf16 or fp16: the forward passes under autocast


def _check_compartment_options(cfg: RBDConfig) -> None:
    """BadArgument for an unknown `compartments` rule or `split`, or for a `chunk_size` under 1
    with compartments "chunk"."""
    check_choice("compartments", cfg.compartments, COMPARTMENT_RULES)
    check_choice("split", cfg.split, SPLITS)
    if cfg.compartments == "chunk" and cfg.chunk_size < 1:
        raise BadArgument(
            "chunk_size",
            f"must be >= 1 (parameters per chunk) with compartments 'chunk', got {cfg.chunk_size}",
        )


def check_config(cfg: RBDConfig) -> None:
    """A BadArgument naming the first option out of range. `dim` is checked later, against the
    model's size, by `rbd_compartments`."""
    check_seed(cfg.seed)
    check_rates(cfg.lr)
    check_choice("distribution", cfg.distribution, DISTRIBUTIONS)
    check_choice("normalise", cfg.normalise, NORMALISATIONS)
    check_choice("mode", cfg.mode, MODES)
    _check_compartment_options(cfg)
    if cfg.epochs < 1:
        raise BadArgument("epochs", f"must be a positive integer, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise BadArgument("batch_size", f"must be a positive integer, got {cfg.batch_size}")
    if cfg.shift < 0:
        raise BadArgument("shift", f"must be an integer >= 0 (pixels), got {cfg.shift}")


def rbd_compartments(cfg: RBDConfig, flat: FlatParams) -> list[Compartment]:
    """The compartments of `compartments_of`: one over all of theta ("none"), or one per
    layer, per parameter tensor, or per chunk of `chunk_size` parameters, with d split by
    `split`: "size" in proportion to their sizes, "equal" in equal shares (both: d in all),
    "each" d for every compartment (d x blocks in all, each capped at its size)."""
    _check_compartment_options(cfg)
    if not 1 <= cfg.dim <= flat.numel:
        raise BadArgument("dim", f"{cfg.dim} must be between 1 and D = {flat.numel}")
    by = "all" if cfg.compartments == "none" else cfg.compartments
    return compartments_of(flat, by, cfg.dim, cfg.split, cfg.chunk_size or None)


def _data_and_model(
    cfg: RBDConfig, data: Data | None, model: nn.Module | None, device: torch.device
) -> tuple[RBDConfig, Data, nn.Module]:
    """What the run trains: `data` as given, else the dataset `cfg.dataset` loaded; `model` as
    given (moved to `device`), else the zoo's `cfg.arch` initialised from `cfg.seed`. The config
    comes back naming them (a user's data by its `name`, a user's module by its class name)."""
    as_sgd = SGDConfig(dataset=cfg.dataset, arch=cfg.arch, hidden=cfg.hidden, seed=cfg.seed)
    dataset = cfg.dataset if data is None else data.name
    cfg = replace(cfg, dataset=dataset, arch=arch_of(model, cfg.arch))
    if data is None:
        data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seed)
    model = model_for(as_sgd, data, device) if model is None else model.to(device)
    if cfg.shift:
        data = replace(data, train=shifted(data.train, cfg.shift))
    return cfg, data, model


def shifted(train: Split | StreamSplit, pixels: int) -> Split:
    """`train` augmented with random shifts of up to `pixels` (a new split, the same tensors):
    padding takes the smallest input value, the background of MNIST-like images."""
    if not isinstance(train, Split) or isinstance(train.x, dict) or train.x.dim() != 4:
        raise BadArgument("shift", "needs image inputs held in memory, (N, C, H, W)")
    black = float(train.x.min())
    return Split(train.x, train.y, augment=RandomCropFlip(pixels, fill=black, flip=False))


def _build_rbd(cfg: RBDConfig, flat: FlatParams) -> RBD:
    """The RBD optimiser over `flat` with the run's options, one basis per compartment."""
    return RBD(
        flat,
        None,  # the compartments carry their dims
        cfg.lr,
        seed=cfg.seed,
        distribution=cfg.distribution,
        normalise=cfg.normalise,
        compartments=rbd_compartments(cfg, flat),
        fixed_basis=cfg.fixed_basis,
        keep_directions=cfg.keep_directions,
        mode=cfg.mode,
    )


def _fit(
    cfg: RBDConfig,
    run: RunDir,
    model: nn.Module,
    optimizer: RBD,
    data: Data,
    device: torch.device,
    *,
    progress: bool,
    checkpoint_every: int,
) -> FitResult:
    """`lowdim.train.fit` with the run's options; metrics.jsonl also gets each epoch's
    `step_cosine` (the cosine between the last step and the true gradient)."""
    return fit(
        model,
        optimizer,
        data.train.to(device),
        data.test.to(device),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        device=device,
        run_dir=run.path,
        resume=run.resumed,
        progress=progress,
        extra_metrics=lambda: {"step_cosine": optimizer.last_cosine},
        checkpoint_every=checkpoint_every,
        autocast=cfg.autocast,
    )


def _summary(cfg: RBDConfig, result: FitResult, optimizer: RBD, device: torch.device) -> dict:
    """The run's summary.json: the keys every run has, then RBD's (compartments, world_size,
    mode, bytes_sent_per_step)."""
    return {
        "method": _method(cfg),
        "dataset": cfg.dataset,
        "arch": cfg.arch,
        **result.metrics(),
        "num_params": optimizer.flat.numel,
        "subspace_dim": optimizer.dim,
        "snapshots": 0,
        "corrupt": 0.0,
        "effective_noise_rate": 0.0,
        "compartments": len(optimizer.compartments),
        "world_size": distributed.world_size(),
        "mode": cfg.mode,
        "bytes_sent_per_step": optimizer.bytes_sent_per_step,
        "device": str(device),
    }


def _method(cfg: RBDConfig) -> str:
    """The method a run records: "rbd", or "rbd-fixed" for the fixed-basis baseline."""
    return "rbd-fixed" if cfg.fixed_basis else "rbd"


def train_rbd(
    cfg: RBDConfig,
    save_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    data: Data | None = None,
    model: nn.Module | None = None,
    checkpoint_every: int = 0,
) -> dict:
    """Train with RBD (or its fixed-basis baseline); return the summary (also written).

    Every option is checked, the data loaded, the model built and the optimiser made before
    anything is written to `save_dir`. `data` (default None: the dataset named in `cfg`) is
    your own tensors, as a `lowdim.data.Data`, and `model` (default None: the zoo's `cfg.arch`,
    initialised from `cfg.seed`) your own module, initialised as you built it; the run records
    `data.name` as its dataset and the module's class name as its arch. `resume` (default
    False) continues a killed run from its last checkpoint, and returns a finished run's
    summary; `progress` (default True) shows progress bars; `checkpoint_every` N (default 0:
    at the end of each epoch only) also checkpoints after every N steps inside an epoch.
    """
    check_config(cfg)
    check_checkpoint_every(checkpoint_every)
    device = resolve_device(cfg.device)
    autocast_of(cfg.autocast)  # a bad name fails here too
    cfg, data, model = _data_and_model(cfg, data, model, device)
    optimizer = _build_rbd(cfg, FlatParams(model))
    run = RunDir(save_dir, asdict(cfg), resume=resume, defaults=asdict(RBDConfig()))
    if run.finished:
        return run.read_summary()
    run.start()
    result = _fit(
        cfg,
        run,
        model,
        optimizer,
        data,
        device,
        progress=progress,
        checkpoint_every=checkpoint_every,
    )
    title = f"{_method(cfg)}, d = {cfg.dim}: {cfg.arch} on {cfg.dataset}"
    run.save_outputs(model, result.history, arch=cfg.arch, dataset=cfg.dataset, title=title)
    summary = _summary(cfg, result, optimizer, device)
    run.write_summary(summary)
    return summary

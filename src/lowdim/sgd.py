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

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import distributed
from .data import Data, Split, load_dataset
from .errors import LowdimError, check_finite, check_seed
from .io import first_nonfinite, load_tensors
from .models import build_model
from .params import FlatParams
from .rundir import RunDir
from .seeding import generator
from .train import build_optimizer, build_schedule, fit
from .train.loop import check_checkpoint_every


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
    tensorboard: bool = False
    init_from: str | None = None
    holdout: float = 0.0
    beta2: float = 0.999


def resolve_device(name: str | None) -> torch.device:
    """The device this process trains on: `name`, or CUDA when available and the CPU
    otherwise; a clear error for a bad name. Under torchrun it also joins the process group
    (see `lowdim.distributed.setup`; CUDA processes take cuda:LOCAL_RANK)."""
    if name is None:
        return distributed.setup(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LowdimError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LowdimError(f"--device {name} asked for CUDA, but no CUDA device is available")
    return distributed.setup(device)


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
        raise LowdimError(f"--momentum {cfg.momentum} is outside the valid range [0, 1)")
    if not 0.0 <= cfg.beta2 < 1.0:
        raise LowdimError(f"--beta2 {cfg.beta2} is outside the valid range [0, 1)")
    if cfg.epochs <= 0:
        raise LowdimError(f"--epochs must be a positive integer, got {cfg.epochs}")
    if cfg.batch_size <= 0:
        raise LowdimError(f"--batch-size must be a positive integer, got {cfg.batch_size}")
    if not 0.0 <= cfg.corrupt <= 1.0:
        raise LowdimError(f"--corrupt {cfg.corrupt} is outside the valid range [0, 1]")
    if cfg.samples_per_epoch < 1:
        raise LowdimError(f"--samples-per-epoch must be >= 1, got {cfg.samples_per_epoch}")
    if not 0.0 <= cfg.holdout < 1.0:
        raise LowdimError(f"--holdout {cfg.holdout} is outside the valid range [0, 1)")


def holdout_split(train, fraction: float, seed: int):
    """(the examples SGD trains on, the held-out ones): a fraction `fraction` of the training
    split set aside by a permutation drawn from generator("holdout", seed), the same for the
    train-sgd run and for the subspace runs built on it (TWA-v fits its coefficients on the
    held-out part). Both are the whole split, and an empty one, when `fraction` is 0."""
    if fraction == 0:
        return train, None
    if not isinstance(train, Split):
        raise LowdimError("--holdout needs a dataset held in memory (not a streamed one)")
    order = torch.randperm(len(train), generator=generator("holdout", seed))
    held = max(1, round(fraction * len(train)))
    if held >= len(train):
        raise LowdimError(f"--holdout {fraction} leaves no training examples")
    keep, out = order[:-held].sort().values, order[-held:].sort().values
    return (
        Split(train.x[keep], train.y[keep], train.augment),
        Split(train.x[out], train.y[out], train.augment),
    )


def model_for(cfg: SGDConfig, data: Data, device: torch.device) -> torch.nn.Module:
    """The run's model, initialised from `cfg.seed` (or loaded from `cfg.init_from`), on
    `device`."""
    options = {"hidden": tuple(cfg.hidden)} if cfg.hidden else {}
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, data.input_shape, data.num_classes, **options)
    if cfg.init_from:
        load_weights(model, cfg.init_from)
    return model.to(device)


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a `model.safetensors` (or the one in a run folder) into `model`, strictly."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise LowdimError(f"--init-from {path}: no such file (give a model.safetensors or a run)")
    try:
        state = load_tensors(path)
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise LowdimError(f"--init-from {path} is not a safetensors file ({e})") from None
    if (name := first_nonfinite(state)) is not None:
        raise LowdimError(
            f"--init-from {path}: tensor {name!r} holds NaN or inf values (saved from a "
            "diverged run?); start from other weights"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise LowdimError(f"--init-from {path} does not fit --arch: {first}") from None


def labels_digest(labels: torch.Tensor) -> str:
    """sha256 of the training labels, so later stages can check they see the same noisy ones."""
    return hashlib.sha256(labels.cpu().numpy().tobytes()).hexdigest()


def train_sgd(
    cfg: SGDConfig,
    save_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    data: Data | None = None,
    checkpoint_every: int = 0,
) -> dict:
    """Train with SGD (or Adam/AdamW) while recording the trajectory; return the summary dict.

    Every option is checked, the data loaded and the model built before anything is written to
    `save_dir`. `data` replaces the dataset named in `cfg` (your own tensors, as a
    `lowdim.data.Data`). With `resume`, a killed run continues from its last checkpoint and
    ends with the same weights as an uninterrupted one (on the CPU; GPU kernels may be
    non-deterministic). `checkpoint_every` N (default 0) also checkpoints after every N steps
    inside an epoch (see `fit`): it changes when a kill loses work, never the result.
    """
    check_config(cfg)
    check_checkpoint_every(checkpoint_every)
    device = resolve_device(cfg.device)
    run = RunDir(save_dir, asdict(cfg), resume=resume, defaults=asdict(SGDConfig()))
    if run.finished:
        return run.read_summary()
    if data is None:
        data = load_dataset(
            cfg.dataset,
            data_dir=cfg.data_dir,
            download=cfg.download,
            corrupt=cfg.corrupt,
            seed=cfg.seed,
        )
    model = model_for(cfg, data, device)
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
    run.start()
    result = fit(
        model,
        optimizer,
        train.to(device),
        data.test.to(device),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        scheduler=scheduler,
        device=device,
        run_dir=run.path,
        resume=run.resumed,
        flat=flat,
        trajectory_dir=run.path / "trajectory",
        samples_per_epoch=cfg.samples_per_epoch,
        progress=progress,
        tensorboard=cfg.tensorboard,
        checkpoint_every=checkpoint_every,
    )
    run.save_outputs(
        model,
        result.history,
        arch=cfg.arch,
        dataset=cfg.dataset,
        title=f"{cfg.arch} on {cfg.dataset}",
    )
    summary = {
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
    run.write_summary(summary)
    return summary

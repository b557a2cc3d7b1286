"""The `lowdim rbd` job: random bases descent on one process, through the one training loop.

Writes into save_dir, as train-sgd does: config.json, metrics.jsonl (with the cosine between
the last step and the true gradient), checkpoint/, model.safetensors, curves.png, summary.json
(the usual keys, `subspace_dim` = d, plus `world_size` and `bytes_sent_per_step`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .. import distributed
from ..bases.compartments import SPLITS, Compartment, compartments_of
from ..data import load_dataset
from ..errors import LowdimError, check_seed
from ..optim.rbd import DISTRIBUTIONS, RBD
from ..params import FlatParams
from ..train import fit
from ..train.loop import check_checkpoint_every
from .common import model_for, resolve_device
from .rundir import RunDir
from .sampling import SGDConfig

COMPARTMENT_RULES = ("none", "layer", "param", "chunk")


@dataclass
class RBDConfig:
    """Defaults follow the paper: d = 250, batch 32, plain SGD without momentum or schedule
    (its learning rates are per task; 1.0 is its FC-MNIST rate); epochs 10 (paper: 100).
    `mode` and `keep_directions` are those of `lowdim.optim.RBD`; under torchrun
    `batch_size` is per process."""

    dataset: str = "digits"
    arch: str = "fc"
    hidden: list[int] | None = None
    dim: int = 250
    compartments: str = "none"
    chunk_size: int = 0
    split: str = "size"
    distribution: str = "gaussian"
    normalise: str = "sqrt"
    fixed_basis: bool = False
    mode: str = "independent"
    keep_directions: bool = False
    epochs: int = 10
    lr: float = 1.0
    batch_size: int = 32
    seed: int = 0
    data_dir: str | None = None
    device: str | None = None


def rbd_compartments(cfg: RBDConfig, flat: FlatParams) -> list[Compartment]:
    """The compartments of `compartments_of`: one over all of theta ("none"), or one per
    layer, per parameter tensor, or per chunk of `chunk_size` parameters, with d split by
    `split`: "size" in proportion to their sizes, "equal" in equal shares (both: d in all),
    "each" d for every compartment (d x blocks in all, each capped at its size)."""
    if cfg.compartments not in COMPARTMENT_RULES:
        raise LowdimError(
            f"unknown --compartments {cfg.compartments!r}; choose one of: "
            f"{', '.join(COMPARTMENT_RULES)}"
        )
    if cfg.split not in SPLITS:
        raise LowdimError(f"unknown --split {cfg.split!r}; choose one of: {', '.join(SPLITS)}")
    if cfg.compartments == "chunk" and cfg.chunk_size < 1:
        raise LowdimError(
            f"--compartments chunk needs --chunk-size >= 1 (parameters per chunk), got "
            f"{cfg.chunk_size}"
        )
    if not 1 <= cfg.dim <= flat.numel:
        raise LowdimError(f"--dim {cfg.dim} must be between 1 and D = {flat.numel}")
    by = "all" if cfg.compartments == "none" else cfg.compartments
    return compartments_of(flat, by, cfg.dim, cfg.split, cfg.chunk_size or None)


def train_rbd(
    cfg: RBDConfig,
    save_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    checkpoint_every: int = 0,
) -> dict:
    """Train with RBD (or its fixed-basis baseline); return the summary (also written).
    `checkpoint_every` N (default 0) also checkpoints after every N steps inside an epoch."""
    check_checkpoint_every(checkpoint_every)
    if cfg.distribution not in DISTRIBUTIONS:
        raise LowdimError(
            f"unknown --distribution {cfg.distribution!r}; choose one of: "
            f"{', '.join(DISTRIBUTIONS)}"
        )
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise LowdimError(
            f"--epochs and --batch-size must be >= 1, got {cfg.epochs} and {cfg.batch_size}"
        )
    check_seed(cfg.seed)
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seed)
    sgd_like = SGDConfig(dataset=cfg.dataset, arch=cfg.arch, hidden=cfg.hidden, seed=cfg.seed)
    model = model_for(sgd_like, data, device)
    flat = FlatParams(model)
    blocks = rbd_compartments(cfg, flat)
    optimizer = RBD(
        flat,
        None,  # the compartments carry their dims
        cfg.lr,
        seed=cfg.seed,
        distribution=cfg.distribution,
        normalise=cfg.normalise,
        compartments=blocks,
        fixed_basis=cfg.fixed_basis,
        keep_directions=cfg.keep_directions,
        mode=cfg.mode,
    )
    run = RunDir(save_dir, asdict(cfg), resume=resume, defaults=asdict(RBDConfig()))
    if run.finished:
        return run.read_summary()
    run.start()
    result = fit(
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
        average_gradients=False,  # RBD exchanges d coordinates, not gradients
        checkpoint_every=checkpoint_every,
    )
    method = "rbd-fixed" if cfg.fixed_basis else "rbd"
    run.save_outputs(
        model,
        result.history,
        arch=cfg.arch,
        dataset=cfg.dataset,
        title=f"{method}, d = {cfg.dim}: {cfg.arch} on {cfg.dataset}",
    )
    summary = {
        "method": method,
        "dataset": cfg.dataset,
        "arch": cfg.arch,
        **result.metrics(),
        "num_params": flat.numel,
        "subspace_dim": optimizer.dim,
        "snapshots": 0,
        "corrupt": 0.0,
        "effective_noise_rate": 0.0,
        "compartments": len(blocks),
        "world_size": distributed.world_size(),
        "mode": cfg.mode,
        "bytes_sent_per_step": optimizer.bytes_sent_per_step,
        "device": str(device),
    }
    run.write_summary(summary)
    return summary

"""Intrinsic dimension (Li, Farkhoor, Liu, Yosinski, ICLR 2018): the smallest d whose random
subspace theta = theta_0 + P c reaches 90% of the accuracy of direct training.

`measure_intrinsic_dim(IntrinsicConfig(...), save_dir)` is what `lowdim intrinsic-dim` runs:

    baseline/                 direct training of the same net with the same protocol (train-sgd)
    points/d<d>-s<seed>/      one subspace run per (d, seed): metrics, checkpoint, summary, and
                              subspace.safetensors (the trained model as seed + d numbers)
    metrics.jsonl             one line per finished point
    intrinsic_dim.png         accuracy against d (log axis) with the 90% line
    summary.json              baseline_acc, threshold, every point, the mean per d, d_int90,
                              and the protocol

Each point is its own resumable run, and finished points are never retrained: a killed sweep
run again with --resume continues where it stopped.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .. import distributed
from ..bases import random_basis
from ..bases.random import RANDOM_KINDS, per_compartment_basis
from ..compress import save_subspace_model
from ..data import load_dataset
from ..errors import BadArgument, LowdimError, check_finite, check_seed
from ..io import atomic_write_json
from ..optim.base import check_rates
from ..params import FlatParams
from ..seeding import derive_seed
from ..subspace_model import SubspaceModel
from ..train import build_optimizer, fit
from ..train.loop import check_checkpoint_every
from .common import model_for, resolve_device
from .rundir import RunDir, check_summary, read_json_object
from .sampling import SGDConfig, train_sgd

# What a finished point's summary.json holds (checked when a resumed sweep reads it back).
POINT_KEYS = {"dim": int, "seed": int, "test_acc": float, "wall_seconds": float}
# What the sweep's summary.json holds.
SWEEP_KEYS = {"method": str, "dataset": str, "arch": str, "baseline_acc": float}

# Below this many training examples the subspace lr defaults to 0.1 instead of 1e-3.
SMALL_DATA = 10_000


@dataclass
class IntrinsicConfig:
    """The sweep; defaults follow the paper's protocol (Adam lr 1e-3, beta2 0.99, batch 128,
    L2 1e-4 on the full weights, no lr decay) except the epoch count (paper: 100).

    `lr` is the subspace runs' and `baseline_lr` the direct baseline's (default 1e-3). The
    paper's 1e-3 for the subspace assumes tens of thousands of steps; with few steps (the 1,437
    digits give 12 per epoch) a subspace of d coordinates barely moves at 1e-3. So `lr` None
    (the default) means 1e-3 on training sets of at least SMALL_DATA examples and 0.1 below
    (direct training would diverge at 0.1, hence the separate baseline rate).
    """

    dataset: str = "digits"
    arch: str = "mlp"
    hidden: list[int] | None = None
    projection: str = "fastfood"
    per_layer: bool = False
    dims: list[int] = field(default_factory=list)
    search: bool = False
    search_min: int = 10
    search_max: int | None = None
    seeds: int = 1
    epochs: int = 10
    lr: float | None = None
    baseline_lr: float = 1e-3
    beta2: float = 0.99
    l2: float = 1e-4
    batch_size: int = 128
    seed: int = 0
    data_dir: str | None = None
    device: str | None = None


def _sgd_config(cfg: IntrinsicConfig, seed: int, epochs: int) -> SGDConfig:
    """The direct-training baseline: the same protocol on all D weights."""
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
    )


def make_basis(cfg: IntrinsicConfig, flat: FlatParams, dim: int, seed: int, device):
    """The random basis of one point: global or one per layer, seeded by (seed, d)."""
    basis_seed = derive_seed("intrinsic", seed, dim)
    if cfg.per_layer:
        return per_compartment_basis(cfg.projection, flat, dim, basis_seed, device=device)
    return random_basis(cfg.projection, flat.numel, dim, basis_seed, device=device)


def train_point(
    cfg: IntrinsicConfig,
    data,
    dim: int,
    seed: int,
    folder: Path,
    progress: bool,
    checkpoint_every: int = 0,
) -> dict:
    """Train one subspace model (d = dim, anchor and basis from `seed`); return its row."""
    if (folder / "summary.json").exists():
        row = read_json_object(folder / "summary.json", "point's summary")
        return check_summary(row, folder / "summary.json", POINT_KEYS)
    device = resolve_device(cfg.device)
    model = model_for(_sgd_config(cfg, seed, cfg.epochs), data, device)
    flat = FlatParams(model)
    basis = make_basis(cfg, flat, dim, seed, device)
    sub = SubspaceModel(model, basis)
    optimizer = build_optimizer("adam", sub.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2))
    result = fit(
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
        regularizer=lambda: 0.5 * cfg.l2 * sub.l2_penalty(),
        checkpoint_every=checkpoint_every,
    )
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
    save_subspace_model(
        folder / "subspace.safetensors",
        sub,
        arch=cfg.arch,
        hidden=cfg.hidden,
        dataset=cfg.dataset,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        anchor_seed=seed,
        test_acc=result.test_acc,
    )
    atomic_write_json(folder / "summary.json", row)
    return row


class Sweep:
    """The points trained so far and the rule that turns them into d_int90."""

    def __init__(
        self,
        cfg: IntrinsicConfig,
        data,
        save_dir: Path,
        threshold: float,
        progress: bool,
        checkpoint_every: int = 0,
    ) -> None:
        self.cfg, self.data, self.dir, self.threshold = cfg, data, save_dir, threshold
        self.progress = progress
        self.checkpoint_every = checkpoint_every
        self.rows: list[dict] = []

    def mean_acc(self, dim: int) -> float:
        """Mean test accuracy over the seeds at d = dim (training them if needed)."""
        accs = []
        for k in range(self.cfg.seeds):
            seed = self.cfg.seed + k
            row = train_point(
                self.cfg,
                self.data,
                dim,
                seed,
                self.dir / "points" / f"d{dim}-s{seed}",
                self.progress,
                self.checkpoint_every,
            )
            if row not in self.rows:
                self.rows.append(row)
                if distributed.is_main():
                    with open(self.dir / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(row) + "\n")
            accs.append(row["test_acc"])
        mean = sum(accs) / len(accs)
        if distributed.is_main():
            print(
                f"d = {dim:>7}: mean test_acc {mean:.4f} over {len(accs)} seed(s)"
                f"{'  >= 90%' if mean >= self.threshold else ''}",
                flush=True,
            )
        return mean

    def grid(self, dims: list[int]) -> int | None:
        passing = [d for d in sorted(dims) if self.mean_acc(d) >= self.threshold]
        return passing[0] if passing else None

    def search(self, low: int, high: int) -> int | None:
        """Doubling from `low` until a d passes, then bisection down to a 10% bracket."""
        last_fail, d = None, low
        while True:
            if self.mean_acc(d) >= self.threshold:
                break
            last_fail = d
            if d >= high:
                return None
            d = min(high, 2 * d)
        lo, hi = last_fail, d
        while lo is not None and hi - lo > max(1, math.ceil(0.1 * lo)):
            mid = (lo + hi) // 2
            if self.mean_acc(mid) >= self.threshold:
                hi = mid
            else:
                lo = mid
        return hi


def measure_intrinsic_dim(
    cfg: IntrinsicConfig,
    save_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    checkpoint_every: int = 0,
) -> dict:
    """Train the baseline, then the subspace points; return the summary (also written).
    `checkpoint_every` N (default 0) also checkpoints the baseline and each point after every
    N steps inside an epoch."""
    check_checkpoint_every(checkpoint_every)
    if cfg.projection not in RANDOM_KINDS:
        raise LowdimError(
            f"unknown projection {cfg.projection!r}; choose one of: {', '.join(RANDOM_KINDS)}"
        )
    if not cfg.dims and not cfg.search:
        raise BadArgument("dims", "lists no subspace dimension, and no search was asked for")
    for option in ("seeds", "epochs", "batch_size"):
        if getattr(cfg, option) < 1:
            raise BadArgument(option, f"must be >= 1, got {getattr(cfg, option)}")
    check_finite(lr=cfg.lr, baseline_lr=cfg.baseline_lr, beta2=cfg.beta2, l2=cfg.l2)
    check_seed(cfg.seed)
    if cfg.lr is not None:
        check_rates(cfg.lr)
    check_rates(cfg.baseline_lr, cfg.l2, lr_name="baseline_lr", weight_decay_name="l2")
    if not 0 <= cfg.beta2 < 1:
        raise BadArgument("beta2", f"{cfg.beta2} is outside the valid range [0, 1)")
    save_dir = Path(save_dir)
    resolve_device(cfg.device)  # a bad device fails here, before anything is written
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seed)
    probe = FlatParams(model_for(_sgd_config(cfg, cfg.seed, 1), data, torch.device("cpu")))
    if cfg.lr is None:
        cfg = replace(cfg, lr=1e-3 if len(data.train) >= SMALL_DATA else 0.1)
    bad = [d for d in cfg.dims if not 1 <= d <= probe.numel]
    if bad:
        raise BadArgument("dims", f"{bad[0]} must be between 1 and D = {probe.numel}")
    if cfg.per_layer:  # check the per-layer split before anything is written
        make_basis(cfg, probe, min(cfg.dims or [cfg.search_min]), cfg.seed, "cpu")
    run = RunDir(save_dir, asdict(cfg), resume=resume, defaults=asdict(IntrinsicConfig()))
    if run.finished:
        return run.read_summary(SWEEP_KEYS)
    for done in sorted((save_dir / "points").glob("*/summary.json")):  # read before writing
        check_summary(read_json_object(done, "point's summary"), done, POINT_KEYS)
    run.start()
    baseline = train_sgd(
        _sgd_config(cfg, cfg.seed, cfg.epochs),
        save_dir / "baseline",
        resume=True,
        progress=progress,
        data=data,
        checkpoint_every=checkpoint_every,
    )
    threshold = 0.9 * baseline["test_acc"]
    if distributed.is_main():
        (save_dir / "metrics.jsonl").unlink(missing_ok=True)
    sweep = Sweep(cfg, data, save_dir, threshold, progress, checkpoint_every)
    if cfg.search:
        d_int90 = sweep.search(cfg.search_min, cfg.search_max or probe.numel)
    else:
        d_int90 = sweep.grid(cfg.dims)
    means = {}
    for row in sweep.rows:
        means.setdefault(row["dim"], []).append(row["test_acc"])
    summary = {
        "method": "intrinsic-dim",
        "dataset": cfg.dataset,
        "arch": cfg.arch,
        "num_params": probe.numel,
        "baseline_acc": baseline["test_acc"],
        "threshold": threshold,
        "d_int90": d_int90,
        "rows": sorted(sweep.rows, key=lambda r: (r["dim"], r["seed"])),
        "mean_acc": {str(d): sum(a) / len(a) for d, a in sorted(means.items())},
        "protocol": {
            "projection": cfg.projection,
            "per_layer": cfg.per_layer,
            "optimizer": "adam",
            "lr": cfg.lr,
            "baseline_lr": cfg.baseline_lr,
            "beta2": cfg.beta2,
            "l2": cfg.l2,
            "batch_size": cfg.batch_size,
            "epochs": cfg.epochs,
            "seeds": cfg.seeds,
        },
    }
    from .plots import plot_intrinsic

    if distributed.is_main():
        plot_intrinsic(summary, save_dir / "intrinsic_dim.png")
        atomic_write_json(save_dir / "summary.json", summary)
    return summary

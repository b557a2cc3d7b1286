"""Intrinsic dimension (Li, Farkhoor, Liu, Yosinski, ICLR 2018): the smallest d whose random
subspace theta = theta_0 + P c reaches 90% of the accuracy of direct training.

Job layer: this module holds the sweep's options (`IntrinsicConfig`), their checks and the job
`measure_intrinsic_dim`, what `lowdim intrinsic-dim` runs; one point is trained in
`intrinsic_points.py`, and the search for d_int90 is in `intrinsic_sweep.py`. It writes into
save_dir:

    baseline/                 direct training of the same net with the same protocol (train-sgd)
    points/d<d>-s<seed>/      one subspace run per (d, seed): metrics, checkpoint, summary, and
                              subspace.safetensors (the trained model as seed + d numbers)
    metrics.jsonl             one line per finished point
    intrinsic_dim.png         accuracy against d (log axis) with the 90% line
    summary.json              baseline_acc, threshold, every point, the mean per d, d_int90,
                              and the protocol

Each point is its own resumable run, and finished points are never retrained: a killed sweep
run again with `resume=True` (the command's --resume) continues where it stopped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .. import distributed
from ..bases.random import RANDOM_KINDS
from ..data import Data, load_dataset
from ..errors import BadArgument, check_finite, check_seed
from ..io import atomic_write_json
from ..optim.optimizer import check_rates
from ..params import trainable_parameters
from ..train.loop import check_checkpoint_every
from ..train.precision import autocast_of
from .common import arch_of, resolve_device
from .intrinsic_points import (
    POINT_KEYS,
    ModelArg,
    build_module,
    point_model,
    point_module,
    sgd_config,
)
from .intrinsic_sweep import Sweep
from .rundir import RunDir, check_summary, read_json_object
from .sampling import train_sgd

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

    For fine-tuning: `layer_scales` "param" or "layer" (default None) adds SAID's learned scale
    per layer, counted in each d (None: DID, the global projection alone); `direct` (default
    none) names parameters, by glob pattern, that train directly beside the subspace (a new
    classifier head); see `lowdim.SubspaceModel`.
    """

    dataset: str = "digits"
    arch: str = "mlp"
    hidden: list[int] | None = None
    projection: str = "fastfood"
    per_layer: bool = False
    layer_scales: str | None = None
    direct: list[str] = field(default_factory=list)
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
    autocast: str | None = None  # bf16 or fp16: the forward passes under autocast


def check_config(cfg: IntrinsicConfig) -> None:
    """One-line errors (`BadArgument`, naming the option) for options out of range, before
    any data is loaded (every float must also be finite)."""
    if cfg.projection not in RANDOM_KINDS:
        raise BadArgument(
            "projection", f"{cfg.projection!r} is unknown; choose one of: {', '.join(RANDOM_KINDS)}"
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
    if cfg.search and cfg.search_min < 1:
        raise BadArgument("search_min", f"must be >= 1, got {cfg.search_min}")
    if cfg.search and cfg.search_max is not None and cfg.search_max < cfg.search_min:
        raise BadArgument("search_max", f"{cfg.search_max} is below search_min {cfg.search_min}")


def _resolved(
    cfg: IntrinsicConfig, data: Data, own_data: bool, model: ModelArg
) -> tuple[IntrinsicConfig, int]:
    """(the options the run records, D, the number of trainable parameters).

    The run records what it trains on: `data.name` when the data is the user's (`own_data`),
    the module's class name when the network is (`arch_of`). `lr` None becomes the SMALL_DATA
    rule's rate. D is counted on a probe network built on the CPU; every d of `cfg.dims` must
    lie in [1, D] and a per-layer split is tried, so bad options fail before anything is
    written."""
    module = point_module(cfg, data, cfg.seed, torch.device("cpu"), model)
    # D: the parameters the subspace moves
    num_params = sum(p.numel() for _, p in trainable_parameters(module, exclude=cfg.direct))
    cfg = replace(
        cfg,
        dataset=data.name if own_data else cfg.dataset,
        arch=arch_of(None if model is None else module, cfg.arch),
    )
    if cfg.lr is None:
        cfg = replace(cfg, lr=1e-3 if len(data.train) >= SMALL_DATA else 0.1)
    bad = [d for d in cfg.dims if not 1 <= d <= num_params]
    if bad:
        raise BadArgument("dims", f"{bad[0]} must be between 1 and D = {num_params}")
    if cfg.per_layer or cfg.layer_scales:  # the split and the scales, before anything is written
        point_model(cfg, module, min(cfg.dims or [cfg.search_min]), cfg.seed)
    return cfg, num_params


def _check_finished_points(save_dir: Path) -> None:
    """Refuse a damaged summary of a finished point before the sweep writes anything."""
    for done in sorted((save_dir / "points").glob("*/summary.json")):
        check_summary(read_json_object(done, "point's summary"), done, POINT_KEYS)


def _train_baseline(
    cfg: IntrinsicConfig,
    data: Data,
    model: ModelArg,
    save_dir: Path,
    progress: bool,
    checkpoint_every: int,
) -> dict:
    """Direct training of the same network (seeded `cfg.seed`) with the same protocol, in
    save_dir/baseline (resumed if it exists); its summary."""
    return train_sgd(
        sgd_config(cfg, cfg.seed, cfg.epochs),
        save_dir / "baseline",
        resume=True,
        progress=progress,
        data=data,
        model=None if model is None else build_module(model, cfg.seed),
        checkpoint_every=checkpoint_every,
    )


def sweep_summary(
    cfg: IntrinsicConfig, num_params: int, baseline_acc: float, sweep: Sweep, d_int90: int | None
) -> dict:
    """The sweep's summary.json: the baseline, the 90% threshold, every point, the mean per d,
    d_int90 (None if no d passed) and the protocol."""
    return {
        "method": "intrinsic-dim",
        "dataset": cfg.dataset,
        "arch": cfg.arch,
        "num_params": num_params,
        "baseline_acc": baseline_acc,
        "threshold": sweep.threshold,
        "d_int90": d_int90,
        "rows": sorted(sweep.rows, key=lambda r: (r["dim"], r["seed"])),
        "mean_acc": sweep.means(),
        "protocol": {
            "projection": cfg.projection,
            "per_layer": cfg.per_layer,
            "layer_scales": cfg.layer_scales,
            "direct": cfg.direct,
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


def measure_intrinsic_dim(
    cfg: IntrinsicConfig,
    save_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    checkpoint_every: int = 0,
    data: Data | None = None,
    model: ModelArg = None,
) -> dict:
    """Train the baseline, then the subspace points; return the summary (also written).

    Every option is checked, the data loaded and a probe network built before anything is
    written. `resume` (default False): continue a killed sweep (finished points are read back);
    `progress` (default True): per-epoch lines; `checkpoint_every` N (default 0) also
    checkpoints the baseline and each point after every N steps inside an epoch.

    `data` (default None: the dataset `cfg.dataset`) is your own `lowdim.data.Data`; `model`
    (default None: the zoo's `cfg.arch`) your own network. As the sweep trains a fresh network
    per point, `model` is either a function that builds one (`model=lambda: MyNet()`, called
    under `torch.manual_seed(seed)` for each seed, so seeds differ in their initialisation as
    the zoo's do, and the baseline and the points of a seed share theta_0), or a module, whose
    weights (pretrained, say) every run starts from, deep-copied (the seeds then differ only in
    their basis and batch order). The run records `data.name` as its dataset and the module's
    class name as its arch; each point's subspace.safetensors then loads onto a network built
    the same way with `SubspaceModel.load` (not with `lowdim evaluate`), and a resumed sweep
    needs the same `data` and `model` again.
    """
    check_checkpoint_every(checkpoint_every)
    check_config(cfg)
    save_dir = Path(save_dir)
    resolve_device(cfg.device)  # a bad device fails here, before anything is written
    autocast_of(cfg.autocast)  # a bad name fails here too
    own_data = data is not None
    if data is None:
        data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seed)
    cfg, num_params = _resolved(cfg, data, own_data, model)
    run = RunDir(save_dir, asdict(cfg), resume=resume, defaults=asdict(IntrinsicConfig()))
    if run.finished:
        return run.read_summary(SWEEP_KEYS)
    _check_finished_points(save_dir)
    run.start()
    baseline = _train_baseline(cfg, data, model, save_dir, progress, checkpoint_every)
    if distributed.is_main():
        (save_dir / "metrics.jsonl").unlink(missing_ok=True)
    threshold = 0.9 * baseline["test_acc"]
    sweep = Sweep(cfg, data, save_dir, threshold, progress, checkpoint_every, model=model)
    d_int90 = sweep.d_int90(num_params)
    summary = sweep_summary(cfg, num_params, baseline["test_acc"], sweep, d_int90)
    from .plots import plot_intrinsic

    if distributed.is_main():
        plot_intrinsic(summary, save_dir / "intrinsic_dim.png")
        atomic_write_json(save_dir / "summary.json", summary)
    return summary

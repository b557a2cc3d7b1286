"""The subspace job: train in a subspace of a recorded trajectory (DLDR, TWA).

Job layer. `train_in_subspace(sgd_dir, SubspaceConfig(method="pbfgs", ...))` is what `lowdim
train-psgd`, `lowdim train-pbfgs` and `lowdim twa` run. It reads a `train-sgd` run, takes the
snapshot window [params_start, params_end) with the given stride, and hands the method its
part, always on exactly the (possibly noisy) labels of that run:

    dldr.py   psgd, pbfgs: the window's top PCA directions, P-SGD or P-BFGS
    twa.py    twa: the span of the window's checkpoints, projected SGD (or AdamW)

Each method module provides `check_window`, `extract`, `describe`, `baseline`, `optimizer`
and `summary`; this module holds what is common: reading the train-sgd run, the basis file
and its reuse on resume, the start point, training through `fit`, the outputs. It writes into
`<sgd_dir>/<method>/`:

    config.json, metrics.jsonl, checkpoint/   as for train-sgd
    basis.safetensors                         the basis (directions, anchor; PCA: spectrum)
    spectrum.png                              PCA only: explained variance per component
    model.safetensors, curves.png, summary.json
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..bases import Basis, load_basis
from ..bases.sharded import shard_bounds
from ..data import Data
from ..errors import BadArgument, LowdimError
from ..params import FlatParams
from ..train import FitResult, build_schedule, evaluate, fit
from ..train.bn import recompute_batchnorm
from ..train.checkpoint import has_checkpoint
from ..train.loop import check_checkpoint_every
from ..train.precision import autocast_of
from ..trajectory import Trajectory
from . import dldr, twa
from .common import data_for, holdout_split, labels_digest, module_for, resolve_device
from .rundir import CONFIG, SUMMARY, RunDir, check_summary, config_from_json, read_json_object
from .sampling import SGDConfig, check_config
from .subspace_config import SubspaceConfig

METHOD_MODULES = {"psgd": dldr, "pbfgs": dldr, "twa": twa}

# What a subspace run reads from the train-sgd run's summary, checked before anything runs
# (test_acc is None where the targets are not classes).
SGD_SUMMARY_KEYS = {
    "method": str,
    "test_acc": float | None,
    "wall_seconds": float,
    "train_labels_sha256": str,
}


def read_sgd_run(sgd_dir: Path) -> tuple[SGDConfig, dict]:
    """The config and summary of a finished train-sgd run, validated, or a clear error."""
    if not (sgd_dir / CONFIG).exists():
        raise LowdimError(f"{sgd_dir} holds no train-sgd run (no {CONFIG})")
    if not (sgd_dir / SUMMARY).exists():
        raise LowdimError(
            f"the train-sgd run in {sgd_dir} has not finished; resume it to its end first"
        )
    cfg = config_from_json(SGDConfig, sgd_dir / CONFIG)
    check_config(cfg)
    summary = read_json_object(sgd_dir / SUMMARY, "train-sgd run's summary")
    check_summary(summary, sgd_dir / SUMMARY, SGD_SUMMARY_KEYS)
    if summary["method"] != "sgd":
        raise LowdimError(
            f"{sgd_dir / SUMMARY} is a {summary['method']!r} run's summary: give the folder of "
            "a train-sgd run"
        )
    return cfg, summary


@dataclass
class Window:
    """The snapshots a subspace is taken from: `rows` (a memory map, n x D), `spec` = (start,
    one past the last, stride) and `end` (the requested end, as `Trajectory.window` takes it)."""

    rows: np.ndarray
    spec: tuple[int, int, int]
    end: int

    @classmethod
    def of(cls, trajectory: Trajectory, cfg: SubspaceConfig) -> Window:
        end = len(trajectory) if cfg.params_end is None else cfg.params_end
        rows = trajectory.window(cfg.params_start, end, cfg.params_stride)
        stop = cfg.params_start + cfg.params_stride * len(rows)  # one past the last snapshot
        return cls(rows, (cfg.params_start, stop, cfg.params_stride), end)


def extract_basis(trajectory: Trajectory, cfg: SubspaceConfig) -> Basis:
    """The method's basis of the window; with `cfg.shard_basis` under several processes, this
    process's slice of it along the parameters."""
    window = Window.of(trajectory, cfg)
    shard = None
    if cfg.shard_basis and distributed.world_size() > 1:
        shard = shard_bounds(window.rows.shape[1], distributed.world_size(), distributed.rank())
    return METHOD_MODULES[cfg.method].extract(trajectory, window, cfg, shard)


@dataclass
class _Inputs:
    """What a subspace run trains, read and checked before anything is written."""

    sgd_cfg: SGDConfig
    sgd_summary: dict
    cfg: SubspaceConfig  # resolved
    data: Data
    train: object  # the examples it fits on: the train-sgd run's, or its held-out ones
    model: nn.Module
    flat: FlatParams
    trajectory: Trajectory
    device: torch.device


def train_in_subspace(
    sgd_dir: str | Path,
    cfg: SubspaceConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    name: str | None = None,
    checkpoint_every: int = 0,
    data: Data | None = None,
    model: nn.Module | None = None,
) -> dict:
    """Train in a subspace of the train-sgd run in `sgd_dir` (DLDR or TWA); return the summary.

    Results go to `sgd_dir/<name>/` (default name: the method), so one trajectory can serve
    several subspace runs. `checkpoint_every` N (default 0) also checkpoints after every N
    steps inside an epoch (see `fit`). `data` and `model`: a run of `train_sgd` on your own
    data or module needs them again (the same data, checked by its labels' digest, and a
    freshly built module of the same layout); default: the run's dataset and zoo arch."""
    check_checkpoint_every(checkpoint_every)
    inputs = _read_inputs(Path(sgd_dir), cfg, data, model)
    cfg = inputs.cfg
    defaults = SubspaceConfig(method=cfg.method, variant=cfg.variant).resolved(len(inputs.train))
    folder = Path(sgd_dir) / (name or cfg.method)
    run = RunDir(folder, asdict(cfg), resume=resume, defaults=asdict(defaults))
    if run.finished:
        return run.read_summary()
    basis, trained, basis_seconds = _basis_for(run, inputs)
    result, optimizer, extra = _train(run, inputs, basis, trained, progress, checkpoint_every)
    sgd_cfg = inputs.sgd_cfg
    run.save_outputs(
        inputs.model,
        result.history,
        arch=sgd_cfg.arch,
        dataset=sgd_cfg.dataset,
        title=f"{cfg.method} in {basis.dim} dimensions: {sgd_cfg.arch} on {sgd_cfg.dataset}",
    )
    summary = _summary(inputs, basis, result, basis_seconds)
    summary.update(extra)
    summary.update(METHOD_MODULES[cfg.method].summary(cfg, basis, optimizer))
    run.write_summary(summary)
    return summary


def _read_inputs(sgd_dir: Path, cfg: SubspaceConfig, data, model) -> _Inputs:
    """The train-sgd run, its data (the same labels, by digest), the resolved options, the
    model and its trajectory, all checked."""
    sgd_cfg, sgd_summary = read_sgd_run(sgd_dir)
    sgd_cfg.device = cfg.device
    device = resolve_device(cfg.device)
    autocast_of(cfg.autocast)  # a bad name fails here too
    data = data_for(sgd_cfg, data, sgd_dir)
    if labels_digest(data.train.y) != sgd_summary["train_labels_sha256"]:
        raise LowdimError(
            f"the training labels of {sgd_cfg.dataset} differ from those the run in {sgd_dir} "
            "trained on (another copy of the data?)"
        )
    fit_part, held = holdout_split(data.train, sgd_cfg.holdout, sgd_cfg.seed)
    if cfg.fit_on == "holdout" and held is None:
        raise BadArgument(
            "fit_on", f"holdout needs a train-sgd run with holdout > 0; {sgd_dir} held none out"
        )
    train = held if cfg.fit_on == "holdout" else fit_part
    cfg = cfg.resolved(len(train))
    model = module_for(sgd_cfg, data, device, model)
    flat = FlatParams(model)
    trajectory = Trajectory(sgd_dir / "trajectory")
    if trajectory.layout != flat.layout():
        raise LowdimError(f"the trajectory in {sgd_dir} was recorded for another architecture")
    window = trajectory.window(cfg.params_start, cfg.params_end, cfg.params_stride)
    METHOD_MODULES[cfg.method].check_window(cfg, len(window))
    return _Inputs(sgd_cfg, sgd_summary, cfg, data, train, model, flat, trajectory, device)


def _basis_for(run: RunDir, inputs: _Inputs) -> tuple[Basis, bool, float]:
    """(the basis on the run's device, whether training already moved along it, the seconds
    its extraction or loading took).

    The stored basis is reused only where training already moved along it (a checkpoint
    exists); a run that failed before its first checkpoint derives it afresh, so a basis
    written from a bad input that has since been repaired cannot poison the folder. A derived
    basis is written at once, so a resumed run reads exactly what it trained in."""
    cfg, layout = inputs.cfg, inputs.flat.layout()
    basis_file = run.path / "basis.safetensors"
    sharded = cfg.shard_basis and distributed.world_size() > 1
    trained = has_checkpoint(run.path / "checkpoint")
    reuse = run.resumed and trained and not sharded
    started = time.perf_counter()
    if reuse:
        basis = load_basis(basis_file, layout=layout)
    else:
        basis = extract_basis(inputs.trajectory, cfg)
    seconds = time.perf_counter() - started
    run.start()
    if not reuse:
        if not sharded:
            basis.save(basis_file, layout=layout)
        METHOD_MODULES[cfg.method].describe(basis, cfg, run.path)
    return basis.to(inputs.device), trained, seconds


def _train(run: RunDir, inputs: _Inputs, basis: Basis, trained: bool, progress, every: int):
    """Start at the anchor (BatchNorm recomputed there), train through `fit`, recompute
    BatchNorm at the end; (the `FitResult` with the final test metrics, the optimiser, the
    method's baseline metrics)."""
    cfg, model, device = inputs.cfg, inputs.model, inputs.device
    method = METHOD_MODULES[cfg.method]
    inputs.flat.set(basis.anchor.to(inputs.flat.data.dtype))
    train, test = inputs.train.to(device), inputs.data.test.to(device)
    baseline = method.baseline(model, train, test, device)
    if cfg.bn_recompute and not trained:
        recompute_batchnorm(model, train, device=device)
    optimizer, extra_metrics = method.optimizer(cfg, inputs.flat, basis, model, train)
    warmup = round(0.2 * cfg.epochs) if cfg.journal else 0
    scheduler = build_schedule(
        cfg.schedule,
        optimizer,
        epochs=cfg.epochs,
        milestones=cfg.lr_milestones,
        warmup_epochs=warmup,
    )
    result = fit(
        model,
        optimizer,
        train,
        test,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        scheduler=scheduler,
        device=device,
        run_dir=run.path,
        resume=run.resumed,
        accumulate=cfg.accumulate,
        progress=progress,
        extra_metrics=extra_metrics,
        flat=inputs.flat,  # several processes average the gradient as one D-vector
        checkpoint_every=every,
        autocast=cfg.autocast,
    )
    if cfg.bn_recompute and recompute_batchnorm(model, train, device=device):
        result.test_loss, result.test_acc = evaluate(model, test, device=device)
    return result, optimizer, baseline


def _summary(inputs: _Inputs, basis: Basis, result: FitResult, basis_seconds: float) -> dict:
    """The keys every subspace run reports (the method adds its own)."""
    sgd_cfg, cfg = inputs.sgd_cfg, inputs.cfg
    return {
        "method": cfg.method,
        "dataset": sgd_cfg.dataset,
        "arch": sgd_cfg.arch,
        **result.metrics(),  # test metrics after the final BatchNorm recompute
        "wall_seconds": basis_seconds + result.wall_seconds,
        "basis_seconds": basis_seconds,
        "num_params": inputs.flat.numel,
        "subspace_dim": basis.dim,
        "snapshots": len(range(*basis.window)),
        "window": list(basis.window),
        "corrupt": sgd_cfg.corrupt,
        "effective_noise_rate": inputs.data.effective_noise_rate,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "sgd_test_acc": inputs.sgd_summary["test_acc"],
        "sgd_wall_seconds": inputs.sgd_summary["wall_seconds"],
        "device": str(inputs.device),
        "world_size": distributed.world_size(),
        "basis_bytes_per_process": basis.bytes_held(),
    }

"""Training in a subspace of a recorded trajectory: DLDR's stages 2 and 3, and TWA.

`train_in_subspace(sgd_dir, SubspaceConfig(method="pbfgs", ...))` is what `lowdim train-psgd`,
`lowdim train-pbfgs` and `lowdim twa` run. It reads a `train-sgd` run and takes the snapshot
window [params_start, params_end) with the given stride, then
  - psgd, pbfgs (DLDR): the window's top PCA directions; start from the snapshot at
    params_start (the paper trains from the initialisation); P-SGD or P-BFGS;
  - twa (trainable weight averaging): the span of the window's checkpoints, orthonormalised in
    float64; start from their plain average with BatchNorm statistics recomputed (SWA, whose
    accuracy the summary reports as `swa_test_acc`); projected SGD with momentum;
always on exactly the (possibly noisy) labels of that run. It writes into
`<sgd_dir>/<method>/`:

    config.json, metrics.jsonl, checkpoint/   as for train-sgd
    basis.safetensors                         the basis (directions, anchor; PCA: spectrum)
    spectrum.png                              PCA only: explained variance per component
    model.safetensors, curves.png, summary.json
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..bases import Basis, load_basis, trajectory_pca
from ..bases.sharded import shard_bounds, shard_pca_basis, shard_span_basis
from ..bases.span import layer_deviations, trajectory_span
from ..data import Data
from ..errors import BadArgument, LowdimError, check_finite, check_seed
from ..optim import PBFGS, PSGD, PAdamW
from ..optim.base import check_rates
from ..params import FlatParams
from ..train import build_schedule, evaluate, fit
from ..train.bn import recompute_batchnorm
from ..train.builders import SCHEDULES
from ..train.checkpoint import has_checkpoint
from ..train.loop import check_checkpoint_every
from ..trajectory import Trajectory
from .common import data_for, holdout_split, labels_digest, module_for, resolve_device
from .plots import plot_spectrum
from .rundir import CONFIG, SUMMARY, RunDir, check_summary, config_from_json, read_json_object
from .sampling import SGDConfig, check_config

METHODS = ("psgd", "pbfgs", "twa")
# The papers' settings on CIFAR: P-SGD lr 1, batch 128, 40 epochs, lr x0.1 at 75%;
# P-BFGS batch 1024, 20 epochs, first trial step 1; TWA lr 2, batch 128, 10 epochs, weight
# decay 1e-5, lr x0.1 at 50% and 75%.
DEFAULTS = {
    "psgd": {"lr": 1.0, "batch_size": 128, "epochs": 40, "weight_decay": 0.0},
    "pbfgs": {"lr": 1.0, "batch_size": 1024, "epochs": 20, "weight_decay": 0.0},
    "twa": {"lr": 2.0, "batch_size": 128, "epochs": 10, "weight_decay": 1e-5},
}
MILESTONES = {"psgd": (0.75,), "pbfgs": (), "twa": (0.5, 0.75)}  # fractions of the epochs
VARIANTS = ("iclr", "journal")  # TWA's: orthonormal span + P-SGD, or per-layer + AdamW
JOURNAL_LR = 0.01


@dataclass
class SubspaceConfig:
    """Options of a subspace run; None means the method's default (see `resolved`).

    Window: snapshots params_start, params_start + params_stride, ... < params_end (default:
    to the end of the trajectory). P-BFGS's batch size defaults to 1024, capped at an eighth of
    the training set so that an epoch has at least eight steps on small data. `n_components`
    is PCA's (TWA spans every checkpoint of the window). `schedule`: "multistep" (lr x0.1 at
    `lr_milestones`, default at 75% of the epochs for P-SGD, 50% and 75% for TWA), "cosine",
    "linear" (to 0 at the end) or "constant"; default multistep, or cosine with 20% warm-up
    for TWA's `variant` "journal" (per-layer coefficients on the checkpoints' deviations from
    their mean, trained by projected AdamW; default lr 0.01). `shard_basis`: under several
    processes, each extracts and holds only its 1/R slice of the basis along the parameters
    (see `lowdim.bases.sharded`); the basis file is then not written. `fit_on`: "train"
    (default: the examples the train-sgd run trained on) or "holdout" (the ones its
    `holdout` set aside: TWA-v).
    """

    method: str = "pbfgs"
    params_start: int = 0
    params_end: int | None = None
    params_stride: int = 1
    n_components: int = 40
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str | None = None
    variant: str = "iclr"
    fit_on: str = "train"
    lr_milestones: list[int] | None = None
    sigma: float = 0.4
    shrink: float = 0.4
    max_tries: int = 20
    reset_every_epoch: bool = False
    residual_alpha: float = 0.0
    residual_gamma: float = 0.9
    accumulate: int = 1
    bn_recompute: bool = True
    shard_basis: bool = False
    seed: int = 0
    device: str | None = None

    def resolved(self, num_train: int) -> SubspaceConfig:
        """A copy with every None replaced by the method's default."""
        if self.method not in METHODS:
            raise LowdimError(f"unknown subspace method {self.method!r}; choose one of {METHODS}")
        d = DEFAULTS[self.method]
        out = SubspaceConfig(**asdict(self))
        out.epochs = d["epochs"] if self.epochs is None else self.epochs
        journal = self.method == "twa" and self.variant == "journal"
        if self.variant not in VARIANTS:
            raise BadArgument(
                "variant", f"{self.variant!r} is unknown; choose one of: {', '.join(VARIANTS)}"
            )
        out.lr = (JOURNAL_LR if journal else d["lr"]) if self.lr is None else self.lr
        if self.schedule is None:
            out.schedule = "cosine" if journal else "multistep"
        if self.fit_on not in ("train", "holdout"):
            raise BadArgument("fit_on", f"{self.fit_on!r} is unknown; choose train or holdout")
        if journal and self.shard_basis:
            raise BadArgument("shard_basis", "works with PCA and TWA's iclr variant, not journal")
        out.weight_decay = d["weight_decay"] if self.weight_decay is None else self.weight_decay
        check_rates(out.lr, out.weight_decay)
        check_finite(
            momentum=self.momentum,
            sigma=self.sigma,
            shrink=self.shrink,
            residual_alpha=self.residual_alpha,
            residual_gamma=self.residual_gamma,
        )
        check_seed(self.seed)
        for option in ("sigma", "shrink"):
            if not 0 < getattr(self, option) < 1:
                raise BadArgument(option, f"must lie in (0, 1), got {getattr(self, option)}")
        if self.max_tries < 1:
            raise BadArgument("max_tries", f"must be >= 1, got {self.max_tries}")
        if not 0 <= out.momentum < 1:
            raise BadArgument("momentum", f"must be in [0, 1), got {out.momentum}")
        if out.schedule not in SCHEDULES:
            raise BadArgument(
                "schedule", f"{out.schedule!r} is unknown; choose one of: {', '.join(SCHEDULES)}"
            )
        if self.batch_size is None:
            out.batch_size = d["batch_size"]
            if self.method == "pbfgs":
                out.batch_size = max(1, min(d["batch_size"], num_train // 8))
        if out.schedule != "multistep":
            out.lr_milestones = []
        elif self.lr_milestones is None:
            marks = {round(f * out.epochs) for f in MILESTONES[self.method]}
            out.lr_milestones = sorted(m for m in marks if 0 < m < out.epochs)
        return out


# What a subspace run reads from the train-sgd run's summary, checked before anything runs.
SGD_SUMMARY_KEYS = {
    "method": str,
    "test_acc": float,
    "wall_seconds": float,
    "train_labels_sha256": str,
}


def read_sgd_run(sgd_dir: Path) -> tuple[SGDConfig, dict]:
    """The config and summary of a finished train-sgd run, validated, or a clear error."""
    if not (sgd_dir / CONFIG).exists():
        raise LowdimError(f"{sgd_dir} holds no train-sgd run (no {CONFIG})")
    if not (sgd_dir / SUMMARY).exists():
        raise LowdimError(
            f"the train-sgd run in {sgd_dir} has not finished; finish it with --resume first"
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


def extract_basis(trajectory: Trajectory, cfg: SubspaceConfig) -> Basis:
    """TWA: the orthonormalised span of the window (journal variant: per-layer deviations
    from its mean); DLDR: its top PCA directions. With `cfg.shard_basis` under several
    processes, this process's slice of it."""
    end = len(trajectory) if cfg.params_end is None else cfg.params_end
    window = trajectory.window(cfg.params_start, end, cfg.params_stride)
    stop = cfg.params_start + cfg.params_stride * len(window)  # one past the last snapshot
    spec = (cfg.params_start, stop, cfg.params_stride)
    twa = cfg.method == "twa"
    if twa or (cfg.shard_basis and distributed.world_size() > 1):
        # PCA of the whole window checks crc32 and finiteness inside its Gram pass; the other
        # extractions take one pass first (small beside a QR or a sharded exchange).
        trajectory.verify(cfg.params_start, end, cfg.params_stride)
    if cfg.shard_basis and distributed.world_size() > 1:
        num_params = window.shape[1]
        lo, hi = shard_bounds(num_params, distributed.world_size(), distributed.rank())
        if twa:
            block = torch.from_numpy(np.asarray(window[:, lo:hi], dtype=np.float64))
            return shard_span_basis(block, lo, hi, num_params, spec)
        return shard_pca_basis(window[:, lo:hi], cfg.n_components, lo, hi, num_params, spec)
    if twa and cfg.variant == "journal":
        rows = torch.from_numpy(np.asarray(window, dtype=np.float64))
        return layer_deviations(rows, trajectory.layout, window=spec)
    if twa:
        return trajectory_span(
            trajectory, start=cfg.params_start, end=cfg.params_end, stride=cfg.params_stride
        )
    return trajectory_pca(
        trajectory,
        cfg.n_components,
        start=cfg.params_start,
        end=cfg.params_end,
        stride=cfg.params_stride,
    )


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
    sgd_dir = Path(sgd_dir)
    sgd_cfg, sgd_summary = read_sgd_run(sgd_dir)
    sgd_cfg.device = cfg.device
    device = resolve_device(cfg.device)
    data = data_for(sgd_cfg, data, sgd_dir)
    if labels_digest(data.train.y) != sgd_summary.get("train_labels_sha256"):
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
    for option in ("epochs", "batch_size", "accumulate"):
        if getattr(cfg, option) < 1:
            value = getattr(cfg, option)
            raise BadArgument(option, f"must be >= 1, got {value}")
    model = module_for(sgd_cfg, data, device, model)
    flat = FlatParams(model)
    trajectory = Trajectory(sgd_dir / "trajectory")
    if trajectory.layout != flat.layout():
        raise LowdimError(f"the trajectory in {sgd_dir} was recorded for another architecture")

    # Check the window and the component count before anything is written.
    window = trajectory.window(cfg.params_start, cfg.params_end, cfg.params_stride)
    pca = cfg.method != "twa"
    if pca and not 1 <= cfg.n_components <= len(window) - 1:
        raise BadArgument(
            "n_components",
            f"{cfg.n_components} is not possible with the {len(window)} snapshots "
            f"of the window: centred PCA gives between 1 and {len(window) - 1} components",
        )
    defaults = asdict(SubspaceConfig(method=cfg.method, variant=cfg.variant).resolved(len(train)))
    run = RunDir(sgd_dir / (name or cfg.method), asdict(cfg), resume=resume, defaults=defaults)
    if run.finished:
        return run.read_summary()
    started = time.perf_counter()
    basis_file = run.path / "basis.safetensors"
    sharded = cfg.shard_basis and distributed.world_size() > 1
    # The stored basis is reused only where training already moved along it (a checkpoint
    # exists); a run that failed before its first checkpoint derives it afresh, so a basis
    # written from a bad input that has since been repaired cannot poison the folder.
    trained = has_checkpoint(run.path / "checkpoint")
    reuse = run.resumed and trained and not sharded
    basis = (
        load_basis(basis_file, layout=flat.layout()) if reuse else extract_basis(trajectory, cfg)
    )
    basis_seconds = time.perf_counter() - started
    run.start()
    if not reuse:  # written once derived, so a resumed run reads exactly what it trained in
        if not sharded:
            basis.save(basis_file, layout=flat.layout())
        if pca:
            plot_spectrum(
                basis.explained_variance_ratio,
                run.path / "spectrum.png",
                title=f"PCA of snapshots {cfg.params_start}..{basis.window[1] - 1}",
            )
    basis = basis.to(device)

    flat.set(basis.anchor.to(flat.data.dtype))
    train, test = train.to(device), data.test.to(device)
    swa = None
    if not pca:  # the plain average, BatchNorm recomputed: the SWA baseline
        average = copy.deepcopy(model)
        recompute_batchnorm(average, train, device=device)
        swa = evaluate(average, test, device=device)
        del average
    if cfg.bn_recompute and not trained:
        recompute_batchnorm(model, train, device=device)
    optimizer, extra = _optimizer(cfg, flat, basis, model, train)
    scheduler = build_schedule(
        cfg.schedule,
        optimizer,
        epochs=cfg.epochs,
        milestones=cfg.lr_milestones,
        warmup_epochs=round(0.2 * cfg.epochs) if cfg.variant == "journal" else 0,
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
        extra_metrics=extra,
        flat=flat,  # several processes average the gradient as one D-vector
        checkpoint_every=checkpoint_every,
    )
    test_loss, test_acc = result.test_loss, result.test_acc
    if cfg.bn_recompute and recompute_batchnorm(model, train, device=device):
        test_loss, test_acc = evaluate(model, test, device=device)
    run.save_outputs(
        model,
        result.history,
        arch=sgd_cfg.arch,
        dataset=sgd_cfg.dataset,
        title=f"{cfg.method} in {basis.dim} dimensions: {sgd_cfg.arch} on {sgd_cfg.dataset}",
    )
    summary = {
        "method": cfg.method,
        "dataset": sgd_cfg.dataset,
        "arch": sgd_cfg.arch,
        **result.metrics(),
        "test_acc": test_acc,  # after the final BatchNorm recompute
        "test_loss": test_loss,
        "wall_seconds": basis_seconds + result.wall_seconds,
        "basis_seconds": basis_seconds,
        "num_params": flat.numel,
        "subspace_dim": basis.dim,
        "snapshots": len(range(*basis.window)),
        "window": list(basis.window),
        "corrupt": sgd_cfg.corrupt,
        "effective_noise_rate": data.effective_noise_rate,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "sgd_test_acc": sgd_summary["test_acc"],
        "sgd_wall_seconds": sgd_summary["wall_seconds"],
        "device": str(device),
        "world_size": distributed.world_size(),
        "basis_bytes_per_process": basis.bytes_held(),
    }
    if pca:
        summary["explained_variance"] = float(basis.explained_variance_ratio.sum())
    else:
        summary["swa_test_loss"], summary["swa_test_acc"] = swa
        summary["variant"] = cfg.variant
        if cfg.variant == "iclr":
            summary["orthogonality_error"] = basis.orthogonality_error()
    if isinstance(optimizer, PBFGS):
        summary.update(optimizer.counters())
    run.write_summary(summary)
    return summary


def _optimizer(cfg: SubspaceConfig, flat: FlatParams, basis: Basis, model, train):
    if cfg.method == "twa" and cfg.variant == "journal":
        return PAdamW(flat, basis, lr=cfg.lr, weight_decay=cfg.weight_decay), None
    if cfg.method in ("psgd", "twa"):
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

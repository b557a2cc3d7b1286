"""The one training loop of lowdim: minibatches, optimiser steps, evaluation, snapshots, metrics,
checkpoints and resume.

Every method trains through `fit`: plain SGD here, and the subspace optimisers, which are torch
optimisers too. The step always goes through `optimizer.step(closure)`, so optimisers that
re-evaluate the loss (a line search) and ones that do not share the same loop.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed
from ..errors import LowdimError
from ..params import FlatParams
from ..trajectory import TrajectoryRecorder
from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .metrics import MetricsLog, format_epoch, progress_bar, read_records

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class FitResult:
    """What `fit` returns: the last epoch's metrics and the whole history."""

    test_acc: float
    test_loss: float
    train_acc: float
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
    model: nn.Module,
    split,
    *,
    batch_size: int = 1000,
    device=None,
    loss_fn: LossFn = F.cross_entropy,
) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` over `split`, in eval mode; restores the previous mode.

    Under several processes, each evaluates its share of `split` and the sums are combined.
    """
    was_training = model.training
    model.eval()
    # loss sum, hits, count: summed across processes in one call
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    shard = (distributed.rank(), distributed.world_size())
    for x, y in split.batches(batch_size, device=device, shard=shard):
        if len(y) == 0:
            continue
        out = model(x)
        totals[0] += loss_fn(out, y).double() * len(y)
        totals[1] += (out.argmax(1) == y).sum()
        totals[2] += len(y)
    model.train(was_training)
    loss, hits, n = distributed.all_reduce_sum(totals).tolist()
    return loss / max(n, 1), hits / max(n, 1)


def check_checkpoint_every(value: int) -> None:
    """LowdimError unless `value` (fit's `checkpoint_every`) is an integer >= 0; the jobs call
    it before they write anything."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LowdimError(f"--checkpoint-every must be an integer, got {value!r}")
    if value < 0:
        raise LowdimError(
            f"--checkpoint-every must be >= 0 (0: only at the end of each epoch), got {value}"
        )


def snapshot_steps(num_batches: int, samples_per_epoch: int) -> set[int]:
    """The steps within an epoch (1-based) after which a snapshot is taken: K evenly spaced ones,
    the last at the end of the epoch."""
    k = min(samples_per_epoch, num_batches)
    return {round((i + 1) * num_batches / k) for i in range(k)}


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train,
    test,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    scheduler=None,
    device: str | torch.device | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    flat: FlatParams | None = None,
    trajectory_dir: str | Path | None = None,
    samples_per_epoch: int = 1,
    accumulate: int = 1,
    loss_fn: LossFn = F.cross_entropy,
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
    """Train `model` for `epochs` epochs of `train` (a `lowdim.data.Split`), evaluating on `test`.

    Each step calls `optimizer.step(closure)`, where the closure zeroes the gradients in place,
    runs forward and backward on the minibatch and returns the loss; `closure(backward=False)`
    only evaluates the loss (for line searches). With `accumulate=k`, a minibatch is k
    consecutive batches of `batch_size`, their gradients accumulated (less memory, same step).
    The scheduler, if any, is stepped once per epoch. Minibatch order is a pure function of
    (`seed`, epoch).

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
    if epochs < 0:
        raise LowdimError(f"--epochs must be >= 0, got {epochs}")
    if batch_size <= 0:
        raise LowdimError(f"--batch-size must be positive, got {batch_size}")
    if accumulate < 1:
        raise LowdimError(f"--accumulate must be >= 1, got {accumulate}")
    if samples_per_epoch < 1:
        raise LowdimError(f"--samples-per-epoch must be >= 1, got {samples_per_epoch}")
    check_checkpoint_every(checkpoint_every)
    if trajectory_dir is not None and flat is None:
        raise ValueError("recording a trajectory needs the model's FlatParams (flat=...)")
    rank, world = distributed.rank(), distributed.world_size()
    if rank == 0 and batch_size * world > len(train):
        # valid (full-batch gradient descent), but rarely what was meant: say so once
        warnings.warn(
            f"--batch-size {batch_size} x {world} process(es) exceeds the {len(train)} training "
            "examples: every step uses the whole training set",
            stacklevel=2,
        )
    main = rank == 0
    progress = progress and main
    if log is None or not main:
        log = _stderr if progress else (lambda _: None)
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_dir = run_dir / "checkpoint" if run_dir is not None else None

    done = {"epoch": 0, "step": 0, "snapshots": 0, "wall_seconds": 0.0}
    if resume and ckpt_dir is not None and has_checkpoint(ckpt_dir):
        done = load_checkpoint(ckpt_dir, model=model, optimizer=optimizer, scheduler=scheduler)
    distributed.same_on_all(done["step"], "the step to resume from")
    num_steps = -(-train.num_batches(batch_size * world, drop_last) // accumulate)
    inside = done.get("epoch_step", 0)  # steps already done in epoch done["epoch"] + 1
    if inside and done.get("world", 1) != world:
        raise LowdimError(
            f"the checkpoint in {ckpt_dir} was taken inside an epoch by {done.get('world', 1)} "
            f"process(es); resume it with as many, not {world}"
        )
    if inside and inside >= num_steps:
        raise LowdimError(
            f"the checkpoint in {ckpt_dir} was taken after step {inside} of epoch "
            f"{done['epoch'] + 1}, which has {num_steps} steps here; resume with the same data "
            "and batch options"
        )
    recorder = None
    if trajectory_dir is not None and main:
        recorder = TrajectoryRecorder(
            trajectory_dir, flat.layout(), resume=resume, keep=done["snapshots"]
        )
        if len(recorder) == 0:
            recorder.append(flat.data, epoch=0, step=0)
    metrics = None
    if run_dir is not None and main:
        metrics = MetricsLog(
            run_dir / "metrics.jsonl",
            resume=resume,
            keep_epochs=done["epoch"],
            tensorboard_dir=run_dir / "tensorboard" if tensorboard else None,
        )
    history = list(metrics.records) if metrics else []
    if run_dir is not None and resume and not main:  # the same history as rank 0, read only
        history = [json.loads(r) for r in read_records(run_dir / "metrics.jsonl", done["epoch"])]

    params = [p for p in model.parameters() if p.requires_grad]

    def grads() -> list[Tensor]:
        if flat is not None:
            return [flat.grad]
        return [p.grad for p in params if p.grad is not None]

    started = time.perf_counter()
    step = done["step"]
    marks = snapshot_steps(num_steps, samples_per_epoch)

    def progress_record(epoch: int, i: int, **running) -> dict:
        """The checkpoint's `progress`: after epoch `epoch`, and `i` steps into the next."""
        return {
            "epoch": epoch,
            "step": step,
            "snapshots": len(recorder) if recorder is not None else 0,
            "wall_seconds": done["wall_seconds"] + time.perf_counter() - started,
            "epoch_step": i,
            **running,
        }

    model.train()
    for epoch in range(done["epoch"] + 1, epochs + 1):
        # loss sum, hits, examples: summed across processes at the end of the epoch
        totals = torch.zeros(3, dtype=torch.float64, device=device)
        skip = 0  # steps of this epoch done before a mid-epoch checkpoint
        if epoch == done["epoch"] + 1 and inside:
            skip = inside
            totals = torch.tensor(done["totals"][rank], dtype=torch.float64, device=device)
        epoch_start = time.perf_counter() - (done.get("epoch_seconds", 0.0) if skip else 0.0)
        # the rate this epoch trains with
        epoch_lr = done["epoch_lr"] if skip else optimizer.param_groups[0]["lr"]
        bar = progress_bar(num_steps, f"epoch {epoch}/{epochs}", progress)
        bar.update(skip)
        batches = train.batches(
            batch_size,
            shuffle=True,
            seed=seed,
            epoch=epoch,
            device=device,
            drop_last=drop_last,
            start_batch=skip * accumulate,
            shard=(rank, world),
        )
        for i, micro in enumerate(_groups(batches, accumulate), start=skip + 1):
            n = sum(len(y) for _, y in micro)
            first: list[tuple[Tensor, Tensor]] = []

            def closure(backward: bool = True, micro=micro, n=n, first=first) -> Tensor:
                """The minibatch loss (mean over its n examples), with its gradient in the
                parameters' .grad when `backward`; micro-batches accumulate."""
                if backward:
                    optimizer.zero_grad(set_to_none=False)
                total = torch.zeros((), device=device)
                stash = not first
                for x, y in micro:
                    if len(y) == 0:  # this process's empty share of a short last batch
                        continue
                    with torch.set_grad_enabled(backward):
                        out = model(x)
                        data_loss = loss_fn(out, y) * (len(y) / n)
                        loss = data_loss
                        if regularizer is not None:
                            loss = loss + regularizer() * (len(y) / n)
                    if backward:
                        loss.backward()
                    total += loss.detach()
                    if stash:  # the pre-step data loss and hits, for the running metrics
                        first.append((data_loss.detach() * n, (out.detach().argmax(1) == y).sum()))
                if world > 1:
                    parts = [total, *grads()] if backward else [total]
                    distributed.weighted_mean_(parts, n, reduce=average_gradients)
                return total

            optimizer.step(closure)
            for loss_part, hits in first:
                totals[0] += loss_part.double()
                totals[1] += hits
            totals[2] += n
            step += 1
            if recorder is not None and i in marks:
                recorder.append(flat.data, epoch=epoch - 1 + i / num_steps, step=step)
            if ckpt_dir is not None and checkpoint_every and i % checkpoint_every == 0:
                if i < num_steps:  # the epoch's last step is followed by its own checkpoint
                    # Every process's running sums, exactly (a sum with zeros changes nothing).
                    rows = torch.zeros(world, 3, dtype=torch.float64, device=device)
                    rows[rank] = totals
                    rows = distributed.all_reduce_sum(rows).tolist()
                    if main:
                        save_checkpoint(
                            ckpt_dir,
                            model=model,
                            optimizer=optimizer,
                            scheduler=scheduler,
                            progress=progress_record(
                                epoch - 1,
                                i,
                                epoch_lr=epoch_lr,
                                epoch_seconds=time.perf_counter() - epoch_start,
                                totals=rows,
                                world=world,
                            ),
                        )
            bar.update(1)
        bar.close()
        if scheduler is not None:
            scheduler.step()
        distributed.broadcast_buffers(model)
        loss_sum, hits, seen = distributed.all_reduce_sum(totals).tolist()
        train_loss = loss_sum / max(seen, 1)
        if not math.isfinite(train_loss):
            raise LowdimError(
                f"training diverged in epoch {epoch} (train loss {train_loss}); lower --lr"
            )
        test_loss, test_acc = evaluate(
            model, test, batch_size=eval_batch_size, device=device, loss_fn=loss_fn
        )
        record = {
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            "train_acc": hits / max(seen, 1),
            "test_loss": test_loss,
            "test_acc": test_acc,
            "lr": epoch_lr,
            "epoch_seconds": time.perf_counter() - epoch_start,
        }
        if extra_metrics is not None:
            record.update(extra_metrics())
        history.append(record)
        log(format_epoch(record, epochs))
        if metrics is not None:
            metrics.log(record)
        if ckpt_dir is not None and main:
            save_checkpoint(
                ckpt_dir,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                progress=progress_record(epoch, 0),
            )
    if metrics is not None:
        metrics.close()

    if history:
        last = history[-1]
        test_loss, test_acc = last["test_loss"], last["test_acc"]
        train_loss, train_acc = last["train_loss"], last["train_acc"]
    else:  # zero epochs: report the starting point
        test_loss, test_acc = evaluate(
            model, test, batch_size=eval_batch_size, device=device, loss_fn=loss_fn
        )
        train_loss, train_acc = evaluate(
            model, train, batch_size=eval_batch_size, device=device, loss_fn=loss_fn
        )
    return FitResult(
        test_acc=test_acc,
        test_loss=test_loss,
        train_acc=train_acc,
        train_loss=train_loss,
        epochs=epochs,
        wall_seconds=done["wall_seconds"] + time.perf_counter() - started,
        snapshots=len(recorder) if recorder is not None else 0,
        history=history,
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


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)

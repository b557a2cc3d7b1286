"""An epoch of `fit`: its plan (steps, snapshots, mid-epoch checkpoints, where a resumed run
starts inside it), and each optimiser step: the closure over a minibatch (forward, backward,
gradient accumulation, the exchange between processes) and the epoch's running sums.

Library layer, part of the training loop (`lowdim.train.loop`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import distributed
from .batches import Batches, count, forward_loss
from .metrics import progress_bar
from .precision import Overflow, Precision
from .run_state import TrainingRun, snapshot_steps


class Steps:
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
        self.precision = Precision("cpu", None)  # the model's own dtype; fit sets another

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
                with torch.set_grad_enabled(backward), self.precision.forward():
                    data_loss, hits = forward_loss(self.model, batch, self.loss_fn)
                    data_loss = data_loss * share
                    reg = self.regularizer
                    loss = data_loss + reg() * share if reg is not None else data_loss
                if backward:
                    self.precision.scaled(loss).backward()
                total = loss.detach() if total is None else total + loss.detach()
                if stash:
                    first.append((data_loss.detach() * n, hits))
            if total is None:
                total = torch.zeros((), device=self.totals.device)
            if backward:  # float16: back from the loss scale, or the step is skipped
                self.precision.unscale(self.grads(), self.world)
            if self.world > 1:
                grads = self.grads() if backward else []
                total = distributed.weighted_mean_(total, grads, n, reduce=self.average_gradients)
            return total

        try:
            self.optimizer.step(closure)
        except Overflow:  # raised before the optimiser changed anything (its closure comes first)
            self.precision.update(overflowed=True)
        else:
            self.precision.update(overflowed=False)
        for loss_part, hits in first:
            self.totals[0] += loss_part.double()
            if hits is None:
                self.scored = False
            else:
                self.totals[1] += hits
        self.totals[2] += n


def groups(batches, size: int):
    """Consecutive batches in lists of `size` (the last list may be shorter)."""
    group = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


@dataclass
class EpochPlan:
    """How an epoch's steps go: `num_steps` (None for an iterable without a length), the
    steps already done in the epoch a checkpoint stopped inside (`inside`), the steps after
    which a snapshot is taken (`marks`), and the mid-epoch checkpoint interval."""

    data: Batches
    run: TrainingRun
    accumulate: int
    checkpoint_every: int
    num_steps: int | None
    inside: int
    marks: set[int]

    @classmethod
    def of(cls, data, run, accumulate, samples_per_epoch, checkpoint_every) -> EpochPlan:
        _warn_full_batch(data, run.world)
        batches = data.count(run.world)
        num_steps = None if batches is None else -(-batches // accumulate)
        marks = snapshot_steps(num_steps, samples_per_epoch) if num_steps else set()
        inside = run.inside(num_steps)
        return cls(data, run, accumulate, checkpoint_every, num_steps, inside, marks)

    def train(self, epoch: int, epochs: int, steps: Steps, *, seed: int, device):
        """The epoch's steps, with its snapshots, mid-epoch checkpoints and progress bar;
        (the epoch's learning rate, its start on `time.perf_counter`'s clock, moved back by
        the time a mid-epoch checkpoint had already spent in it)."""
        run, done = self.run, self.run.done
        skip = self.inside if epoch == done["epoch"] + 1 else 0  # steps before a checkpoint
        steps.begin(done["totals"][run.rank] if skip else [0.0] * 3, device)
        started = time.perf_counter() - (done.get("epoch_seconds", 0.0) if skip else 0.0)
        lr = done["epoch_lr"] if skip else steps.optimizer.param_groups[0]["lr"]
        bar = progress_bar(self.num_steps, f"epoch {epoch}/{epochs}", run.progress)
        bar.update(skip)
        stream = self.data.epoch(
            seed=seed,
            epoch=epoch,
            device=device,
            start_batch=skip * self.accumulate,
            shard=(run.rank, run.world),
        )
        for i, micro in enumerate(groups(stream, self.accumulate), start=skip + 1):
            steps.take(micro)
            run.step += 1
            if i in self.marks:
                run.snapshot(epoch - 1 + i / self.num_steps)
            if self.checkpoint_every and i % self.checkpoint_every == 0 and i != self.num_steps:
                seconds = time.perf_counter() - started
                run.checkpoint(
                    epoch - 1,
                    i,
                    epoch_lr=lr,
                    epoch_seconds=seconds,
                    totals=steps.totals,
                    **steps.precision.state(),
                )
            bar.update(1)
        bar.close()
        if self.num_steps is None:  # an iterable without a length: one snapshot at its end
            run.snapshot(float(epoch))
        return lr, started


def _warn_full_batch(data: Batches, world: int) -> None:
    # valid (full-batch gradient descent), but rarely what was meant: say so once
    if data.owned and distributed.rank() == 0 and data.batch_size * world > len(data):
        warnings.warn(
            f"batch_size {data.batch_size} x {world} process(es) exceeds the {len(data)} training "
            "examples: every step uses the whole training set",
            stacklevel=4,
        )

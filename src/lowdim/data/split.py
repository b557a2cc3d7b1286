"""In-memory splits batched by index_select: no DataLoader, whose per-batch overhead dominates
MNIST-sized work on a couple of cores."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from lowdim.errors import LowdimError
from lowdim.seeding import generator

Augment = Callable[[Tensor, torch.Generator], Tensor]
"""A batch-level augmentation: (batch of shape (B, C, H, W), CPU generator) -> a new tensor of
the same shape. It must not modify its input in place: unshuffled batches are views of the
split's own tensors."""


def check_batching(n: int, batch_size: int, drop_last: bool, start_batch: int) -> int:
    """The number of batches, after checking `batch_size` and `start_batch` (LowdimError)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LowdimError(f"batch size {batch_size!r} must be a positive integer")
    count = n // batch_size if drop_last else -(-n // batch_size)
    if isinstance(start_batch, bool) or not isinstance(start_batch, int):
        raise LowdimError(f"start_batch {start_batch!r} must be an integer")
    if not 0 <= start_batch <= count:
        raise LowdimError(f"start_batch {start_batch} is outside [0, {count}] for this epoch")
    return count


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> Tensor:
    """The sample order of an epoch: a permutation drawn from generator("order", seed, epoch)
    when shuffling, else 0..n-1. Always drawn on the CPU so it does not depend on the device."""
    if shuffle:
        return torch.randperm(n, generator=generator("order", seed, epoch))
    return torch.arange(n)


def augment_generator(seed: int, epoch: int, batch: int, shard: int = 0) -> torch.Generator:
    """The generator that augments batch number `batch` of an epoch (its slice `shard` when
    processes share the batch; see `shard_slices`).

    Keyed by the batch number as well as (seed, epoch), so that skipping batches on a mid-epoch
    resume needs no replay of the skipped draws and still gives the same later batches.
    """
    return (
        generator("augment", seed, epoch, batch)
        if shard == 0
        else (generator("augment", seed, epoch, batch, shard))
    )


def shard_slices(
    n: int, batch_size: int, shard: tuple[int, int], drop_last: bool, start_batch: int
) -> list[tuple[int, int, int]]:
    """(batch number, lo, hi): the positions [lo, hi) of the epoch's order that process `rank`
    of `world` (shard = (rank, world)) takes from each global batch.

    A global batch is `world * batch_size` consecutive positions; process r takes its r-th
    `batch_size` of them, so one process with `world * batch_size` sees exactly the union. A
    short last global batch (kept unless `drop_last`) may leave some processes a short or an
    empty slice (lo == hi): every process gets the same number of slices, so that processes
    that exchange something after every batch stay in step.
    """
    rank, world = shard
    if not 0 <= rank < world:
        raise LowdimError(f"shard {shard} needs 0 <= rank < world")
    count = check_batching(n, batch_size * world, drop_last, start_batch)
    out = []
    for b in range(start_batch, count):
        lo = min(n, (b * world + rank) * batch_size)
        out.append((b, lo, min(n, lo + batch_size)))
    return out


Inputs = Tensor | dict[str, Tensor]


def _rows(x: Inputs, index: Tensor | slice) -> Inputs:
    """The examples `index` of inputs that are a tensor or a dict of tensors."""
    if isinstance(x, dict):
        return {k: _rows(v, index) for k, v in x.items()}
    return x[index] if isinstance(index, slice) else x.index_select(0, index)


def _to(x: Inputs, device, non_blocking: bool = False) -> Inputs:
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=non_blocking) for k, v in x.items()}
    return x.to(device, non_blocking=non_blocking)


class Split:
    """One split of a dataset held as tensors: inputs `x` (N, ...) and targets `y` (N, ...).

    Images are x float32 (N, C, H, W) with y int64 (N,); token sequences are x int64 (N, L)
    with y (N, L) (the next tokens) or (N,) (a label per sequence); any shapes whose first
    dimension is the example. `x` may also be a dict of such tensors, as a Hugging Face
    tokenizer returns them (input_ids, attention_mask, ...): its batches are then dicts with
    the targets under "labels", which the model takes as keyword arguments (see
    `lowdim.train.batches`). `augment` (default None: none) is applied batch by batch to
    shuffled passes of tensor inputs; see `batches`.
    """

    def __init__(self, x: Inputs, y: Tensor, augment: Augment | None = None) -> None:
        tensors = list(x.values()) if isinstance(x, dict) else [x]
        if not tensors or any(t.dim() < 1 or len(t) != len(y) for t in tensors) or y.dim() < 1:
            shapes = {k: tuple(v.shape) for k, v in x.items()} if isinstance(x, dict) else x.shape
            raise LowdimError(
                f"a split needs x and y with the examples along their first dimension, got "
                f"shapes {shapes} and {tuple(y.shape)}"
            )
        if isinstance(x, dict) and (augment is not None or "labels" in x):
            raise LowdimError("a split of dict inputs takes no augment and no 'labels' in x")
        self.x = x
        self.y = y
        self.augment = augment

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        aug = "" if self.augment is None else ", augmented"
        return f"Split(n={len(self)}, shape={tuple(self.x.shape[1:])}, device={self.x.device}{aug})"

    @property
    def device(self) -> torch.device:
        """The device the tensors live on."""
        return self.y.device

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """Batches per epoch: ceil(N / batch_size), or floor with `drop_last` (default False)."""
        return check_batching(len(self), batch_size, drop_last, 0)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        device: str | torch.device | None = None,
        drop_last: bool = False,
        start_batch: int = 0,
        augment: bool | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (x, y) batches of one epoch (dict inputs: dicts with y under "labels").

        The order is `torch.randperm(N, generator=generator("order", seed, epoch))` when
        `shuffle` (default False), else 0..N-1, so an epoch's batches are a pure function of
        (seed, epoch): a resumed run sees exactly what an uninterrupted one saw.
        `start_batch` (default 0) skips that many leading batches without changing the rest.
        `device` (default None: where the tensors live) receives each batch, non-blocking for
        CUDA. `drop_last` (default False) drops a final short batch. `augment` (default None,
        meaning "same as `shuffle`") applies `self.augment`, with batch b of the epoch drawing
        from `generator("augment", seed, epoch, b)`; evaluation passes (no shuffle) are thus
        unaugmented unless asked. `shard` = (rank, world) (default (0, 1)) yields only this
        process's slice of each global batch of `world * batch_size` (see `shard_slices`);
        `start_batch` and `drop_last` then count global batches.
        """
        n = len(self)
        slices = shard_slices(n, batch_size, shard, drop_last, start_batch)
        use_augment = (shuffle if augment is None else augment) and self.augment is not None
        target = torch.device(device) if device is not None else self.device
        non_blocking = target.type == "cuda"
        order = epoch_order(n, shuffle, seed, epoch).to(self.device) if shuffle else None
        for b, lo, hi in slices:
            # Unshuffled: slices are views, cheaper than gathering.
            index = slice(lo, hi) if order is None else order[lo:hi]
            xb = _to(_rows(self.x, index), target, non_blocking)
            yb = _rows(self.y, index).to(target, non_blocking=non_blocking)
            if use_augment:
                assert self.augment is not None
                xb = self.augment(xb, augment_generator(seed, epoch, b, shard[0]))
            yield {**xb, "labels": yb} if isinstance(xb, dict) else (xb, yb)

    def subset(self, index: Tensor) -> Split:
        """The examples `index` (an int64 tensor of positions), as a split of their own."""
        return Split(_rows(self.x, index), self.y.index_select(0, index), self.augment)

    def to(self, device: str | torch.device) -> Split:
        """A copy of this split with its tensors on `device` (small datasets fit on a GPU)."""
        return Split(_to(self.x, device), self.y.to(device), self.augment)

    def with_labels(self, y: Tensor) -> Split:
        """The same images with labels `y` (e.g. corrupted ones)."""
        return Split(self.x, y.to(self.y.device), self.augment)

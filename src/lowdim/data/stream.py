"""Splits too large for memory, streamed through a DataLoader with a seeded, resumable order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from lowdim.data.split import check_batching, epoch_order, shard_slices
from lowdim.errors import LowdimError
from lowdim.seeding import derive_seed

# (dataset index, per-epoch augmentation key or None, position in the epoch)
Key = tuple[int, int | None, int]


class SampleSource(Protocol):
    """What a StreamSplit reads: `len(source)` samples, each loaded by index.

    `load(index, seed)` returns one float32 (C, H, W) image; `seed` is None for the evaluation
    transform, else the seed of that sample's augmentation draws.
    """

    def __len__(self) -> int: ...

    def load(self, index: int, seed: int | None) -> Tensor: ...


class _Keyed(Dataset):
    def __init__(self, source: SampleSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: Key) -> tuple[Tensor, int]:
        index, base, position = key
        # Hash (epoch key, position) here, in the worker, rather than for every sample up front.
        seed = None if base is None else derive_seed(base, position)
        return self.source.load(index, seed), index


class _EpochSampler(Sampler):
    """Yields the keys of the positions in `ranges` ([lo, hi) pairs) of an epoch's order,
    lazily."""

    def __init__(self, order: Tensor, base: int | None, ranges: list[tuple[int, int]]) -> None:
        # A list: indexing a tensor element by element costs microseconds per sample.
        self.order: list[int] = order.tolist()
        self.base, self.ranges = base, ranges

    def __len__(self) -> int:
        return sum(hi - lo for lo, hi in self.ranges)

    def __iter__(self) -> Iterator[Key]:
        for lo, hi in self.ranges:
            for position in range(lo, hi):
                yield self.order[position], self.base, position


def _one_line_message(err: LowdimError) -> str:
    # A DataLoader worker re-raises its exception with the whole traceback as the message; keep
    # only the original message (the last line) so the command line can print it as one line.
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    prefix = "LowdimError: "
    return last.split(prefix, 1)[1] if prefix in last else last


class StreamSplit:
    """A split whose images are loaded on demand by `source`, batched by a DataLoader.

    `y` (int64, (N,)) holds all labels in memory, so they can be corrupted like an in-memory
    split's. `augment` (default False) says whether shuffled passes use the source's training
    transform; `num_workers` (default 0) is the number of DataLoader worker processes.
    It offers the same `__len__`, `num_batches` and `batches` as `Split`.
    """

    def __init__(
        self, source: SampleSource, y: Tensor, *, augment: bool = False, num_workers: int = 0
    ) -> None:
        if len(source) != len(y):
            raise LowdimError(f"{len(source)} samples but {len(y)} labels in a stream split")
        self.source = source
        self.y = y
        self.augment = augment
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return f"StreamSplit(n={len(self)}, augment={self.augment}, workers={self.num_workers})"

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
        """Yield (x, y) batches of one epoch; the arguments mean what they mean for
        `Split.batches`. The order comes from generator("order", seed, epoch); the augmentation
        of the sample at position p of the epoch is seeded by derive_seed(derive_seed("augment",
        seed, epoch), p), so batches do not depend on `num_workers` and resume exactly.
        """
        n = len(self)
        slices = shard_slices(n, batch_size, shard, drop_last, start_batch)
        use_augment = self.augment and (shuffle if augment is None else augment)
        base = derive_seed("augment", seed, epoch) if use_augment else None
        order = epoch_order(n, shuffle, seed, epoch)
        # Only a process's last slice can be short, so the loader's batches are its slices;
        # an empty last slice (several processes, a short last global batch) is yielded after.
        sampler = _EpochSampler(order, base, [(lo, hi) for _, lo, hi in slices])
        empty_last = bool(slices) and slices[-1][1] == slices[-1][2]
        target = torch.device(device) if device is not None else torch.device("cpu")
        cuda = target.type == "cuda"
        loader = DataLoader(
            _Keyed(self.source),
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=cuda,
            # An explicit generator stops the DataLoader from drawing its worker base seed from
            # torch's global RNG, which would perturb the caller's random stream.
            generator=torch.Generator().manual_seed(0),
        )
        batches = iter(loader)
        message = None
        try:
            for xb, idx in batches:
                yield xb.to(target, non_blocking=cuda), self.y[idx].to(target, non_blocking=cuda)
            if empty_last:
                shape = self.source.load(0, None).shape
                yield torch.empty(0, *shape, device=target), self.y[:0].to(target)
        except LowdimError as e:
            message = _one_line_message(e)
        finally:
            # Stop the workers now, also when the caller stops early: an error's traceback keeps
            # the iterator alive, and its eventual clean-up by the garbage collector then waits
            # seconds for the workers. (The method is private, hence the guarded look-up.)
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
        if message is not None:
            # Raised outside the except block so the one-line error carries no worker traceback.
            raise LowdimError(message)

    def to(self, device: str | torch.device) -> StreamSplit:
        """Itself: a stream split stays on the CPU and moves each batch in `batches`."""
        return self

    def with_labels(self, y: Tensor) -> StreamSplit:
        """The same samples with labels `y` (e.g. corrupted ones)."""
        return StreamSplit(self.source, y.cpu(), augment=self.augment, num_workers=self.num_workers)

"""What `fit` and `evaluate` read: any data, as the same batches.

lowdim's own splits (`lowdim.data.Split`, `StreamSplit`: anything with `batches` and
`num_batches`) are batched by lowdim, so an epoch's batches are a pure function of (seed,
epoch) and a run resumed mid-epoch is exact. Any other iterable of batches (a `DataLoader`, a
list) is taken as it comes, one pass per epoch; a mid-epoch resume replays it and skips the
batches done, which is exact when its order depends only on the epoch (a seeded sampler;
`set_epoch` is called where the sampler has it, as torch's `DistributedSampler` does).

A batch is `(inputs, targets)` of any shapes (images and labels, token ids and next tokens),
or a dict (Hugging Face style: input_ids, attention_mask, labels, ...) passed as keyword
arguments. A dict batch's loss is the user's `loss_fn(output, batch)`, or by default the
model's own (`output.loss`, which a Hugging Face model computes when given labels); its
accuracy is counted where the output has `logits` and the batch `labels` of their shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import BadArgument


def cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy over every target, classes along the output's last dimension: a label
    per example ((N, C) against (N,)) or a token per position ((N, L, V) against (N, L))."""
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def to_device(batch, device):
    """The batch with every tensor in it moved to `device` (None: left where it is)."""
    if device is None:
        return batch
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=torch.device(device).type == "cuda")
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def count(batch) -> int:
    """The number of targets a batch's mean loss averages over (its weight when batches,
    micro-batches or processes are combined): the targets' numel, or a dict's leading size."""
    if isinstance(batch, Mapping):
        first = next(v for v in batch.values() if isinstance(v, Tensor))
        return first.shape[0]
    return batch[1].numel()


def forward_loss(model, batch, loss_fn) -> tuple[Tensor, Tensor | None]:
    """(the batch's mean loss, its number of correct predictions or None): correct means the
    output's argmax over its last dimension equals the target, for integer targets shaped like
    the output without its last dimension."""
    if isinstance(batch, Mapping):
        out = model(**batch)
        loss = model_loss(out, batch) if loss_fn is cross_entropy else loss_fn(out, batch)
        logits = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
        return loss, _hits(logits, batch.get("labels"))
    x, y = batch
    out = model(x)
    return loss_fn(out, y), _hits(out, y)


def _hits(out: Tensor | None, y: Tensor | None) -> Tensor | None:
    """How many of the output's argmax over its last dimension equal the targets, or None
    where the targets are not classes of the output (absent, floating, or shaped otherwise)."""
    if not isinstance(out, Tensor) or not isinstance(y, Tensor):
        return None
    if y.is_floating_point() or out.shape[:-1] != y.shape:
        return None
    return (out.detach().argmax(-1) == y).sum()


def model_loss(output, batch) -> Tensor:
    """A dict batch's default loss: the model's own, `output.loss` (or `output["loss"]`)."""
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    if not isinstance(loss, Tensor):
        raise BadArgument(
            "loss_fn",
            f"is needed for dict batches when the model returns no loss (its output is a "
            f"{type(output).__name__}; give the batch labels, or pass loss_fn(output, batch))",
        )
    return loss


class Batches:
    """One epoch's batches of `data` for this process: lowdim's splits batched by lowdim,
    other iterables as they come."""

    def __init__(self, data, batch_size: int | None, drop_last: bool = False) -> None:
        self.data = data
        self.owned = hasattr(data, "batches") and hasattr(data, "num_batches")
        if self.owned and batch_size is None:
            raise BadArgument("batch_size", "is needed to batch a lowdim split")
        if not self.owned and not isinstance(data, Iterable):
            raise BadArgument(
                "train",
                f"must be a lowdim split or an iterable of batches, got {type(data).__name__}",
            )
        self.batch_size, self.drop_last = batch_size, drop_last

    def __len__(self) -> int:
        """The number of examples (lowdim's splits) or batches (other sized iterables)."""
        return len(self.data)

    def count(self, world: int) -> int | None:
        """Batches per epoch for each process (None: an iterable without a length)."""
        if self.owned:
            return self.data.num_batches(self.batch_size * world, self.drop_last)
        return len(self.data) if hasattr(self.data, "__len__") else None

    def epoch(
        self,
        *,
        seed: int,
        epoch: int,
        device=None,
        start_batch: int = 0,
        shuffle: bool = True,
        shard=(0, 1),
    ) -> Iterator:
        """The batches of `epoch` from batch `start_batch` on, on `device`."""
        if self.owned:
            yield from self.data.batches(
                self.batch_size,
                shuffle=shuffle,
                seed=seed,
                epoch=epoch,
                device=device,
                drop_last=self.drop_last,
                start_batch=start_batch,
                shard=shard,
            )
            return
        sampler = getattr(self.data, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        for i, batch in enumerate(self.data):
            if i >= start_batch:
                yield to_device(batch, device)

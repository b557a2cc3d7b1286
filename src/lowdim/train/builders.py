"""Optimisers and learning-rate schedules by name, for the command line and `fit`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, MultiStepLR

from ..errors import BadArgument, LowdimError
from ..optim.optimizer import check_rates

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("multistep", "cosine", "linear", "constant")


def build_optimizer(
    name: str,
    params: Iterable[torch.Tensor],
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """`sgd` (heavy-ball momentum, default 0.9), `adam` or `adamw` (betas default (0.9, 0.999)).

    Weight decay is L2 added to the gradient for `sgd` and `adam`, decoupled for `adamw`.
    """
    check_rates(lr, weight_decay)
    if name == "sgd":
        if not 0 <= momentum < 1:
            raise BadArgument("momentum", f"must be in [0, 1), got {momentum}")
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise LowdimError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")


def build_schedule(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_epochs: int = 0,
) -> LRScheduler:
    """A schedule stepped once per epoch.

    - `multistep`: lr x `gamma` (default 0.1) at each epoch in `milestones` (default none).
    - `cosine`: lr_e = lr * (1 + cos(pi * e / epochs)) / 2, after `warmup_epochs` of linear
      warm-up (default 0).
    - `linear`: lr_e = lr * (1 - e / epochs), reaching 0 after the last epoch.
    - `constant`: the lr never changes.
    """
    bad = [m for m in milestones if not 0 < m < epochs]
    if bad:
        raise BadArgument(
            "lr_milestones",
            f"{','.join(map(str, bad))} must lie strictly between 0 and the number of epochs, "
            f"{epochs}",
        )
    if name == "multistep":
        return MultiStepLR(optimizer, milestones=sorted(milestones), gamma=gamma)
    if name == "constant":
        return LambdaLR(optimizer, lambda e: 1.0)
    if name == "linear":
        return LambdaLR(optimizer, lambda e: max(0.0, 1 - e / epochs))
    if name == "cosine":
        if warmup_epochs <= 0:
            return CosineAnnealingLR(optimizer, T_max=epochs)

        def factor(e: int) -> float:
            if e < warmup_epochs:
                return (e + 1) / warmup_epochs
            t = (e - warmup_epochs) / max(1, epochs - warmup_epochs)
            return 0.5 * (1 + math.cos(math.pi * t))

        return LambdaLR(optimizer, factor)
    raise LowdimError(f"unknown lr schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")

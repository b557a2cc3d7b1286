"""BatchNorm running statistics after a jump in weight space.

Running means and variances are tracked with momentum during training, so after the weights
jump (a subspace step, an average of checkpoints) they describe a network that no longer exists.
`recompute_batchnorm` resets them and re-estimates them as a cumulative average over the
training data, with the weights fixed.
"""

from __future__ import annotations

import torch
from torch import nn


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def recompute_batchnorm(
    model: nn.Module, split, *, batch_size: int = 256, device=None, max_batches: int | None = None
) -> bool:
    """Reset every BatchNorm layer's statistics and re-estimate them over `split` (unaugmented,
    in order; at most `max_batches` batches, default all). Returns False if there is none."""
    layers = batchnorm_layers(model)
    if not layers:
        return False
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # None: a cumulative average over the batches seen
    was_training = model.training
    model.train()
    for i, (x, _) in enumerate(split.batches(batch_size, device=device)):
        if max_batches is not None and i >= max_batches:
            break
        model(x)
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return True

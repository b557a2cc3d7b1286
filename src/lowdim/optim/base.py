"""What every subspace optimiser shares: one parameter, the model's flat vector."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import LowdimError
from ..params import FlatParams


def check_rates(lr: float, weight_decay: float = 0.0) -> None:
    """One-line errors for a learning rate that is not a finite positive number, or a weight
    decay that is negative or not finite (`not lr > 0` also catches NaN)."""
    if not (lr > 0 and math.isfinite(lr)):
        raise LowdimError(f"--lr must be positive and finite, got {lr}")
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise LowdimError(f"--weight-decay must be >= 0, got {weight_decay}")


class FlatOptimizer(torch.optim.Optimizer):
    """A `torch.optim.Optimizer` over `flat.data` alone: steps are products with a basis on
    the whole flat vector, never loops over parameter tensors."""

    def __init__(self, flat: FlatParams, defaults: dict) -> None:
        super().__init__([flat.data], defaults)
        self.flat = flat

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the model's flat gradient in place (its views must survive, so never None)."""
        self.flat.zero_grad()

    def _evaluate(self, closure) -> Tensor | None:
        """The closure's loss (with its gradient in `flat.grad`), or None without a closure;
        then a check that the model's parameters and gradients are still the flat buffers' views
        (a `model.zero_grad()` that sets gradients to None, or a `model.to(...)` after
        `FlatParams`, would otherwise make every step a silent no-op)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.flat.check()
        return loss

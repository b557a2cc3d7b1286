"""P-SGD: stochastic gradient descent with momentum inside a fixed subspace (DLDR, stage 3a)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..bases import Basis
from ..errors import LowdimError
from ..params import FlatParams
from .base import FlatOptimizer, check_rates


class PSGD(FlatOptimizer):
    """Projected SGD with heavy-ball momentum in the span of a basis P (D x d):

        g_c = P^T (g + wd * theta)          the gradient (and L2 term) in coordinates
        v   = mu * v + g_c                  momentum in the subspace
        theta <- theta - lr * P v           the step, back in parameter space

    Every step lies in span(P), so theta stays in the affine subspace theta_0 + span(P); weight
    decay is projected like the gradient for the same reason (it costs one more product with P).
    The model's parameters must be views of `flat` (see `lowdim.FlatParams`): then a step is two
    matrix-vector products and one in-place add, with no per-tensor copying.

    Args:
        flat: the model's flat parameters; `flat.grad` must hold the gradient before `step`.
        basis: P, with `basis.num_params == flat.numel`.
        lr: learning rate (default 1.0, the DLDR paper's).
        momentum: mu (default 0.9).
        weight_decay: L2 coefficient wd (default 0, as in the paper).
        nesterov: use the Nesterov form g_c + mu v (default False).
    """

    def __init__(
        self,
        flat: FlatParams,
        basis: Basis,
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        check_basis(flat, basis)
        check_rates(lr, weight_decay)
        if not 0 <= momentum < 1:
            raise LowdimError(f"--momentum must be in [0, 1), got {momentum}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(flat, defaults)
        self.basis = basis

    @torch.no_grad()
    def step(self, closure=None) -> Tensor | None:
        loss = self._evaluate(closure)
        group = self.param_groups[0]
        coords = self.basis.project(self.flat.grad)
        if group["weight_decay"]:
            coords.add_(self.basis.project(self.flat.data), alpha=group["weight_decay"])
        if group["momentum"]:
            state = self.state[self.flat.data]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = coords.clone()
            else:
                buf.mul_(group["momentum"]).add_(coords)
            coords = coords.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
        self.basis.expand_add_(self.flat.data, coords, alpha=-group["lr"])
        return loss


def check_basis(flat: FlatParams, basis: Basis) -> None:
    if basis.num_params != flat.numel:
        raise LowdimError(
            f"the basis acts on {basis.num_params} parameters but the model has {flat.numel}; "
            "was it made for another architecture?"
        )

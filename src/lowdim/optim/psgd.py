"""P-SGD: stochastic gradient descent with momentum inside a fixed subspace (DLDR, stage 3a)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.sgd import sgd

from ..bases import Basis
from ..errors import BadArgument
from ..params import FlatParams
from .optimizer import BasisOptimizer, check_rates


class PSGD(BasisOptimizer):
    """Projected SGD with heavy-ball momentum in the span of a basis P (D x d):

        g_c = P^T (g + wd * theta)          the gradient (and L2 term) in coordinates
        v   = mu * v + g_c                  momentum in the subspace (v = g_c at the first step)
        theta <- theta - lr * P v           the step, back in parameter space

    Every step lies in span(P), so theta stays in the affine subspace theta_0 + span(P); weight
    decay is projected like the gradient for the same reason (torch's own `weight_decay` would
    decay the coordinates instead, a different method). The model's parameters must be views
    of `flat` (see `lowdim.FlatParams`): then a step is two matrix-vector products and one
    in-place add, with no per-tensor copying.

    The update of v and of the coordinates is exactly `torch.optim.SGD` (dampening 0) on
    coordinates with gradient g_c, and runs torch's own functional `sgd` (what `SGD.step`
    calls): an inner `SGD` object would add its step bookkeeping, measured at 6% (MNIST MLP,
    D = 199,210, d = 40) to 25% (digits MLP, D = 55,210) of a P-SGD step, where the functional
    call costs what the hand-written update did. Its state, `momentum_buffer` (v, d numbers in
    the model's dtype, on its device), is torch's too.

    Args:
        flat: the model's flat parameters; `flat.grad` must hold the gradient before `step`.
        basis: P, with `basis.num_params == flat.numel`.
        lr: learning rate (default 1.0, the DLDR paper's).
        momentum: mu, in [0, 1) (default 0.9).
        weight_decay: L2 coefficient wd (default 0, as in the paper).
        nesterov: use the Nesterov form g_c + mu v (default False; needs momentum > 0).
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
        check_rates(lr, weight_decay)
        if not 0 <= momentum < 1:
            raise BadArgument("momentum", f"must be in [0, 1), got {momentum}")
        if not isinstance(nesterov, bool):
            raise BadArgument("nesterov", f"must be True or False, got {nesterov!r}")
        if nesterov and not momentum:
            raise BadArgument("nesterov", "needs a momentum > 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(flat, basis, defaults)
        # torch's sgd moves this zero vector by -lr * v: the step in coordinates, which P then
        # takes to parameter space (no difference of two coordinate vectors, so no rounding).
        self._move = torch.zeros(basis.dim, dtype=flat.data.dtype, device=flat.data.device)

    @torch.no_grad()
    def step(self, closure=None) -> Tensor | None:
        loss = self._evaluate(closure)
        group = self.param_groups[0]
        grad = self.flat.grad
        if group["weight_decay"]:
            grad = grad.add(self.flat.data, alpha=group["weight_decay"])
        coords = self.basis.project(grad).to(self._move.dtype)
        state = self.state[self.flat.data]
        buffers = [state.get("momentum_buffer")]
        self._move.zero_()
        sgd(
            [self._move],
            [coords],
            buffers,
            weight_decay=0.0,
            momentum=group["momentum"],
            lr=group["lr"],
            dampening=0.0,
            nesterov=group["nesterov"],
            maximize=False,
            foreach=False,
        )
        if group["momentum"]:
            state["momentum_buffer"] = buffers[0]
        self.basis.expand_add_(self.flat.data, self._move)
        return loss

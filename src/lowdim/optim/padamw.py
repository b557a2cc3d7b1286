"""Projected AdamW: Adam with decoupled weight decay on the coordinates of a fixed subspace
(TWA's journal variant trains its per-layer averaging coefficients this way)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..bases import Basis
from ..params import FlatParams
from .base import FlatOptimizer, check_rates
from .psgd import check_basis


class PAdamW(FlatOptimizer):
    """AdamW on c, where theta = theta_0 + P c and c starts at 0:

        g_c = P^T g
        m = b1 m + (1 - b1) g_c,   v = b2 v + (1 - b2) g_c^2          (then bias-corrected)
        c' = c - lr (m_hat / (sqrt(v_hat) + eps) + wd c)
        theta <- theta + P (c' - c)

    The same as `torch.optim.AdamW` on the coordinates of a `SubspaceModel`, but it moves the
    model's flat parameters in place (no D-sized reparametrisation in the forward pass). The
    decay pulls c, not theta, towards 0: towards the anchor the subspace is attached to.

    Args:
        flat, basis: as for `PSGD`.
        lr: learning rate (default 1e-3).
        betas: (b1, b2) (default (0.9, 0.999)); eps: default 1e-8.
        weight_decay: wd, decoupled (default 0.01, torch's AdamW default).
    """

    def __init__(
        self,
        flat: FlatParams,
        basis: Basis,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        check_basis(flat, basis)
        check_rates(lr, weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(flat, defaults)
        self.basis = basis

    @torch.no_grad()
    def step(self, closure=None) -> Tensor | None:
        loss = self._evaluate(closure)
        group = self.param_groups[0]
        b1, b2 = group["betas"]
        g = self.basis.project(self.flat.grad)
        state = self.state[self.flat.data]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float64)
            state["coords"] = torch.zeros_like(g)
            state["exp_avg"] = torch.zeros_like(g)
            state["exp_avg_sq"] = torch.zeros_like(g)
        state["step"] += 1
        t = float(state["step"])
        c, m, v = state["coords"], state["exp_avg"], state["exp_avg_sq"]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2**t)).sqrt_().add_(group["eps"])
        move = (m / (1 - b1**t)).div_(denom).add_(c, alpha=group["weight_decay"])
        move.mul_(-group["lr"])
        c.add_(move)
        self.basis.expand_add_(self.flat.data, move)
        return loss

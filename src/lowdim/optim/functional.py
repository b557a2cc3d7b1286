"""The mathematics of the subspace optimisers as plain functions, tested directly."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def bfgs_update(h: Tensor, s: Tensor, y: Tensor, curvature_eps: float = 1e-20) -> bool:
    """In place, the BFGS update of an inverse-Hessian estimate H from a step s and the change y
    of the gradient along it:

        H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T,   rho = 1 / (y^T s)

    written as H - rho (s (Hy)^T + (Hy) s^T) + (rho^2 y^T H y + rho) s s^T for symmetric H.
    Skipped (returns False) unless the curvature condition y^T s > `curvature_eps` holds, which
    keeps H positive definite.
    """
    ys = torch.dot(y, s).item()
    if not ys > curvature_eps:
        return False
    rho = 1.0 / ys
    hy = h @ y
    yhy = torch.dot(y, hy).item()
    h.addr_(s, hy, alpha=-rho).addr_(hy, s, alpha=-rho).addr_(s, s, alpha=rho * rho * yhy + rho)
    return True


def armijo_accepts(loss: float, loss0: float, step: float, slope: float, sigma: float) -> bool:
    """The Armijo sufficient-decrease test for a trial step t along direction d:

        f(w + t d) < f(w) + sigma * t * (g^T d)      (slope = g^T d < 0 for a descent direction)

    A non-finite trial loss is never accepted.
    """
    return math.isfinite(loss) and loss < loss0 + sigma * step * slope

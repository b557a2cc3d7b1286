"""P-BFGS: a quasi-Newton method in the d coordinates of a fixed subspace (DLDR, stage 3b)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..bases import Basis
from ..errors import BadArgument, is_int
from ..params import FlatParams
from .functional import armijo_accepts, bfgs_update
from .optimizer import BasisOptimizer, check_rates

COUNTERS = (
    "steps",
    "trials",
    "hessian_updates",
    "hessian_resets",
    "line_search_failures",
    "nonfinite_events",
    "steps_without_move",
)


class PBFGS(BasisOptimizer):
    """BFGS on the subspace coordinates, with an Armijo line search on the same minibatch.

    One `step(closure)`:
      1. loss f0 and gradient g on the minibatch (`closure()`); g_c = P^T g.
      2. With a previous step s and gradient g_prev: y = g_c - g_prev; if y^T s > 1e-20, the
         BFGS update of the d x d inverse Hessian H (identity at the start), in float64.
      3. Direction p = -H g_c; trial steps t = lr, lr*shrink, ... (at most `max_tries`) until
         f(theta + t P p) < f0 + sigma t g_c^T p (Armijo), each trial a forward pass on the same
         minibatch (`closure(backward=False)`), with weights and BatchNorm buffers restored from
         an in-memory snapshot before each trial.
      4. Optionally, residual momentum on the part of g outside the subspace:
         m = gamma m + (g - P g_c), theta -= alpha m (off by default).

    Where the reference takes a near-zero step when no trial passes, this one resets H to the
    identity and searches again along the steepest-descent direction -g_c; if that fails too,
    the weights stay where they were. A non-finite loss, gradient or H also resets H. Each of
    these events is counted in `counters()` (merged into the training metrics).

    Args:
        flat: the model's flat parameters (see `lowdim.FlatParams`).
        basis: P, with `basis.num_params == flat.numel`.
        lr: the first trial step t (default 1.0: the quasi-Newton step).
        sigma: Armijo constant, in (0, 1) (default 0.4).
        shrink: factor between trials, in (0, 1) (default 0.4).
        max_tries: trials per search, >= 1 (default 20).
        curvature_eps: skip the BFGS update unless y^T s exceeds this, >= 0 (default 1e-20).
        reset_every: reset H to the identity every this many steps (default 0: never; the
            training job's `reset_every_epoch=True` sets it to the steps per epoch).
        residual_alpha, residual_gamma: residual momentum, alpha >= 0 and gamma in [0, 1)
            (default 0 and 0.9: off).
        module: the model, whose buffers (BatchNorm running statistics and its batch counter,
            which `momentum=None` averages by) are restored after rejected trials, so a step
            updates them once (default None: no buffers).

    Every argument but `module` is a hyperparameter in `param_groups` (see `FlatOptimizer` for
    what loading a state does with them). The closure must accept `backward: bool = True` to
    skip the backward pass in trials; a closure without that argument also works, at the cost
    of a backward pass per trial.
    """

    def __init__(
        self,
        flat: FlatParams,
        basis: Basis,
        lr: float = 1.0,
        sigma: float = 0.4,
        shrink: float = 0.4,
        max_tries: int = 20,
        curvature_eps: float = 1e-20,
        reset_every: int = 0,
        residual_alpha: float = 0.0,
        residual_gamma: float = 0.9,
        module: nn.Module | None = None,
    ) -> None:
        check_rates(lr)
        if not 0 < sigma < 1:
            raise BadArgument("sigma", f"must be in (0, 1), got {sigma}")
        if not 0 < shrink < 1:
            raise BadArgument("shrink", f"must be in (0, 1), got {shrink}")
        if not is_int(max_tries, 1):
            raise BadArgument("max_tries", f"must be an integer >= 1, got {max_tries!r}")
        if not 0 <= curvature_eps < math.inf:
            raise BadArgument("curvature_eps", f"must be >= 0 and finite, got {curvature_eps}")
        if not is_int(reset_every, 0):
            raise BadArgument("reset_every", f"must be an integer >= 0, got {reset_every!r}")
        if not 0 <= residual_alpha < math.inf:
            raise BadArgument("residual_alpha", f"must be >= 0 and finite, got {residual_alpha}")
        if not 0 <= residual_gamma < 1:
            raise BadArgument("residual_gamma", f"must be in [0, 1), got {residual_gamma}")
        defaults = dict(
            lr=lr,
            sigma=sigma,
            shrink=shrink,
            max_tries=max_tries,
            curvature_eps=curvature_eps,
            reset_every=reset_every,
            residual_alpha=residual_alpha,
            residual_gamma=residual_gamma,
        )
        super().__init__(flat, basis, defaults)
        self.buffers = list(module.buffers()) if module is not None else []

    @property
    def combines_gradients(self) -> bool:
        """As `BasisOptimizer`'s, but never with the residual momentum, which steps along the
        whole averaged gradient in `flat.grad`."""
        return self.basis.combines_gradients and not self.param_groups[0]["residual_alpha"]

    # -- state -------------------------------------------------------------------------------
    def _state(self) -> dict:
        state = self.state[self.flat.data]
        if "hessian" not in state:
            d = self.basis.dim
            state["hessian"] = torch.eye(d, dtype=torch.float64, device=self.flat.data.device)
            for name in COUNTERS:
                state[name] = 0
        return state

    def counters(self) -> dict[str, int]:
        """Event counts since the start: steps, trials, BFGS updates, H resets, failed searches,
        non-finite losses or gradients, and steps that left the weights unchanged."""
        state = self._state()
        return {name: state[name] for name in COUNTERS}

    def reset_hessian(self) -> None:
        state = self._state()
        state["hessian"].copy_(torch.eye(self.basis.dim, dtype=torch.float64))
        state.pop("prev_grad", None)
        state.pop("prev_step", None)
        state["hessian_resets"] += 1

    def _state_dtypes(self) -> dict[str, torch.dtype]:
        # H and the previous step and gradient are float64 by design (the residual momentum
        # buffer, a parameter-space vector, is in the model's dtype)
        return dict.fromkeys(("hessian", "prev_grad", "prev_step"), torch.float64)

    # -- the step ----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[..., Tensor]) -> Tensor:  # type: ignore[override]
        if closure is None:
            raise ValueError("PBFGS.step needs a closure that returns the minibatch loss")
        group, state = self.param_groups[0], self._state()
        evaluate = _trial_evaluator(closure)
        # Buffers as they were before this step's forward passes: each trial starts from them,
        # so the accepted trial's forward pass is the one update BatchNorm statistics get.
        buffers0 = [b.clone() for b in self.buffers]
        loss0 = self._evaluate(closure)
        f0 = float(loss0)
        state["steps"] += 1
        grad = self.basis.project(self.flat.grad).double()
        if not (math.isfinite(f0) and torch.isfinite(grad).all()):
            # Nothing sensible to step along; the weights are kept (they produced f0 on this
            # batch, but were accepted with a finite loss on earlier ones).
            state["nonfinite_events"] += 1
            state["steps_without_move"] += 1
            self._restore(self.flat.data, buffers0)  # undo what a NaN forward did to BatchNorm
            self.reset_hessian()
            return loss0

        every = group["reset_every"]
        if every and state["steps"] > 1 and (state["steps"] - 1) % every == 0:
            self.reset_hessian()
        h = state["hessian"]
        if "prev_grad" in state:
            if bfgs_update(
                h, state["prev_step"], grad - state["prev_grad"], group["curvature_eps"]
            ):
                state["hessian_updates"] += 1
            if not torch.isfinite(h).all():
                state["nonfinite_events"] += 1
                self.reset_hessian()
                h = state["hessian"]

        residual = None
        if group["residual_alpha"]:
            # The out-of-subspace part of g, taken now: trials may overwrite flat.grad.
            residual = self.flat.grad - self.basis.expand(grad).to(self.flat.grad.dtype)

        theta0 = self.flat.data.clone()
        direction = -(h @ grad)
        step = self._line_search(evaluate, direction, grad, f0, theta0, buffers0, group, state)
        if step is None:  # no decrease along the quasi-Newton direction: steepest descent
            state["line_search_failures"] += 1
            self.reset_hessian()
            step = self._line_search(evaluate, -grad, grad, f0, theta0, buffers0, group, state)
        if step is None:
            self._restore(theta0, buffers0)
            state["steps_without_move"] += 1
            state.pop("prev_grad", None)
            state.pop("prev_step", None)
        else:
            state["prev_step"], state["prev_grad"] = step, grad

        if residual is not None:
            buf = state.get("residual_buffer")
            if buf is None:
                buf = state["residual_buffer"] = residual.clone()
            else:
                buf.mul_(group["residual_gamma"]).add_(residual)
            self.flat.data.add_(buf, alpha=-group["residual_alpha"])
        return loss0

    def _line_search(
        self,
        evaluate,
        direction: Tensor,
        grad: Tensor,
        f0: float,
        theta0: Tensor,
        buffers0: list[Tensor],
        group: dict,
        state: dict,
    ) -> Tensor | None:
        """Armijo backtracking from theta0 along `direction`; the accepted step (coordinates,
        float64) with the weights left there, or None with the weights wherever the last trial
        put them."""
        slope = torch.dot(grad, direction).item()
        if not slope < 0:  # not a descent direction (H lost positive definiteness)
            return None
        t = group["lr"]
        for _ in range(group["max_tries"]):
            self._restore(theta0, buffers0)
            self.basis.expand_add_(self.flat.data, direction.to(self.flat.data.dtype), alpha=t)
            state["trials"] += 1
            if armijo_accepts(float(evaluate()), f0, t, slope, group["sigma"]):
                return direction * t
            t *= group["shrink"]
        return None

    def _restore(self, theta0: Tensor, buffers0: list[Tensor]) -> None:
        self.flat.data.copy_(theta0)
        for b, b0 in zip(self.buffers, buffers0, strict=True):
            b.copy_(b0)


def _trial_evaluator(closure: Callable[..., Tensor]) -> Callable[[], Tensor]:
    """A forward-only evaluation of the closure's loss when it takes `backward`, else the
    closure itself (its backward pass is then wasted but harmless)."""
    try:
        takes_flag = "backward" in inspect.signature(closure).parameters
    except (TypeError, ValueError):
        takes_flag = False
    if takes_flag:
        return lambda: closure(backward=False)

    def with_grad() -> Tensor:
        with torch.enable_grad():
            return closure()

    return with_grad

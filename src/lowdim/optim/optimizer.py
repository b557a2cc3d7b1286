"""What every subspace optimiser shares: one parameter, the model's flat vector."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..bases import Basis
from ..errors import BadArgument, LowdimError
from ..params import FlatParams


def check_rates(
    lr: float,
    weight_decay: float = 0.0,
    *,
    lr_name: str = "lr",
    weight_decay_name: str = "weight_decay",
) -> None:
    """One-line errors for a learning rate that is not a finite positive number, or a weight
    decay that is negative or not finite (`not lr > 0` also catches NaN). The errors name the
    arguments `lr_name` and `weight_decay_name` (a caller whose rates go by other names, such as
    `baseline_lr` and `l2`, passes those)."""
    if not (lr > 0 and math.isfinite(lr)):
        raise BadArgument(lr_name, f"must be positive and finite, got {lr}")
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise BadArgument(weight_decay_name, f"must be >= 0, got {weight_decay}")


class FlatOptimizer(torch.optim.Optimizer):
    """A `torch.optim.Optimizer` over `flat.data` alone: steps are products with a basis on
    the whole flat vector, never loops over parameter tensors.

    Its one parameter group holds every hyperparameter (so lr schedulers and `state_dict` see
    them all) and the sizes its state is made for: `num_params` (D) here, `dim` (d) in
    `BasisOptimizer`. `load_state_dict` refuses a state made for other sizes (a `LowdimError`
    naming the field) and otherwise adopts the saved hyperparameters, as torch's optimisers
    do: the optimiser then continues the saved one exactly, never a mix of the two.
    """

    # The group keys a saved state must share with this optimiser: not hyperparameters but the
    # sizes of its state (`BasisOptimizer` adds "dim").
    SIZES: tuple[str, ...] = ("num_params",)

    def __init__(self, flat: FlatParams, defaults: dict) -> None:
        super().__init__([flat.data], {**defaults, "num_params": flat.numel})
        self.flat = flat
        # Where each parameter and its gradient must point (views of the flat buffers): one
        # pointer comparison per tensor per step, the cheap form of `flat.check()`.
        size = flat.data.element_size()
        data, grad = flat.data.data_ptr(), flat.grad.data_ptr()
        self._views = [
            (p, data + s.offset * size, grad + s.offset * size)
            for s, p in zip(flat.specs, flat.params, strict=True)
        ]

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the model's flat gradient in place (its views must survive, so never None)."""
        self.flat.zero_grad()

    def check_views(self) -> None:
        """Raise (RuntimeError, naming the parameter) unless the model's parameters and
        gradients are still views of the flat buffers: after a `model.zero_grad()` that set the
        gradients to None, or a `model.to(...)`/`model.double()` after `FlatParams`, a step would
        otherwise move nothing, or not the model. Pointer comparisons; `flat.check()` (which
        compares storages) explains a mismatch."""
        for p, data, grad in self._views:
            g = p.grad
            if p.data_ptr() != data or g is None or g.data_ptr() != grad:
                self.flat.check()
                return

    def _evaluate(self, closure) -> Tensor | None:
        """The closure's loss (with its gradient in `flat.grad`), or None without a closure;
        then `check_views()`."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.check_views()
        return loss

    # -- saving and loading ------------------------------------------------------------------
    def _state_dtypes(self) -> dict[str, torch.dtype]:
        """The dtype of each floating state tensor that is not kept in the model's dtype (torch
        casts every floating state tensor to its parameter's dtype on load)."""
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state from `state_dict()` after checking that it was made for the same sizes
        (`SIZES`); the saved hyperparameters are adopted (those a state saved before they
        existed lacks take this optimiser's values). Floating state tensors come back in the
        optimiser's dtypes (`_state_dtypes`), on the model's device."""
        groups = state_dict.get("param_groups")
        if not isinstance(groups, list) or len(groups) != 1:
            raise LowdimError(
                f"the optimiser state has {len(groups) if isinstance(groups, list) else 'no'} "
                f"parameter groups; a {type(self).__name__} has one"
            )
        current = self.param_groups[0]
        for key in self.SIZES:
            if key in groups[0] and groups[0][key] != current[key]:
                raise LowdimError(
                    f"the optimiser state was made for {key} = {groups[0][key]}, this "
                    f"{type(self).__name__} has {key} = {current[key]}: another model or basis"
                )
        defaults = {k: v for k, v in current.items() if k != "params"}
        saved = next(iter(state_dict.get("state", {}).values()), {})
        super().load_state_dict({**state_dict, "param_groups": [{**defaults, **groups[0]}]})
        state = self.state[self.flat.data]
        for key, dtype in self._state_dtypes().items():
            if torch.is_tensor(saved.get(key)):  # from the saved tensor: no double rounding
                state[key] = saved[key].to(self.flat.data.device, dtype, copy=True)


class BasisOptimizer(FlatOptimizer):
    """A `FlatOptimizer` in the d coordinates of a fixed basis P (theta = theta_0 + P c): its
    group also holds `dim`. Coordinate-space state follows the model: its dtype and device
    (P-BFGS keeps its d x d inverse Hessian in float64 by design)."""

    SIZES = ("num_params", "dim")

    def __init__(self, flat: FlatParams, basis: Basis, defaults: dict) -> None:
        check_basis(flat, basis)
        super().__init__(flat, {**defaults, "dim": basis.dim})
        self.basis = basis

    @property
    def combines_gradients(self) -> bool:
        """True where the basis combines the processes' gradients itself (a sharded basis
        reduce-scatters them): `fit` then leaves each process's gradient unreduced."""
        return self.basis.combines_gradients


def check_basis(flat: FlatParams, basis: Basis) -> None:
    """LowdimError unless the basis acts on the model's D parameters."""
    if basis.num_params != flat.numel:
        raise LowdimError(
            f"the basis acts on {basis.num_params} parameters but the model has {flat.numel}; "
            "was it made for another architecture?"
        )

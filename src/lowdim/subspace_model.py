"""Reparametrisation: a module whose only trainable parameter is the d-vector c.

    theta = anchor + P c

`SubspaceModel(module, basis)` calls the wrapped module through `torch.func.functional_call`
with theta split back into its named parameters. Any torch optimiser, scheduler or trainer then
trains c directly, and under DistributedDataParallel only d numbers are all-reduced. The wrapped
module's own parameters are frozen (they hold the anchor's values and are not trained);
its buffers (BatchNorm running statistics) stay ordinary buffers, updated in place.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .bases.base import Basis, expand_differentiable
from .errors import LowdimError
from .params import ParamSpec


class SubspaceModel(nn.Module):
    """Train `module` through d coordinates: theta = anchor + P c, c starting at 0.

    Args:
        module: any `nn.Module`; its parameters with `requires_grad` (in `named_parameters()`
            order) form the flat vector theta, of length D.
        basis: P, with `basis.num_params == D`, on the module's device and dtype.
        anchor: theta at c = 0 (default: the module's current parameters, theta_0).

    Attributes:
        coords: the trainable parameter c, shape (d,).
        anchor: a buffer, shape (D,).
        specs: where each named parameter sits in theta.
    """

    def __init__(self, module: nn.Module, basis: Basis, anchor: Tensor | None = None) -> None:
        super().__init__()
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise LowdimError("the module has no trainable parameters to reparametrise")
        specs, offset = [], 0
        for name, p in named:
            specs.append(ParamSpec(name, tuple(p.shape), offset, p.numel()))
            offset += p.numel()
        if basis.num_params != offset:
            raise LowdimError(
                f"the basis acts on {basis.num_params} parameters but the model has {offset}; "
                "was it made for another architecture?"
            )
        self.specs = specs
        self.module = module
        flat = torch.cat([p.detach().reshape(-1) for _, p in named])
        self.register_buffer("anchor", flat.clone() if anchor is None else anchor.detach().clone())
        for _, p in named:
            p.requires_grad_(False)
        self.basis = basis
        # DistributedDataParallel broadcasts buffers before every forward; the anchor is D
        # numbers that never change, so it is left out and a step exchanges only c's gradient.
        self._ddp_params_and_buffers_to_ignore = ["anchor"]
        self.coords = nn.Parameter(torch.zeros(basis.dim, dtype=flat.dtype, device=flat.device))
        self._theta: Tensor | None = None

    @property
    def dim(self) -> int:
        return self.basis.dim

    @property
    def num_params(self) -> int:
        return self.anchor.numel()

    def theta(self) -> Tensor:
        """anchor + P c (differentiable with respect to c)."""
        return self.anchor + expand_differentiable(self.basis, self.coords)

    def forward(self, *args, **kwargs):
        theta = self.theta()
        self._theta = theta  # kept for `l2_penalty`, so the penalty costs no second product
        params = {s.name: theta[s.offset : s.offset + s.numel].view(s.shape) for s in self.specs}
        return functional_call(self.module, params, args, kwargs, strict=False)

    def l2_penalty(self) -> Tensor:
        """||theta||^2 at the theta of the last forward pass (L2 on the full weights)."""
        if self._theta is None:
            raise RuntimeError("l2_penalty needs a forward pass first")
        return self._theta.square().sum()

    def _apply(self, fn, recurse=True):
        # the basis is no module: move it with the anchor (device and dtype)
        super()._apply(fn, recurse)
        if self.basis is not None:
            self.basis = self.basis.to(self.anchor.device, self.anchor.dtype)
        return self

    @torch.no_grad()
    def export(self) -> nn.Module:
        """A plain copy of the wrapped module with theta written into its parameters (all
        trainable again): the trained network, with no trace of the subspace."""
        plain = copy.deepcopy(self.module)
        theta = self.theta()
        named = dict(plain.named_parameters())
        for s in self.specs:
            named[s.name].copy_(theta[s.offset : s.offset + s.numel].view(s.shape))
            named[s.name].requires_grad_(True)
        return plain

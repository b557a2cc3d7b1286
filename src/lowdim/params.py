"""A module's trainable parameters as views into one contiguous flat vector.

Every subspace method reads the full gradient g (length D) and writes a step P s back. If each
parameter tensor lived in its own storage, that would mean gathering D numbers from dozens of
tensors and scattering them back on every step. `FlatParams` instead re-homes each trainable
parameter (and its gradient) as a view into one flat buffer, so `flat.grad` *is* g and
`flat.data.add_(step)` updates the model in place: a step costs two matrix-vector products and one
add, with no per-tensor copying.

Create `FlatParams` after moving the module to its device and dtype: `module.to(...)` replaces
parameter storage and would detach the parameters from the flat buffer (`check()` detects that).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import LowdimError


def trainable_parameters(
    module: nn.Module, names: Iterable[str] | None = None, *, exclude: Iterable[str] = ()
) -> list[tuple[str, nn.Parameter]]:
    """The parameters that form theta: those of `module` with `requires_grad`, in
    `named_parameters()` order (a parameter shared by two layers, as in a language model whose
    output layer is tied to its embedding, once), optionally only those in `names`, and none
    whose name matches a glob pattern of `exclude` (default none: those train directly, see
    `SubspaceModel(direct=...)`)."""
    wanted = set(names) if names is not None else None
    exclude = tuple(exclude)
    params = [
        (n, p)
        for n, p in module.named_parameters()
        if p.requires_grad and (wanted is None or n in wanted) and not matches(n, exclude)
    ]
    if wanted is not None:
        missing = wanted - {n for n, _ in params}
        if missing:
            raise LowdimError(
                f"names: no trainable parameters named {sorted(missing)} in the module"
            )
    if not params:
        raise LowdimError(
            f"excluding {list(exclude)} leaves no parameter in theta"
            if exclude
            else "the module has no trainable parameters"
        )
    return params


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether a parameter name matches any of the glob patterns ("classifier.*", "*.bias")."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def freeze(module: nn.Module, *patterns: str) -> int:
    """Set `requires_grad` False on the parameters whose names match a glob pattern (such as
    "*embeddings*"), keeping them out of theta and untrained; return how many tensors matched,
    or raise LowdimError if none did."""
    hits = [p for n, p in module.named_parameters() if matches(n, patterns)]
    if not hits:
        raise LowdimError(f"patterns: no parameter name matches {list(patterns)}")
    for p in hits:
        p.requires_grad_(False)
    return len(hits)


def param_specs(params: list[tuple[str, nn.Parameter]]) -> list[ParamSpec]:
    """Where each parameter sits in theta: consecutive, in order."""
    specs, offset = [], 0
    for name, p in params:
        specs.append(ParamSpec(name, tuple(p.shape), offset, p.numel()))
        offset += p.numel()
    return specs


def layout_of(specs: list[ParamSpec]) -> list[dict]:
    """Names, shapes and offsets as plain JSON-ready data (for manifests, files and checks)."""
    return [{"name": s.name, "shape": list(s.shape), "offset": s.offset} for s in specs]


@dataclass(frozen=True)
class ParamSpec:
    """Where one parameter lives in the flat vector: `flat[offset : offset + numel]`."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int


class FlatParams:
    """The trainable parameters of `module` as one flat vector `data` and gradient `grad`.

    Args:
        module: the model. Its parameters with `requires_grad=True` (in `named_parameters()`
            order, shared parameters once) become views into `data`; frozen ones are left alone.
        names: optional subset of parameter names to include (default: all trainable ones).

    Attributes:
        data: (D,) the parameter values; writing into it changes the model.
        grad: (D,) the gradients; `loss.backward()` accumulates into it.
        specs: one `ParamSpec` per included parameter, in order.
    """

    def __init__(self, module: nn.Module, names: Iterable[str] | None = None) -> None:
        params = trainable_parameters(module, names)
        first = params[0][1]
        total = sum(p.numel() for _, p in params)
        self.data = torch.empty(total, dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(self.data)
        self.params = [p for _, p in params]
        specs, offset = [], 0
        for name, p in params:
            if p.dtype != first.dtype or p.device != first.device:
                raise ValueError(
                    f"parameter {name} is {p.dtype} on {p.device}, but {params[0][0]} is "
                    f"{first.dtype} on {first.device}; move the module to one dtype and device"
                )
            n = p.numel()
            self.data[offset : offset + n].copy_(p.detach().reshape(-1))
            # Re-home the parameter and its gradient as views: autograd then accumulates into
            # `self.grad` in place, as long as the gradient is zeroed rather than set to None.
            p.data = self.data[offset : offset + n].view_as(p)
            p.grad = self.grad[offset : offset + n].view_as(p)
            specs.append(ParamSpec(name, tuple(p.shape), offset, n))
            offset += n
        self.specs: list[ParamSpec] = specs

    @property
    def numel(self) -> int:
        """D, the length of the flat vector."""
        return self.data.numel()

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def zero_grad(self) -> None:
        """Zero the gradient in place (never set it to None: that would break the views)."""
        self.grad.zero_()

    def get(self) -> Tensor:
        """A copy of the flat parameter vector."""
        return self.data.detach().clone()

    def set(self, vector: Tensor) -> None:
        """Overwrite all included parameters with `vector` (length D)."""
        if vector.shape != self.data.shape:
            raise ValueError(
                f"expected a vector of shape {tuple(self.data.shape)}, got {tuple(vector.shape)}"
            )
        with torch.no_grad():
            self.data.copy_(vector)

    def check(self) -> None:
        """Raise if a parameter or gradient no longer shares storage with the flat buffers.

        That happens after `module.to(...)`, after an optimiser's `zero_grad(set_to_none=True)`,
        or when a gradient was replaced instead of accumulated.
        """
        base, gbase = self.data.untyped_storage().data_ptr(), self.grad.untyped_storage().data_ptr()
        for spec, p in zip(self.specs, self.params, strict=True):
            if p.untyped_storage().data_ptr() != base:
                raise RuntimeError(f"parameter {spec.name} was detached from the flat buffer")
            if p.grad is None or p.grad.untyped_storage().data_ptr() != gbase:
                raise RuntimeError(
                    f"the gradient of {spec.name} was detached from the flat gradient buffer; "
                    "zero gradients with set_to_none=False"
                )

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """Split a flat vector into named tensors shaped like the parameters (views, no copy)."""
        return {s.name: vector[s.offset : s.offset + s.numel].view(s.shape) for s in self.specs}

    def layout(self) -> list[dict]:
        """The names, shapes and offsets as plain JSON-ready data (for manifests and checks)."""
        return layout_of(self.specs)

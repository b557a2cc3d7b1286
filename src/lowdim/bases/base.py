"""The one basis abstraction: P, a D x d matrix, and the two products every method needs.

    theta = anchor + P c        expand(c)  = P c     (d coordinates -> a D-vector)
                                project(g) = P^T g   (a D-vector -> d coordinates)

Each kind of basis (dense, trajectory PCA, and later random, sparse, Fastfood, checkpoint span,
per-layer blocks, redrawn) is one subclass that implements these products its own way. A basis
saves as safetensors: its tensors under their names, and its kind and numbers in the metadata,
so `load_basis` needs no pickle and can refuse a file meant for another model.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from ..errors import LowdimError
from ..io import first_nonfinite, read_tensors, save_tensors

_KINDS: dict[str, type[Basis]] = {}


class Basis(ABC):
    """A linear map between d coordinates and the D-dimensional parameter space.

    Subclasses set `kind` (the name stored in saved files), implement `expand`, `project`,
    `tensors`, `numbers` and `from_state`, and may override `expand_add_` with a fused product.
    """

    kind: ClassVar[str] = ""
    # True where `project` itself combines the processes' gradients (a sharded basis): the
    # training loop then hands it each process's own gradient instead of all-reducing it.
    combines_gradients: bool = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _KINDS[cls.kind] = cls

    @property
    @abstractmethod
    def num_params(self) -> int:
        """D, the length of the parameter vectors the basis acts on."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """d, the number of coordinates."""

    @abstractmethod
    def expand(self, c: Tensor) -> Tensor:
        """P c: a (D,) vector from (d,) coordinates."""

    @abstractmethod
    def project(self, g: Tensor) -> Tensor:
        """P^T g: (d,) coordinates from a (D,) vector."""

    def expand_add_(self, target: Tensor, c: Tensor, alpha: float = 1.0) -> Tensor:
        """target += alpha * P c, in place (subclasses fuse this where they can)."""
        return target.add_(self.expand(c), alpha=alpha)

    @abstractmethod
    def tensors(self) -> dict[str, Tensor]:
        """The basis's tensors by name (what `save` writes)."""

    def numbers(self) -> dict[str, int | float | str | list]:
        """Its plain settings (what `save` writes as metadata); JSON-ready."""
        return {}

    def bytes_held(self) -> int:
        """Bytes of the tensors it keeps in memory (by default, those it saves)."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    @classmethod
    @abstractmethod
    def from_state(cls, tensors: dict[str, Tensor], numbers: dict) -> Basis:
        """Rebuild a basis from `tensors()` and `numbers()`."""

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Basis:
        """A copy with its floating tensors moved to `device` and cast to `dtype`."""
        moved = {
            k: v.to(
                device=device, dtype=dtype if dtype is not None and v.is_floating_point() else None
            )
            for k, v in self.tensors().items()
        }
        return type(self).from_state(moved, self.numbers())

    def state_dict(self) -> dict:
        """Tensors and numbers only, so `torch.load(weights_only=True)` reads it back."""
        return {"kind": self.kind, "numbers": self.numbers(), "tensors": self.tensors()}

    def save(self, path: str | os.PathLike, *, layout: list[dict] | None = None) -> None:
        """Write the basis to a safetensors file, atomically. `layout` (the parameter names and
        shapes of the model it belongs to) lets `load_basis` refuse it for another model."""
        if not self.kind:
            raise no_saved_form(f"a {type(self).__name__}")
        meta = {"kind": self.kind, "numbers": json.dumps(self.numbers())}
        if layout is not None:
            meta["layout"] = json.dumps(layout)
        save_tensors(path, self.tensors(), metadata=meta)


class _Expand(torch.autograd.Function):
    """P c with the gradient P^T g: any basis becomes differentiable through its two products,
    with no autograd graph over its internals."""

    @staticmethod
    def forward(ctx, c: Tensor, basis: Basis) -> Tensor:
        ctx.basis = basis
        return basis.expand(c)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return ctx.basis.project(grad), None


def expand_differentiable(basis: Basis, c: Tensor) -> Tensor:
    """P c, differentiable with respect to c (its gradient is P^T of the incoming gradient)."""
    return _Expand.apply(c, basis)


def no_saved_form(what: str) -> LowdimError:
    """The error for a basis of no kind (`kind` empty), which nothing can rebuild from a file."""
    return LowdimError(
        f"{what} has no basis kind, so no file can hold it: a sharded basis holds only one "
        "process's rows of P (save the unsharded basis instead, or build it again in each "
        "process with shard_pca_basis or shard_span_basis); a Basis subclass must set `kind`"
    )


def basis_from_state(state: dict) -> Basis:
    """The inverse of `Basis.state_dict()`."""
    kind = state["kind"]
    if not kind:
        raise no_saved_form("the basis state")
    if kind not in _KINDS:
        raise LowdimError(f"unknown basis kind {kind!r}; known kinds: {', '.join(sorted(_KINDS))}")
    return _KINDS[kind].from_state(state["tensors"], state["numbers"])


def load_basis(
    path: str | os.PathLike,
    *,
    layout: list[dict] | None = None,
    device: str | torch.device = "cpu",
) -> Basis:
    """Read a basis written by `Basis.save`; with `layout`, check it was made for that model."""
    tensors, meta = read_tensors(path, device)
    if "kind" not in meta:
        raise LowdimError(f"{path} is not a lowdim basis file (no kind in its metadata)")
    try:
        stored_layout = json.loads(meta["layout"]) if "layout" in meta else None
        numbers = json.loads(meta.get("numbers", "{}"))
    except ValueError as e:
        raise LowdimError(f"the basis file {path} has damaged metadata ({e})") from None
    if layout is not None and stored_layout is not None and stored_layout != layout:
        raise LowdimError(f"the basis in {path} was made for another architecture")
    if not isinstance(numbers, dict):
        raise LowdimError(f"the basis file {path} has damaged metadata (numbers: {numbers!r:.40})")
    if (name := first_nonfinite(tensors)) is not None:
        raise LowdimError(f"the basis file {path}: tensor {name!r} holds NaN or inf values")
    try:
        return basis_from_state({"kind": meta["kind"], "numbers": numbers, "tensors": tensors})
    except LowdimError as e:
        raise LowdimError(f"the basis file {path}: {e}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise LowdimError(
            f"the basis file {path} does not describe a {meta['kind']!r} basis "
            f"({type(e).__name__}: {e})"
        ) from None

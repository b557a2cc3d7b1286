"""A block-diagonal basis: one basis per slice of the parameters, each with its own coordinates.

With blocks (o_i, n_i, P_i), P_i of size n_i x d_i, and the slices [o_i, o_i + n_i) tiling
[0, D), P is block diagonal: the coordinates are c = (c_1, ..., c_k) in the order the blocks are
given, d = sum d_i, and

    (P c)[o_i : o_i + n_i] = P_i c_i,        P^T g = (P_1^T g[o_1 : o_1 + n_1], ..., P_k^T ...).

So each layer (or any other compartment) gets its own subspace, and the children may be of any
kind, random or not.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import LowdimError
from .base import Basis, basis_from_state
from .compartments import Compartment, tiling_problem


def _cat(parts: list[Tensor]) -> Tensor:
    """The parts end to end, in the widest of their dtypes (children may differ)."""
    dtype = parts[0].dtype
    for p in parts[1:]:
        dtype = torch.promote_types(dtype, p.dtype)
    return torch.cat([p.to(dtype) for p in parts])


class BlockBasis(Basis):
    """P = diag(P_1, ..., P_k) over the parameter slices of `blocks` (see the module doc).

    Args:
        blocks: (offset, length, basis) for each block, in the order of their coordinates;
            each basis has num_params == length, and the slices [offset, offset + length)
            must tile 0..D without gaps or overlap (in any order).

    Saved with its children nested: tensors named `block{i}.<name>` and, in numbers(),
    `blocks`, a list of {offset, length, kind, numbers}, so `load_basis` rebuilds every child.
    """

    kind = "blocks"

    def __init__(self, blocks: list[tuple[int, int, Basis]]) -> None:
        if not blocks:
            raise LowdimError("a block basis needs at least one block, got none")
        self.blocks = [(int(o), int(n), b) for o, n, b in blocks]
        for i, (_, length, basis) in enumerate(self.blocks):
            if basis.num_params != length:
                raise LowdimError(
                    f"block {i} has length {length} but its basis acts on "
                    f"{basis.num_params} parameters"
                )
        end, problem = tiling_problem([(o, n) for o, n, _ in self.blocks], "block")
        if problem is not None:
            raise LowdimError(f"blocks must tile the parameters without gaps or overlap: {problem}")
        self._num_params = end
        self._starts = [0]
        for _, _, basis in self.blocks:
            self._starts.append(self._starts[-1] + basis.dim)
        # expand concatenates the children's results in parameter order
        self._by_offset = sorted(range(len(self.blocks)), key=lambda i: self.blocks[i][0])

    @classmethod
    def from_compartments(
        cls, compartments: list[Compartment], child: Callable[[int, Compartment], Basis]
    ) -> BlockBasis:
        """One block per compartment (with dims, see `compartments_of`), its basis
        `child(i, compartment)` for the i-th: how every kind is composed into compartments."""
        return cls([(c.offset, c.length, child(i, c)) for i, c in enumerate(compartments)])

    @property
    def num_params(self) -> int:
        return self._num_params

    @property
    def dim(self) -> int:
        return self._starts[-1]

    def _coords(self, i: int, c: Tensor) -> Tensor:
        return c[self._starts[i] : self._starts[i + 1]]

    def _check(self, vector: Tensor, size: int, what: str) -> None:
        if vector.shape != (size,):
            raise LowdimError(f"{what} has shape {tuple(vector.shape)}, expected ({size},)")

    def expand(self, c: Tensor) -> Tensor:
        self._check(c, self.dim, "the coordinate vector")
        return _cat([self.blocks[i][2].expand(self._coords(i, c)) for i in self._by_offset])

    def project(self, g: Tensor) -> Tensor:
        self._check(g, self.num_params, "the parameter-space vector")
        return _cat([basis.project(g[o : o + n]) for o, n, basis in self.blocks])

    def expand_add_(self, target: Tensor, c: Tensor, alpha: float = 1.0) -> Tensor:
        self._check(c, self.dim, "the coordinate vector")
        # each child adds into its slice of target (a view), fused where the child can
        for i, (offset, length, basis) in enumerate(self.blocks):
            basis.expand_add_(target[offset : offset + length], self._coords(i, c), alpha=alpha)
        return target

    def tensors(self) -> dict[str, Tensor]:
        return {
            f"block{i}.{name}": t
            for i, (_, _, basis) in enumerate(self.blocks)
            for name, t in basis.tensors().items()
        }

    def numbers(self) -> dict:
        return {
            "blocks": [
                {"offset": o, "length": n, "kind": b.kind, "numbers": b.numbers()}
                for o, n, b in self.blocks
            ]
        }

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], numbers: dict) -> BlockBasis:
        blocks = []
        for i, entry in enumerate(numbers["blocks"]):
            prefix = f"block{i}."
            own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            state = {"kind": entry["kind"], "numbers": entry["numbers"], "tensors": own}
            blocks.append((entry["offset"], entry["length"], basis_from_state(state)))
        return cls(blocks)

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> BlockBasis:
        """A copy with every child moved by its own `to` (children saved as a seed alone are
        moved, not regenerated)."""
        return BlockBasis([(o, n, b.to(device=device, dtype=dtype)) for o, n, b in self.blocks])

    def bytes_held(self) -> int:
        """Bytes of the tensors its children keep."""
        return sum(b.bytes_held() for _, _, b in self.blocks)

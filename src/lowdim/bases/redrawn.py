"""Redrawn random bases (random bases descent's): a fresh random P at every step, generated in
chunks from counter-based keys and never stored whole.

For compartment k (n_k parameters, d_k directions) at `step` for `worker`, the rows of P_k^T
come in chunks of `chunk_rows`: chunk j is s * R_j, R_j (rows x n_k) drawn from the key
(seed, step, worker, k, j) and s its rows' scale (see directions.py: unit-variance entries,
s = 1 / sqrt(n_k) by default, so E[P_k P_k^T] = (d_k / n_k) I). Then

    P^T g = (s * (R_0 g), s * (R_1 g), ...)        target += alpha * sum_j R_j^T (s * c_j)

with c_j the coordinates of chunk j. Each product regenerates the chunks instead of storing
them; the result does not depend on how many threads generate. Chunks are drawn in float32
whatever the basis's dtype, then cast to it: a float64 basis has exactly the float32
directions, and steps along them in float64.

`redrawn_basis` composes compartments block-diagonally (`BlockBasis.from_compartments`) as
every other kind is composed; its children share one `DirectionChunks`, which generates on
the CPU up to `threads` chunks ahead of the one in use, across compartment boundaries.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import BadArgument, is_int
from .base import Basis
from .blocks import BlockBasis
from .compartments import Compartment
from .directions import CHUNKED, DirectionChunks, KeyedBasis, check_choice, redrawn_settings
from .gaussian import check_dims, dtype_name
from .redrawn_hadamard import RedrawnHadamardBasis


class RedrawnBasis(KeyedBasis):
    """P (D x d) of one compartment at one step, its chunks regenerated for every product.

    Args:
        num_params: D (n_k), the compartment's length.
        dim: d (d_k), its number of directions, 1 <= d <= D.
        seed, step, worker, compartment: the key (defaults 0, 0, 0, 0).
        distribution: "gaussian" (default), "uniform" or "rademacher" ("hadamard" directions
            are a `RedrawnHadamardBasis`; `redrawn_basis` picks the kind).
        normalise: "sqrt" (default) or "unit" (see the module doc).
        chunk_rows: directions per chunk (default 64); part of the key, so saved.
        device: where chunks are drawn and products run (default "cpu").
        dtype: the dtype chunks are cast to (default torch.float32).
        threads: generator threads on the CPU (default torch.get_num_threads()).
        keep: hold the chunks once drawn (default False: d x D numbers of memory for half
            the generation when both products are taken).

    Saved as its numbers alone: no tensors. `at_step(step)` is the same basis at another step.
    """

    kind = "redrawn"

    def __init__(
        self,
        num_params: int,
        dim: int,
        seed: int = 0,
        *,
        step: int = 0,
        worker: int = 0,
        compartment: int = 0,
        distribution: str = "gaussian",
        normalise: str = "sqrt",
        chunk_rows: int = 64,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        threads: int | None = None,
        keep: bool = False,
    ) -> None:
        check_dims(num_params, dim)
        settings = redrawn_settings(
            seed, step, worker, distribution, normalise, chunk_rows, device, dtype
        )
        check_choice("distribution", distribution, CHUNKED)
        if not is_int(compartment, 0):
            raise BadArgument("compartment", f"must be an integer >= 0, got {compartment!r}")
        chunks = DirectionChunks(settings, [(compartment, num_params, dim)], threads, keep)
        self._setup(chunks, 0)

    def _setup(self, chunks: DirectionChunks, position: int) -> None:
        self._chunks, self._position = chunks, position
        self.compartment, self._num_params, self._dim = chunks.parts[position]
        for name, value in chunks.settings.items():
            setattr(self, name, value)

    @property
    def num_params(self) -> int:
        return self._num_params

    @property
    def dim(self) -> int:
        return self._dim

    def chunks(self):
        """(first row, R_j, s) for each chunk j, in order."""
        for j in range(-(-self._dim // self.chunk_rows)):
            raw, scale = self._chunks.get(self._position, j)
            yield j * self.chunk_rows, raw, scale

    def project(self, g: Tensor) -> Tensor:
        if g.shape != (self._num_params,):
            raise BadArgument("g", f"has shape {tuple(g.shape)}, expected ({self._num_params},)")
        out = torch.empty(self._dim, dtype=self.dtype, device=g.device)
        g = g.to(self.dtype)  # outputs in the basis's dtype, as every kind gives them
        for start, raw, scale in self.chunks():
            out[start : start + len(raw)] = (raw @ g) * scale
        return out

    def expand_add_(self, target: Tensor, c: Tensor, alpha: float = 1.0) -> Tensor:
        if c.shape != (self._dim,):
            raise BadArgument("c", f"has shape {tuple(c.shape)}, expected ({self._dim},)")
        for start, raw, scale in self.chunks():
            step = (c[start : start + len(raw)] * scale).to(target.dtype)
            target.addmv_(raw.t().to(target.dtype), step, alpha=alpha)  # no copy when equal
        return target

    def expand(self, c: Tensor) -> Tensor:
        out = torch.zeros(self._num_params, dtype=self.dtype, device=self.device)
        return self.expand_add_(out, c)

    def _key(self) -> dict:
        names = ("seed", "step", "worker", "compartment", "distribution", "normalise")
        return {
            "num_params": self._num_params,
            "dim": self._dim,
            **{name: getattr(self, name) for name in names},
            "chunk_rows": self.chunk_rows,
            "dtype": dtype_name(self.dtype),
        }

    def _options(self) -> dict:
        return {"dtype": self.dtype, "device": self.device, "threads": self._chunks.threads}

    def bytes_held(self) -> int:
        """Bytes of the chunks it holds (none unless keep=True)."""
        first = self._chunks.first[self._position]
        count = -(-self._dim // self.chunk_rows)
        held = [self._chunks.kept[i] for i in range(first, first + count) if i in self._chunks.kept]
        return sum(raw.numel() * raw.element_size() for raw, _ in held)


def redrawn_basis(
    compartments: list[Compartment],
    seed: int = 0,
    *,
    step: int = 0,
    worker: int = 0,
    distribution: str = "gaussian",
    normalise: str = "sqrt",
    chunk_rows: int = 64,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    threads: int | None = None,
    keep: bool = False,
) -> BlockBasis:
    """P = diag(P_0, ..., P_{k-1}) at `step` for `worker`: compartment i (with its dim, see
    `compartments_of`) gets the `RedrawnBasis` keyed compartment=i (a `RedrawnHadamardBasis`
    for distribution "hadamard", which ignores chunk_rows, threads and keep). The chunked
    children share one chunk source, so generation runs ahead across compartments. Defaults
    as `RedrawnBasis`."""
    settings = redrawn_settings(
        seed, step, worker, distribution, normalise, chunk_rows, device, dtype
    )
    parts = [(i, c.length, c.dim) for i, c in enumerate(compartments)]
    if any(c.dim is None for c in compartments):
        raise BadArgument("compartments", "need their dims (see compartments_of's dim)")
    if distribution == "hadamard":  # structured: no chunks, nothing to generate ahead

        def child(i: int, c: Compartment) -> Basis:
            return RedrawnHadamardBasis(
                c.length, c.dim, seed, step=step, worker=worker, compartment=i,
                normalise=normalise, device=device, dtype=settings["dtype"],
            )  # fmt: skip

        return BlockBasis.from_compartments(compartments, child)
    chunks = DirectionChunks(settings, parts, threads, keep)

    def child(i: int, _: Compartment) -> Basis:
        basis = RedrawnBasis.__new__(RedrawnBasis)
        basis._setup(chunks, i)
        return basis

    return BlockBasis.from_compartments(compartments, child)

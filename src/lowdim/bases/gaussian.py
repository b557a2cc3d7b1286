"""Gaussian random bases (the intrinsic-dimension paper's), plain or orthonormalised.

P is D x d; its columns (the basis vectors) are stored as the rows of a d x D matrix, as in
DenseBasis. Each row is drawn N(0, 1) and scaled to unit norm. Rows are drawn in chunks of
`chunk_rows` rows, chunk i from its own stream generator("gaussian", seed, i), so any chunk
can be regenerated alone (`gaussian_chunk`), on another worker.

Every random stream in this package is drawn on the CPU and then moved to `device`: the
numbers a seed stands for are then the same on every device (CPU and CUDA generators differ),
and only the arithmetic done afterwards on the device (normalising, orthogonalising) can
round differently there.

`SeededBasis` is the part shared by every random basis of this package (it lives here, with
the first of them): the `store_tensors` choice between saving the seed alone or the tensors
too, `from_state` regenerating from the seed when no tensors were saved, `to`, `bytes_held`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import BadArgument, LowdimError
from ..seeding import generator
from .base import Basis
from .dense import DenseBasis

# Rows per chunk are chosen so that a chunk holds about this many entries (16 MB in float32):
# big enough that drawing is not dominated by per-call overhead, small enough to stay cheap.
CHUNK_ENTRIES = 1 << 22

# Column blocks of this many entries (d x block) while orthogonalising.
BLOCK_ENTRIES = 1 << 22


def check_dims(num_params: int, dim: int) -> None:
    """LowdimError unless 1 <= dim <= num_params (`BadArgument` "dim" if `dim` is not)."""
    if num_params < 1:
        raise LowdimError(f"a basis needs at least one parameter, got D = {num_params}")
    if not 1 <= dim <= num_params:
        raise BadArgument("dim", f"{dim} must be between 1 and D = {num_params}")


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32: how dtypes are written into `numbers()`."""
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str) -> torch.dtype:
    """The inverse of `dtype_name`, for floating dtypes only."""
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise LowdimError(f"dtype {name!r} is not a floating-point torch dtype (e.g. float32)")
    return dtype


def check_chunk_rows(chunk_rows: int | None, num_params: int) -> int:
    """Rows per generation chunk: `chunk_rows` if given (at least 1), else about CHUNK_ENTRIES
    entries' worth of rows of length num_params."""
    if chunk_rows is None:
        return max(1, CHUNK_ENTRIES // num_params)
    if int(chunk_rows) < 1:
        raise LowdimError(f"chunk_rows {chunk_rows} must be at least 1")
    return int(chunk_rows)


class SeededBasis(Basis):
    """A basis that a seed and a few numbers determine: saved as the seed alone by default.

    Subclasses call `_keep` with their numbers, and implement `_held` (every tensor they keep),
    `_assemble` (an instance from held tensors and numbers, drawing nothing) and `_generate`
    (an instance from numbers, drawing everything).
    """

    settings: dict
    store_tensors: bool = False
    generated_dtype: torch.dtype = torch.float32

    def _keep(self, numbers: dict, store_tensors: bool) -> None:
        """Record seed, sizes and options (`numbers` less its dtypes) and the dtype drawn in."""
        self.settings = {k: v for k, v in numbers.items() if k not in ("dtype", "held_dtype")}
        self.seed = int(numbers["seed"])
        self.generated_dtype = parse_dtype(numbers["dtype"])
        self.store_tensors = bool(store_tensors)

    def _held(self) -> dict[str, Tensor]:
        raise NotImplementedError

    @classmethod
    def _assemble(cls, held: dict[str, Tensor], numbers: dict, store_tensors: bool):
        """An instance from held tensors without drawing anything: subclasses provide
        `_setup(held, numbers, store_tensors)` (or override this)."""
        basis = cls.__new__(cls)
        basis._setup(held, numbers, store_tensors)
        return basis

    @classmethod
    def _generate(cls, numbers: dict):
        raise NotImplementedError

    def numbers(self) -> dict:
        """The settings, with `dtype` (the dtype it was generated in) and `held_dtype` (the
        dtype its floating tensors are in now, after any `to`)."""
        floats = [t.dtype for t in self._held().values() if t.is_floating_point()]
        held = floats[0] if floats else self.generated_dtype
        dtypes = {"dtype": dtype_name(self.generated_dtype), "held_dtype": dtype_name(held)}
        return self.settings | dtypes

    def tensors(self) -> dict[str, Tensor]:
        """Its tensors if built with store_tensors=True; otherwise none (the seed suffices)."""
        return dict(self._held()) if self.store_tensors else {}

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], numbers: dict):
        """From saved tensors when there are any; otherwise regenerated from the seed, on the
        CPU, in the dtype it was generated in, then cast to the dtype it was held in."""
        if tensors:
            return cls._assemble(tensors, numbers, store_tensors=True)
        basis = cls._generate(numbers)
        held = parse_dtype(numbers.get("held_dtype", numbers["dtype"]))
        return basis if held == basis.generated_dtype else basis.to(dtype=held)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        """A copy with its tensors moved (never regenerated) and its floats cast to `dtype`."""
        held = {
            k: v.to(
                device=device, dtype=dtype if dtype is not None and v.is_floating_point() else None
            )
            for k, v in self._held().items()
        }
        return type(self)._assemble(held, self.numbers(), store_tensors=self.store_tensors)

    def bytes_held(self) -> int:
        """Bytes of the tensors it keeps (in memory, whatever `tensors()` would save)."""
        return sum(t.numel() * t.element_size() for t in self._held().values())


def gaussian_chunk(
    num_params: int,
    dim: int,
    seed: int,
    index: int,
    chunk_rows: int,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Rows index * chunk_rows ... of a plain Gaussian basis, each N(0, 1) then scaled to unit
    norm: what GaussianBasis holds there, regenerated alone."""
    start = index * chunk_rows
    rows = min(chunk_rows, dim - start)
    if rows < 1:
        raise LowdimError(f"chunk {index} is past the last row {dim - 1}")
    g = generator("gaussian", seed, index)
    block = torch.randn(rows, num_params, generator=g, dtype=dtype).to(device)
    # the norm in float64: unit norm to the last bit the storage dtype allows
    norms = torch.linalg.vector_norm(block, dim=1, keepdim=True, dtype=torch.float64)
    return block.div_(norms.to(dtype))


def orthonormalise_rows_(rows: Tensor) -> Tensor:
    """Make the rows of a (d, D) matrix orthonormal in place, by CholeskyQR2: twice, form the
    Gram matrix G = R R^T (d x d), factor G = C C^T (Cholesky) and replace R by C^-1 R.

    The Gram matrix is accumulated in float64 over column blocks of d x (BLOCK_ENTRIES / d),
    each block product in the storage dtype; the Cholesky factor and its inverse are float64;
    C^-1 is applied block by block in the storage dtype. No D x D matrix and no float64 copy
    of R: extra memory is d x d plus one block. The first pass brings Gaussian rows close to
    orthonormal, the second removes what the first pass's rounding left, so that
    max |P^T P - I| is about 1.4e-7 in float32 at 4 d^2 D multiply-adds, 16 s for d = 1000,
    D = 200,000 on two CPU threads (float64 block products measured 1.2e-7 at twice the time:
    the float32 storage of R is the limit).
    """
    dim, num_params = rows.shape
    block = max(1, BLOCK_ENTRIES // dim)
    for _ in range(2):
        gram = torch.zeros(dim, dim, dtype=torch.float64, device=rows.device)
        for j in range(0, num_params, block):
            part = rows[:, j : j + block]
            gram += (part @ part.t()).double()
        try:
            chol = torch.linalg.cholesky(gram)
        except torch.linalg.LinAlgError:
            raise LowdimError(
                f"cannot orthonormalise {dim} random vectors in D = {num_params}: their Gram "
                "matrix is numerically singular (choose a smaller subspace dimension)"
            ) from None
        eye = torch.eye(dim, dtype=torch.float64, device=rows.device)
        inverse = torch.linalg.solve_triangular(chol, eye, upper=False).to(rows.dtype)
        for j in range(0, num_params, block):
            rows[:, j : j + block] = inverse @ rows[:, j : j + block]
    return rows


class GaussianBasis(SeededBasis, DenseBasis):
    """P with i.i.d. N(0, 1) columns, each scaled to unit norm (`orthogonal=False`), or with
    orthonormal columns, P^T P = I (`orthogonal=True`, by `orthonormalise_rows_`).

    Args:
        num_params: D, the length of each basis vector.
        dim: d, the number of basis vectors, 1 <= d <= D.
        seed: the seed (default 0); chunk i of rows is drawn from generator("gaussian",
            seed, i) on the CPU, then moved to `device`.
        orthogonal: orthonormalise the rows (default False).
        device: where the rows live and products run (default "cpu").
        dtype: the dtype rows are drawn and held in (default torch.float32).
        store_tensors: whether `tensors()` (what `save` writes) includes the rows (default
            False: the seed and numbers alone, regenerated on load).
        chunk_rows: rows per generation chunk (default None: about CHUNK_ENTRIES entries a
            chunk); saved in `numbers()`, since it decides which stream each row comes from.

    Products are DenseBasis's: one matrix-vector product each, O(d D). Orthonormalising mixes
    all rows, so only plain bases can be regenerated a chunk at a time (`gaussian_chunk`).
    """

    kind = "gaussian"

    def __init__(
        self,
        num_params: int,
        dim: int,
        seed: int = 0,
        *,
        orthogonal: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        store_tensors: bool = False,
        chunk_rows: int | None = None,
    ) -> None:
        check_dims(num_params, dim)
        dtype = parse_dtype(dtype_name(dtype))
        chunk_rows = check_chunk_rows(chunk_rows, num_params)
        rows = torch.empty(dim, num_params, dtype=dtype, device=device)
        for index, start in enumerate(range(0, dim, chunk_rows)):
            rows[start : start + chunk_rows] = gaussian_chunk(
                num_params, dim, int(seed), index, chunk_rows, device=device, dtype=dtype
            )
        if orthogonal:
            orthonormalise_rows_(rows)
        numbers = {"seed": int(seed), "num_params": num_params, "dim": dim}
        numbers |= {"orthogonal": bool(orthogonal), "chunk_rows": chunk_rows}
        self._setup(rows, numbers | {"dtype": dtype_name(dtype)}, store_tensors)

    def _setup(self, rows: Tensor, numbers: dict, store_tensors: bool) -> None:
        expected = (numbers["dim"], numbers["num_params"])
        if tuple(rows.shape) != expected:
            raise LowdimError(f"gaussian basis rows have shape {tuple(rows.shape)}, not {expected}")
        DenseBasis.__init__(self, rows)
        self._keep(numbers, store_tensors)
        self.orthogonal = bool(numbers["orthogonal"])
        self.chunk_rows = int(numbers["chunk_rows"])

    def _held(self) -> dict[str, Tensor]:
        return {"rows": self.rows}

    @classmethod
    def _assemble(cls, held: dict[str, Tensor], numbers: dict, store_tensors: bool):
        basis = cls.__new__(cls)
        basis._setup(held["rows"], numbers, store_tensors)
        return basis

    @classmethod
    def _generate(cls, numbers: dict):
        return cls(
            int(numbers["num_params"]),
            int(numbers["dim"]),
            int(numbers["seed"]),
            orthogonal=bool(numbers["orthogonal"]),
            dtype=parse_dtype(numbers["dtype"]),
            chunk_rows=int(numbers["chunk_rows"]),
        )

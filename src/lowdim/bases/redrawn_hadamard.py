"""Structured directions for random bases descent: d rows of a randomised Hadamard transform,
redrawn every step, for the cost of one transform per product whatever d is.

For a compartment of n parameters and N the smallest power of two >= n, the step's d
directions are the rows of

    P^T = s S H B E^T        (d x n),    s = 1 / sqrt(n)

where E^T (N x n) places the n parameters at n distinct positions of N (zeros elsewhere), B is
a diagonal of random signs, H the unnormalised N x N Walsh-Hadamard matrix (entries +-1,
H H = N I) and S picks d distinct rows of H. The two products are one transform each:

    P^T g = s (H (E^T B g))[S]          P c = s B E (H (S^T c))

O(N log N) time and O(N) memory, against d n Gaussian numbers drawn per product.

Norms. Every direction has entries +-s on the n real coordinates, so norm exactly 1:
normalising by sqrt(n) ("sqrt") and by the norm ("unit") are the same here. Rows of unit
norm over all N positions would keep only about n/N of that length on the real ones and
shrink every step by n/N against Gaussian directions; s = 1/sqrt(n) does not. Over the random
signs E[P P^T] = s^2 E B H S^T S H B E^T = (d/n) I exactly, for any choice of rows: the same
second moment as Gaussian directions normalised by sqrt(n).

Orthogonality. The rows of H are orthogonal over all N positions, so when n = N the
directions are exactly orthonormal (Gaussian ones meet at cosines of about 1/sqrt(n)). With
padding, directions from rows a and b meet in s^2 sum over the real positions p of
h_{a xor b}(p), a partial sum of one Walsh function (B cancels: b_p^2 = 1). Were the
parameters the first n positions, those sums reach (N - n)/n for the lowest-frequency
functions: rows differing in the top bit agree on the first N/2 positions, a cosine of 0.29 on
the FC net (n = 101,770, N = 131,072). So E places them at n random positions, drawn once per
(seed, compartment) and sorted (the scatter then walks memory in order); a Walsh function
other than h_0 sums to zero over all N, so over a random n-subset it sums to about
sqrt(n (N - n) / N), and cosines stay near sqrt((N - n) / (n N)), below Gaussian ones.

Keys. The embedding comes from generator("rbd-hadamard", seed, "embedding", compartment), the
step's signs (n, unpacked from 32-bit words) and rows from generator("rbd-hadamard", seed,
step, worker, compartment): any step's directions regenerate from the key alone. The rows are
an arithmetic progression S = {(a i + b) mod N : i < d}, a odd and b uniform: distinct since
an odd a is invertible modulo a power of two, drawn in O(d) with no host synchronisation (a
uniform choice of d of N takes a random permutation of N, dearer than the step's transforms).
Each row is chosen with probability d/N, so E[S^T S] = (d/N) I and E[P P^T] = (d/n) I holds
as above; rows a and b meet only through h_{a xor b}, which sums to about zero over the random
embedding whatever a and b are. As for the Gaussian kind, CPU and CUDA generators give
different streams.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from ..errors import BadArgument, is_int
from ..seeding import generator
from . import hadamard
from .directions import KeyedBasis, redrawn_settings
from .fastfood import next_power_of_two
from .gaussian import check_dims, dtype_name


@lru_cache(maxsize=256)
def _embedding(seed: int, compartment: int, n: int, size: int, device: torch.device):
    """The sorted positions of the n parameters among `size`, as (int64, int32) indices: a pure
    function of (seed, compartment), cached because a random permutation of N costs more than
    a step's transforms and the same one serves every step."""
    g = generator("rbd-hadamard", seed, "embedding", compartment, device=device)
    positions = torch.randperm(size, generator=g, device=device)[:n].sort().values
    return positions, positions.to(torch.int32)


@lru_cache(maxsize=8)
def _bit_shifts(device: torch.device) -> Tensor:
    return torch.arange(32, dtype=torch.int32, device=device)


def random_words(n: int, g: torch.Generator, device) -> Tensor:
    """ceil(n / 32) random int32 words: bit i % 32 of word i // 32 is the sign of entry i."""
    low, high = -(1 << 31), 1 << 31
    return torch.randint(low, high, (-(-n // 32),), generator=g, device=device, dtype=torch.int32)


def unpack_signs(words: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """The n signs the words hold, as +-1 of `dtype`: -1 where the bit is set."""
    bits = (words.unsqueeze(1) >> _bit_shifts(words.device)) & 1
    return bits.reshape(-1)[:n].to(dtype).mul_(-2).add_(1)


def random_rows(size: int, d: int, g: torch.Generator, device) -> Tensor:
    """d distinct rows of 0..size-1 (size a power of two, d <= size): (a i + b) mod size for
    i < d, with a odd and b drawn uniformly, as int64 on `device` (see the module doc)."""
    a, b = torch.randint(0, size, (2,), generator=g, device=device)
    return torch.arange(d, device=device).mul_(2 * (a // 2) + 1).add_(b).bitwise_and_(size - 1)


class RedrawnHadamardBasis(KeyedBasis):
    """P (n x d) of one compartment at one step: d rows of a randomised Hadamard transform
    (see the module doc), drawn from the key on first use and held (n signs and d rows).

    Args:
        num_params: n, the compartment's length. dim: d, 1 <= d <= n.
        seed, step, worker, compartment: the key (defaults 0, 0, 0, 0).
        normalise: "sqrt" (default) or "unit"; both give directions of norm exactly 1.
        device: where signs and rows are drawn and products run (default "cpu").
        dtype: the dtype of the products (default torch.float32).

    Saved as its numbers alone; `at_step(step)` is the same basis at another step (see
    `KeyedBasis`).
    """

    kind = "redrawn-hadamard"

    def __init__(
        self,
        num_params: int,
        dim: int,
        seed: int = 0,
        *,
        step: int = 0,
        worker: int = 0,
        compartment: int = 0,
        normalise: str = "sqrt",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        check_dims(num_params, dim)
        # the key's checks, shared with the chunked kinds (chunk_rows does not apply: 1)
        settings = redrawn_settings(seed, step, worker, "hadamard", normalise, 1, device, dtype)
        if not is_int(compartment, 0):
            raise BadArgument("compartment", f"must be an integer >= 0, got {compartment!r}")
        self.seed, self.step, self.worker = seed, step, worker
        self.compartment, self.normalise = compartment, normalise
        self.device, self.dtype = settings["device"], settings["dtype"]
        self._num_params, self._dim = num_params, dim
        self.size = next_power_of_two(num_params)
        self.scale = 1 / math.sqrt(num_params)
        self._drawn: tuple[Tensor, Tensor] | None = None
        self._unpacked: Tensor | None = None
        self._rows32: Tensor | None = None

    @property
    def num_params(self) -> int:
        return self._num_params

    @property
    def dim(self) -> int:
        return self._dim

    def drawn(self) -> tuple[Tensor, Tensor]:
        """(B's n signs as int32 words, see `random_words`; S's d rows, int64): drawn from the
        step's key on first use."""
        if self._drawn is None:
            g = generator(
                "rbd-hadamard", self.seed, self.step, self.worker, self.compartment,
                device=self.device,
            )  # fmt: skip
            words = random_words(self._num_params, g, self.device)
            self._drawn = words, random_rows(self.size, self._dim, g, self.device)
        return self._drawn

    def _signs(self) -> Tensor:
        """B's signs unpacked, for torch's operations (the compiled ones read the words)."""
        if self._unpacked is None:
            self._unpacked = unpack_signs(self.drawn()[0], self._num_params, self.dtype)
        return self._unpacked

    def _positions(self) -> tuple[Tensor, Tensor] | None:
        """E as (int64, int32) indices, or None when n = N (no padding: E is the identity)."""
        if self._num_params == self.size:
            return None
        return _embedding(self.seed, self.compartment, self._num_params, self.size, self.device)

    def _spread(self, x: Tensor) -> Tensor:
        """E^T B x: the n entries, signed, at their positions of a zero vector of length N."""
        positions = self._positions()
        if self._compiled():
            out = torch.zeros(self.size, dtype=self.dtype, device=self.device)
            _scatter(x.contiguous(), out, positions, self.drawn()[0], self._num_params, True)
            return out
        if positions is None:
            return x * self._signs()
        out = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        return out.index_copy_(0, positions[0], x * self._signs())

    def _collect(self, y: Tensor) -> Tensor:
        """B E y: the entries of y (length N) at the parameters' positions, signed."""
        positions = self._positions()
        if self._compiled():
            out = torch.empty(self._num_params, dtype=self.dtype, device=self.device)
            _scatter(y, out, positions, self.drawn()[0], self._num_params, False)
            return out
        if positions is not None:
            y = y.index_select(0, positions[0])
        return y[: self._num_params].mul_(self._signs())

    def _compiled(self) -> bool:
        """Whether the compiled scatter and gather run: built, float32 on the CPU, and N
        small enough for their int32 indices."""
        cpu_float32 = self.device.type == "cpu" and self.dtype == torch.float32
        return hadamard.native is not None and cpu_float32 and self.size < 1 << 31

    def _rows(self) -> tuple[Tensor, Tensor | None]:
        """S's rows as int64, and as int32 where the compiled kernels run (else None)."""
        rows = self.drawn()[1]
        if self._rows32 is None and self._compiled():
            self._rows32 = rows.to(torch.int32)
        return rows, self._rows32

    def project(self, g: Tensor) -> Tensor:
        if g.shape != (self._num_params,):
            raise BadArgument("g", f"has shape {tuple(g.shape)}, expected ({self._num_params},)")
        transformed = hadamard.fwht(self._spread(g.to(self.dtype)))
        rows, rows32 = self._rows()
        if rows32 is None:
            return transformed.index_select(0, rows).mul_(self.scale)
        out = torch.empty(self._dim, dtype=self.dtype)
        _scatter(transformed, out, (rows, rows32), None, self._dim, False)
        return out.mul_(self.scale)

    def expand_add_(self, target: Tensor, c: Tensor, alpha: float = 1.0) -> Tensor:
        if c.shape != (self._dim,):
            raise BadArgument("c", f"has shape {tuple(c.shape)}, expected ({self._dim},)")
        rows, rows32 = self._rows()
        scaled = c.to(self.dtype) * (alpha * self.scale)
        chosen = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        if rows32 is None:
            chosen.index_copy_(0, rows, scaled)
        else:
            _scatter(scaled, chosen, (rows, rows32), None, self._dim, True)
        return target.add_(self._collect(hadamard.fwht(chosen)).to(target.dtype))

    def expand(self, c: Tensor) -> Tensor:
        out = torch.zeros(self._num_params, dtype=self.dtype, device=self.device)
        return self.expand_add_(out, c)

    def _key(self) -> dict:
        names = ("seed", "step", "worker", "compartment", "normalise")
        return {
            "num_params": self._num_params,
            "dim": self._dim,
            **{name: getattr(self, name) for name in names},
            "dtype": dtype_name(self.dtype),
        }

    def bytes_held(self) -> int:
        """Bytes of the drawn signs and rows (0 before the first product)."""
        return sum(t.numel() * t.element_size() for t in self._drawn or ())


def _scatter(src: Tensor, dst: Tensor, positions, words, n: int, spread: bool) -> None:
    """The compiled signed scatter (spread: dst[E_i] = s_i src_i) or gather (dst_i = s_i
    src[E_i]), E the identity where positions is None and s_i = 1 where words is None."""
    index = 0 if positions is None else positions[1].data_ptr()
    bits = 0 if words is None else words.data_ptr()
    threads = min(torch.get_num_threads(), 64) if n >= hadamard.PARALLEL_FROM else 1
    hadamard.native.scatter_signed_float32(
        src.data_ptr(), dst.data_ptr(), index, bits, n, spread, threads
    )

"""The Fastfood transform (Le, Sarlos and Smola 2013) as a basis, as Li et al. (2018) use it.

With L the smallest power of two >= D, pad(.) zero-padding to length L and [.]_D the first D
entries,

    P c   = s [H G Pi H B pad(c)]_D
    P^T g = s [B H Pi^T G H pad(g)]_d

where H is the unnormalised Walsh-Hadamard transform (H H = L I, H symmetric), B a diagonal
of random signs, Pi a random permutation ((Pi x)_i = x[perm_i]), G a diagonal of N(0, 1)
draws, all of length L, and s a scalar. The second line is the first transposed (H, G and B
are symmetric, pad and [.] are each other's transposes). Each product is two transforms,
O(L log L) time and O(L) memory; no D x d matrix exists anywhere, even for d = D.

Column norms. Column j of H G Pi H B is b_j H G u with u = Pi H e_j a vector of signs, and
H diag(u) / sqrt(L) is orthogonal, so z = H diag(u) g / sqrt(L) has ||z|| = ||g|| and, over G,
i.i.d. N(0, 1) entries. The kept part of the column has squared norm L sum_{i<D} z_i^2, so with
s = 1 / sqrt(D ||G||^2) the squared column norm is (L/D) Beta(D/2, (L-D)/2): mean exactly 1,
relative spread about sqrt(2 (1/D - 1/L)), and exactly 1 when D = L. The column norms are
therefore 1 to within about sqrt((1/D - 1/L) / 2): 0.6% at D = 5000, under 0.1% from
D = 200,000, but 4% at D = 160 and 14% at D = 10, sizes that per-layer compartments have.
So where it is cheap, d L <= EXACT_NORM_ENTRIES (2^24, about 0.2 s of transforms once), the
columns are also measured and divided by their norms (`exact_norms`, default: when cheap),
which makes them 1 to rounding. Where it is not cheap, L > 2^12 (as d <= D <= L), so D > 4096
and s alone is within 0.8%. Both s and the per-column factors fold into one vector of d
factors applied to the coordinates, so the products are unchanged.

Storage: B as int8 signs, Pi as an int32 index (int64 from L = 2^31), G in the basis dtype,
and the d coordinate factors: 9 bytes per entry of L and 4 per coordinate, under 22 bytes per
parameter since L < 2 D and d <= D.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

from ..errors import LowdimError
from ..seeding import generator
from . import hadamard
from .gaussian import SeededBasis, check_dims, dtype_name, parse_dtype
from .hadamard import fwht, uses_native

# Measure and normalise each column exactly when d * L is at most this (see the module doc).
EXACT_NORM_ENTRIES = 1 << 24

# Columns are measured in batches of about this many entries (batch x L).
BATCH_ENTRIES = 1 << 22


def next_power_of_two(n: int) -> int:
    """The smallest power of two >= n (n >= 1)."""
    return 1 << (n - 1).bit_length()


class FastfoodBasis(SeededBasis):
    """P = [H G Pi H B pad(diag(f) .)]_D (see the module doc), with f the d coordinate factors:
    s, or s divided by each column's norm; expand and project also accept a batch, (..., d)
    and (..., D).

    Args:
        num_params: D. dim: d, 1 <= d <= D.
        seed: the seed (default 0); B, Pi and G come from generator("fastfood", seed, "signs"),
            ("fastfood", seed, "permutation") and ("fastfood", seed, "gaussian") on the CPU.
        device: where B, Pi, G live and products run (default "cpu").
        dtype: the dtype of G and of the products (default torch.float32).
        store_tensors: whether `tensors()` includes signs, permutation and gaussian (default
            False: the seed alone).
        exact_norms: divide each column by its measured norm (default None: when d L <=
            EXACT_NORM_ENTRIES; the choice is saved in `numbers()`).
    """

    kind = "fastfood"

    def __init__(
        self,
        num_params: int,
        dim: int,
        seed: int = 0,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        store_tensors: bool = False,
        exact_norms: bool | None = None,
    ) -> None:
        check_dims(num_params, dim)
        dtype = parse_dtype(dtype_name(dtype))
        length = next_power_of_two(num_params)
        g = generator("fastfood", seed, "signs")
        signs = torch.randint(0, 2, (length,), generator=g, dtype=torch.int8) * 2 - 1
        g = generator("fastfood", seed, "permutation")
        index = torch.int32 if length < 2**31 else torch.int64
        perm = torch.randperm(length, generator=g).to(index)
        g = generator("fastfood", seed, "gaussian")
        gauss = torch.randn(length, generator=g, dtype=dtype)
        held = {"signs": signs, "permutation": perm, "gaussian": gauss}
        if exact_norms is None:
            exact_norms = dim * length <= EXACT_NORM_ENTRIES
        numbers = {"seed": int(seed), "num_params": num_params, "dim": dim}
        numbers |= {"exact_norms": bool(exact_norms), "dtype": dtype_name(dtype)}
        self._setup({k: v.to(device) for k, v in held.items()}, numbers, bool(store_tensors))

    def _setup(self, held: dict[str, Tensor], numbers: dict, store_tensors: bool) -> None:
        self._keep(numbers, store_tensors)
        self._buffers: dict[int, tuple[Tensor, Tensor]] = {}  # per thread: see `_scratch`
        self._num_params, self._dim = int(numbers["num_params"]), int(numbers["dim"])
        self.length = next_power_of_two(self._num_params)
        self.signs, self.perm, self.gauss = held["signs"], held["permutation"], held["gaussian"]
        for name, t in held.items():
            if t.shape != (self.length,):
                raise LowdimError(
                    f"fastfood {name} has shape {tuple(t.shape)}, not ({self.length},) "
                    f"for D = {self._num_params}"
                )
        # the compiled permutation indexes memory with these entries: a stored one must be
        # in range (whether it is a permutation, the weights digest of a saved model checks)
        if len(self.perm) and not 0 <= int(self.perm.min()) <= int(self.perm.max()) < self.length:
            raise LowdimError(f"fastfood permutation has entries outside [0, {self.length})")
        # s = 1 / sqrt(D ||G||^2), summed in float64
        self.scale = (self._num_params * self.gauss.double().square().sum().item()) ** -0.5
        # the coordinates' factors: sign b_j and s, and 1 / (column norm) if measured
        self.factors = self.signs[: self._dim].to(self.gauss.dtype) * self.scale
        self.exact_norms = bool(numbers["exact_norms"])
        if self.exact_norms:
            self.factors /= self._column_norms()

    def _column_norms(self) -> Tensor:
        """||P e_j|| for every column j, measured a batch of columns at a time."""
        batch = max(1, BATCH_ENTRIES // self.length)
        norms = []
        for start in range(0, self._dim, batch):
            stop = min(start + batch, self._dim)
            eye = torch.zeros(stop - start, self._dim, dtype=self.gauss.dtype)
            eye[:, start:stop].fill_diagonal_(1.0)
            cols = self.expand(eye.to(self.gauss.device))
            norms.append(torch.linalg.vector_norm(cols, dim=-1, dtype=torch.float64))
        self._buffers.clear()  # sized for batches of columns, not for training
        return torch.cat(norms).to(self.gauss.dtype)

    @property
    def num_params(self) -> int:
        return self._num_params

    @property
    def dim(self) -> int:
        return self._dim

    def expand(self, c: Tensor) -> Tensor:
        c = c.to(self.gauss.dtype)
        a, b = self._scratch(c)
        a[..., self._dim :] = 0
        a[..., : self._dim] = c * self.factors
        a = permute_scale(fwht(a, b), self.perm, self.gauss, out=None if b is None else a)
        return fwht(a)[..., : self._num_params]  # a new tensor: the caller may keep it

    def project(self, g: Tensor) -> Tensor:
        g = g.to(self.gauss.dtype)
        a, b = self._scratch(g)
        a[..., self._num_params :] = 0
        a[..., : self._num_params] = g
        a = permute_scale(
            fwht(a, b), self.perm, self.gauss, transpose=True, out=None if b is None else a
        )
        return fwht(a, b)[..., : self._dim] * self.factors

    def _scratch(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Buffers for the products' intermediate steps: on the compiled path two L-long ones
        kept between calls (a fresh 2^25-float tensor costs its 32,768 page faults on first
        write, about 40 ms, more than the transform's own pass), one set per thread, since the
        kernels release the GIL; elsewhere one new tensor and None (torch's operations make
        their own outputs)."""
        shape = (*x.shape[:-1], self.length)
        if not uses_native(x):
            return x.new_empty(shape), None
        mine = self._buffers.get(threading.get_ident())
        if mine is None or mine[0].shape != shape:
            mine = self._buffers[threading.get_ident()] = (x.new_empty(shape), x.new_empty(shape))
        return mine

    def _held(self) -> dict[str, Tensor]:
        return {"signs": self.signs, "permutation": self.perm, "gaussian": self.gauss}

    def bytes_held(self) -> int:
        """Bytes of B, Pi, G and the d coordinate factors."""
        return super().bytes_held() + self.factors.numel() * self.factors.element_size()

    @classmethod
    def _generate(cls, numbers: dict):
        return cls(
            int(numbers["num_params"]),
            int(numbers["dim"]),
            int(numbers["seed"]),
            dtype=parse_dtype(numbers["dtype"]),
            exact_norms=bool(numbers["exact_norms"]),
        )


def permute_scale(
    x: Tensor, perm: Tensor, scale: Tensor, transpose: bool = False, out: Tensor | None = None
) -> Tensor:
    """G Pi x over the last dimension: y_i = g_i x_{perm_i}; with `transpose`, Pi^T G x: y_{perm_i}
    = g_i x_i, a scatter, so no inverse permutation is stored. Into `out` if given (contiguous,
    not x). float32 on the CPU with int32 indices runs the compiled kernel (one pass, threads
    from `PARALLEL_FROM` elements), all else torch's gather or scatter."""
    if not hadamard.uses_native(x) or perm.dtype != torch.int32:
        if transpose:  # index_copy_ (int64 indices only): half the time of y[..., perm] = z
            y = torch.empty_like(x).index_copy_(-1, perm.long(), x * scale)
        else:
            y = x.index_select(-1, perm).mul_(scale)
        return y if out is None else out.copy_(y)
    src, scale = x.contiguous(), scale.contiguous()
    out = torch.empty_like(src) if out is None else hadamard.check_out(out, src)
    n = src.shape[-1]
    if perm.shape != (n,) or scale.shape != (n,) or scale.dtype != src.dtype:
        raise LowdimError(f"perm and scale must be 1-D of length {n}, scale of x's dtype")
    threads = min(torch.get_num_threads(), 64) if n >= hadamard.PARALLEL_FROM else 1
    for row_in, row_out in zip(src.reshape(-1, n), out.view(-1, n), strict=True):
        hadamard.native.permute_scale_float32(
            row_in.data_ptr(), row_out.data_ptr(), perm.data_ptr(), scale.data_ptr(), n,
            transpose, threads,
        )  # fmt: skip
    return out

"""The fast Walsh-Hadamard transform, as a few matrix products with small Hadamard matrices.

The Sylvester-Hadamard matrix of size L = 2^k is the k-fold Kronecker power of
H_2 = [[1, 1], [1, -1]], unnormalised, so H_L H_L = L I and H_L is symmetric. Splitting
k = k_1 + ... + k_m gives H_L = H_{2^k_1} (x) ... (x) H_{2^k_m}. Read x as a row-major array
of shape (n_1, ..., n_m) with n_t = 2^k_t; then H_L x applies H_{n_t} along each axis t in
turn (any order, the factors commute).

With x viewed as (left, n_t, right), where left and right are the products of the
sizes before and after axis t (times the batch size in `left`), that axis is one matrix
product with the small n_t x n_t matrix: x @ H for the last axis, H @ x for the first and a
batched product for the middle ones, with no transposed copies. That is m products, each a
large BLAS call, against k Python-level butterfly passes that each read and write all of x.

The products cost L * sum(n_t) multiply-adds against L * k for butterflies, so the factors
must stay small, yet each factor is one more pass over memory. Factors of at most
2^MAX_FACTOR_BITS = 32 were the fastest on the CPU for L = 2^12..2^22 (2^18: 1.1 ms against
1.5 ms for 64 and 4.8 ms for butterflies, one thread).

On the CPU, float32 goes through a compiled transform instead (`lowdim._native`, built from
`_native.c` when lowdim is installed): the same Kronecker split into two factors, rows and
columns, each transformed by butterflies inside the cache, so the whole transform reads and
writes memory about twice and adds where the products multiply. Where it was not built (no C
compiler at install time), on other devices and dtypes, and where autograd records the call,
the matrix products run (`fwht_blocked`); both give the same numbers up to float rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import LowdimError

try:  # the compiled transform; absent where no C compiler was found at install time
    from .. import _native as native
except ImportError:  # pragma: no cover - depends on the machine that installed lowdim
    native = None

MAX_FACTOR_BITS = 5
PARALLEL_FROM = 1 << 21  # elements from which the compiled transform uses torch's threads

_CACHE: dict[tuple[int, torch.device, torch.dtype], Tensor] = {}


def hadamard_matrix(
    n: int, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Tensor:
    """The n x n Sylvester-Hadamard matrix (n a power of two, entries +-1), built once per
    (n, device, dtype) and cached: it is read on every transform."""
    if n < 1 or n & (n - 1):
        raise LowdimError(f"a Hadamard matrix needs a power-of-two size, got {n}")
    key = (n, torch.device(device), dtype)
    h = _CACHE.get(key)
    if h is None:
        # entry (i, j) is (-1)^popcount(i & j), the closed form of the Kronecker power
        i = torch.arange(n)
        bits = i[:, None] & i[None, :]
        parity = torch.zeros(n, n, dtype=torch.int64)
        while bool(bits.any()):
            parity ^= bits & 1
            bits = bits >> 1
        h = (1 - 2 * parity).to(device=device, dtype=dtype)
        _CACHE[key] = h
    return h


def factor_bits(k: int, max_bits: int = MAX_FACTOR_BITS) -> list[int]:
    """k split into the fewest parts of at most `max_bits`, as equal as possible (so that no
    factor is needlessly large: 2^18 is 64 x 64 x 64, not 64 x 64 x 64 x 1)."""
    parts = max(1, -(-k // max_bits))
    return [k // parts + (1 if t < k % parts else 0) for t in range(parts)]


def fwht(x: Tensor, out: Tensor | None = None) -> Tensor:
    """H_L x over the last dimension of x (length L = 2^k), unnormalised: fwht(fwht(x)) = L x.

    Accepts any batch shape (..., L) and any floating dtype; returns a new tensor of the same
    shape and dtype on the same device (x is not modified), or writes into `out` (contiguous,
    not x) and returns it. float32 on the CPU runs the compiled transform where it was built,
    on torch's thread count; all else `fwht_blocked`.
    """
    _check(x)
    if not uses_native(x):
        return fwht_blocked(x) if out is None else out.copy_(fwht_blocked(x))
    src = x.contiguous()
    out = torch.empty_like(src) if out is None else check_out(out, src)
    length = x.shape[-1]
    # Threads pay only on large transforms: torch's own workers spin for a while after each
    # parallel op and would contend with ours on short ones (2^18: 0.40 ms on two threads
    # against 0.27 ms on one, between the ops of a training step).
    threads = min(torch.get_num_threads(), 64) if x.numel() >= PARALLEL_FROM else 1
    native.fwht_float32(src.data_ptr(), out.data_ptr(), src.numel() // length, length, threads)
    return out


def uses_native(x: Tensor) -> bool:
    """Whether the compiled kernels take `x`: built, float32 on the CPU, and not recorded by
    autograd (which needs the products it can differentiate)."""
    if native is None or x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    return not (x.requires_grad and torch.is_grad_enabled())


def check_out(out: Tensor, x: Tensor) -> Tensor:
    """`out` if the compiled kernels may write x's result into it, else LowdimError: they write
    raw memory, so its shape, dtype, device and layout are checked first."""
    same = out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    if not same or not out.is_contiguous() or out.data_ptr() == x.data_ptr():
        raise LowdimError(
            f"out must be a contiguous tensor other than x, of x's shape {tuple(x.shape)}, "
            f"dtype and device; got {tuple(out.shape)}, {out.dtype}"
        )
    return out


def _check(x: Tensor) -> None:
    length = x.shape[-1]
    if length < 1 or length & (length - 1):
        raise LowdimError(f"fwht needs a last dimension that is a power of two, got {length}")
    if not x.is_floating_point():
        raise LowdimError(f"fwht needs a floating-point tensor, got {x.dtype}")


def fwht_blocked(x: Tensor) -> Tensor:
    """`fwht` as a few matrix products with small Hadamard matrices (any device and dtype,
    differentiable)."""
    _check(x)
    length = x.shape[-1]
    if length == 1:
        return x.clone()
    left, right = x.numel() // length, length
    y = x
    for bits in factor_bits(length.bit_length() - 1):
        n = 1 << bits
        right //= n
        h = hadamard_matrix(n, device=x.device, dtype=x.dtype)
        if right == 1:
            y = y.reshape(-1, n) @ h  # H is symmetric, so x H = (H x^T)^T row by row
        elif left == 1:
            y = h @ y.reshape(n, right)
        else:
            y = torch.matmul(h, y.reshape(left, n, right))
        left *= n
    return y.reshape(x.shape)

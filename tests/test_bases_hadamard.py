import pytest
import torch

from lowdim.bases import hadamard
from lowdim.bases.fastfood import permute_scale
from lowdim.bases.hadamard import factor_bits, fwht, fwht_blocked, hadamard_matrix
from lowdim.errors import LowdimError


def butterflies(x: torch.Tensor) -> torch.Tensor:
    """The definition, one level at a time: (a, b) -> (a + b, a - b) over halves of blocks."""
    length, half = x.shape[-1], 1
    y = x.clone()
    while half < length:
        y = y.reshape(*x.shape[:-1], length // (2 * half), 2, half)
        a, b = y[..., 0, :], y[..., 1, :]
        y = torch.stack((a + b, a - b), dim=-2).reshape(x.shape)
        half *= 2
    return y


def test_hadamard_matrix_is_the_kronecker_power():
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    expected = torch.ones(1, 1)
    for k in range(6):
        assert torch.equal(hadamard_matrix(2**k), expected)
        expected = torch.kron(h2, expected)
    h = hadamard_matrix(64, dtype=torch.float64)
    assert torch.equal(h @ h, 64 * torch.eye(64, dtype=torch.float64))
    assert hadamard_matrix(64, dtype=torch.float64) is h  # cached


@pytest.mark.parametrize("k", range(11))
def test_fwht_matches_the_explicit_matrix(k):
    x = torch.randn(3, 2**k, dtype=torch.float64)
    assert torch.allclose(fwht(x), x @ hadamard_matrix(2**k, dtype=torch.float64), atol=1e-10)


@pytest.mark.parametrize("k", [11, 13, 16, 18])
def test_fwht_matches_butterflies(k):
    x = torch.randn(2**k, dtype=torch.float64)
    assert torch.allclose(fwht(x), butterflies(x), atol=1e-9)


def test_fwht_batches_inverts_and_keeps_its_input():
    x = torch.randn(2, 3, 4096)
    before = x.clone()
    y = fwht(x)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.equal(x, before)
    assert torch.allclose(y[1, 2], fwht(x[1, 2]), atol=1e-4)
    assert torch.allclose(fwht(y) / 4096, x, atol=1e-5)
    assert torch.allclose(fwht(x[..., ::2].contiguous()), fwht(x[..., ::2]))  # strided input


def test_factor_bits_split_evenly_and_errors():
    assert (
        factor_bits(18, 5) == [5, 5, 4, 4] and factor_bits(0) == [0] and sum(factor_bits(31)) == 31
    )
    with pytest.raises(LowdimError, match="power of two, got 12"):
        fwht(torch.randn(12))
    with pytest.raises(LowdimError, match="floating-point"):
        fwht(torch.ones(8, dtype=torch.int64))


def test_the_compiled_transform_was_built():
    """`make install` (pip install) compiles src/lowdim/_native.c; without a C compiler lowdim
    installs without it, and this test says so."""
    assert hadamard.native is not None


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5, 10, 15, 16, 17, 20, 21])
def test_the_compiled_transform_matches_the_definition(k):
    """Against float64 butterflies, within float32 rounding: the error of a sum of 2^k terms
    grows like k, so relative to the largest output 1e-6 holds to 2^21 with room."""
    x = torch.randn(2, 2**k, generator=torch.Generator().manual_seed(k))
    reference = butterflies(x.double())
    y = fwht(x)
    assert y.dtype == torch.float32 and torch.equal(x, x.clone())
    assert (y.double() - reference).abs().max() <= 1e-6 * reference.abs().max()


def test_the_compiled_transform_gives_the_same_bits_on_any_thread_count():
    """Each row and each column block is transformed whole by one thread, in one order, so the
    split over threads changes no bit (3 x 2^20 elements: past PARALLEL_FROM, so the threads
    are used); batches and strided inputs are taken as they are."""
    x = torch.randn(3, 2**20, generator=torch.Generator().manual_seed(0))
    assert x.numel() >= hadamard.PARALLEL_FROM
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(fwht(x))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])
    assert torch.equal(fwht(x[1]), results[0][1])
    assert torch.equal(fwht(x[:, ::2]), fwht(x[:, ::2].contiguous()))


def test_autograd_and_other_dtypes_take_the_matrix_products():
    x = torch.randn(4, 2**12, requires_grad=True)
    fwht(x).sum().backward()  # d/dx sum(H x) = H 1 = (L, 0, ..., 0) per row (H symmetric)
    expected = torch.zeros(4, 2**12)
    expected[:, 0] = 2**12
    assert torch.equal(x.grad, expected)
    with torch.no_grad():
        assert torch.allclose(fwht(x), fwht_blocked(x), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("n", [8, 1000, 2**17 + 5])
def test_the_compiled_permutation_matches_torchs_gather_and_scatter(n):
    """The same products at the same places, so the very same bits; the transpose undoes the
    permutation (with unit scales)."""
    g = torch.Generator().manual_seed(n)
    x, scale = torch.randn(2, n, generator=g), torch.randn(n, generator=g)
    perm = torch.randperm(n, generator=g).to(torch.int32)
    for transpose in (False, True):
        compiled = permute_scale(x, perm, scale, transpose)
        torch_ops = permute_scale(x, perm.long(), scale, transpose)  # int64: torch's path
        assert torch.equal(compiled, torch_ops)
    ones = torch.ones(n)
    back = permute_scale(permute_scale(x, perm, ones), perm, ones, transpose=True)
    assert torch.equal(back, x)


def test_the_compiled_kernels_refuse_what_would_write_out_of_bounds():
    """They write raw memory: a stored permutation out of range (a damaged file) and a wrong
    `out` are refused in one line before any kernel runs."""
    from lowdim.bases import basis_from_state, random_basis

    state = random_basis("fastfood", 1000, 10, seed=0, store_tensors=True).state_dict()
    state["tensors"]["permutation"][3] = 10**6
    with pytest.raises(LowdimError, match=r"permutation has entries outside \[0, 1024\)"):
        basis_from_state(state)
    x = torch.randn(1024)
    with pytest.raises(LowdimError, match="out must be a contiguous tensor other than x"):
        fwht(x, torch.empty(512))
    with pytest.raises(LowdimError, match="out must be a contiguous tensor other than x"):
        fwht(x, x)

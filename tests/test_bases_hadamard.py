import pytest
import torch

from lowdim.bases.hadamard import factor_bits, fwht, hadamard_matrix
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

"""The redrawn basis (RBD's): chunks from keys, never stored whole, composed into compartments
by the block machinery; its products against P built explicitly from `directions`."""

import pytest
import torch

from lowdim.bases import (
    BlockBasis,
    Compartment,
    RedrawnBasis,
    basis_from_state,
    load_basis,
    redrawn_basis,
)
from lowdim.errors import BadArgument
from lowdim.optim.rbd import directions

PARTS = [Compartment("a", 0, 70, 5), Compartment("b", 70, 33, 9), Compartment("c", 103, 1, 1)]
D = 104


def explicit(parts, seed, step, worker, chunk_rows, dtype=torch.float32, **options):
    """P (D x d) assembled from `directions`, chunk by chunk: rows of chunk j of compartment
    k are directions(seed, step, worker, k, j, ...) placed at k's offset."""
    d = sum(c.dim for c in parts)
    p = torch.zeros(d, D, dtype=dtype)
    row = 0
    for k, c in enumerate(parts):
        for j, start in enumerate(range(0, c.dim, chunk_rows)):
            rows = min(chunk_rows, c.dim - start)
            chunk = directions(seed, step, worker, k, j, rows, c.length, **options)
            p[row : row + rows, c.offset : c.offset + c.length] = chunk
            row += rows
    return p.t()


OPTIONS = [
    dict(),
    dict(distribution="uniform", normalise="unit"),
    dict(distribution="rademacher"),
]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("threads", [1, 3])
def test_products_equal_the_explicit_matrix_and_are_adjoint(options, threads):
    basis = redrawn_basis(PARTS, 7, step=3, worker=2, chunk_rows=2, threads=threads, **options)
    assert isinstance(basis, BlockBasis) and (basis.num_params, basis.dim) == (D, 15)
    p = explicit(PARTS, 7, 3, 2, 2, **options)
    g = torch.Generator().manual_seed(0)
    x, grad, c = (
        torch.randn(D, generator=g),
        torch.randn(D, generator=g),
        torch.randn(15, generator=g),
    )
    assert torch.allclose(basis.project(grad), p.t() @ grad, atol=1e-6)
    assert torch.allclose(basis.expand(c), p @ c, atol=1e-6)
    target = x.clone()
    assert basis.expand_add_(target, c, alpha=-0.3) is target
    assert torch.allclose(target, x - 0.3 * p @ c, atol=1e-6)
    # <P c, g> = <c, P^T g>
    assert torch.allclose(basis.expand(c) @ grad, c @ basis.project(grad), atol=1e-5)
    assert basis.bytes_held() == 0  # nothing stored: every product regenerates the chunks


def test_chunks_are_bit_identical_to_directions_and_float64_casts_them():
    child = redrawn_basis(PARTS, 4, step=7, worker=2, chunk_rows=4).blocks[1][2]
    for start, raw, scale in child.chunks():
        want = directions(4, 7, 2, 1, start // 4, len(raw), 33)
        assert torch.equal(raw * scale, want)
    wide = redrawn_basis(PARTS, 4, step=7, worker=2, chunk_rows=4, dtype=torch.float64)
    raw64 = next(wide.blocks[1][2].chunks())[1]
    assert raw64.dtype == torch.float64
    assert torch.equal(raw64, next(child.chunks())[1].double())
    p = explicit(PARTS, 4, 7, 2, 4, dtype=torch.float64)
    c = torch.randn(15, dtype=torch.float64)
    assert torch.allclose(wide.expand(c), p @ c, atol=1e-6)  # P to float32 rounding


def test_keys_decide_the_directions():
    one = RedrawnBasis(50, 6, seed=1, step=2, worker=0, compartment=3, chunk_rows=4)
    c = torch.randn(6)
    assert torch.equal(
        one.expand(c), RedrawnBasis(50, 6, 1, step=2, compartment=3, chunk_rows=4).expand(c)
    )
    for other in (
        one.at_step(3),
        RedrawnBasis(50, 6, seed=2, step=2, compartment=3, chunk_rows=4),
        RedrawnBasis(50, 6, seed=1, step=2, worker=1, compartment=3, chunk_rows=4),
        RedrawnBasis(50, 6, seed=1, step=2, compartment=4, chunk_rows=4),
    ):
        assert not torch.allclose(one.expand(c), other.expand(c))
    assert torch.equal(one.at_step(3).at_step(2).expand(c), one.expand(c))
    # a compartment of a block basis is the standalone basis with the same key
    block = redrawn_basis(PARTS, 1, step=2, chunk_rows=4).blocks[2][2]
    alone = RedrawnBasis(1, 1, 1, step=2, compartment=2, chunk_rows=4)
    assert torch.equal(block.expand(torch.ones(1)), alone.expand(torch.ones(1)))


def test_keep_holds_the_chunks_and_changes_nothing():
    kept = redrawn_basis(PARTS, 0, step=1, chunk_rows=3, keep=True)
    fresh = redrawn_basis(PARTS, 0, step=1, chunk_rows=3)
    g = torch.randn(D)
    assert torch.equal(kept.project(g), fresh.project(g))
    assert kept.bytes_held() == sum(c.dim * c.length * 4 for c in PARTS)
    c = torch.randn(15)
    assert torch.equal(kept.expand(c), fresh.expand(c))


def test_saved_as_numbers_alone(tmp_path):
    basis = redrawn_basis(PARTS, 5, step=9, worker=1, chunk_rows=2, distribution="uniform")
    assert basis.tensors() == {}
    c = torch.randn(15)
    again = basis_from_state(basis.state_dict())
    assert torch.equal(again.expand(c), basis.expand(c))
    basis.save(tmp_path / "r.safetensors")
    assert torch.equal(load_basis(tmp_path / "r.safetensors").expand(c), basis.expand(c))
    wide = basis.to(dtype=torch.float64)
    assert wide.expand(c.double()).dtype == torch.float64
    assert torch.allclose(wide.expand(c.double()).float(), basis.expand(c), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(distribution="cauchy"), "^distribution must be one of gaussian, uniform"),
        (dict(normalise="l1"), "^normalise must be one of sqrt, unit, got 'l1'"),
        (dict(chunk_rows=0), "^chunk_rows must be an integer >= 1, got 0"),
        (dict(step=-1), "^step must be an integer >= 0, got -1"),
        (dict(seed=-1), "^seed must be an integer in"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(BadArgument, match=message):
        RedrawnBasis(10, 2, **kwargs)
    with pytest.raises(BadArgument, match="^compartments need their dims"):
        redrawn_basis([Compartment("a", 0, 10)])

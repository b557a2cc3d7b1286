import pytest
import torch

from lowdim.bases import load_basis
from lowdim.bases.blocks import BlockBasis
from lowdim.bases.fastfood import FastfoodBasis
from lowdim.bases.gaussian import GaussianBasis, gaussian_chunk
from lowdim.bases.random import RANDOM_KINDS, random_basis
from lowdim.bases.sparse import SparseBasis, sparse_chunk
from lowdim.errors import LowdimError

EXACT_NORM_KINDS = ("dense", "orthogonal", "sparse")


def materialise(basis) -> torch.Tensor:
    """P (D x d), column i = expand(e_i), in float64."""
    eye = torch.eye(basis.dim, dtype=torch.float64)
    return torch.stack([basis.expand(e).double() for e in eye], dim=1)


def held_equal(a, b) -> bool:
    x, y = a._held(), b._held()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_products_match_the_materialised_matrix(kind):
    basis = random_basis(kind, 300, 20, seed=1).to(dtype=torch.float64)
    p = materialise(basis)
    assert p.shape == (300, 20) and basis.num_params == 300 and basis.dim == 20
    gen = torch.Generator().manual_seed(0)
    c = torch.randn(20, generator=gen, dtype=torch.float64)
    g = torch.randn(300, generator=gen, dtype=torch.float64)
    assert torch.allclose(basis.expand(c), p @ c, atol=1e-12)
    assert torch.allclose(basis.project(g), p.t() @ g, atol=1e-12)
    # adjoint: <P c, g> == <c, P^T g>
    assert torch.allclose(basis.expand(c) @ g, c @ basis.project(g), atol=1e-12)
    target = torch.randn(300, generator=gen, dtype=torch.float64)
    expected = target + 0.5 * (p @ c)
    assert torch.allclose(basis.expand_add_(target, c, alpha=0.5), expected, atol=1e-12)


@pytest.mark.parametrize("kind", EXACT_NORM_KINDS)
def test_columns_have_unit_norm(kind):
    basis = random_basis(kind, 2000, 50, seed=2)
    norms = materialise(basis).norm(dim=0)
    assert (norms - 1).abs().max() < 1e-5


def test_fastfood_columns_are_unit_norm_within_three_percent():
    # the scalar s alone (what large bases use): norms spread by about 0.6% at D = 5000
    basis = FastfoodBasis(5000, 100, seed=3, dtype=torch.float64, exact_norms=False)
    p = materialise(basis)
    assert (p.norm(dim=0) - 1).abs().max() < 0.03
    # measured columns (the default where d L is small): 1 to rounding, even at tiny D
    for num_params, dim in ((5000, 100), (10, 3)):
        exact = FastfoodBasis(num_params, dim, seed=3)
        assert exact.exact_norms
        assert (materialise(exact).norm(dim=0) - 1).abs().max() < 1e-5
    # batches: expand (d, d) identity rows at once, project a batch of parameter vectors
    assert torch.allclose(basis.expand(torch.eye(100, dtype=torch.float64)), p.t(), atol=1e-12)
    g = torch.randn(3, 5000, dtype=torch.float64)
    assert torch.allclose(basis.project(g), g @ p, atol=1e-12)
    # exactly 1 when D is a power of two (no rows cut off)
    exact = materialise(FastfoodBasis(1024, 30, seed=3, dtype=torch.float64)).norm(dim=0)
    assert (exact - 1).abs().max() < 1e-12


@pytest.mark.parametrize(("num_params", "dim"), [(3000, 200), (64, 64)])
def test_orthogonal_columns_are_orthonormal(num_params, dim):
    basis = GaussianBasis(num_params, dim, seed=4, orthogonal=True)
    assert basis.rows.dtype == torch.float32
    r = basis.rows.double()
    assert (r @ r.t() - torch.eye(dim, dtype=torch.float64)).abs().max() < 1e-5
    assert basis.orthogonality_error() < 1e-5


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_same_seed_same_basis_other_seed_another(kind):
    a, b = random_basis(kind, 400, 10, seed=7), random_basis(kind, 400, 10, seed=7)
    assert held_equal(a, b)
    other = random_basis(kind, 400, 10, seed=8)
    assert not torch.equal(materialise(a), materialise(other))


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_seed_only_file_regenerates_the_same_basis(kind, tmp_path):
    basis = random_basis(kind, 500, 12, seed=9)
    assert basis.tensors() == {}
    basis.save(tmp_path / "b.safetensors")
    loaded = load_basis(tmp_path / "b.safetensors")
    assert type(loaded) is type(basis) and loaded.numbers() == basis.numbers()
    assert held_equal(loaded, basis)
    assert not loaded.store_tensors


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_stored_tensors_round_trip(kind, tmp_path):
    basis = random_basis(kind, 500, 12, seed=10, store_tensors=True).to(dtype=torch.float64)
    assert basis.tensors()
    basis.save(tmp_path / "b.safetensors")
    loaded = load_basis(tmp_path / "b.safetensors")
    assert loaded.store_tensors and held_equal(loaded, basis)
    # saved tensors are used as they are: the file, not the seed, decides
    numbers = basis.numbers() | {"seed": 11}
    assert held_equal(type(basis).from_state(basis.tensors(), numbers), basis)


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_to_float64_casts_and_regenerates_in_that_dtype(kind, tmp_path):
    basis = random_basis(kind, 256, 8, seed=12)
    wide = basis.to(dtype=torch.float64)
    c = torch.randn(8)
    assert wide.expand(c).dtype == torch.float64 and wide.project(torch.randn(256)).dtype == (
        torch.float64
    )
    assert torch.allclose(wide.expand(c), basis.expand(c).double(), atol=1e-5)
    wide.save(tmp_path / "w.safetensors")
    assert held_equal(load_basis(tmp_path / "w.safetensors"), wide)
    assert wide.bytes_held() > basis.bytes_held()


def test_a_gaussian_chunk_regenerated_alone_equals_those_rows():
    basis = GaussianBasis(300, 30, seed=13, chunk_rows=7)
    assert torch.equal(gaussian_chunk(300, 30, 13, 2, 7), basis.rows[14:21])
    assert torch.equal(gaussian_chunk(300, 30, 13, 4, 7), basis.rows[28:30])  # the short last
    with pytest.raises(LowdimError, match="chunk 5"):
        gaussian_chunk(300, 30, 13, 5, 7)


def test_a_sparse_chunk_regenerated_alone_equals_those_rows():
    basis = SparseBasis(300, 30, seed=14, chunk_rows=7)
    dense_rows = basis.matrix.to_dense()
    row, col, sign = sparse_chunk(300, 30, 14, 2, 7, basis.density)
    chunk = torch.zeros(7, 300, dtype=torch.float64)
    chunk[row, col] = sign.double()
    chunk /= chunk.abs().sum(1, keepdim=True).sqrt()  # in float64, rounded once, as the basis
    assert torch.equal(chunk.float(), dense_rows[14:21])


def test_sparse_density_and_empty_rows():
    basis = SparseBasis(10_000, 100, seed=15)
    assert basis.density == pytest.approx(0.1)
    assert basis.nnz == pytest.approx(0.1 * 100 * 10_000, rel=0.02)
    # at a tiny density nearly every row draws nothing and gets one seeded nonzero
    tiny = SparseBasis(50, 20, seed=16, density=1e-9)
    assert tiny.nnz == 20 and torch.equal(tiny.matrix.values().abs(), torch.ones(20))
    with pytest.raises(LowdimError, match="^density 0.0 must be in"):
        SparseBasis(50, 20, density=0.0)


def test_fastfood_holds_o_of_d_memory_and_runs_at_large_d():
    basis = FastfoodBasis(200_000, 100_000, seed=17)
    assert not basis.exact_norms  # measuring 100,000 columns is not cheap
    assert basis.bytes_held() < 30 * 200_000
    out = basis.expand(torch.randn(100_000))
    back = basis.project(out)
    assert out.shape == (200_000,) and back.shape == (100_000,)
    assert torch.isfinite(out).all() and torch.isfinite(back).all()


def test_bytes_held_counts_what_each_basis_keeps():
    assert random_basis("dense", 1000, 10).bytes_held() == 4 * 1000 * 10
    sparse = random_basis("sparse", 1000, 10)
    assert 2 * 8 * sparse.nnz <= sparse.bytes_held() < 2 * 8 * sparse.nnz + 8 * 1020
    assert random_basis("fastfood", 1000, 10).bytes_held() == 9 * 1024 + 4 * 10


@pytest.mark.parametrize(
    ("kind", "dim", "message"),
    [
        ("gaussian", 5, "unknown random basis 'gaussian'; choose one of dense, orthogonal"),
        ("dense", 0, "^dim 0 must be between 1 and D = 100"),
        ("fastfood", 101, "^dim 101 must be between 1 and D = 100"),
    ],
)
def test_factory_errors_name_the_bad_value(kind, dim, message):
    with pytest.raises(LowdimError, match=message):
        random_basis(kind, 100, dim)


def test_blocks_compose_children_of_any_kind(tmp_path):
    children = [
        (0, 40, random_basis("sparse", 40, 5, seed=1)),
        (40, 100, random_basis("fastfood", 100, 7, seed=2, store_tensors=True)),
        (140, 60, random_basis("orthogonal", 60, 3, seed=3)),
    ]
    # given out of parameter order: coordinates follow the list, parameters the offsets
    blocks = BlockBasis([children[1], children[0], children[2]])
    assert blocks.num_params == 200 and blocks.dim == 15
    p = materialise(blocks)
    expected = torch.zeros(200, 15, dtype=torch.float64)
    expected[40:140, 0:7] = materialise(children[1][2])
    expected[0:40, 7:12] = materialise(children[0][2])
    expected[140:200, 12:15] = materialise(children[2][2])
    assert torch.allclose(p, expected, atol=1e-6)
    g = torch.randn(200)
    assert torch.allclose(blocks.project(g).double(), expected.t() @ g.double(), atol=1e-5)
    blocks.save(tmp_path / "blocks.safetensors")
    loaded = load_basis(tmp_path / "blocks.safetensors")
    assert isinstance(loaded, BlockBasis) and loaded.numbers() == blocks.numbers()
    assert set(blocks.tensors()) == {"block0.signs", "block0.permutation", "block0.gaussian"}
    assert torch.equal(materialise(loaded), p)
    wide = blocks.to(dtype=torch.float64)
    assert wide.expand(torch.randn(15)).dtype == torch.float64
    assert blocks.bytes_held() == sum(b.bytes_held() for _, _, b in children)


@pytest.mark.parametrize(
    ("spans", "message"),
    [
        ([(0, 10), (12, 5)], "parameters 10..11 are in no block"),
        ([(0, 10), (8, 5)], "the block at offset 8 overlaps the one ending at 10"),
        ([(3, 10)], "parameters 0..2 are in no block"),
    ],
)
def test_blocks_must_tile_the_parameters(spans, message):
    blocks = [(o, n, random_basis("fastfood", n, 1)) for o, n in spans]
    with pytest.raises(LowdimError, match=message):
        BlockBasis(blocks)
    with pytest.raises(LowdimError, match="block 0 has length 9 but its basis acts on 10"):
        BlockBasis([(0, 9, random_basis("dense", 10, 2))])


@pytest.mark.cuda
@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_cuda_matches_cpu(kind):
    cpu = random_basis(kind, 3000, 40, seed=5)
    gpu = random_basis(kind, 3000, 40, seed=5, device="cuda")
    c, g = torch.randn(40), torch.randn(3000)
    assert gpu.expand(c.cuda()).device.type == "cuda"
    assert torch.allclose(gpu.expand(c.cuda()).cpu(), cpu.expand(c), atol=1e-4)
    assert torch.allclose(gpu.project(g.cuda()).cpu(), cpu.project(g), atol=1e-4)
    assert torch.allclose(cpu.to("cuda").project(g.cuda()).cpu(), cpu.project(g), atol=1e-4)

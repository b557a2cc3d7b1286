"""One table of every kind of basis lowdim has, and every check run over all of them.

Like torch's `optim_db`: `BASES` lists one small `BasisInfo` per kind, with a factory that builds
it for a given D and seed and the promises it makes; each test below is parametrised over every
entry and a few sizes. Adding a kind is one entry (and, if it promises less, its flags say so: a
promise a kind does not make is checked to be refused cleanly, never skipped).
"""

from __future__ import annotations

import functools
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from lowdim.bases import (
    Basis,
    BlockBasis,
    DenseBasis,
    FastfoodBasis,
    GaussianBasis,
    SparseBasis,
    basis_from_state,
    expand_differentiable,
    layer_deviations,
    load_basis,
    pca_of_rows,
    per_compartment_basis,
    random_basis,
    span_of_rows,
)
from lowdim.bases.fastfood import next_power_of_two
from lowdim.bases.redrawn import RedrawnBasis
from lowdim.bases.redrawn_hadamard import RedrawnHadamardBasis
from lowdim.bases.sharded import shard_pca_basis, shard_span_basis
from lowdim.errors import LowdimError
from lowdim.io import save_tensors

# Column promises (`BasisInfo.columns`).
ORTHONORMAL = "orthonormal"  # P^T P = I, to the rounding of the dtype it is held in
UNIT = "unit"  # every column has norm 1, to rounding
EXPECTED_UNIT = "expected-unit"  # E ||P e_j||^2 = 1, with a known spread (`spread`)
FREE = "free"  # nothing promised: only finite, nonzero columns are checked

# Odd sizes: 257 and 2053 pad to 512 and 4096 in Fastfood (nearly double), 1000 to 1024.
SIZES = (257, 1000, 2053)
DIM = 24


@dataclass(frozen=True)
class BasisInfo:
    """One kind of basis and what it promises.

    build(num_params, seed) makes the basis in the dtype it is normally held in; for a kind
    derived from data (PCA, span, ...), the seed draws that data. dim is the d it then has.
    columns: one of ORTHONORMAL, UNIT, EXPECTED_UNIT, FREE; spread(D), for EXPECTED_UNIT, the
    standard deviation of a squared column norm. seeded: the seed and numbers alone rebuild it
    (its state holds no tensors). restores: `basis_from_state(state_dict())` and
    `save`/`load_basis` rebuild it (else both must raise LowdimError or NotImplementedError).
    """

    name: str
    build: Callable[[int, int], Basis]
    dim: int = DIM
    columns: str = FREE
    spread: Callable[[int], float] | None = None
    seeded: bool = False
    restores: bool = True


def toy_layers(num_params: int) -> list[tuple[str, list[list[int]]]]:
    """Three layers of D parameters in all: body.0 and body.1 (a weight and a bias each) of
    about D/3 each, and head (one weight) the rest."""
    q, r = num_params // 21, num_params // 15
    head = num_params - (7 * q + 7) - (5 * r + 5)
    return [("body.0", [[7, q], [7]]), ("body.1", [[5, r], [5]]), ("head", [[head]])]


def toy_layout(num_params: int) -> list[dict]:
    """The layers' parameters as a flat layout, as `FlatParams.layout()` gives it."""
    layout, offset = [], 0
    for layer, shapes in toy_layers(num_params):
        for name, shape in zip(("weight", "bias"), shapes, strict=False):
            layout.append({"name": f"{layer}.{name}", "shape": shape, "offset": offset})
            offset += math.prod(shape)
    return layout


def trajectory(t: int, num_params: int, seed: int) -> Tensor:
    """(t, D) float64 snapshots like a training run's: a start, a decaying drift, noise."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(t, num_params, generator=g, dtype=torch.float64)
    steps *= torch.linspace(1, 0.1, t, dtype=torch.float64)[:, None]
    return torch.randn(num_params, generator=g, dtype=torch.float64) + 0.05 * steps.cumsum(0)


def mixed_blocks(num_params: int, seed: int) -> BlockBasis:
    """Seeded children of three kinds, one per toy layer, given out of parameter order (the
    coordinates follow the order given, the slices tile 0..D)."""
    sizes = [sum(math.prod(s) for s in shapes) for _, shapes in toy_layers(num_params)]
    (o0, o1, o2), (n0, n1, n2) = (0, sizes[0], sizes[0] + sizes[1]), sizes
    return BlockBasis(
        [
            (o2, n2, FastfoodBasis(n2, 7, seed + 2)),
            (o0, n0, GaussianBasis(n0, 9, seed, orthogonal=True)),
            (o1, n1, SparseBasis(n1, 8, seed + 1)),
        ]
    )


def pca_rows(num_params: int, seed: int) -> Tensor:
    return trajectory(DIM + 6, num_params, seed).float()


BASES = [
    BasisInfo(
        "gaussian",
        lambda n, s: random_basis("dense", n, DIM, seed=s),
        columns=UNIT,
        seeded=True,
    ),
    BasisInfo(
        "orthogonal",
        lambda n, s: random_basis("orthogonal", n, DIM, seed=s),
        columns=ORTHONORMAL,
        seeded=True,
    ),
    BasisInfo(
        "sparse",
        lambda n, s: random_basis("sparse", n, DIM, seed=s),
        columns=UNIT,
        seeded=True,
    ),
    # columns measured and normalised (the default where d L is small, as here)
    BasisInfo(
        "fastfood",
        lambda n, s: random_basis("fastfood", n, DIM, seed=s),
        columns=UNIT,
        seeded=True,
    ),
    # the scalar s alone (what large bases use): squared column norms are (L/D) Beta(D/2,
    # (L-D)/2), mean 1 and standard deviation sqrt(2 (1/D - 1/L)) (see fastfood.py)
    BasisInfo(
        "fastfood-scalar",
        lambda n, s: FastfoodBasis(n, DIM, s, exact_norms=False),
        columns=EXPECTED_UNIT,
        spread=lambda n: math.sqrt(2 * (1 / n - 1 / next_power_of_two(n))),
        seeded=True,
    ),
    # an explicit matrix: a DenseBasis promises nothing about its columns
    BasisInfo(
        "matrix",
        lambda n, s: DenseBasis(torch.randn(DIM, n, generator=torch.Generator().manual_seed(s))),
    ),
    BasisInfo("pca", lambda n, s: pca_of_rows(pca_rows(n, s), DIM), columns=ORTHONORMAL),
    BasisInfo("span", lambda n, s: span_of_rows(trajectory(DIM, n, s)), columns=ORTHONORMAL),
    # 8 checkpoints' deviations in each of the layout's 3 layers, unit norm within the layer
    BasisInfo(
        "layer-deviations",
        lambda n, s: layer_deviations(trajectory(DIM // 3, n, s), toy_layout(n)),
        columns=UNIT,
    ),
    BasisInfo(
        "compartments",
        lambda n, s: per_compartment_basis("orthogonal", toy_layout(n), DIM, seed=s),
        columns=ORTHONORMAL,  # block diagonal of orthonormal blocks
        seeded=True,
    ),
    BasisInfo("blocks-mixed", mixed_blocks, columns=UNIT, seeded=True),
    # RBD's basis of one step: its chunks regenerated from (seed, step, ...) for every product
    BasisInfo(
        "redrawn",
        lambda n, s: RedrawnBasis(n, DIM, s, step=3, normalise="unit", chunk_rows=7),
        columns=UNIT,
        seeded=True,
    ),
    # RBD's structured basis of one step: d rows of a randomised Hadamard transform, from a key
    BasisInfo(
        "redrawn-hadamard",
        lambda n, s: RedrawnHadamardBasis(n, DIM, s, step=3, worker=1, compartment=2),
        columns=UNIT,
        seeded=True,
    ),
    # what one process can build of a sharded basis: world size 1, the whole range [0, D)
    BasisInfo(
        "sharded-pca",
        lambda n, s: shard_pca_basis(pca_rows(n, s).numpy(), DIM, 0, n, n, (0, DIM + 6, 1)),
        columns=ORTHONORMAL,
        restores=False,
    ),
    BasisInfo(
        "sharded-span",
        lambda n, s: shard_span_basis(trajectory(DIM, n, s), 0, n, n, (0, DIM, 1)),
        columns=ORTHONORMAL,
        restores=False,
    ),
]
BY_NAME = {b.name: b for b in BASES}
CASES = [pytest.param(b.name, n, id=f"{b.name}-{n}") for b in BASES for n in SIZES]
SEED = 3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread while these tests run (restored after): their products are far too
    small to gain from two, and on a busy machine the threads' waits for each other (OpenMP
    spins after every parallel region) made this file ten times slower (75 s against 8 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def built(name: str, num_params: int) -> Basis:
    """The table's basis, built once per size (tests never modify a basis)."""
    return BY_NAME[name].build(num_params, SEED)


def vectors(basis: Basis, dtype=torch.float64, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random coordinates c (d,) and a parameter-space vector g (D,)."""
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(basis.dim, generator=gen, dtype=dtype)
    return c, torch.randn(basis.num_params, generator=gen, dtype=dtype)


def out_dtype(basis: Basis) -> torch.dtype:
    """The dtype of the basis's products (the dtype it is held in)."""
    return basis.expand(torch.zeros(basis.dim)).dtype


def same_products(a: Basis, b: Basis) -> None:
    """a and b give bit-identical products (the same code on the same numbers)."""
    assert (a.num_params, a.dim) == (b.num_params, b.dim)
    c, g = vectors(a)
    x, y = a.expand(c), b.expand(c)
    assert x.dtype == y.dtype and torch.equal(x, y)
    x, y = a.project(g), b.project(g)
    assert x.dtype == y.dtype and torch.equal(x, y)


def materialise(basis: Basis) -> Tensor:
    """P (D x d), column j = expand(e_j) in the basis's own dtype, returned in float64."""
    eye = torch.eye(basis.dim, dtype=out_dtype(basis))
    return torch.stack([basis.expand(e) for e in eye], dim=1).double()


def rel(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b||, in float64."""
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# Tolerances, relative to the norm of the result. Each entry of P c or P^T g is a sum of at
# most D (<= 2053 here) products, or for Fastfood two transforms of log2 L <= 12 stages.
# Rounding errors of a sum of n terms are at most n eps of the sum of their magnitudes, and grow
# like sqrt(n) eps when their signs are random (BLAS also sums in several partial sums): 2053
# terms give about 45 eps = 5e-6 in float32 (eps = 1.2e-7), and the largest measured over the
# whole table was 4.6e-7. In float64 (eps = 2.2e-16) even the worst case n eps is 4.6e-13, so
# 1e-10 leaves a factor of 200 while still catching any real error (a wrong sign, scale or
# permutation is of order 1).
TOL64 = 1e-10
TOL32 = 5e-6


def tol(dtype: torch.dtype) -> float:
    return TOL64 if dtype == torch.float64 else TOL32


def test_the_table_covers_every_kind():
    # every concrete basis class of the library appears in the table: a new kind fails here
    # until it has its entry
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    kinds = {
        c
        for c in subclasses(Basis)
        if c.__module__.startswith("lowdim.") and not c.__abstractmethods__
    }
    missing = kinds - {type(built(b.name, SIZES[0])) for b in BASES}
    assert not missing, (
        f"basis classes with no entry in BASES: {sorted(c.__name__ for c in missing)}"
    )
    assert len(BY_NAME) == len(BASES)  # names are unique
    for b in BASES:
        assert b.columns in (ORTHONORMAL, UNIT, EXPECTED_UNIT, FREE), b.name
        assert (b.spread is not None) == (b.columns == EXPECTED_UNIT), b.name
        assert not (b.seeded and not b.restores), b.name  # a seed alone is a saved state


@pytest.mark.parametrize(("name", "num_params"), CASES)
def test_shapes_sizes_and_zero(name, num_params):
    basis, info = built(name, num_params), BY_NAME[name]
    assert basis.num_params == num_params and basis.dim == info.dim
    c, g = vectors(basis)
    assert basis.expand(c).shape == (num_params,)
    assert basis.project(g).shape == (info.dim,)
    dtype = out_dtype(basis)
    assert dtype in (torch.float32, torch.float64)
    # P 0 = 0 and P^T 0 = 0 exactly: every kind is linear, with no offset
    assert torch.equal(basis.project(torch.zeros(num_params)), torch.zeros(info.dim, dtype=dtype))
    assert torch.equal(basis.expand(torch.zeros(info.dim)), torch.zeros(num_params, dtype=dtype))
    # every kind holds its matrix or generator tensors, except the redrawn one, never stored
    held = basis.bytes_held()
    assert isinstance(held, int) and (held == 0 if info.name == "redrawn" else held > 0)


@pytest.mark.parametrize(("name", "num_params"), CASES)
def test_project_is_the_adjoint_of_expand(name, num_params):
    # <P c, g> == <c, P^T g> in float64. Both inner products are bounded by ||P c|| ||g|| and
    # ||c|| ||P^T g|| (Cauchy-Schwarz), so their difference is measured against that scale;
    # see TOL64 for why 1e-10 is a wide margin over float64 rounding.
    basis = built(name, num_params).to(dtype=torch.float64)
    for seed in range(3):
        c, g = vectors(basis, seed=seed)
        pc, ptg = basis.expand(c), basis.project(g)
        assert pc.dtype == ptg.dtype == torch.float64
        scale = (pc.norm() * g.norm() + c.norm() * ptg.norm()).item()
        assert abs((pc @ g - c @ ptg).item()) <= TOL64 * scale
    # and expand_differentiable's gradient is the same adjoint
    c = c.clone().requires_grad_(True)
    (expand_differentiable(basis, c) @ g).backward()
    assert torch.allclose(c.grad, basis.project(g), rtol=0, atol=TOL64 * ptg.abs().max().item())


@pytest.mark.parametrize(("name", "num_params"), CASES)
def test_expand_add_is_expand_then_add(name, num_params):
    basis = built(name, num_params)
    for dtype in (out_dtype(basis), torch.float64):  # the basis's dtype and a wider target
        for alpha in (1.0, -0.37):
            c, target = vectors(basis, dtype=dtype, seed=1)
            expected = target + alpha * basis.expand(c).to(dtype)
            out = basis.expand_add_(target, c, alpha=alpha)
            assert out is target and out.dtype == dtype  # in place
            # a fused product rounds differently from a product then an add
            assert rel(out, expected) <= tol(out_dtype(basis))
    # the default alpha is 1
    c, target = vectors(basis, dtype=out_dtype(basis), seed=2)
    expected = target + basis.expand(c)
    assert rel(basis.expand_add_(target, c), expected) <= tol(out_dtype(basis))


@pytest.mark.parametrize(("name", "num_params"), CASES)
def test_columns_keep_their_promise(name, num_params):
    basis, info = built(name, num_params), BY_NAME[name]
    p = materialise(basis)
    assert p.shape == (num_params, info.dim) and torch.isfinite(p).all()
    norms = p.norm(dim=0)
    # Columns are rounded once to the dtype they are held in (normalised or orthonormalised
    # in float64 first, or by CholeskyQR2, whose second pass leaves about eps), then formed by
    # a product in that dtype (two Hadamard transforms for Fastfood). The largest error
    # measured over the table was 2.9e-7 = 2.4 eps in float32: 2e-6 leaves a factor of 7.
    # Span is float64 from a Householder QR, whose orthogonality error grows with D (measured
    # 2.9e-15 at D = 2053): 1e-12 is far below any real error and far above its rounding.
    close = {torch.float32: 2e-6, torch.float64: 1e-12}[out_dtype(basis)]
    if info.columns == ORTHONORMAL:
        gram = p.t() @ p
        assert (gram - torch.eye(info.dim, dtype=torch.float64)).abs().max() <= close
        # and the products say so: P^T P c = c
        c, _ = vectors(basis, dtype=out_dtype(basis))
        assert rel(basis.project(basis.expand(c)), c) <= tol(out_dtype(basis))
    elif info.columns == UNIT:
        assert (norms - 1).abs().max() <= close
    elif info.columns == EXPECTED_UNIT:
        # six standard deviations per column; the mean of d columns within six of its own
        sd = info.spread(num_params)
        assert (norms.square() - 1).abs().max() <= 6 * sd
        assert abs(norms.square().mean().item() - 1) <= 6 * sd / math.sqrt(info.dim) + close
    else:
        assert info.columns == FREE, f"unknown column promise {info.columns!r}"
        # no promise on scale or angle: only that no column is zero or spans the same line
        assert (norms > 0).all()
        cos = (p / norms).t() @ (p / norms) - torch.eye(info.dim, dtype=torch.float64)
        assert cos.abs().max() < 0.999


@pytest.mark.parametrize(("name", "num_params"), CASES)
def test_float32_and_float64_agree(name, num_params):
    basis = built(name, num_params)
    narrow, wide = basis.to(dtype=torch.float32), basis.to(dtype=torch.float64)
    c, g = vectors(basis)
    for b, dtype in ((narrow, torch.float32), (wide, torch.float64)):
        for x in (c, c.float()):  # results in the basis's dtype, whatever the input's
            assert b.expand(x).dtype == dtype
        for x in (g, g.float()):
            assert b.project(x).dtype == dtype
    # the float32 basis is the float64 one rounded once, its products rounded again in float32
    assert rel(narrow.expand(c), wide.expand(c)) <= TOL32
    assert rel(narrow.project(g), wide.project(g)) <= TOL32
    # float32 -> float64 -> float32 is lossless, so the same code gives the same products
    same_products(narrow.to(dtype=torch.float64).to(dtype=torch.float32), narrow)


@pytest.mark.parametrize(("name", "num_params"), CASES)
def test_to_gives_a_copy_with_the_same_products(name, num_params):
    basis = built(name, num_params)
    c, g = vectors(basis)
    before = basis.expand(c), basis.project(g)
    same_products(basis.to(), basis)
    same_products(basis.to("cpu"), basis)
    same_products(basis.to(dtype=out_dtype(basis)), basis)
    same_products(basis.to(torch.device("cpu"), out_dtype(basis)), basis)
    basis.to(dtype=torch.float64)
    # the original is untouched by a cast copy
    assert torch.equal(basis.expand(c), before[0]) and torch.equal(basis.project(g), before[1])


def state_round_trip(state: dict) -> dict:
    """The state through torch.save and torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(("name", "num_params"), CASES)
def test_state_dict_round_trip(name, num_params):
    basis, info = built(name, num_params), BY_NAME[name]
    state = basis.state_dict()
    assert set(state) == {"kind", "numbers", "tensors"}
    json.dumps(state["numbers"])  # plain numbers, JSON-ready
    assert all(isinstance(t, Tensor) for t in state["tensors"].values())
    if not info.restores:
        for s in (state, state_round_trip(state)):
            with pytest.raises((LowdimError, NotImplementedError)):
                basis_from_state(s)
        return
    same_products(basis_from_state(state), basis)
    same_products(basis_from_state(state_round_trip(state)), basis)
    # a cast copy comes back in its own dtype, with the same products
    wide = basis.to(dtype=torch.float64)
    same_products(basis_from_state(state_round_trip(wide.state_dict())), wide)


@pytest.mark.parametrize(("name", "num_params"), CASES)
def test_file_round_trip(name, num_params, tmp_path):
    basis, info = built(name, num_params), BY_NAME[name]
    layout, path = toy_layout(num_params), tmp_path / "basis.safetensors"
    if not info.restores:
        # refused when saving, leaving no file behind that could not be loaded
        with pytest.raises((LowdimError, NotImplementedError)):
            basis.save(path, layout=layout)
        assert not path.exists()
        return
    basis.save(path, layout=layout)
    loaded = load_basis(path, layout=layout)
    assert type(loaded) is type(basis)
    same_products(loaded, basis)
    same_products(load_basis(path), basis)  # no layout: not checked
    other = [{**layout[0], "name": "other.weight"}, *layout[1:]]
    with pytest.raises(LowdimError, match="another architecture"):
        load_basis(path, layout=other)


@pytest.mark.parametrize(("name", "num_params"), CASES)
def test_seeded_kinds_rebuild_from_the_seed_alone(name, num_params, tmp_path):
    basis, info = built(name, num_params), BY_NAME[name]
    state = basis.state_dict()
    path = tmp_path / "numbers-only.safetensors"
    meta = {"kind": state["kind"], "numbers": json.dumps(state["numbers"])}
    save_tensors(path, {}, metadata=meta)  # what a seed-only save writes
    if not info.seeded:
        # its tensors are the basis: without them it is refused, not rebuilt wrong
        assert state["tensors"]
        with pytest.raises(LowdimError):
            load_basis(path)
        return
    assert state["tensors"] == {}
    same_products(load_basis(path), basis)
    same_products(info.build(num_params, SEED), basis)  # a fresh build from the same seed
    other = info.build(num_params, SEED + 1)
    c, g = vectors(basis)
    assert rel(other.expand(c), basis.expand(c)) > 0.1
    assert rel(other.project(g), basis.project(g)) > 0.1


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(BY_NAME))
def test_cuda_copy_matches_the_cpu(name):
    basis = built(name, 1000)
    gpu = basis.to("cuda")
    c, g = vectors(basis)
    x, y = gpu.expand(c.cuda()), gpu.project(g.cuda())
    assert x.device.type == y.device.type == "cuda"
    assert rel(x.cpu(), basis.expand(c)) <= TOL32 and rel(y.cpu(), basis.project(g)) <= TOL32
    out = gpu.expand_add_(g.to("cuda", out_dtype(basis)), c.cuda(), alpha=0.5)
    assert rel(out.cpu(), g + 0.5 * basis.expand(c)) <= TOL32

"""Structured RBD directions: rows of a randomised Hadamard transform, redrawn every step."""

import pytest
import torch
from torch import nn

from lowdim.bases import RedrawnHadamardBasis, hadamard, load_basis, redrawn_basis
from lowdim.bases.compartments import Compartment
from lowdim.bases.redrawn import RedrawnBasis
from lowdim.bases.redrawn_hadamard import random_rows, random_words, unpack_signs
from lowdim.errors import BadArgument
from lowdim.jobs.random_bases import RBDConfig, shifted, train_rbd
from lowdim.optim.rbd import RBD, directions
from lowdim.params import FlatParams
from lowdim.seeding import generator


def matrix(basis) -> torch.Tensor:
    """P (n x d), column by column."""
    eye = torch.eye(basis.dim, dtype=getattr(basis, "dtype", torch.float32))
    return torch.stack([basis.expand(eye[i]) for i in range(basis.dim)], 1)


@pytest.mark.parametrize("n, d", [(600, 40), (1024, 64), (1, 1), (5, 5)])
def test_project_is_the_transpose_of_expand_and_every_direction_has_unit_norm(n, d):
    basis = RedrawnHadamardBasis(n, d, seed=2, step=5, worker=1, compartment=3)
    p = matrix(basis)
    g = torch.randn(n, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(basis.project(g), p.t() @ g, atol=1e-5)
    # entries +-1/sqrt(n) on the n real coordinates: norm 1 exactly, and each parameter's
    # row of P has squared norm d/n, the diagonal of E[P P^T] for Gaussian directions
    assert torch.allclose(p.abs(), torch.full_like(p, n**-0.5), atol=1e-6)
    assert torch.allclose(p.norm(dim=0), torch.ones(d), atol=1e-5)


def test_directions_are_orthonormal_without_padding_and_nearly_so_with_it():
    p = matrix(RedrawnHadamardBasis(1024, 64, seed=1, step=2))
    assert torch.allclose(p.t() @ p, torch.eye(64), atol=1e-5)
    # n = 600 of N = 1024: had the parameters been the first 600 positions, rows differing
    # in the top bit would meet at cosine (1024 - 600) / 600 = 0.71. At random positions the
    # Walsh sums are about sqrt(n (N - n) / N), cosines about 0.03: 0.2 is over 6 of those.
    p = matrix(RedrawnHadamardBasis(600, 40, seed=1, step=2))
    cos = p.t() @ p - torch.eye(40)
    assert cos.abs().max() < 0.2


def test_a_step_regenerated_from_its_key_alone_equals_the_one_used_and_keys_differ():
    key = dict(seed=4, step=7, worker=2, compartment=1)
    first = matrix(RedrawnHadamardBasis(300, 12, **key))
    assert torch.equal(first, matrix(RedrawnHadamardBasis(300, 12, **key)))
    for part, value in (("seed", 5), ("step", 8), ("worker", 3), ("compartment", 0)):
        other = matrix(RedrawnHadamardBasis(300, 12, **(key | {part: value})))
        assert not torch.allclose(other, first), part
    again = RedrawnHadamardBasis(300, 12, **key).at_step(7)
    assert torch.equal(matrix(again), first)


def test_compiled_and_torch_kernels_give_the_same_directions(monkeypatch):
    key = dict(seed=3, step=1)
    g = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    c = torch.randn(30, generator=torch.Generator().manual_seed(2))
    basis = RedrawnHadamardBasis(1000, 30, **key)
    compiled = basis.project(g), basis.expand(c)
    monkeypatch.setattr(hadamard, "native", None)
    basis = RedrawnHadamardBasis(1000, 30, **key)
    for ours, theirs in zip((basis.project(g), basis.expand(c)), compiled, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_float64_takes_the_same_directions_and_save_load_keeps_them(tmp_path):
    basis = RedrawnHadamardBasis(333, 17, seed=6, step=9)
    wide = basis.to(dtype=torch.float64)
    assert wide.project(torch.ones(333, dtype=torch.float64)).dtype == torch.float64
    assert torch.allclose(matrix(wide).float(), matrix(basis), atol=1e-6)
    basis.save(tmp_path / "p.safetensors")
    loaded = load_basis(tmp_path / "p.safetensors")
    assert isinstance(loaded, RedrawnHadamardBasis) and loaded.tensors() == {}
    assert torch.equal(matrix(loaded), matrix(basis))


def test_signs_unpack_bit_by_bit_and_rows_are_distinct():
    words = torch.tensor([0b101, -1], dtype=torch.int32)
    signs = unpack_signs(words, 35, torch.float32)
    assert signs[:4].tolist() == [-1, 1, -1, 1] and signs[32:].tolist() == [-1, -1, -1]
    g = generator("t")
    assert random_words(65, g, "cpu").shape == (3,)
    for size, d in ((16, 16), (1 << 17, 10_000), (8, 1)):
        rows = random_rows(size, d, g, "cpu")
        assert len(rows.unique()) == d and 0 <= int(rows.min()) and int(rows.max()) < size


def test_rbd_with_structured_directions_steps_along_them_per_compartment():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))
    flat = FlatParams(net)
    opt = RBD(flat, 8, 0.5, distribution="hadamard", compartments=[(0, 70, 5), (70, 33, 3)])
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for step in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        before, g = flat.get(), flat.grad.clone()
        p = matrix(opt.basis_at(step))
        assert torch.count_nonzero(p[:70, 5:]) == 0 and torch.count_nonzero(p[70:, :5]) == 0
        opt.step()
        assert torch.allclose(flat.data, before - 0.5 * p @ (p.t() @ g), atol=1e-6)


def test_the_chunked_kinds_refuse_hadamard_with_the_way_to_it():
    with pytest.raises(BadArgument, match="distribution"):
        RedrawnBasis(10, 2, distribution="hadamard")
    with pytest.raises(BadArgument, match="RedrawnHadamardBasis"):
        directions(0, 0, 0, 0, 0, 2, 10, distribution="hadamard")
    block = redrawn_basis([Compartment("a", 0, 10, 2)], distribution="hadamard")
    assert isinstance(block.blocks[0][2], RedrawnHadamardBasis)


def test_shifted_images_move_without_flips_and_other_inputs_are_refused(tmp_path):
    from lowdim.data import Split, load_dataset

    data = load_dataset("digits")
    split = shifted(data.train, 1)
    x = split.x[:64]
    moved = split.augment(x, generator("a"))
    assert moved.shape == x.shape and not torch.equal(moved, x)
    assert moved.min() >= x.min()  # padding is the background value
    with pytest.raises(BadArgument, match="shift"):
        shifted(Split(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)), 1)
    cfg = RBDConfig(dataset="digits", arch="mlp", dim=20, lr=10.0, epochs=1, shift=1)
    summary = train_rbd(cfg, tmp_path / "run", progress=False, **{})
    assert summary["epochs"] == 1
    with pytest.raises(BadArgument, match="shift"):
        train_rbd(RBDConfig(shift=-1), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


@pytest.mark.cuda
def test_cuda_directions_regenerate_from_their_key_and_are_transposes():
    basis = RedrawnHadamardBasis(5000, 100, seed=1, step=3, device="cuda")
    again = RedrawnHadamardBasis(5000, 100, seed=1, step=3, device="cuda")
    g = torch.randn(5000, device="cuda")
    c = torch.randn(100, device="cuda")
    assert torch.equal(basis.project(g), again.project(g))
    assert torch.allclose(basis.project(g) @ c, g @ basis.expand(c), rtol=1e-4, atol=1e-3)

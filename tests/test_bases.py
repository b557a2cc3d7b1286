import numpy as np
import pytest
import torch

from lowdim.bases import (
    DenseBasis,
    PCABasis,
    basis_from_state,
    load_basis,
    pca_of_rows,
    trajectory_pca,
)
from lowdim.errors import LowdimError
from lowdim.trajectory import Trajectory, TrajectoryRecorder


def drifting_rows(t=30, dim=5000, seed=0):
    """Snapshots like a training run's: a common start, a drift, and noise."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(t, dim, generator=g) * torch.linspace(1, 0.1, t)[:, None]
    return torch.randn(dim, generator=g) + 0.05 * steps.cumsum(0)


def test_dense_products_match_the_matrix():
    rows = torch.randn(7, 300, dtype=torch.float64)
    basis = DenseBasis(rows)
    c, g = torch.randn(7, dtype=torch.float64), torch.randn(300, dtype=torch.float64)
    assert basis.num_params == 300 and basis.dim == 7
    assert torch.allclose(basis.expand(c), rows.t() @ c)
    assert torch.allclose(basis.project(g), rows @ g)
    target = torch.randn(300, dtype=torch.float64)
    expected = target + 0.5 * rows.t() @ c
    assert torch.allclose(basis.expand_add_(target, c, alpha=0.5), expected)
    # adjoint: <P c, g> == <c, P^T g>
    assert torch.allclose(basis.expand(c) @ g, c @ basis.project(g))


def test_pca_matches_a_float64_svd():
    rows = drifting_rows()
    basis = pca_of_rows(rows, 10)
    x = rows.double() - rows.double().mean(0)
    _, s, vt = torch.linalg.svd(x, full_matrices=False)
    rel = ((basis.singular_values - s[:10]).abs() / s[:10]).max().item()
    assert rel < 1e-10
    # same directions up to sign
    cos = (basis.rows.double() @ vt[:10].t()).diagonal().abs()
    assert torch.allclose(cos, torch.ones(10, dtype=torch.float64), atol=1e-5)
    assert basis.orthogonality_error() < 1e-5
    assert torch.allclose(basis.explained_variance_ratio, s[:10] ** 2 / (s**2).sum())
    assert torch.equal(basis.anchor, rows[0])
    assert torch.allclose(basis.mean, rows.mean(0), atol=1e-6)


def test_pca_blocks_and_memory_map_give_the_same_basis(tmp_path, monkeypatch):
    rows = drifting_rows(t=12, dim=999)
    rec = TrajectoryRecorder(tmp_path, [{"name": "w", "shape": [999], "offset": 0}])
    for i, r in enumerate(rows):
        rec.append(r, epoch=i, step=i)
    whole = pca_of_rows(rows[2:12:3], 3)
    import lowdim.bases.pca as pca

    monkeypatch.setattr(pca, "BLOCK_BYTES", 8 * 4 * 100)  # blocks of 100 columns
    blocked = trajectory_pca(Trajectory(tmp_path), 3, start=2, end=12, stride=3)
    assert blocked.window == (2, 12, 3)
    assert torch.allclose(blocked.rows, whole.rows, atol=1e-6)
    assert torch.equal(blocked.anchor, rows[2])


def test_pca_sign_is_deterministic():
    rows = drifting_rows(t=8, dim=400)
    a, b = pca_of_rows(rows, 4), pca_of_rows(rows.clone(), 4)
    assert torch.equal(a.rows, b.rows)


@pytest.mark.parametrize("n", [0, 16, 20])
def test_too_many_components_is_a_clear_error(n):
    with pytest.raises(LowdimError, match=f"^n_components {n}"):
        pca_of_rows(drifting_rows(t=16, dim=100), n)


def test_degenerate_window_is_a_clear_error():
    rows = drifting_rows(t=3, dim=50).repeat(4, 1)  # 12 snapshots, 3 distinct
    with pytest.raises(LowdimError, match="span only 2 directions"):
        pca_of_rows(rows, 5)


def test_save_load_and_state_dict_round_trip(tmp_path):
    basis = pca_of_rows(drifting_rows(t=6, dim=120), 3)
    layout = [{"name": "w", "shape": [120], "offset": 0}]
    basis.save(tmp_path / "b.safetensors", layout=layout)
    back = load_basis(tmp_path / "b.safetensors", layout=layout)
    assert isinstance(back, PCABasis) and back.window == basis.window
    for k, v in basis.tensors().items():
        assert torch.equal(back.tensors()[k], v)
    with pytest.raises(LowdimError, match="another architecture"):
        load_basis(tmp_path / "b.safetensors", layout=[{"name": "v", "shape": [120], "offset": 0}])
    torch.save(basis.state_dict(), tmp_path / "b.pt")
    again = basis_from_state(torch.load(tmp_path / "b.pt", weights_only=True))
    assert torch.equal(again.rows, basis.rows)
    (tmp_path / "junk").write_bytes(b"not a basis")
    with pytest.raises(LowdimError, match="cannot read"):
        load_basis(tmp_path / "junk")


def test_to_casts_floating_tensors():
    basis = pca_of_rows(drifting_rows(t=5, dim=50), 2).to(dtype=torch.float64)
    assert basis.rows.dtype == basis.anchor.dtype == torch.float64
    assert np.isclose(basis.orthogonality_error(), 0, atol=1e-6)

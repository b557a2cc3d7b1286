import pytest
import torch
from torch import nn

from lowdim.bases import DenseBasis
from lowdim.compress_zoo import load_subspace_model, save_subspace_model
from lowdim.errors import LowdimError
from lowdim.models import build_model
from lowdim.params import FlatParams
from lowdim.subspace_model import SubspaceModel


def orthonormal_basis(num_params, dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(num_params, dim, generator=g))
    return DenseBasis(q.t().contiguous())


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 5, generator=g), torch.randint(0, 3, (64,), generator=g)


def test_only_c_trains_and_theta_stays_in_the_span():
    net = small_net()
    num = sum(p.numel() for p in net.parameters())
    model = SubspaceModel(net, orthonormal_basis(num, 6))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["coords"]
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = data()
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + 1e-4 * model.l2_penalty()
        loss.backward()
        opt.step()
    delta = (model.theta() - model.anchor).detach()
    assert delta.norm() > 1e-2
    basis = model.basis
    assert (delta - basis.expand(basis.project(delta))).norm() < 1e-5 * delta.norm()
    assert net[1].num_batches_tracked.item() == 30  # buffers stay ordinary buffers


def test_gradient_is_the_projected_full_gradient():
    net = small_net()
    ref = small_net()
    flat = FlatParams(ref)
    basis = orthonormal_basis(flat.numel, 4)
    model = SubspaceModel(net, basis)
    x, y = data()
    nn.functional.cross_entropy(model(x), y).backward()
    nn.functional.cross_entropy(ref(x), y).backward()
    assert torch.allclose(model.coords.grad, basis.project(flat.grad), atol=1e-6)


def test_export_gives_the_same_function():
    net = small_net()
    num = sum(p.numel() for p in net.parameters())
    model = SubspaceModel(net, orthonormal_basis(num, 3))
    with torch.no_grad():
        model.coords.normal_()
    model.eval()
    plain = model.export().eval()
    x, _ = data()
    assert torch.allclose(plain(x), model(x), atol=1e-6)
    assert all(p.requires_grad for p in plain.parameters())


def test_wrong_basis_size_is_a_clear_error():
    with pytest.raises(LowdimError, match="another architecture"):
        SubspaceModel(small_net(), orthonormal_basis(10, 2))


def test_double_precision_moves_the_basis_too():
    net = small_net()
    num = sum(p.numel() for p in net.parameters())
    model = SubspaceModel(net, orthonormal_basis(num, 3)).double()
    assert model.basis.rows.dtype == torch.float64
    x, _ = data()
    model.eval()
    assert model(x.double()).dtype == torch.float64


def test_compressed_file_rebuilds_the_exact_model(tmp_path):
    torch.manual_seed(7)
    net = build_model("mlp", (1, 8, 8), 10)
    num = sum(p.numel() for p in net.parameters())
    model = SubspaceModel(net, orthonormal_basis(num, 12))
    with torch.no_grad():
        model.coords.normal_()
    save_subspace_model(
        tmp_path / "m.safetensors",
        model,
        arch="mlp",
        dataset="digits",
        input_shape=(1, 8, 8),
        num_classes=10,
        anchor_seed=7,
    )
    rebuilt, meta = load_subspace_model(tmp_path / "m.safetensors")
    x = torch.randn(9, 1, 8, 8)
    model.eval()
    assert torch.equal(rebuilt.eval()(x), model(x))
    assert meta["arch"] == "mlp"

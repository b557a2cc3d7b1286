import pytest
import torch
from torch import nn

from lowdim.params import FlatParams


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 3))


def test_views_share_storage_with_the_flat_vector():
    net = small_net()
    before = [p.detach().clone() for p in net.parameters()]
    flat = FlatParams(net)
    assert flat.numel == sum(p.numel() for p in net.parameters())
    for p, b in zip(net.parameters(), before, strict=True):
        assert torch.equal(p, b)  # values kept
    flat.data.add_(1.0)  # writing the flat vector changes the model
    for p, b in zip(net.parameters(), before, strict=True):
        assert torch.allclose(p, b + 1)
    flat.check()


def test_backward_accumulates_into_the_flat_gradient():
    net = small_net()
    flat = FlatParams(net)
    x = torch.randn(8, 5)
    net(x).square().sum().backward()
    expected = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    assert torch.equal(flat.grad, expected) and flat.grad.abs().sum() > 0
    # a torch optimiser that zeroes in place keeps the views
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    opt.zero_grad(set_to_none=False)
    assert flat.grad.abs().sum() == 0
    net(x).square().sum().backward()
    opt.step()
    flat.check()


def test_set_to_none_is_detected():
    net = small_net()
    flat = FlatParams(net)
    torch.optim.SGD(net.parameters(), lr=0.1).zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="set_to_none=False"):
        flat.check()


def test_layout_unflatten_and_frozen_parameters():
    net = small_net()
    net[0].bias.requires_grad_(False)
    flat = FlatParams(net)
    assert "0.bias" not in flat.names
    parts = flat.unflatten(flat.data)
    assert set(parts) == set(flat.names)
    for spec, entry in zip(flat.specs, flat.layout(), strict=True):
        assert entry == {"name": spec.name, "shape": list(spec.shape), "offset": spec.offset}
        assert torch.equal(parts[spec.name], dict(net.named_parameters())[spec.name])
    v = torch.randn(flat.numel)
    flat.set(v)
    assert torch.equal(flat.get(), v)
    with pytest.raises(ValueError):
        flat.set(torch.zeros(3))

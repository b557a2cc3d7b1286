"""Random bases descent: directions from counter-based keys, the update, and training."""

import io

import pytest
import torch
from torch import nn

from lowdim.errors import LowdimError
from lowdim.optim.rbd import RBD, directions
from lowdim.params import FlatParams


def net_and_flat(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))
    return net, FlatParams(net)


def loss_of(net):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    return lambda: nn.functional.cross_entropy(net(x), y)


def materialised(opt, step, worker=0):
    """The step's P (D x d), regenerated from its keys chunk by chunk."""
    blocks = []
    for k, (offset, length, rows) in enumerate(opt.compartments):
        for j in range(-(-rows // opt.chunk_rows)):
            raw, scale = opt.chunk(step, worker, k, j)
            full = torch.zeros(len(raw), opt.flat.numel, dtype=raw.dtype)
            full[:, offset : offset + length] = raw * (
                scale.unsqueeze(-1) if scale.dim() else scale
            )
            blocks.append(full)
    return torch.cat(blocks).t()


@pytest.mark.parametrize(
    "compartments, options",
    [
        (None, {}),
        ([(0, 70, 5), (70, 33, 3)], {}),
        (None, dict(keep_directions=True, normalise="unit")),
        ([(0, 70, 5), (70, 33, 3)], dict(threads=1, distribution="rademacher")),
    ],
)
def test_step_is_minus_lr_p_pt_g_and_bases_change_every_step(compartments, options):
    net, flat = net_and_flat()
    opt = RBD(flat, 8, lr=0.5, compartments=compartments, chunk_rows=3, **options)
    loss = loss_of(net)
    for step in range(3):
        opt.zero_grad()
        loss().backward()
        before, g = flat.get(), flat.grad.clone()
        p = materialised(opt, step)
        opt.step()
        assert torch.allclose(flat.data, before - 0.5 * p @ (p.t() @ g), atol=1e-6)
        assert 0 < opt.last_cosine <= 1
    assert not torch.equal(materialised(opt, 0), materialised(opt, 1))


def test_a_float64_model_steps_along_the_same_directions_in_float64():
    """The keyed stream is drawn in float32 whatever the model, so a float64 model gets the
    same directions, exactly, and steps along them in float64."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3)).double()
    flat = FlatParams(net)
    opt = RBD(flat, 8, lr=0.5, chunk_rows=3)
    _, flat32 = net_and_flat()
    opt32 = RBD(flat32, 8, lr=0.5, chunk_rows=3)
    assert torch.equal(opt.chunk(0, 0, 0, 1)[0], opt32.chunk(0, 0, 0, 1)[0].double())
    p = materialised(opt, 0)
    assert p.dtype == torch.float64  # scaled in float64: within float32's rounding of P
    assert torch.allclose(p, materialised(opt32, 0).double(), rtol=2**-23, atol=0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, generator=g).double(), torch.randint(0, 3, (16,), generator=g)
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    before, grad = flat.get(), flat.grad.clone()
    opt.step()
    assert torch.allclose(flat.data, before - 0.5 * p @ (p.t() @ grad), atol=1e-12)


def test_a_chunk_regenerated_from_its_key_alone_equals_the_one_used():
    _, flat = net_and_flat()
    opt = RBD(flat, 10, lr=1.0, seed=4, worker=2, chunk_rows=4)
    used = [raw * scale for _, _, raw, scale in opt._chunks(7, 2)]
    again = directions(4, 7, 2, 0, 1, 4, flat.numel)
    assert torch.equal(used[1], again)
    other_worker = directions(4, 7, 3, 0, 1, 4, flat.numel)
    other_step = directions(4, 8, 2, 0, 1, 4, flat.numel)
    assert not torch.equal(again, other_worker) and not torch.equal(again, other_step)


def test_results_do_not_depend_on_threads_or_kept_directions():
    results = []
    for options in (dict(threads=1), dict(threads=3), dict(keep_directions=True)):
        net, flat = net_and_flat()
        opt = RBD(flat, 9, lr=0.5, chunk_rows=2, **options)
        loss = loss_of(net)
        for _ in range(3):
            opt.zero_grad()
            loss().backward()
            opt.step()
        results.append(flat.get())
    assert torch.equal(results[0], results[1])
    assert torch.allclose(results[0], results[2], atol=1e-7)


def test_fixed_basis_uses_the_same_directions_at_every_step():
    _, flat = net_and_flat()
    opt = RBD(flat, 6, lr=1.0, fixed_basis=True)
    assert torch.equal(materialised(opt, 0), materialised(opt, 5))


@pytest.mark.parametrize("distribution", ["gaussian", "uniform", "rademacher"])
def test_distributions_have_unit_variance_and_normalisations(distribution):
    d = directions(0, 0, 0, 0, 0, 64, 4096, distribution=distribution, normalise="sqrt")
    assert (d * 64).var().item() == pytest.approx(1.0, rel=0.05)
    unit = directions(0, 0, 0, 0, 0, 8, 500, distribution=distribution, normalise="unit")
    assert torch.allclose(unit.norm(dim=1), torch.ones(8), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, expect",
    [
        (dict(dim=0), "--dim 0 must be between 1 and D"),
        (dict(dim=10_000), "--dim 10000 must be between 1 and D"),
        (dict(dim=4, distribution="cauchy"), "unknown distribution 'cauchy'"),
        (dict(dim=4, compartments=[(0, 50, 2)]), "compartments must tile"),
        (dict(dim=4, mode="gossip"), "unknown mode 'gossip'"),
    ],
)
def test_bad_input(kwargs, expect):
    _, flat = net_and_flat()
    with pytest.raises(LowdimError, match=expect):
        RBD(flat, lr=1.0, **kwargs)


def test_state_dict_round_trip_resumes_exactly():
    net, flat = net_and_flat()
    opt = RBD(flat, 5, lr=0.3)
    loss = loss_of(net)

    def run(o, steps):
        for _ in range(steps):
            o.zero_grad()
            loss().backward()
            o.step()

    run(opt, 2)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "theta": flat.get()}, buf)
    run(opt, 2)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    net2, flat2 = net_and_flat()
    flat2.set(saved["theta"])
    opt2 = RBD(flat2, 5, lr=0.3)
    opt2.load_state_dict(saved["opt"])
    loss2 = loss_of(net2)
    for _ in range(2):
        opt2.zero_grad()
        loss2().backward()
        opt2.step()
    assert torch.equal(flat2.data, flat.data)


def test_redrawn_bases_beat_a_fixed_basis_on_digits():
    from lowdim.data import load_dataset
    from lowdim.models import build_model
    from lowdim.train import fit

    data = load_dataset("digits")
    acc = {}
    for fixed in (False, True):
        torch.manual_seed(0)
        model = build_model("mlp", data.input_shape, data.num_classes)
        opt = RBD(FlatParams(model), 50, lr=10.0, fixed_basis=fixed)
        acc[fixed] = fit(
            model, opt, data.train, data.test, epochs=5, batch_size=32, progress=False
        ).test_acc
    assert acc[False] >= acc[True] + 0.02

"""Random bases descent: directions from counter-based keys, the update, and training."""

import io

import pytest
import torch
from torch import nn

from lowdim.bases import Compartment, compartments_of
from lowdim.errors import LowdimError
from lowdim.optim.rbd import RBD, directions
from lowdim.params import FlatParams


def gaussian_rbd(*args, **kwargs) -> RBD:
    """RBD with directions drawn in chunks (Gaussian unless the test names another): these
    tests check the chunked generator; structured directions have their own tests
    (test_bases_redrawn_hadamard.py)."""
    return RBD(*args, **{"distribution": "gaussian", **kwargs})


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
    for offset, length, child in opt.basis_at(step, worker).blocks:
        for _, raw, scale in child.chunks():
            full = torch.zeros(len(raw), opt.flat.numel, dtype=raw.dtype)
            full[:, offset : offset + length] = raw * (
                scale.unsqueeze(-1) if torch.is_tensor(scale) else scale
            )
            blocks.append(full)
    return torch.cat(blocks).t()


def first_chunk(opt, step, worker, compartment, index):
    child = opt.basis_at(step, worker).blocks[compartment][2]
    return list(child.chunks())[index][1:]


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
    opt = gaussian_rbd(flat, 8, lr=0.5, compartments=compartments, chunk_rows=3, **options)
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
    opt = gaussian_rbd(flat, 8, lr=0.5, chunk_rows=3)
    _, flat32 = net_and_flat()
    opt32 = gaussian_rbd(flat32, 8, lr=0.5, chunk_rows=3)
    assert torch.equal(first_chunk(opt, 0, 0, 0, 1)[0], first_chunk(opt32, 0, 0, 0, 1)[0].double())
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
    opt = gaussian_rbd(flat, 10, lr=1.0, seed=4, worker=2, chunk_rows=4)
    used = [raw * scale for _, raw, scale in opt.basis_at(7, 2).blocks[0][2].chunks()]
    again = directions(4, 7, 2, 0, 1, 4, flat.numel)
    assert torch.equal(used[1], again)
    other_worker = directions(4, 7, 3, 0, 1, 4, flat.numel)
    other_step = directions(4, 8, 2, 0, 1, 4, flat.numel)
    assert not torch.equal(again, other_worker) and not torch.equal(again, other_step)


def test_results_do_not_depend_on_threads_or_kept_directions():
    results = []
    for options in (dict(threads=1), dict(threads=3), dict(keep_directions=True)):
        net, flat = net_and_flat()
        opt = gaussian_rbd(flat, 9, lr=0.5, chunk_rows=2, **options)
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
    opt = gaussian_rbd(flat, 6, lr=1.0, fixed_basis=True)
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
        (dict(dim=0), "^dim 0 must be between 1 and D = 103"),
        (dict(dim=10_000), "^dim 10000 must be between 1 and D"),
        (dict(dim=4, distribution="cauchy"), "^distribution must be one of .*got 'cauchy'"),
        (dict(dim=4, compartments=[(0, 50, 2)]), "^compartments must tile the parameters"),
        (dict(dim=4, compartments=[(0, 50, 2), (50, 53, 3)]), "^dim is 4 but .* sum to 5"),
        (dict(dim=4, mode="gossip"), "^mode must be one of independent, shared"),
        (dict(dim=4, seed=-3), "^seed must be an integer in"),
        (dict(dim=4, chunk_rows=0), "^chunk_rows must be an integer >= 1"),
    ],
)
def test_bad_input(kwargs, expect):
    _, flat = net_and_flat()
    with pytest.raises(LowdimError, match=expect):
        gaussian_rbd(flat, lr=1.0, **kwargs)


def test_state_dict_round_trip_resumes_exactly():
    net, flat = net_and_flat()
    opt = gaussian_rbd(flat, 5, lr=0.3)
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
    opt2 = gaussian_rbd(flat2, 5, lr=0.3)
    opt2.load_state_dict(saved["opt"])
    loss2 = loss_of(net2)
    for _ in range(2):
        opt2.zero_grad()
        loss2().backward()
        opt2.step()
    assert torch.equal(flat2.data, flat.data)


def test_hyperparameters_are_in_the_state_dict_and_load_with_weights_only():
    net, flat = net_and_flat()
    parts = compartments_of(net, "layer", 9, "equal")
    opt = gaussian_rbd(
        flat, None, 0.3, seed=5, distribution="uniform", mode="shared", compartments=parts
    )
    opt.zero_grad()
    loss_of(net)().backward()
    opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    group = saved["param_groups"][0]
    assert (group["seed"], group["distribution"], group["mode"]) == (5, "uniform", "shared")
    assert [Compartment(**c) for c in group["compartments"]] == parts == opt.compartments
    assert group["normalise"] == "sqrt" and group["chunk_rows"] == 64
    assert opt.dim == 9 and saved["state"][0]["step"] == 1


SETTINGS = dict(
    seed=1,
    distribution="rademacher",
    normalise="unit",
    mode="shared",
    fixed_basis=True,
    chunk_rows=3,
    compartments=[(0, 70, 3), (70, 33, 2)],
)


@pytest.mark.parametrize("key", list(SETTINGS))
def test_a_state_saved_with_other_directions_is_refused(key):
    """Loading a state saved under another seed, distribution, ... or compartments would
    continue its run along other directions: refused, naming the setting, and nothing changes."""
    _, flat = net_and_flat()
    saved = gaussian_rbd(flat, 5, lr=0.3, **{key: SETTINGS[key]}).state_dict()
    opt = gaussian_rbd(flat, 5, lr=0.1)
    before = opt.state_dict()
    with pytest.raises(LowdimError, match=f"^the RBD state was saved with {key} "):
        opt.load_state_dict(saved)
    assert opt.state_dict() == before
    old = {
        **saved,
        "param_groups": [{k: v for k, v in saved["param_groups"][0].items() if k != key}],
    }
    with pytest.raises(LowdimError, match=f"^the RBD state has no {key}"):
        opt.load_state_dict(old)


def test_a_state_with_the_same_directions_loads_and_its_lr_is_adopted():
    _, flat = net_and_flat()
    named = compartments_of(flat, "param", 5)
    as_tuples = [(c.offset, c.length, c.dim) for c in named]
    saved = gaussian_rbd(flat, 5, lr=0.3, compartments=as_tuples).state_dict()
    opt = gaussian_rbd(flat, None, lr=0.1, compartments=named)  # names aside, the same compartments
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 0.3


def test_redrawn_bases_beat_a_fixed_basis_on_digits():
    from lowdim.data import load_dataset
    from lowdim.models import build_model
    from lowdim.train import fit

    data = load_dataset("digits")
    acc = {}
    for fixed in (False, True):
        torch.manual_seed(0)
        model = build_model("mlp", data.input_shape, data.num_classes)
        opt = gaussian_rbd(FlatParams(model), 50, lr=10.0, fixed_basis=fixed)
        acc[fixed] = fit(
            model, opt, data.train, data.test, epochs=5, batch_size=32, progress=False
        ).test_acc
    assert acc[False] >= acc[True] + 0.02

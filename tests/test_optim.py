import math

import pytest
import torch
from torch import nn

from lowdim.bases import DenseBasis
from lowdim.errors import LowdimError
from lowdim.optim import PBFGS, PSGD, PAdamW, armijo_accepts, bfgs_update
from lowdim.params import FlatParams


def test_bfgs_update_satisfies_the_secant_equation_and_stays_positive_definite():
    torch.manual_seed(0)
    a = torch.randn(6, 6, dtype=torch.float64)
    hessian = a @ a.t() + 6 * torch.eye(6, dtype=torch.float64)
    h = torch.eye(6, dtype=torch.float64)
    for _ in range(10):
        s = torch.randn(6, dtype=torch.float64)
        y = hessian @ s
        assert bfgs_update(h, s, y)
        assert torch.allclose(h @ y, s)  # secant: H+ y = s
        assert torch.allclose(h, h.t())
        assert torch.linalg.eigvalsh(h).min() > 0
    before = h.clone()
    assert not bfgs_update(
        h, torch.ones(6, dtype=torch.float64), -torch.ones(6, dtype=torch.float64)
    )
    assert torch.equal(h, before)  # negative curvature: skipped


@pytest.mark.parametrize(
    "loss, loss0, t, slope, accepted",
    [
        (0.5, 1.0, 1.0, -1.0, True),  # 0.5 < 1 - 0.4
        (0.7, 1.0, 1.0, -1.0, False),  # 0.7 >= 0.6
        (0.95, 1.0, 0.1, -1.0, True),  # 0.95 < 0.96
        (float("nan"), 1.0, 1e-9, -1.0, False),
        (float("inf"), 1.0, 1e-9, -1.0, False),
    ],
)
def test_armijo(loss, loss0, t, slope, accepted):
    assert armijo_accepts(loss, loss0, t, slope, sigma=0.4) is accepted


def net_and_basis(d=5, seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 8), nn.Tanh()] + ([nn.BatchNorm1d(8)] if bn else []) + [nn.Linear(8, 3)]
    net = nn.Sequential(*layers)
    flat = FlatParams(net)
    q, _ = torch.linalg.qr(torch.randn(flat.numel, d))
    return net, flat, DenseBasis(q.t().contiguous())


def batch(seed=1, n=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def make_closure(net, x, y):
    def closure(backward=True):
        if backward:
            net.zero_grad(set_to_none=False)
        with torch.set_grad_enabled(backward):
            loss = nn.functional.cross_entropy(net(x), y)
        if backward:
            loss.backward()
        return loss

    return closure


def in_span(basis, v):
    """The residual of v after projecting onto the span of the (orthonormal) basis."""
    return (v - basis.expand(basis.project(v))).norm().item()


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("nesterov", [False, True])
def test_psgd_stays_in_the_affine_subspace_and_matches_the_formula(weight_decay, nesterov):
    net, flat, basis = net_and_basis()
    theta0 = flat.get()
    opt = PSGD(flat, basis, lr=0.5, momentum=0.9, weight_decay=weight_decay, nesterov=nesterov)
    x, y = batch()
    closure = make_closure(net, x, y)
    v = torch.zeros(basis.dim)
    expected = theta0.clone()
    for _ in range(5):
        closure()
        gc = basis.project(flat.grad) + weight_decay * basis.project(flat.data)
        v = 0.9 * v + gc
        expected -= 0.5 * basis.expand(gc + 0.9 * v if nesterov else v)
        opt.step()
        assert torch.allclose(flat.data, expected, atol=1e-5)
    assert torch.allclose(opt.state[flat.data]["momentum_buffer"], v, atol=1e-6)
    assert in_span(basis, flat.data - theta0) < 1e-5
    assert (flat.data - theta0).norm() > 1e-3


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_padamw_is_adamw_on_the_coordinates(weight_decay):
    """PAdamW's coordinates are torch.optim.AdamW's on the projected gradients, bit for bit;
    the weights follow theta_0 + P c, and match AdamW written out by hand."""
    net, flat, basis = net_and_basis()
    theta0 = flat.get()
    lr, (b1, b2), eps = 0.05, (0.9, 0.999), 1e-8
    opt = PAdamW(flat, basis, lr=lr, weight_decay=weight_decay)
    c_torch = torch.zeros(basis.dim)
    adamw = torch.optim.AdamW([c_torch], lr=lr, weight_decay=weight_decay)
    c, m, v = (torch.zeros(basis.dim, dtype=torch.float64) for _ in range(3))
    x, y = batch()
    closure = make_closure(net, x, y)
    for t in range(1, 6):
        closure()
        g = basis.project(flat.grad)
        c_torch.grad = g.clone()
        adamw.step()
        g = g.double()  # AdamW by hand, in float64
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        c = c - lr * (m / (1 - b1**t) / ((v / (1 - b2**t)).sqrt() + eps) + weight_decay * c)
        opt.step()
        assert torch.equal(opt.coords, c_torch)
        assert torch.allclose(opt.coords.double(), c, atol=1e-6)
        assert torch.allclose(flat.data, theta0 + basis.expand(opt.coords), atol=1e-6)
    state = opt.state_dict()["state"][0]
    assert set(state) == {"coords", "step", "exp_avg", "exp_avg_sq"}
    for key in ("step", "exp_avg", "exp_avg_sq"):
        assert torch.equal(state[key], adamw.state[c_torch][key])


def test_a_loaded_state_adopts_its_hyperparameters_and_keeps_float64_state():
    """As torch does, `load_state_dict` takes the saved hyperparameters (a schedule's lr, a
    momentum) with the state; P-BFGS's float64 H comes back float64 in a float32 model."""
    net, flat, basis = net_and_basis()
    x, y = batch()
    opt = PBFGS(flat, basis, sigma=0.1, max_tries=5)
    opt.step(make_closure(net, x, y))
    state = opt.state_dict()
    fresh = PBFGS(flat, basis)
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["sigma"] == 0.1 and fresh.param_groups[0]["max_tries"] == 5
    assert fresh.state[flat.data]["hessian"].dtype == torch.float64
    assert torch.equal(fresh.state[flat.data]["hessian"], opt.state[flat.data]["hessian"])


def test_a_state_for_another_model_is_refused_naming_the_size():
    net, flat, basis = net_and_basis()
    opt = PSGD(flat, basis)
    other = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
    flat_other = FlatParams(other)
    q, _ = torch.linalg.qr(torch.randn(flat_other.numel, basis.dim))
    small = PSGD(flat_other, DenseBasis(q.t().contiguous()))
    with pytest.raises(LowdimError, match="num_params"):
        small.load_state_dict(opt.state_dict())


def test_pbfgs_minimises_a_quadratic_in_the_subspace():
    torch.manual_seed(0)
    dim = 40
    w = nn.Parameter(torch.zeros(dim))
    module = nn.Module()
    module.w = w
    flat = FlatParams(module)
    q, _ = torch.linalg.qr(torch.randn(dim, 4))
    basis = DenseBasis(q.t().contiguous())
    a = torch.randn(dim, dim)
    hess = a @ a.t() / dim + torch.eye(dim)
    target = torch.randn(dim)

    def closure(backward=True):
        with torch.set_grad_enabled(backward):
            loss = 0.5 * (w - target) @ hess @ (w - target)
        if backward:
            flat.zero_grad()
            loss.backward()
        return loss

    opt = PBFGS(flat, basis)
    losses = [opt.step(closure).item() for _ in range(15)]
    # the minimum over the subspace: solve (P^T A P) c = P^T A target
    p = basis.rows.t()
    c = torch.linalg.solve(p.t() @ hess @ p, p.t() @ hess @ target)
    best = (0.5 * (p @ c - target) @ hess @ (p @ c - target)).item()
    assert losses[-1] == pytest.approx(best, rel=1e-3)
    assert opt.counters()["hessian_updates"] >= 3
    assert in_span(basis, flat.data) < 1e-5


class Exp(nn.Module):
    def forward(self, x):
        return torch.exp(x)


def test_pbfgs_recovers_from_non_finite_losses():
    net, flat, basis = net_and_basis()
    net.append(Exp())  # logits exp(z): large trial steps overflow to inf, and the loss to nan
    x, y = batch()
    closure = make_closure(net, x, y)
    opt = PBFGS(flat, basis, lr=1e4)
    start = closure().item()
    seen_nonfinite = False
    original = closure

    def watching(backward=True):
        nonlocal seen_nonfinite
        loss = original(backward)
        seen_nonfinite |= not math.isfinite(loss.item())
        return loss

    for _ in range(5):
        opt.step(watching)
    assert seen_nonfinite, "the test did not reach a non-finite loss"
    assert torch.isfinite(flat.data).all()
    assert closure().item() < start

    def poisoned(backward=True):  # a batch whose loss itself is NaN
        loss = closure(backward)
        return loss * float("nan")

    before = flat.get()
    opt.step(poisoned)
    assert torch.equal(flat.data, before)
    assert opt.counters()["nonfinite_events"] == 1
    for _ in range(3):
        opt.step(closure)
    assert torch.isfinite(flat.data).all() and closure().item() < start


def test_pbfgs_failed_search_resets_and_does_not_move():
    net, flat, basis = net_and_basis()
    x, y = batch()
    closure = make_closure(net, x, y)

    def rising(backward=True):  # every trial looks worse than the start
        loss = closure(backward)
        return loss if backward else loss + 1.0

    opt = PBFGS(flat, basis, max_tries=3)
    before = flat.get()
    opt.step(rising)
    assert torch.equal(flat.data, before)
    c = opt.counters()
    assert c["line_search_failures"] == 1 and c["steps_without_move"] == 1 and c["trials"] == 6


def test_pbfgs_restores_batchnorm_statistics_of_rejected_trials():
    net, flat, basis = net_and_basis(bn=True)
    bn = net[2]
    x, y = batch()
    closure = make_closure(net, x, y)
    opt = PBFGS(flat, basis, lr=1e3, module=net)  # big first trials: several rejections
    mean0 = bn.running_mean.clone()
    opt.step(closure)
    assert opt.counters()["trials"] > 1
    with torch.no_grad():  # one forward at the accepted point from the old statistics
        ref = nn.BatchNorm1d(8)
        ref.running_mean.copy_(mean0)
        ref.running_var.fill_(1.0)
        ref(net[1](net[0](x)))
    assert torch.allclose(bn.running_mean, ref.running_mean, atol=1e-6)


def test_pbfgs_counts_one_batchnorm_update_per_step_however_many_trials():
    """BatchNorm(momentum=None) averages its statistics by the batches it has counted: rejected
    trials must not count, or the average takes the wrong factor."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.BatchNorm1d(8, momentum=None))
    net.append(nn.Linear(8, 3))
    flat = FlatParams(net)
    q, _ = torch.linalg.qr(torch.randn(flat.numel, 5))
    opt = PBFGS(flat, DenseBasis(q.t().contiguous()), lr=1e3, module=net)  # many rejections
    bn, seen = net[2], []
    for k in range(4):
        x, y = batch(seed=k)
        opt.step(make_closure(net, x, y))
        with torch.no_grad():  # the batch mean at the accepted point
            seen.append(net[1](net[0](x)).mean(0))
    assert opt.counters()["trials"] > 4
    assert int(bn.num_batches_tracked) == 4
    # the cumulative average of the accepted steps' batch means, and nothing else
    assert torch.allclose(bn.running_mean, torch.stack(seen).mean(0), atol=1e-6)


# Saving, resuming, schedulers, float64, misuse and bad arguments: tests/test_optim_table.py,
# over every optimiser.

"""Every subspace optimiser through the same checks, in the manner of torch's own `optim_db`:
one table of `OptimInfo` entries (each a factory `(model, flat, d, **hyperparameters)` and
what is particular to it), and each test parametrized over the whole table.

Checks: every hyperparameter sits in `param_groups`; the state dict round-trips through
`torch.load(weights_only=True)`; k steps, saved, loaded into a fresh optimiser built with other
hyperparameters and continued for k more equal 2k uninterrupted steps bit for bit (the saved
hyperparameters are adopted, as torch does); a state made for another d is refused, naming
the field; an lr scheduler drives the step; a float64 model works, with its state in float64;
a step after `model.zero_grad()` (gradients to None) or after `model.double()`/`model.to()`
raises instead of moving nothing; bad hyperparameters raise `BadArgument` naming the argument.
"""

from __future__ import annotations

import inspect
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from lowdim.bases import DenseBasis, layer_deviations, per_compartment_basis
from lowdim.errors import BadArgument, LowdimError
from lowdim.optim import PBFGS, PSGD, RBD, PAdamW
from lowdim.params import FlatParams

NAN = float("nan")
STEPS = 3  # k: steps before and after the save


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: threads only contend (and on a busy machine, badly)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- the model, its data and the bases -----------------------------------------------------------
def tiny_model(dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """6 -> 8 -> 3, D = 83 (layer "0": 56 parameters, layer "2": 27); the same every call."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def _batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + i)
    return torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)


BATCHES = [_batch(i) for i in range(2 * STEPS)]


def closure_for(model: nn.Module, i: int) -> Callable[..., torch.Tensor]:
    """Minibatch i's closure, as `lowdim.train.loop` builds it: `closure()` zeroes the
    gradients in place, runs forward and backward and returns the loss;
    `closure(backward=False)` only evaluates."""
    x, y = BATCHES[i]
    x = x.to(next(model.parameters()).dtype)

    def closure(backward: bool = True) -> torch.Tensor:
        if backward:
            model.zero_grad(set_to_none=False)
        with torch.set_grad_enabled(backward):
            loss = nn.functional.cross_entropy(model(x), y)
        if backward:
            loss.backward()
        return loss

    return closure


def run(opt, model: nn.Module, first: int, count: int) -> None:
    for i in range(first, first + count):
        opt.step(closure_for(model, i))


def orthonormal(flat: FlatParams, d: int) -> DenseBasis:
    """d orthonormal columns, in the model's dtype."""
    g = torch.Generator().manual_seed(d)
    q, _ = torch.linalg.qr(torch.randn(flat.numel, d, generator=g, dtype=torch.float64))
    return DenseBasis(q.t().contiguous().to(flat.data.dtype))


def per_layer(flat: FlatParams, d: int):
    """A float32 Gaussian basis per layer, d split over the two by size."""
    return per_compartment_basis("dense", flat.layout(), d, seed=1)


def deviations(flat: FlatParams, d: int):
    """TWA's journal subspace (float32): per layer, the deviations of d / 2 checkpoints."""
    g = torch.Generator().manual_seed(7)
    theta = flat.get().double()
    checkpoints = theta + 0.1 * torch.randn(d // 2, flat.numel, generator=g, dtype=torch.float64)
    return layer_deviations(checkpoints, flat.layout())


# -- the table -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptimInfo:
    """One optimiser of the table.

    make: (model, flat, d, **hyperparameters) -> the optimiser, d its number of coordinates.
    d: the default d. lr: the lr `make` uses (the scheduler test halves it).
    other: hyperparameters that differ from `make`'s, for a fresh optimiser that a saved
        state is loaded into (they must be replaced by the saved ones).
    size_field: what the refusal of a state made for another d names.
    not_hyper: constructor arguments that are not hyperparameters (not in param_groups).
    bad: (hyperparameters, the argument a BadArgument must name) for `make`.
    """

    name: str
    make: Callable
    d: int
    lr: float
    other: dict
    size_field: str = "dim"
    not_hyper: tuple[str, ...] = ()
    bad: tuple[tuple[dict, str], ...] = field(default=())


BAD_LR = (({"lr": -1.0}, "lr"), ({"lr": NAN}, "lr"), ({"lr": math.inf}, "lr"))
BAD_PSGD = (
    *BAD_LR,
    ({"momentum": 1.0}, "momentum"),
    ({"momentum": NAN}, "momentum"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"weight_decay": NAN}, "weight_decay"),
    ({"momentum": 0.0, "nesterov": True}, "nesterov"),
)
BAD_PADAMW = (
    *BAD_LR,
    ({"betas": (1.0, 0.999)}, "betas"),
    ({"betas": (0.9, NAN)}, "betas"),
    ({"betas": (0.9,)}, "betas"),
    ({"eps": 0.0}, "eps"),
    ({"eps": NAN}, "eps"),
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"amsgrad": "yes"}, "amsgrad"),
)
BAD_PBFGS = (
    *BAD_LR,
    ({"sigma": 1.0}, "sigma"),
    ({"sigma": NAN}, "sigma"),
    ({"shrink": 0.0}, "shrink"),
    ({"max_tries": 0}, "max_tries"),
    ({"max_tries": 2.5}, "max_tries"),
    ({"curvature_eps": -1.0}, "curvature_eps"),
    ({"curvature_eps": NAN}, "curvature_eps"),
    ({"reset_every": -1}, "reset_every"),
    ({"residual_alpha": NAN}, "residual_alpha"),
    ({"residual_gamma": 1.0}, "residual_gamma"),
)
RBD_NOT_HYPER = ("dim", "worker", "keep_directions", "threads")


def psgd(basis):
    def make(model, flat, d, **kw):
        return PSGD(flat, basis(flat, d), **{"lr": 0.1, "momentum": 0.9, **kw})

    return make


def psgd_nesterov(basis):
    def make(model, flat, d, **kw):
        kw = {"lr": 0.1, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3, **kw}
        return PSGD(flat, basis(flat, d), **kw)

    return make


def padamw(basis):
    def make(model, flat, d, **kw):
        return PAdamW(flat, basis(flat, d), **{"lr": 0.05, **kw})

    return make


def pbfgs(basis):
    def make(model, flat, d, **kw):
        kw = {"lr": 1.0, "residual_alpha": 1e-3, "module": model, **kw}
        return PBFGS(flat, basis(flat, d), **kw)

    return make


def rbd(model, flat, d, **kw):
    return RBD(flat, **{"dim": d, "lr": 0.1, "seed": 3, **kw})


def rbd_compartments(model, flat, d, **kw):
    # layer "0" (56 parameters) gets d - 2 directions, layer "2" (27) gets 2
    return RBD(flat, None, **{"lr": 0.1, "compartments": [(0, 56, d - 2), (56, 27, 2)], **kw})


OPTIMS = [
    OptimInfo("psgd", psgd(orthonormal), 5, 0.1, {"momentum": 0.5}, bad=BAD_PSGD),
    OptimInfo(
        "psgd-per-layer",
        psgd_nesterov(per_layer),
        6,
        0.1,
        {"momentum": 0.3, "nesterov": False, "weight_decay": 0.1},
        bad=BAD_PSGD,
    ),
    OptimInfo(
        "padamw",
        padamw(orthonormal),
        5,
        0.05,
        {"betas": (0.5, 0.9), "eps": 1e-3, "weight_decay": 0.5, "amsgrad": True},
        bad=BAD_PADAMW,
    ),
    OptimInfo("padamw-layer-deviations", padamw(deviations), 8, 0.05, {"lr": 0.2}, bad=BAD_PADAMW),
    OptimInfo(
        "pbfgs",
        pbfgs(orthonormal),
        5,
        1.0,
        {"sigma": 0.1, "shrink": 0.7, "max_tries": 3, "residual_gamma": 0.5},
        not_hyper=("module",),
        bad=BAD_PBFGS,
    ),
    OptimInfo(
        "pbfgs-per-layer",
        pbfgs(per_layer),
        6,
        1.0,
        {"reset_every": 2, "residual_alpha": 0.0},
        not_hyper=("module",),
        bad=BAD_PBFGS,
    ),
    OptimInfo(
        "rbd",
        rbd,
        5,
        0.1,
        {"lr": 0.7},
        size_field="compartments",
        not_hyper=RBD_NOT_HYPER,
        bad=BAD_LR,
    ),
    OptimInfo(
        "rbd-compartments",
        rbd_compartments,
        5,
        0.1,
        {"lr": 0.7},
        size_field="compartments",
        not_hyper=RBD_NOT_HYPER,
        bad=BAD_LR,
    ),
]
NAMES = [info.name for info in OPTIMS]
BY_NAME = {info.name: info for info in OPTIMS}
BAD_CASES = [
    pytest.param(info.name, kw, argument, id=f"{info.name}-{argument}-{i}")
    for info in OPTIMS
    for i, (kw, argument) in enumerate(info.bad)
]


def build(name: str, dtype: torch.dtype = torch.float32, d: int | None = None, **kw):
    """(model, flat, optimiser): a fresh copy of the tiny model and the named optimiser."""
    info = BY_NAME[name]
    model = tiny_model(dtype)
    flat = FlatParams(model)
    return model, flat, info.make(model, flat, info.d if d is None else d, **kw)


def round_trip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def same(a, b) -> bool:
    """Equal in structure, types and values (tensors bit for bit, dtype included)."""
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and (a == b or a != a and b != b)  # NaN equals NaN here


def hyperparameters(group: dict) -> dict:
    return {k: v for k, v in group.items() if k != "params"}


# -- the checks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_every_hyperparameter_is_in_param_groups(name):
    info = BY_NAME[name]
    _, _, opt = build(name)
    arguments = set(inspect.signature(type(opt).__init__).parameters) - {"self", "flat", "basis"}
    missing = sorted(arguments - set(info.not_hyper) - set(opt.param_groups[0]))
    assert not missing, f"{name}: not in param_groups: {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trips_through_weights_only_load(name):
    model, _, opt = build(name)
    run(opt, model, 0, STEPS)
    state = opt.state_dict()
    assert state["state"], "the state is empty after steps"
    assert same(round_trip(state), state)


@pytest.mark.parametrize("name", NAMES)
def test_resume_in_a_fresh_optimiser_built_otherwise_is_bit_exact(name):
    """k steps, saved; loaded into a fresh model copy and an optimiser built with other
    hyperparameters (the saved ones are adopted) and continued for k more steps: the same
    weights and state as 2k uninterrupted steps."""
    model, flat, opt = build(name)
    run(opt, model, 0, STEPS)
    saved = round_trip({"optimizer": opt.state_dict(), "theta": flat.get()})
    run(opt, model, STEPS, STEPS)

    model2, flat2, opt2 = build(name, **BY_NAME[name].other)
    assert hyperparameters(opt2.param_groups[0]) != hyperparameters(opt.param_groups[0])
    flat2.set(saved["theta"])
    opt2.load_state_dict(saved["optimizer"])
    assert same(hyperparameters(opt2.param_groups[0]), hyperparameters(opt.param_groups[0]))
    run(opt2, model2, STEPS, STEPS)
    assert torch.equal(flat2.data, flat.data)
    assert same(opt2.state_dict(), opt.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_a_state_made_for_another_dimension_is_refused(name):
    info = BY_NAME[name]
    model, _, opt = build(name)
    run(opt, model, 0, 1)
    _, _, other = build(name, d=info.d - 1)
    before = other.state_dict()
    with pytest.raises(LowdimError, match=info.size_field):
        other.load_state_dict(round_trip(opt.state_dict()))
    assert same(other.state_dict(), before)


@pytest.mark.parametrize("name", NAMES)
def test_an_lr_scheduler_drives_the_step(name):
    """LambdaLR halving the lr gives bit for bit the step of an optimiser built with half the
    lr, and not the step of the unscheduled one."""
    lr = BY_NAME[name].lr
    moved = {}
    for case in ("scheduled", "half", "full"):
        model, flat, opt = build(name, lr=lr if case != "half" else lr * 0.5)
        if case == "scheduled":
            torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5)
            assert opt.param_groups[0]["lr"] == lr * 0.5
        run(opt, model, 0, 2)
        moved[case] = flat.get()
    assert torch.equal(moved["scheduled"], moved["half"])
    assert not torch.equal(moved["scheduled"], moved["full"])


@pytest.mark.parametrize("name", NAMES)
def test_a_float64_model_trains_in_float64(name):
    model, flat, opt = build(name, torch.float64)
    start = flat.get()
    loss0 = closure_for(model, 0)(backward=False).item()
    for _ in range(STEPS):
        opt.step(closure_for(model, 0))
    assert flat.data.dtype == torch.float64 and torch.isfinite(flat.data).all()
    assert not torch.equal(flat.data, start)
    assert closure_for(model, 0)(backward=False).item() < loss0
    for key, value in next(iter(opt.state_dict()["state"].values())).items():
        if torch.is_tensor(value) and value.is_floating_point() and value.dim() > 0:
            assert value.dtype == torch.float64, f"{name}: state {key} is {value.dtype}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("misuse", ["zero_grad_to_none", "double", "to_bfloat16"])
def test_a_step_on_views_the_model_no_longer_uses_raises(name, misuse):
    """`model.zero_grad()` (gradients to None) or `model.double()`/`model.to(...)` after
    FlatParams: the step would move nothing, or not the model; it raises, naming the
    parameter, and leaves the flat vector as it was."""
    model, flat, opt = build(name)
    start = flat.get()
    if misuse == "double":
        model.double()
    elif misuse == "to_bfloat16":
        model.to(torch.bfloat16)
    closure = closure_for(model, 0)

    def careless(backward: bool = True) -> torch.Tensor:
        if backward and misuse == "zero_grad_to_none":
            model.zero_grad()  # torch's default: set_to_none=True
        return closure(backward)

    with pytest.raises(RuntimeError, match=r"0\.weight.*detached from the flat"):
        opt.step(careless)
    assert torch.equal(flat.data, start)


@pytest.mark.parametrize("name, kw, argument", BAD_CASES)
def test_a_bad_hyperparameter_names_its_argument(name, kw, argument):
    model = tiny_model()
    flat = FlatParams(model)
    info = BY_NAME[name]
    with pytest.raises(BadArgument) as caught:
        info.make(model, flat, info.d, **kw)
    assert caught.value.argument == argument
    assert "\n" not in str(caught.value)

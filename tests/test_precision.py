"""Lower precision and portability across devices, on the CPU: `fit` under bfloat16 autocast
(the forward in bfloat16, every basis product in float32), float16 autocast with its dynamic
loss scale (overflows skipped, the scale checkpointed), models converted to bfloat16 or
float16 stepping in their own dtype, and the rule
for random directions, which are drawn on the device that uses them: an RBD state or a saved
redrawn basis says where, and is refused on another device type. tests/test_cuda.py runs the
same paths on a GPU."""

import json
import math

import pytest
import torch
from torch import nn

from lowdim.bases import RedrawnBasis, RedrawnHadamardBasis, load_basis, random_basis
from lowdim.errors import BadArgument, LowdimError
from lowdim.optim import PSGD
from lowdim.optim.rbd import RBD
from lowdim.params import FlatParams
from lowdim.train import fit


def classifier(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 4)).to(dtype)


def batches(dtype=torch.float32, n=6):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(12, 4, generator=g)
    out = []
    for _ in range(n):
        x = torch.randn(32, 12, generator=g)
        out.append((x.to(dtype), (x @ w).argmax(1)))
    return out


def test_bf16_autocast_runs_the_forward_in_bf16_and_the_step_in_float32():
    model = classifier()
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    flat = FlatParams(model)
    start = flat.get()
    opt = PSGD(flat, random_basis("fastfood", flat.numel, 24, seed=1), lr=0.5)
    data = batches()
    before = fit(model, opt, data, data, epochs=0, progress=False).train_loss
    seen.clear()
    result = fit(model, opt, data, data, epochs=3, progress=False, autocast=torch.bfloat16)
    # each epoch: every training forward in bfloat16, then the evaluation in float32
    epoch = [torch.bfloat16] * len(data) + [torch.float32] * len(data)
    assert seen == epoch * 3
    assert flat.data.dtype == flat.grad.dtype == torch.float32
    assert result.train_loss < before
    # the steps stayed in the subspace: theta - theta_0 = P c for some c (least squares)
    moved = (flat.get() - start).double()
    p = torch.stack([opt.basis.expand(e) for e in torch.eye(24)], 1).double()
    c = torch.linalg.lstsq(p, moved.unsqueeze(1)).solution
    assert (p @ c).squeeze(1).sub(moved).norm() < 1e-5 * moved.norm()


class Loud(nn.Module):
    """Logits 1000 times a linear map's: at float16's initial loss scale 2^16 the gradient
    reaching that map is 1000 * 2^16 / 32 = 2e6, past float16's largest number, 65504."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(12, 4)

    def forward(self, x):
        return 1000 * self.linear(x)


def progress(run_dir):
    return json.loads((run_dir / "checkpoint" / "state.json").read_text())["progress"]


def test_float16_autocast_scales_the_loss_skips_overflows_and_resumes_exactly(tmp_path):
    data = batches(n=8)
    ends = []
    for name, stops in (("whole", (2,)), ("cut", (1, 2))):
        for epochs in stops:  # the resumed run starts from fresh objects, as after a kill
            model = Loud()
            opt = torch.optim.SGD(model.parameters(), lr=1e-4)
            seen = []
            model.linear.register_forward_hook(lambda m, i, o, seen=seen: seen.append(o.dtype))
            result = fit(
                model,
                opt,
                data,
                data,
                epochs=epochs,
                run_dir=tmp_path / name,
                resume=True,
                progress=False,
                autocast=torch.float16,
            )
        ends.append((model.linear.weight.detach().clone(), progress(tmp_path / name)))
        assert seen[0] == torch.float16 and model.linear.weight.dtype == torch.float32
        assert math.isfinite(result.train_loss)
    (whole, kept), (cut, kept_cut) = ends
    # halved from 2^16 at every overflow until the gradients fit: at least 5 skipped steps
    assert kept["loss_scale"]["scale"] <= 2.0**11
    assert torch.isfinite(whole).all() and not torch.equal(whole, Loud().linear.weight)
    assert torch.equal(whole, cut) and kept["loss_scale"] == kept_cut["loss_scale"]


def test_a_damaged_loss_scale_in_a_checkpoint_is_refused(tmp_path):
    data = batches()
    model = Loud()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    options = dict(run_dir=tmp_path, resume=True, progress=False, autocast=torch.float16)
    fit(model, opt, data, data, epochs=1, **options)
    state = tmp_path / "checkpoint" / "state.json"
    record = json.loads(state.read_text())
    record["progress"]["loss_scale"] = {"scale": -1.0, "good_steps": 3}
    state.write_text(json.dumps(record))
    with pytest.raises(LowdimError, match="progress.loss_scale"):
        fit(Loud(), opt, data, data, epochs=2, **options)


def test_other_autocast_dtypes_are_refused():
    model = classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(BadArgument, match="autocast"):
        fit(model, opt, batches(), [], epochs=1, progress=False, autocast=torch.float64)
    with pytest.raises(BadArgument, match="autocast must be one of bf16, fp16"):
        fit(model, opt, batches(), [], epochs=1, progress=False, autocast="fp32")
    fit(model, opt, batches(), [], epochs=1, progress=False, autocast="bf16")  # names work too


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["psgd-fastfood", "psgd-sparse", "rbd-hadamard"])
def test_a_half_model_steps_in_its_own_dtype(dtype, method):
    model = classifier(dtype)
    flat = FlatParams(model)
    start = flat.get().clone()
    if method == "rbd-hadamard":
        opt = RBD(flat, 16, 2.0, seed=2)
    else:
        kind = method.split("-")[1]
        opt = PSGD(flat, random_basis(kind, flat.numel, 16, seed=1), lr=0.5)
    data = batches(dtype)
    result = fit(model, opt, data, data, epochs=2, progress=False)
    assert flat.data.dtype == dtype and torch.isfinite(flat.data).all()
    assert (flat.get() - start).abs().max() > 0
    assert result.train_loss == result.train_loss  # finite, not NaN


def test_an_rbd_state_from_another_device_type_is_refused():
    model = classifier()
    flat = FlatParams(model)
    opt = RBD(flat, 8, 1.0, seed=2, distribution="gaussian")
    state = opt.state_dict()
    assert state["param_groups"][0]["device_type"] == "cpu"
    state["param_groups"][0]["device_type"] = "cuda"
    with pytest.raises(LowdimError, match="device_type 'cuda'"):
        RBD(flat, 8, 1.0, seed=2, distribution="gaussian").load_state_dict(state)
    # a state saved before the device type was kept is a CPU one
    del state["param_groups"][0]["device_type"]
    RBD(flat, 8, 1.0, seed=2, distribution="gaussian").load_state_dict(state)


@pytest.mark.parametrize("cls", [RedrawnBasis, RedrawnHadamardBasis])
def test_a_redrawn_basis_file_records_and_keeps_its_device_type(tmp_path, monkeypatch, cls):
    basis = cls(3000, 20, seed=4, step=7)
    basis.save(tmp_path / "cpu.safetensors")
    again = load_basis(tmp_path / "cpu.safetensors")
    c = torch.randn(20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.expand(c), basis.expand(c))
    assert basis.numbers()["drawn_on"] == "cpu"
    # a file whose directions were drawn on a GPU: refused where there is none, never
    # rebuilt from the CPU's generators (another stream)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cls, "numbers", lambda self: {**self._key(), "drawn_on": "cuda"})
    basis.save(tmp_path / "cuda.safetensors")
    with pytest.raises(LowdimError, match="drawn on a CUDA device"):
        load_basis(tmp_path / "cuda.safetensors")


def test_the_commands_take_autocast_and_a_resume_must_keep_it(tmp_path, capsys):
    from lowdim.cli import main

    run = str(tmp_path / "sgd")
    sgd = "train-sgd --quiet --dataset digits --arch mlp --epochs 8 --save-dir".split()
    assert main([*sgd, run, "--autocast", "bf16"]) == 0
    assert json.loads((tmp_path / "sgd" / "config.json").read_text())["autocast"] == "bf16"
    psgd = "train-psgd --quiet --n-components 5 --epochs 1 --lr 0.3 --save-dir".split()
    assert main([*psgd, run, "--autocast", "fp16"]) == 0
    summary = json.loads((tmp_path / "sgd" / "psgd" / "summary.json").read_text())
    assert summary["test_acc"] > 0.5  # chance is 0.1
    capsys.readouterr()
    assert main([*sgd, run, "--autocast", "fp16", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "autocast" in err[0]

"""The hot paths on a GPU (skipped without one; `make gpu-suite` runs them with `pytest -m
cuda`): the training loop with its data on the device under bfloat16 autocast, the blocked
Hadamard transform, PCA's Gram accumulation, a P-BFGS step with its line search, RBD's
directions regenerated from their keys, a redrawn basis saved and loaded on the GPU, and a
checkpointed run resumed there. Each is compared with the CPU where the two must agree."""

import pytest
import torch
from torch import nn

from lowdim.bases import RedrawnBasis, fwht, load_basis, pca_of_rows, random_basis
from lowdim.data import load_dataset
from lowdim.errors import LowdimError
from lowdim.models import build_model
from lowdim.optim import PBFGS, PSGD
from lowdim.optim.rbd import RBD
from lowdim.params import FlatParams
from lowdim.train import fit

pytestmark = pytest.mark.cuda
GPU = torch.device("cuda")


def digits_mlp(device):
    torch.manual_seed(0)
    return build_model("mlp", (1, 8, 8), 10, hidden=(32,)).to(device)


def test_fit_on_the_gpu_in_bf16_autocast_trains_in_a_fastfood_subspace():
    data = load_dataset("digits")
    model = digits_mlp(GPU)
    flat = FlatParams(model)
    basis = random_basis("fastfood", flat.numel, 40, seed=1, device=GPU)
    opt = PSGD(flat, basis, lr=0.5)
    result = fit(
        model,
        opt,
        data.train,
        data.test,
        epochs=3,
        batch_size=64,
        device=GPU,
        progress=False,
        autocast=torch.bfloat16,
    )
    assert flat.data.is_cuda and flat.data.dtype == torch.float32
    assert result.test_acc > 0.5  # chance is 0.1


def test_blocked_hadamard_transform_matches_the_cpu():
    x = torch.randn(5, 1 << 14, generator=torch.Generator().manual_seed(0))
    got = fwht(x.to(GPU))
    assert got.is_cuda
    # entries are sums of 2^14 terms of size ~1: float32 rounding ~ sqrt(2^14) * 6e-8 * 128
    assert torch.allclose(got.cpu(), fwht(x), atol=1e-3)


def test_pca_accumulates_its_gram_matrix_on_the_gpu_and_matches_the_cpu():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(9, 20_000, generator=g).cumsum(0)
    cpu = pca_of_rows(w, 4)
    gpu = pca_of_rows(w.to(GPU), 4)
    assert gpu.rows.is_cuda and gpu.anchor.is_cuda
    assert torch.allclose(gpu.rows.cpu(), cpu.rows, atol=1e-4)  # signs are fixed alike
    assert torch.allclose(gpu.explained_variance_ratio.cpu(), cpu.explained_variance_ratio)


def test_pbfgs_steps_on_the_gpu_match_the_cpu():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(64, 10, generator=g, dtype=torch.float64), torch.randint(0, 3, (64,))
    w = torch.randn(7, 10 * 16 + 16 + 16 * 3 + 3, generator=g)
    thetas = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3)).double().to(device)
        flat = FlatParams(net)
        basis = pca_of_rows(w.cumsum(0).to(device), 4, dtype=torch.float64)
        opt = PBFGS(flat, basis, module=net)
        xd, yd = x.to(device), y.to(device)

        def closure(backward=True, net=net, opt=opt, xd=xd, yd=yd):
            if backward:
                opt.zero_grad()
            with torch.set_grad_enabled(backward):
                loss = nn.functional.cross_entropy(net(xd), yd)
                if backward:
                    loss.backward()
            return loss.detach()

        for _ in range(5):
            opt.step(closure)
        thetas[device] = flat.get().cpu()
    # float64 throughout: the two devices' sums differ by ~1e-15 relative, far from any
    # Armijo decision, so the same trials are accepted
    assert torch.allclose(thetas["cuda"], thetas["cpu"], atol=1e-9)


@pytest.mark.parametrize("distribution", ["gaussian", "hadamard"])
def test_rbd_directions_regenerate_from_their_keys_on_the_gpu(distribution):
    data = load_dataset("digits")
    runs = []
    for _ in range(2):
        model = digits_mlp(GPU)
        flat = FlatParams(model)
        opt = RBD(flat, 50, 2.0, seed=3, distribution=distribution)
        fit(model, opt, data.train, data.test, epochs=1, batch_size=64, device=GPU, progress=False)
        runs.append((flat.get(), opt.state_dict()))
    assert torch.allclose(runs[0][0], runs[1][0], atol=1e-6)
    assert runs[0][1]["param_groups"][0]["device_type"] == "cuda"
    cpu = RBD(FlatParams(digits_mlp("cpu")), 50, 2.0, seed=3, distribution=distribution)
    with pytest.raises(LowdimError, match="device_type"):
        cpu.load_state_dict(runs[0][1])


def test_a_redrawn_basis_saved_on_the_gpu_loads_there_with_the_same_directions(tmp_path):
    basis = RedrawnBasis(5000, 30, seed=4, step=2, device=GPU)
    basis.save(tmp_path / "b.safetensors")
    again = load_basis(tmp_path / "b.safetensors")
    c = torch.randn(30, device=GPU)
    assert again.device.type == "cuda"
    assert torch.allclose(again.expand(c), basis.expand(c), atol=1e-6)


def test_a_run_resumed_on_the_gpu_ends_where_an_uninterrupted_one_does(tmp_path):
    data = load_dataset("digits")
    ends = []
    for name, stops in (("whole", (2,)), ("cut", (1, 2))):
        for epochs in stops:  # the resumed run starts from fresh objects, as after a kill
            model = digits_mlp(GPU)
            flat = FlatParams(model)
            opt = PSGD(flat, random_basis("sparse", flat.numel, 40, seed=1, device=GPU), lr=0.5)
            fit(
                model,
                opt,
                data.train,
                data.test,
                epochs=epochs,
                batch_size=64,
                device=GPU,
                run_dir=tmp_path / name,
                resume=True,
                flat=flat,
                progress=False,
            )
        ends.append(flat.get())
    assert torch.allclose(ends[0], ends[1], atol=1e-6)


@pytest.mark.parametrize(
    "method", ["psgd-dense", "psgd-fastfood", "psgd-sparse", "rbd-gaussian", "rbd-hadamard"]
)
def test_a_subspace_step_never_waits_for_the_gpu(method):
    """No host synchronisation inside a step: torch raises on any (an .item(), a copy to the
    host, a data-dependent shape) while its sync debug mode is "error"."""
    model = digits_mlp(GPU)
    flat = FlatParams(model)
    family, kind = method.split("-")
    if family == "psgd":
        opt = PSGD(flat, random_basis(kind, flat.numel, 40, seed=1, device=GPU), lr=0.5)
    else:
        opt = RBD(flat, 40, 1.0, seed=1, distribution=kind)
    g = torch.Generator(device=GPU).manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=g, device=GPU)
    y = torch.randint(0, 10, (64,), generator=g, device=GPU)

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # the first step fills the caches (Hadamard embeddings, sign words)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")

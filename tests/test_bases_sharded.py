"""A basis sharded along the parameter axis over two gloo processes acts exactly like the whole
basis, holds half of it per process, and is extracted without any process seeing a whole row."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lowdim.bases.pca import pca_of_rows
from lowdim.bases.sharded import shard_bounds, shard_pca_basis, shard_span_basis
from lowdim.bases.span import span_of_rows
from lowdim.optim import PSGD
from lowdim.params import FlatParams

N, STEPS = 7, 5


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 40), nn.Tanh(), nn.Linear(40, 3))


def checkpoints(num_params):
    g = torch.Generator().manual_seed(2)
    return torch.randn(num_params, generator=g) + 1e-3 * torch.randn(N, num_params, generator=g)


def batches():
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(16, 10, generator=g), torch.randint(0, 3, (16,), generator=g))
        for _ in range(STEPS)
    ]


def train(model, basis, anchor):
    flat = FlatParams(model)
    flat.set(anchor.float())
    opt = PSGD(flat, basis, lr=0.5, momentum=0.9, weight_decay=1e-3)
    for x, y in batches():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return flat.get()


def worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model = net()
    D = sum(p.numel() for p in model.parameters())
    lo, hi = shard_bounds(D, 2, rank)
    w = checkpoints(D)
    result = {}
    for kind in ("span", "pca"):
        if kind == "span":
            basis = shard_span_basis(w[:, lo:hi], lo, hi, D, (0, N, 1))
        else:
            basis = shard_pca_basis(w[:, lo:hi].numpy(), 4, lo, hi, D, (0, N, 1))
        v = torch.randn(D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        result[kind] = {
            "projector_v": basis.expand(basis.project(v)),
            "theta": train(net(), basis, basis.anchor),
            "bytes": basis.bytes_held(),
            "ortho": basis.orthogonality_error(),
            "anchor": basis.anchor,
        }
        if kind == "pca":
            result[kind]["evr"] = basis.explained_variance_ratio
    torch.save(result, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_sharded_bases_give_the_same_steps_with_half_the_memory(tmp_path, free_port):
    mp.spawn(worker, args=(free_port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    D = sum(p.numel() for p in net().parameters())
    w = checkpoints(D)
    whole = {"span": span_of_rows(w), "pca": pca_of_rows(w.numpy(), 4)}
    v = torch.randn(D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for kind, full in whole.items():
        a, b = r0[kind], r1[kind]
        assert torch.equal(a["theta"], b["theta"])  # identical on both processes
        expect_v = full.expand(full.project(v)).double()
        assert torch.allclose(a["projector_v"].double(), expect_v, atol=1e-5)
        assert torch.allclose(a["theta"], train(net(), full, full.anchor), atol=1e-6)
        assert torch.allclose(a["anchor"].double(), full.anchor.double())
        full_bytes = sum(t.numel() * t.element_size() for t in full.tensors().values())
        assert max(a["bytes"], b["bytes"]) <= full_bytes / 2 + 256  # + the few small tensors
    assert r0["span"]["ortho"] < 1e-10
    assert torch.allclose(r0["pca"]["evr"], whole["pca"].explained_variance_ratio)

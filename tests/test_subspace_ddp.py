"""SubspaceModel under DistributedDataParallel: two gloo processes on loopback."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lowdim.bases import random_basis
from lowdim.subspace_model import SubspaceModel

STEPS, DIM = 4, 16


def make_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))
    return SubspaceModel(net, random_basis("fastfood", 123, DIM, seed=5))


def batches():
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g))
        for _ in range(STEPS)
    ]


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model = DistributedDataParallel(make_model())
    assert "anchor" in model.parameters_to_ignore  # D numbers never sent per step
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for x, y in batches():  # each rank takes its half of every batch
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[rank::2]), y[rank::2]).backward()
        opt.step()
    torch.save(model.module.coords.detach(), f"{out}/coords{rank}.pt")
    dist.destroy_process_group()


def test_two_workers_match_one_process_and_share_only_d_numbers(tmp_path, free_port):
    mp.spawn(worker, args=(free_port, str(tmp_path)), nprocs=2, join=True)
    c0, c1 = (torch.load(tmp_path / f"coords{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(c0, c1)  # identical on both workers after every step
    model = make_model()
    assert [p.numel() for p in model.parameters() if p.requires_grad] == [DIM]  # all DDP syncs
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for x, y in batches():  # one process, the same global batches
        opt.zero_grad()
        loss = 0.5 * sum(nn.functional.cross_entropy(model(x[r::2]), y[r::2]) for r in (0, 1))
        loss.backward()
        opt.step()
    assert torch.allclose(c0, model.coords.detach(), atol=1e-6)

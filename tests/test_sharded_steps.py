"""Sharded P-SGD (DLDR's PCA basis) and TWA (the span of checkpoints) through `fit` on 2 and 4
gloo processes: per step each process sends (R-1)/R D numbers in the reduce-scatter's ring, D/R
to the all-gather and d to the all-reduce (plus two, the loss and the example count), where
plain data parallelism hands the all-reduce D, and the weights equal one process's on the
global batch; sharded P-BFGS's too. The model is not from lowdim's zoo, and its D is divisible
by neither 2 nor 4, so the padded shares are covered."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lowdim.bases.pca import pca_of_rows
from lowdim.bases.sharded import shard_bounds, shard_pca_basis, shard_size, shard_span_basis
from lowdim.bases.span import span_of_rows
from lowdim.optim import PBFGS, PSGD
from lowdim.params import FlatParams
from lowdim.train import fit

N, STEPS, GLOBAL_BATCH, PCA_DIM = 7, 4, 24, 4
COLLECTIVES = ("all_reduce", "all_gather", "isend", "broadcast", "reduce_scatter_single")


class Gate(nn.Module):
    """A gated two-layer net (not lowdim's zoo): D = 10*40 + 40 + 10*40 + 40 + 40*3 + 3."""

    def __init__(self) -> None:
        super().__init__()
        self.value, self.gate, self.out = nn.Linear(10, 40), nn.Linear(10, 40), nn.Linear(40, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.value(x)) * torch.sigmoid(self.gate(x)))


def net() -> nn.Module:
    torch.manual_seed(0)
    return Gate()


D = sum(p.numel() for p in net().parameters())


def checkpoints() -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    start = 0.3 * torch.randn(D, generator=g)
    return start + 0.05 * torch.randn(N, D, generator=g).cumsum(0)


def global_batches() -> list:
    g = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(GLOBAL_BATCH, 10, generator=g),
            torch.randint(0, 3, (GLOBAL_BATCH,), generator=g),
        )
        for _ in range(STEPS)
    ]


class CountingPSGD(PSGD):
    """P-SGD that records the numbers this process handed to collectives during each step
    (the closure's exchange included)."""

    def __init__(self, *args, sent: list[int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent, self.per_step = sent, []

    def step(self, closure=None):
        before = sum(self.sent)
        loss = super().step(closure)
        self.per_step.append(sum(self.sent) - before)
        return loss


def train(basis, batches, sent) -> tuple[torch.Tensor, list[int]]:
    model = net()
    flat = FlatParams(model)
    flat.set(basis.anchor.float())
    opt = CountingPSGD(flat, basis, lr=0.5, momentum=0.9, weight_decay=1e-3, sent=sent)
    fit(model, opt, batches, batches, epochs=1, progress=False)
    return flat.get(), opt.per_step


def train_pbfgs(basis, batches) -> torch.Tensor:
    """P-BFGS (its line search evaluates the loss across processes, and each trial gathers a
    step) through `fit`."""
    model = net()
    flat = FlatParams(model)
    flat.set(basis.anchor.float())
    fit(model, PBFGS(flat, basis, module=model), batches, batches, epochs=1, progress=False)
    return flat.get()


def counted(collective, sent: list[int]):
    """`collective`, recording the size of what it is handed (the input of an all-gather or a
    reduce-scatter, which take the output first)."""
    takes_output_first = collective.__name__ in ("all_gather", "reduce_scatter_single")

    def call(tensor, *args, **kwargs):
        sent.append((args[0] if takes_output_first else tensor).numel())
        return collective(tensor, *args, **kwargs)

    return call


def worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    sent: list[int] = []
    for name in COLLECTIVES:  # count every number this process hands to a collective
        setattr(dist, name, counted(getattr(dist, name), sent))
    share = GLOBAL_BATCH // world
    mine = [
        (x[rank * share : (rank + 1) * share], y[rank * share : (rank + 1) * share])
        for x, y in global_batches()
    ]
    lo, hi = shard_bounds(D, world, rank)
    w = checkpoints()
    sharded = {
        "pca": shard_pca_basis(w[:, lo:hi].numpy(), PCA_DIM, lo, hi, D, (0, N, 1)),
        "twa": shard_span_basis(w[:, lo:hi], lo, hi, D, (0, N, 1)),
    }
    result = {}
    for method, basis in sharded.items():
        theta, per_step = train(basis, mine, sent)
        result[method] = {"theta": theta, "per_step": per_step, "d": basis.dim}
    result["pbfgs"] = {"theta": train_pbfgs(sharded["pca"], mine)}
    # plain data parallelism with the whole basis, for the count beside it
    result["plain"] = {"per_step": train(pca_of_rows(w.numpy(), PCA_DIM), mine, sent)[1]}
    torch.save(result, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_steps_send_d_plus_a_slice_and_equal_one_process(tmp_path, free_port, world):
    mp.spawn(worker, args=(world, free_port, str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    w = checkpoints()
    whole = {"pca": pca_of_rows(w.numpy(), PCA_DIM), "twa": span_of_rows(w)}
    share = shard_size(D, world)  # ceil(D/R): D is padded to R shares
    assert share * world > D  # the padding is exercised
    for method, basis in whole.items():
        d = basis.dim
        assert ranks[0][method]["d"] == d
        for r in ranks:
            # the ring reduce-scatter of the gradient (R-1 sends of a share), the d partial
            # products, the all-gathered share, and the loop's (loss, examples)
            assert r[method]["per_step"] == [(world - 1) * share + d + share + 2] * STEPS
            assert torch.equal(r[method]["theta"], ranks[0][method]["theta"])
        # one process on the global batches, the whole basis: the same steps, up to the order
        # of float32 sums (the gradient's terms summed in R parts, then over processes); the
        # weights are O(1) and move by about 0.1 in these 4 steps, so 1e-5 is 100 float32 ulps
        # of them and far below a step
        one, _ = train(basis, global_batches(), [])
        assert torch.allclose(ranks[0][method]["theta"], one, atol=1e-5), method
        assert (one - basis.anchor.float()).abs().max() > 1e-2  # the steps moved the weights
    # P-BFGS: the same trials accepted, so the same weights up to the sums' order (its steps
    # are quasi-Newton, larger than P-SGD's: 1e-4 is still far below a step)
    pbfgs = train_pbfgs(whole["pca"], global_batches())
    assert all(torch.equal(r["pbfgs"]["theta"], ranks[0]["pbfgs"]["theta"]) for r in ranks)
    assert torch.allclose(ranks[0]["pbfgs"]["theta"], pbfgs, atol=1e-4)
    assert (pbfgs - whole["pca"].anchor.float()).abs().max() > 1e-2
    # data parallelism with the whole basis all-reduces the gradient: D numbers (+2)
    assert ranks[0]["plain"]["per_step"] == [D + 2] * STEPS

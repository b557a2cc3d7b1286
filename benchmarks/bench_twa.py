"""TWA's subspace against DLDR's, and a basis sharded over processes.

1. Extraction, side by side on the same window (41 nearly collinear snapshots of a
   ResNet-20-sized network, D = 269,722: a random walk of small steps): TWA's span (thin
   Householder QR in float64) against DLDR's PCA (40 components, Gram matrix in float64), in
   seconds, with the orthogonality error max |P^T P - I| of each.
2. Sharding: the same TWA basis built and held by R = 1, 2, 4 gloo processes on this machine
   (tall-skinny QR): bytes of P per process, seconds to extract, and what one projected step
   hands to the collectives, against plain data parallelism.
3. Epochs on ResNet-20 CIFAR shapes (D = 269,722, d = 40, 3x32x32 inputs, 2 gloo processes of
   one thread, 32 examples each per step): seconds per epoch of plain data-parallel SGD, of
   P-SGD with the whole basis on every process, and of P-SGD with the basis sharded (gradient
   reduce-scattered, d partial products all-reduced, the step's slices all-gathered), in
   interleaved rounds; the median of each, and its ratio to SGD's.

    python benchmarks/bench_twa.py
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from common import write_result

from lowdim.bases.pca import pca_of_rows
from lowdim.bases.sharded import shard_bounds, shard_pca_basis, shard_size, shard_span_basis
from lowdim.bases.span import span_of_rows
from lowdim.models import build_model
from lowdim.optim import PSGD
from lowdim.params import FlatParams
from lowdim.train import fit

D, N = 269_722, 41


def window_block(lo: int, hi: int) -> torch.Tensor:
    """Columns [lo, hi) of the synthetic window, generated per column block so that every
    process can make its own slice alone."""
    g = torch.Generator().manual_seed(0)
    start = torch.randn(D, generator=g)[lo:hi]
    steps = 1e-3 * torch.randn(N, D, generator=g)[:, lo:hi]
    return start + steps.cumsum(0)


def extraction() -> list[dict]:
    w = window_block(0, D)
    rows = []
    for name, make in (
        ("twa span (QR, float64)", lambda: span_of_rows(w)),
        ("dldr pca (40 components)", lambda: pca_of_rows(w.numpy(), 40)),
    ):
        make()  # warm-up
        start = time.perf_counter()
        basis = make()
        seconds = time.perf_counter() - start
        rows.append(
            {
                "kind": "extraction",
                "basis": name,
                "snapshots": N,
                "D": D,
                "d": basis.dim,
                "seconds": round(seconds, 3),
                "orthogonality_error": float(f"{basis.orthogonality_error():.3g}"),
                "bytes": basis.bytes_held(),
            }
        )
        print(rows[-1], flush=True)
    return rows


def shard_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, torch.get_num_threads() // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    lo, hi = shard_bounds(D, world, rank)
    block = window_block(lo, hi).double()
    dist.barrier()
    start = time.perf_counter()
    basis = shard_span_basis(block, lo, hi, D, (0, N, 1))
    seconds = time.perf_counter() - start
    torch.save({"bytes": basis.bytes_held(), "seconds": seconds, "d": basis.dim}, f"{out}/{rank}")
    dist.destroy_process_group()


def spawned(worker, world: int) -> list:
    """What each of `world` gloo processes running worker(rank, world, port, out) saved to
    out/<rank>."""
    with tempfile.TemporaryDirectory() as out, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        mp.spawn(worker, args=(world, port, out), nprocs=world, join=True)
        return [torch.load(f"{out}/{r}", weights_only=True) for r in range(world)]


def sharding() -> list[dict]:
    rows = []
    for world in (1, 2, 4):
        got = spawned(shard_worker, world)
        d, padded = got[0]["d"], shard_size(D, world) * world
        rows.append(
            {
                "kind": "sharded",
                "processes": world,
                "bytes_per_process": max(g["bytes"] for g in got),
                "extract_seconds": round(max(g["seconds"] for g in got), 3),
                # per projected step, per process, float32 numbers handed to collectives:
                # the gradient's all-reduce, against its reduce-scatter (NCCL: D in; gloo: a
                # ring of R - 1 sends of D/R), the d partial products and the all-gather of
                # this process's slice of the step
                "data_parallel_numbers": D if world > 1 else 0,
                "sharded_numbers_nccl": (padded + d + padded // world) if world > 1 else 0,
                "sharded_numbers_gloo": (padded + d) if world > 1 else 0,
            }
        )
        print(rows[-1], flush=True)
    return rows


EPOCH_STEPS, BATCH, ROUNDS = 12, 32, 5
METHODS = ("sgd", "psgd whole basis", "psgd sharded basis")


def epoch_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(rank)
    batches = [
        (torch.randn(BATCH, 3, 32, 32, generator=g), torch.randint(0, 10, (BATCH,), generator=g))
        for _ in range(EPOCH_STEPS)
    ]
    lo, hi = shard_bounds(D, world, rank)
    whole = pca_of_rows(window_block(0, D).numpy(), 40)
    sharded = shard_pca_basis(window_block(lo, hi).numpy(), 40, lo, hi, D, (0, N, 1))
    model = build_model("resnet20", (3, 32, 32), 10)
    flat = FlatParams(model)
    optimizers = {
        "sgd": torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        "psgd whole basis": PSGD(flat, whole, lr=0.01),
        "psgd sharded basis": PSGD(flat, sharded, lr=0.01),
    }
    seconds: dict[str, list[float]] = {k: [] for k in METHODS}
    for _ in range(1 + ROUNDS):  # the first round warms up
        for name in METHODS:
            dist.barrier()
            start = time.perf_counter()
            fit(model, optimizers[name], batches, [], epochs=1, flat=flat, progress=False)
            seconds[name].append(time.perf_counter() - start)
    torch.save({k: v[1:] for k, v in seconds.items()}, f"{out}/{rank}")
    dist.destroy_process_group()


def epochs(world: int = 2) -> list[dict]:
    got = spawned(epoch_worker, world)
    # an epoch lasts as long as its slowest process
    median = {
        k: statistics.median(max(g[k][i] for g in got) for i in range(ROUNDS)) for k in METHODS
    }
    rows = []
    for name in METHODS:
        rows.append(
            {
                "kind": "epoch",
                "method": name,
                "processes": world,
                "steps": EPOCH_STEPS,
                "batch_per_process": BATCH,
                "epoch_seconds": round(median[name], 3),
                "over_sgd": round(median[name] / median["sgd"], 3),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    rows = extraction() + sharding() + epochs()
    path = write_result(
        "twa",
        rows,
        notes="extraction: same window for both; sharded: TWA span by tall-skinny QR over R "
        "gloo processes on one machine; numbers per step = gradient all-reduce (D) for data "
        "parallelism, against the gradient's reduce-scatter (NCCL: D, padded to a multiple of "
        "R; gloo: a ring of R - 1 sends of D/R), the partial projections (d) and the "
        "all-gathered slice of the step (D/R) sharded; "
        "epoch: ResNet-20 on CIFAR-shaped random tensors, 2 gloo processes of one thread, "
        f"{EPOCH_STEPS} steps of {BATCH} examples each, median of {ROUNDS} interleaved rounds",
    )
    print(f"-> {path}")


if __name__ == "__main__":
    main()

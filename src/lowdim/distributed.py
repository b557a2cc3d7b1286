"""Several processes, one run: lowdim under `torchrun` (or any launcher that sets the usual
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT variables).

Every process loads the data and builds the model identically; each takes its own slice of
every global minibatch (see `Split.batches(shard=...)`); the optimiser or the training loop
exchanges what the method needs (a gradient, d coordinates); the weights stay identical on
every process. Rank 0 alone writes files and prints progress. With one process (no launcher)
every function here is a no-op, so the same code runs alone or distributed.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import LowdimError, arg

TIMEOUT = timedelta(minutes=10)  # a collective waits this long for a slow or lost process


def world_size() -> int:
    """The number of processes in the run (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's index, 0..world_size()-1 (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on the process that writes files and prints (rank 0)."""
    return rank() == 0


def launched() -> bool:
    """True when a launcher started this process as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> torch.device:
    """Join the process group if a launcher asked for one; return the device this process uses.

    Backend: NCCL for CUDA (process LOCAL_RANK takes cuda:LOCAL_RANK), gloo for the CPU. A
    no-op returning `device` when not launched or already joined.
    """
    if not launched():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise LowdimError(
                f"LOCAL_RANK {local} has no GPU: this machine has {torch.cuda.device_count()}; "
                "start at most that many processes per node"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
            if name not in os.environ:
                raise LowdimError(
                    f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {name} is not set; "
                    "start the processes with torchrun"
                )
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(
            backend,
            store=_store(),
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            timeout=TIMEOUT,
            **kwargs,
        )
    return device


def _store() -> dist.Store:
    """The rendezvous store, with keys private to this attempt.

    After torchrun restarts the workers (--max-restarts), the store can still hold the
    addresses the dead attempt published; a fresh process would then connect to a worker that
    no longer exists. Prefixing the keys with the restart count keeps attempts apart.
    """
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    base = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        int(os.environ["WORLD_SIZE"]),
        is_master=not agent_hosts and int(os.environ["RANK"]) == 0,
        timeout=TIMEOUT,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"lowdim/attempt-{attempt}", base)


def teardown() -> None:
    """Leave the process group (after a last barrier, so no rank exits while others wait)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """`t` summed over all processes, in place (unchanged when not distributed)."""
    if world_size() > 1:
        dist.all_reduce(t)
    return t


def same_on_all(value: int, what: str) -> None:
    """Raise LowdimError unless every process holds the same `value` (e.g. the epoch it resumed
    from: processes that read different checkpoints would silently train different models)."""
    if world_size() == 1:
        return
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if (dist.get_backend() == "nccl")
        else torch.device("cpu")
    )
    t = torch.tensor([value, -value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    low, high = int(-t[1].item()), int(t[0].item())
    if low != high:
        raise LowdimError(
            f"processes disagree on {what} ({low} to {high}): every machine "
            f"must see the same {arg('save_dir')} (a shared filesystem)"
        )


def weighted_mean_(
    loss: torch.Tensor, grads: list[torch.Tensor], weight: int, *, reduce: bool = True
) -> torch.Tensor:
    """The mean over all processes' examples of the per-process mean `loss` over `weight`
    examples (weight_r on process r), and each gradient in `grads` made the same mean in place
    (`loss` itself is returned unchanged alone).

    One all-reduce of two numbers (sum_r weight_r loss_r, sum_r weight_r) gives the loss; with
    `reduce` (default True) each gradient is scaled by weight_r / sum_r weight_r and summed
    across processes (one all-reduce of its size); without it only scaled, by
    R weight_r / sum_r weight_r, so that the plain mean across the R processes is the global
    one, for optimisers that combine something smaller than the gradients themselves. The
    scales stay on the device: no host synchronisation.
    """
    world = world_size()
    if world == 1:
        return loss
    sums = torch.stack(
        [loss.detach().double() * weight, loss.new_tensor(weight, dtype=torch.float64)]
    )
    dist.all_reduce(sums)
    share = weight / sums[1]
    for g in grads:
        g.mul_((share if reduce else share * world).to(g.dtype))
        if reduce:
            dist.all_reduce(g)
    return (sums[0] / sums[1]).to(loss.dtype)


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every process (no-op alone)."""
    if world_size() == 1:
        return
    for b in module.buffers():
        dist.broadcast(b, 0)


def barrier() -> None:
    """Wait until every process gets here (a no-op alone)."""
    if world_size() > 1:
        dist.barrier()

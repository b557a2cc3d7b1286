"""RBD on several processes: two gloo workers on loopback exchange only coordinates, stay
identical, and match a one-process simulation; `lowdim rbd` under torchrun survives a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import lowdim.optim.rbd as rbd_module
from lowdim.data import load_dataset
from lowdim.io import load_tensors
from lowdim.models import build_model
from lowdim.optim.rbd import RBD
from lowdim.params import FlatParams
from lowdim.train import fit

DIM, LR, BATCH, STEPS = 20, 4.0, 16, 6


def model_and_flat():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, hidden=(32,))
    return model, FlatParams(model)


def global_batches(data, size):
    """The first STEPS global batches of epoch 1 (one process's view of all workers' data)."""
    batches = data.train.batches(size, shuffle=True, seed=0, epoch=1, drop_last=True)
    return [b for _, b in zip(range(STEPS), batches, strict=False)]


def independent_worker(rank: int, port: int, out: str, distribution: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    sent = []  # every tensor this worker hands to a collective
    real_gather = dist.all_gather

    def counting_gather(outputs, tensor, *a, **k):
        sent.append(tensor.numel())
        return real_gather(outputs, tensor, *a, **k)

    rbd_module.dist.all_gather = counting_gather
    data = load_dataset("digits")
    model, flat = model_and_flat()
    opt = RBD(flat, DIM, LR, seed=3, chunk_rows=8, distribution=distribution)
    assert opt.worker == rank
    shard = data.train.batches(
        BATCH, shuffle=True, seed=0, epoch=1, drop_last=True, shard=(rank, 2)
    )
    weights = []
    for _, (x, y) in zip(range(STEPS), shard, strict=False):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        weights.append(flat.get())
    torch.save(
        {"weights": torch.stack(weights), "sent": sent, "bytes": opt.bytes_sent_per_step},
        f"{out}/rank{rank}.pt",
    )
    dist.destroy_process_group()


@pytest.mark.parametrize("distribution", ["gaussian", "hadamard"])
def test_two_workers_stay_identical_match_a_simulation_and_send_d_numbers(
    tmp_path, free_port, distribution
):
    args = (free_port, str(tmp_path), distribution)
    mp.spawn(independent_worker, args=args, nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(r0["weights"], r1["weights"])  # after every step
    assert r0["sent"] == [DIM] * STEPS and r0["bytes"] == DIM * 4  # d numbers, never D

    # One process simulating both workers: the same slices of the same global batches, each
    # worker's directions from its own key, the mean of the two steps.
    data = load_dataset("digits")
    model, flat = model_and_flat()
    opt = RBD(flat, DIM, LR, seed=3, chunk_rows=8, distribution=distribution)
    for step, (x, y) in enumerate(global_batches(data, 2 * BATCH)):
        update = torch.zeros_like(flat.data)
        for w in (0, 1):
            part = slice(w * BATCH, (w + 1) * BATCH)
            flat.zero_grad()
            nn.functional.cross_entropy(model(x[part]), y[part]).backward()
            coords = opt.coordinates(step, flat.grad, worker=w)
            opt.apply(step, coords, update, worker=w)
        with torch.no_grad():
            flat.data.add_(update, alpha=-LR / 2)
        assert torch.allclose(flat.data, r0["weights"][step], atol=1e-6), step
    assert flat.numel > 50 * DIM


def shared_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    data = load_dataset("digits")
    model, flat = model_and_flat()
    opt = RBD(flat, DIM, LR, seed=3, mode="shared")
    result = fit(model, opt, data.train, data.test, epochs=2, batch_size=BATCH, progress=False)
    torch.save({"theta": flat.get(), "acc": result.test_acc}, f"{out}/shared{rank}.pt")
    dist.destroy_process_group()


def test_shared_basis_workers_equal_one_process_on_the_global_batch(tmp_path, free_port):
    mp.spawn(shared_worker, args=(free_port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"shared{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(r0["theta"], r1["theta"])
    data = load_dataset("digits")
    model, flat = model_and_flat()
    opt = RBD(flat, DIM, LR, seed=3)
    one = fit(
        model,
        opt,
        data.train,
        data.test,
        epochs=2,
        batch_size=2 * BATCH,
        progress=False,
    )
    assert torch.allclose(flat.data, r0["theta"], atol=1e-5)
    assert abs(one.test_acc - r0["acc"]) <= 1 / len(data.test)


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
CLI = "-m lowdim rbd --dataset digits --arch mlp --dim 200 --lr 10 --epochs 3".split()


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (torchrun's workers)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


# `lowdim` as a script whose rank 1, in the first attempt only, stops after logging epoch 1
# (rank 0 then saves epoch 1 and waits for it in epoch 2) until the test kills it: the kill
# lands after the first checkpoint however slow or fast the machine, where polling for the
# checkpoint file could see a loaded test process wake up after the whole job had ended.
PAUSED_LOWDIM = """
import os, sys, time
import lowdim.train.run_state as loop
from lowdim.cli import main

real = loop.format_epoch

def format_epoch(record, epochs):
    if record["epoch"] == 1 and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
        while True:
            time.sleep(1)
    return real(record, epochs)

if os.environ["RANK"] == "1":
    loop.format_epoch = format_epoch
sys.exit(main())
"""


def test_torchrun_job_survives_a_killed_worker_and_equals_an_uninterrupted_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = tmp_path / "whole"
    done = subprocess.run(
        [*TORCHRUN, *CLI, "--quiet", "--save-dir", str(whole)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("test_acc") == 1  # rank 0 alone reports
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["bytes_sent_per_step"] == 200 * 4
    assert summary["test_acc"] > 0.5

    cut = tmp_path / "cut"
    script = tmp_path / "paused_lowdim.py"
    script.write_text(PAUSED_LOWDIM)
    paused = [str(script), *CLI[2:]]  # instead of -m lowdim
    job = subprocess.Popen(
        [*TORCHRUN, "--max-restarts", "1", *paused, "--save-dir", str(cut), "--resume"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 600  # generous: the loop ends as soon as epoch 1 is saved
    while time.time() < deadline and job.poll() is None:
        if (cut / "checkpoint" / "state.json").exists():  # epoch 1 is saved
            break
        time.sleep(0.05)
    workers = children(job.pid)
    assert len(workers) == 2, "the job ended before a worker could be killed"
    os.kill(workers[1], signal.SIGKILL)
    out, err = job.communicate(timeout=600)
    assert job.returncode == 0, err[-2000:]
    assert "exitcode: -9" in err  # the agent saw the kill and restarted the workers,
    assert err.count("epoch   1/3") == 1  # which resumed after epoch 1 instead of redoing it
    again = json.loads((cut / "summary.json").read_text())
    assert again["test_acc"] == summary["test_acc"]
    wa, wb = load_tensors(whole / "model.safetensors"), load_tensors(cut / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert len((cut / "metrics.jsonl").read_text().splitlines()) == 3


def disagreeing_worker(rank: int, port: int, out: str) -> None:
    from lowdim import distributed
    from lowdim.errors import LowdimError

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    distributed.same_on_all(7, "the step")  # agreeing: passes
    try:
        distributed.same_on_all(rank * 3, "the step to resume from")
        message = "no error"
    except LowdimError as e:
        message = str(e)
    Path(out, f"msg{rank}").write_text(message)
    dist.destroy_process_group()


def test_processes_that_resume_from_different_checkpoints_stop_with_one_line(tmp_path, free_port):
    mp.spawn(disagreeing_worker, args=(free_port, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        msg = (tmp_path / f"msg{rank}").read_text()
        assert "disagree on the step to resume from (0 to 3)" in msg and "shared" in msg

"""Every data-parallel command on two gloo processes equals one process on the global batch."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lowdim.bases import load_basis, trajectory_pca
from lowdim.cli import main
from lowdim.data import load_dataset
from lowdim.io import load_tensors
from lowdim.jobs.common import model_for
from lowdim.jobs.subspace import read_sgd_run
from lowdim.optim import PBFGS
from lowdim.params import FlatParams
from lowdim.train import fit
from lowdim.trajectory import Trajectory


def worker(rank: int, port: int, argv: list[str], out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
    )
    Path(out, f"code{rank}").write_text(str(main(argv)))


def free_loopback_port() -> int:
    """Another port on loopback that is free now (the `free_port` fixture gives one a test)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "sgd"
    args = "train-sgd --quiet --dataset digits --arch mlp --epochs 6 --save-dir".split()
    assert main([*args, str(path)]) == 0
    return path


COMMANDS = {
    "train-psgd": "train-psgd --n-components 5 --epochs 2 --lr 0.3",
    "twa": "twa --epochs 2 --lr 0.3",
    "twa-sharded": "twa --epochs 2 --lr 0.3 --shard-basis",
    "train-psgd-sharded": "train-psgd --n-components 5 --epochs 2 --lr 0.3 --shard-basis",
}
# P-BFGS is not here: two epochs of line-search decisions on sums taken in another order are
# not a stable quantity; see test_pbfgs_steps_on_two_processes_equal_one_on_the_global_batch.


ONE_TWO = ("one", "two")


@pytest.mark.parametrize("command", COMMANDS)
def test_two_processes_equal_one_on_the_global_batch(sgd_run, tmp_path, free_port, command):
    base = [*COMMANDS[command].split(), "--quiet", "--save-dir", str(sgd_run)]
    assert main([*base, "--name", f"{command}-one", "--batch-size", "64"]) == 0
    argv = [*base, "--name", f"{command}-two", "--batch-size", "32"]
    mp.spawn(worker, args=(free_port, argv, str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"code{r}").read_text() for r in (0, 1)] == ["0", "0"]
    one, two = (
        json.loads((sgd_run / f"{command}-{k}" / "summary.json").read_text()) for k in ONE_TWO
    )
    # Projected SGD on sums over the same examples in another order: the weights differ by
    # rounding (measured below 7e-7 after 2 epochs, at 1 or 2 threads), the loss by 5e-7 of
    # itself; an argmax may flip on a tie within that, hence one test example of 360.
    assert abs(one["test_acc"] - two["test_acc"]) <= 1 / 360
    assert one["test_loss"] == pytest.approx(two["test_loss"], rel=1e-4)
    wa, wb = (load_tensors(sgd_run / f"{command}-{k}" / "model.safetensors") for k in ONE_TWO)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    lines = (sgd_run / f"{command}-two" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # rank 0 alone wrote
    assert two["world_size"] == 2
    if command.endswith("sharded"):  # each process held half of the basis
        assert two["basis_bytes_per_process"] <= 0.51 * one["basis_bytes_per_process"]
        assert not (sgd_run / f"{command}-two" / "basis.safetensors").exists()


class RecordingPBFGS(PBFGS):
    """P-BFGS that records every step: the state it started from (weights, H, previous step
    and gradient), the minibatch loss, the projected gradient, the accepted step and the
    number of line-search trials. Given `pinned` (another run's records), step k first puts
    the weights and H back to the state that run's step k started from, so that both runs'
    step k start from the same point and rounding cannot accumulate from step to step."""

    def __init__(self, *args, pinned: list[dict] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.records: list[dict] = []
        self.pinned = pinned

    def step(self, closure):
        state = self._state()
        if self.pinned is not None:
            start = self.pinned[len(self.records)]["start"]
            self.flat.data.copy_(start["theta"])
            state["hessian"].copy_(start["hessian"])
            for key in ("prev_step", "prev_grad"):
                state.pop(key, None)
                if key in start:
                    state[key] = start[key].clone()
        start = {"theta": self.flat.data.clone(), "hessian": state["hessian"].clone()}
        start.update({k: state[k].clone() for k in ("prev_step", "prev_grad") if k in state})
        trials, failures = state["trials"], state["line_search_failures"]
        loss = super().step(closure)
        # Trials run without backward, so flat.grad still holds this step's gradient.
        moved = "prev_step" in state
        self.records.append(
            {
                "start": start,
                "loss": float(loss),
                "grad": self.basis.project(self.flat.grad).double(),
                "step": state["prev_step"].clone() if moved else torch.zeros(self.basis.dim),
                "trials": state["trials"] - trials,
                "failures": state["line_search_failures"] - failures,
            }
        )
        return loss


def pbfgs_records(sgd_dir: Path, basis_file: Path, batch_size: int, pinned=None) -> list[dict]:
    """One epoch of P-BFGS from the basis's anchor on the digits the train-sgd run used."""
    sgd_cfg, _ = read_sgd_run(sgd_dir)
    data = load_dataset("digits")
    model = model_for(sgd_cfg, data, torch.device("cpu"))
    flat = FlatParams(model)
    basis = load_basis(basis_file, layout=flat.layout())
    flat.set(basis.anchor.to(flat.data.dtype))
    opt = RecordingPBFGS(flat, basis, module=model, pinned=pinned)
    fit(model, opt, data.train, data.test, epochs=1, batch_size=batch_size, progress=False)
    return opt.records


def pbfgs_worker(rank: int, port: int, sgd_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    records = pbfgs_records(Path(sgd_dir), Path(out, "basis.safetensors"), 32)
    torch.save(records, Path(out, f"records{rank}.pt"))
    dist.destroy_process_group()


def test_pbfgs_steps_on_two_processes_equal_one_on_the_global_batch(sgd_run, tmp_path, free_port):
    """Every P-BFGS step of two gloo processes (the loop averages loss and gradient across
    them) equals one process's step on the global batch from the same starting point: the
    same loss, projected gradient, line-search trials and accepted step. (Whole runs are not
    compared: a quasi-Newton method amplifies the rounding of sums taken in another order from
    step to step, until an Armijo decision differs.)"""
    flat = FlatParams(model_for(read_sgd_run(sgd_run)[0], load_dataset("digits"), "cpu"))
    basis = trajectory_pca(Trajectory(sgd_run / "trajectory"), 5)
    basis.save(tmp_path / "basis.safetensors", layout=flat.layout())
    mp.spawn(pbfgs_worker, args=(free_port, str(sgd_run), str(tmp_path)), nprocs=2, join=True)
    two, other = (torch.load(tmp_path / f"records{r}.pt", weights_only=True) for r in (0, 1))
    for a, b in zip(two, other, strict=True):  # the processes hold identical weights and H
        assert all(torch.equal(a["start"][k], b["start"][k]) for k in a["start"])
        assert a["step"].equal(b["step"]) and a["trials"] == b["trials"]
    one = pbfgs_records(sgd_run, tmp_path / "basis.safetensors", 64, pinned=two)
    assert len(one) == len(two) > 10
    assert any("prev_grad" in r["start"] for r in two)  # BFGS updates of H are covered
    for k, (a, b) in enumerate(zip(one, two, strict=True)):
        # The loss and the float32 gradient are the same sums over the same 64 examples taken
        # in another order (two halves of 32, then their mean): they differ by a few float32
        # ulps (6e-8) times the number of terms, at most 64 * 6e-8 = 4e-6 of the magnitude of
        # the terms; 1e-5 of the gradient's norm covers the terms' cancellation too.
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7), k
        assert (a["grad"] - b["grad"]).norm() <= 1e-5 * b["grad"].norm(), k
        # Decisions are exact: every trial loss of this epoch clears or misses the Armijo bound
        # by at least 0.5% of the loss (measured), 1e4 times the rounding differences above.
        assert (a["trials"], a["failures"]) == (b["trials"], b["failures"]), k
        # The step is -t H' g, with the same t and H' the BFGS update of the same H with
        # y = g - g_prev: the gradient's rounding (below 2e-7 of its norm), amplified through
        # y and the ill-conditioned H (condition number up to 2e5), measured below 6e-6.
        assert (a["step"] - b["step"]).norm() <= 1e-4 * b["step"].norm(), k


STANDALONE = {
    "train-sgd": "train-sgd --dataset digits --arch mlp --epochs 2",
    "intrinsic-dim": "intrinsic-dim --dataset digits --arch mlp --projection fastfood "
    "--dims 40 --epochs 2 --seeds 1",
}


@pytest.mark.parametrize("command", STANDALONE)
def test_commands_without_a_parent_run_too(tmp_path, free_port, command):
    base = [*STANDALONE[command].split(), "--quiet"]
    assert main([*base, "--save-dir", str(tmp_path / "one"), "--batch-size", "64"]) == 0
    argv = [*base, "--save-dir", str(tmp_path / "two"), "--batch-size", "32"]
    mp.spawn(worker, args=(free_port, argv, str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"code{r}").read_text() for r in (0, 1)] == ["0", "0"]
    one, two = (json.loads((tmp_path / k / "summary.json").read_text()) for k in ("one", "two"))
    if command == "train-sgd":
        assert abs(one["test_acc"] - two["test_acc"]) <= 1 / 360
        assert one["test_loss"] == pytest.approx(two["test_loss"], rel=1e-4)
        # Killed after its last checkpoint but before its summary: every process must agree
        # that nothing is left to train (rank 1 reads rank 0's metrics to know).
        (tmp_path / "two" / "summary.json").unlink()
        # A port of its own: free_port + 1 may well be taken.
        port = free_loopback_port()
        mp.spawn(worker, args=(port, [*argv, "--resume"], str(tmp_path)), nprocs=2)
        again = json.loads((tmp_path / "two" / "summary.json").read_text())
        assert again["test_acc"] == two["test_acc"]
    else:
        assert one["baseline_acc"] == pytest.approx(two["baseline_acc"], abs=1 / 360)
        assert one["mean_acc"]["40"] == pytest.approx(two["mean_acc"]["40"], abs=1 / 360)

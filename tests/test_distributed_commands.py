"""Every data-parallel command on two gloo processes equals one process on the global batch."""

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from lowdim.cli import main
from lowdim.io import load_tensors


def worker(rank: int, port: int, argv: list[str], out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
    )
    Path(out, f"code{rank}").write_text(str(main(argv)))


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "sgd"
    args = "train-sgd --quiet --dataset digits --arch mlp --epochs 6 --save-dir".split()
    assert main([*args, str(path)]) == 0
    return path


COMMANDS = {
    "train-psgd": "train-psgd --n-components 5 --epochs 2 --lr 0.3",
    "twa": "twa --epochs 2 --lr 0.3",
    "train-pbfgs": "train-pbfgs --n-components 5 --epochs 2",
    "twa-sharded": "twa --epochs 2 --lr 0.3 --shard-basis",
    "train-psgd-sharded": "train-psgd --n-components 5 --epochs 2 --lr 0.3 --shard-basis",
}
# P-BFGS's quasi-Newton steps amplify the rounding of sums taken in another order (1e-4 in
# the loss after one epoch, 1e-2 after two) while taking the same decisions.
LOSS_RTOL = {"train-pbfgs": 2e-2}


@pytest.mark.parametrize("command", COMMANDS)
def test_two_processes_equal_one_on_the_global_batch(sgd_run, tmp_path, free_port, command):
    base = [*COMMANDS[command].split(), "--quiet", "--save-dir", str(sgd_run)]
    assert main([*base, "--name", f"{command}-one", "--batch-size", "64"]) == 0
    argv = [*base, "--name", f"{command}-two", "--batch-size", "32"]
    mp.spawn(worker, args=(free_port, argv, str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"code{r}").read_text() for r in (0, 1)] == ["0", "0"]
    one, two = (
        json.loads((sgd_run / f"{command}-{k}" / "summary.json").read_text())
        for k in ("one", "two")
    )
    assert abs(one["test_acc"] - two["test_acc"]) <= 1 / 360
    assert one["test_loss"] == pytest.approx(two["test_loss"], rel=LOSS_RTOL.get(command, 1e-4))
    if command == "train-pbfgs":
        assert one["trials"] == two["trials"] and one["steps"] == two["steps"]
    else:
        wa, wb = (
            load_tensors(sgd_run / f"{command}-{k}" / "model.safetensors") for k in ("one", "two")
        )
        assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    lines = (sgd_run / f"{command}-two" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # rank 0 alone wrote
    assert two["world_size"] == 2
    if command.endswith("sharded"):  # each process held half of the basis
        assert two["basis_bytes_per_process"] <= 0.51 * one["basis_bytes_per_process"]
        assert not (sgd_run / f"{command}-two" / "basis.safetensors").exists()


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
        mp.spawn(worker, args=(free_port + 1, [*argv, "--resume"], str(tmp_path)), nprocs=2)
        again = json.loads((tmp_path / "two" / "summary.json").read_text())
        assert again["test_acc"] == two["test_acc"]
    else:
        assert one["baseline_acc"] == pytest.approx(two["baseline_acc"], abs=1 / 360)
        assert one["mean_acc"]["40"] == pytest.approx(two["mean_acc"]["40"], abs=1 / 360)

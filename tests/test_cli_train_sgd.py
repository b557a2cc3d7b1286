import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lowdim.cli import main
from lowdim.io import load_tensors
from lowdim.jobs.rundir import SUMMARY_KEYS
from lowdim.trajectory import Trajectory


def run_cli(*args):
    return main(["train-sgd", "--quiet", *map(str, args)])


def test_digits_mlp_reaches_the_target_and_writes_everything(tmp_path, capsys):
    save = tmp_path / "A"
    assert (
        run_cli(
            "--dataset", "digits", "--arch", "mlp", "--epochs", 10, "--seed", 0, "--save-dir", save
        )
        == 0
    )
    summary = json.loads((save / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["test_acc"] >= 0.93
    assert summary["snapshots"] == 11 and len(Trajectory(save / "trajectory")) == 11
    assert summary["num_params"] == summary["subspace_dim"] == 55_210
    for name in ("config.json", "metrics.jsonl", "model.safetensors", "curves.png"):
        assert (save / name).is_file(), name
    assert len((save / "metrics.jsonl").read_text().splitlines()) == 10
    weights = load_tensors(save / "model.safetensors")
    traj = Trajectory(save / "trajectory")
    final = torch.cat([weights[e["name"]].flatten() for e in traj.layout])
    assert torch.equal(traj.snapshot(10), final)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "test_acc 0.9" in out[0] and str(save) in out[0]


def test_label_noise_is_reported(tmp_path):
    assert run_cli("--epochs", 1, "--corrupt", 0.4, "--save-dir", tmp_path / "n") == 0
    summary = json.loads((tmp_path / "n" / "summary.json").read_text())
    assert summary["corrupt"] == 0.4
    assert 0.3 < summary["effective_noise_rate"] < 0.4  # a draw may hit the old label


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--corrupt", "1.5"], "--corrupt 1.5 is outside the valid range [0, 1]"),
        (["--holdout", "1"], "--holdout 1.0 is outside the valid range [0, 1)"),
        (["--corrupt", "-0.1"], "--corrupt"),
        (["--dataset", "cifar11"], "unknown dataset 'cifar11'; choose one of"),
        (["--arch", "resnet7"], "unknown architecture 'resnet7'; choose one of"),
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--batch-size", "-4"], "--batch-size must be a positive integer"),
        (["--lr", "0"], "--lr must be positive"),
        (["--dataset", "mnist", "--data-dir", "/nonexistent/mnist"], "MNIST"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent/c"], "CIFAR"),
        (["--arch", "lenet"], "lenet needs inputs of at least"),
        (["--lr-milestones", "20"], "--lr-milestones 20"),
        (
            ["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"],
            "--device",
        ),
        (["--epochs", "ten"], "invalid int value: 'ten'"),
    ],
)
def test_bad_input_is_one_line_status_2_and_writes_nothing(tmp_path, capsys, args, expect):
    save = tmp_path / "bad"
    with pytest.raises(SystemExit) if "ten" in args else _no_exit():
        code = run_cli(*args, "--save-dir", save)
        assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err, err
    assert "Traceback" not in err
    assert not save.exists()


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_folder_holding_a_run_is_refused_without_resume(tmp_path, capsys):
    save = tmp_path / "run"
    assert run_cli("--epochs", 1, "--save-dir", save) == 0
    before = (save / "summary.json").read_bytes()
    assert run_cli("--epochs", 2, "--save-dir", save) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert run_cli("--epochs", 2, "--save-dir", save, "--resume") == 2
    assert "--epochs differs from the run in " in (err := capsys.readouterr().err)
    assert "(begun with --epochs 1, now --epochs 2)" in err
    assert (save / "summary.json").read_bytes() == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert run_cli("--epochs", 1, "--save-dir", tmp_path / "other") == 2
    assert "not empty" in capsys.readouterr().err


def test_underscore_option_names_are_accepted(tmp_path):
    assert (
        main(
            [
                "train-sgd",
                "--quiet",
                "--epochs",
                "1",
                "--batch_size",
                "64",
                "--samples_per_epoch",
                "2",
                "--save_dir",
                str(tmp_path / "u"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "u" / "summary.json").read_text())["snapshots"] == 3


def test_epoch_lines_when_not_a_terminal(tmp_path, capsys):
    assert main(["train-sgd", "--epochs", "3", "--save-dir", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split()[1] for line in err] == ["1/3", "2/3", "3/3"]


def test_sigkill_then_resume_gives_the_uninterrupted_result(tmp_path):
    args = [
        "--dataset",
        "digits",
        "--arch",
        "mlp",
        "--epochs",
        "24",
        "--batch-size",
        "16",
        "--lr",
        "0.05",
        "--lr-milestones",
        "12",
        "--samples-per-epoch",
        "2",
        "--seed",
        "3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lowdim", "train-sgd", "--quiet", *args]
    subprocess.run([*cmd, "--save-dir", str(tmp_path / "whole")], check=True, env=env)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--save-dir", str(killed)], env=env)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    subprocess.run([*cmd, "--save-dir", str(killed), "--resume"], check=True, env=env)

    a = json.loads((tmp_path / "whole" / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert a["test_acc"] == b["test_acc"] and a["test_loss"] == b["test_loss"]
    wa, wb = (
        load_tensors(tmp_path / "whole" / "model.safetensors"),
        load_tensors(killed / "model.safetensors"),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ta, tb = Trajectory(tmp_path / "whole" / "trajectory"), Trajectory(killed / "trajectory")
    assert len(ta) == len(tb) == 49 and (ta.window() == tb.window()).all()
    assert len(metrics.read_text().splitlines()) == 24


@pytest.mark.realdata
def test_fashion_mnist_lenet_two_epochs(tmp_path, fashion_dir):
    assert (
        run_cli(
            "--dataset",
            "fashion-mnist",
            "--arch",
            "lenet",
            "--epochs",
            2,
            "--save-dir",
            tmp_path / "f",
        )
        == 0
    )
    assert json.loads((tmp_path / "f" / "summary.json").read_text())["test_acc"] >= 0.83


@pytest.mark.realdata
def test_mnist_mlp_two_epochs(tmp_path, mnist_path):
    assert (
        run_cli(
            "--dataset",
            "mnist",
            "--data-dir",
            mnist_path,
            "--arch",
            "mlp",
            "--epochs",
            2,
            "--save-dir",
            tmp_path / "m",
        )
        == 0
    )
    assert json.loads((tmp_path / "m" / "summary.json").read_text())["test_acc"] >= 0.96

"""A run folder's integrity: `lowdim verify`, resuming across versions and after a failure
before the first checkpoint, compressed models that pin their weights, the CLI's last line of
defence, and the crc32 check folded into PCA."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_hostile_inputs import edit_metadata, flip_bytes

import lowdim.jobs.rundir
from lowdim.bases import pca_of_rows
from lowdim.cli import main
from lowdim.compress_zoo import load_subspace_model
from lowdim.errors import LowdimError
from lowdim.trajectory import Trajectory, TrajectoryRecorder

MLP = ["--dataset", "digits", "--arch", "mlp", "--hidden", "16", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    sgd = ["train-sgd", *MLP, "--epochs", "2", "--samples-per-epoch", "2"]
    assert main([*sgd, "--save-dir", str(root / "sgd")]) == 0
    psgd = ["train-psgd", "--quiet", "--n-components", "2", "--epochs", "1"]
    assert main([*psgd, "--save-dir", str(root / "sgd")]) == 0
    sweep = ["intrinsic-dim", *MLP, "--dims", "8", "--epochs", "1"]
    assert main([*sweep, "--save-dir", str(root / "id")]) == 0
    return root


def copy(runs, tmp_path):
    shutil.copytree(runs, tmp_path / "r")
    return tmp_path / "r"


def test_verify_passes_a_sound_folder_and_names_each_damaged_file(runs, tmp_path, capsys):
    root = copy(runs, tmp_path)
    assert main(["verify", "--save-dir", str(root / "sgd")]) == 0
    out = capsys.readouterr().out
    assert "sound" in out and "DAMAGED" not in out
    for name in ("trajectory/manifest.json", "checkpoint/state.json", "psgd/basis.safetensors"):
        assert f"ok       {root / 'sgd' / name}" in out

    manifest = json.loads((root / "sgd/trajectory/manifest.json").read_text())
    flip_bytes("sgd/trajectory/snapshots.bin", manifest["num_params"] * 4 + 8)(root)  # row 1
    flip_bytes("sgd/psgd/basis.safetensors", -16)(root)  # tensor data
    (root / "sgd/psgd/checkpoint/state.json").write_text("{}")
    assert main(["verify", "--save-dir", str(root / "sgd")]) == 2
    out, err = capsys.readouterr()
    damaged = [line for line in out.splitlines() if line.startswith("DAMAGED")]
    assert len(damaged) == 3, out
    assert "snapshot 1" in out and "3 of" in err and err.count("\n") == 1


def test_verify_rebuilds_compressed_points_against_their_digest(runs, tmp_path, capsys):
    root = copy(runs, tmp_path)
    assert main(["verify", "--save-dir", str(root / "id")]) == 0
    point = "id/points/d8-s0/subspace.safetensors"

    def bump_seed(meta):
        numbers = json.loads(meta["basis_numbers"])
        numbers["seed"] += 1
        meta["basis_numbers"] = json.dumps(numbers)

    edit_metadata(point, bump_seed)(root)
    assert main(["verify", "--save-dir", str(root / "id")]) == 2
    out = capsys.readouterr().out
    assert "DAMAGED" in out and "digest" in out


def test_compressed_model_of_format_1_loads_with_a_warning(runs, tmp_path, capsys):
    root = copy(runs, tmp_path)
    point = root / "id/points/d8-s0/subspace.safetensors"
    model, _ = load_subspace_model(point)

    def older(meta):
        meta["format"] = "lowdim-subspace-1"
        del meta["weights_sha256"]

    edit_metadata("id/points/d8-s0/subspace.safetensors", older)(root)
    again, _ = load_subspace_model(point)
    assert "predates weight digests" in capsys.readouterr().err
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_loading_a_compressed_model_leaves_the_global_generator_alone(runs):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_subspace_model(runs / "id/points/d8-s0/subspace.safetensors")
    assert torch.equal(torch.rand(3), expected)


def test_a_run_from_before_an_option_existed_resumes_with_its_default(runs, tmp_path):
    root = copy(runs, tmp_path)
    config = json.loads((root / "sgd/config.json").read_text())
    del config["holdout"], config["beta2"]  # options added after the run began
    (root / "sgd/config.json").write_text(json.dumps(config))
    (root / "sgd/summary.json").unlink()
    sgd = ["train-sgd", *MLP, "--epochs", "2", "--samples-per-epoch", "2", "--resume"]
    assert main([*sgd, "--save-dir", str(root / "sgd")]) == 0
    # ... but not with another value than the default it stands for
    (root / "sgd/summary.json").unlink()
    with pytest.raises(LowdimError, match=r"^holdout differs .*now holdout=0.1\)"):
        lowdim.jobs.rundir.RunDir(
            root / "sgd",
            {**config, "holdout": 0.1},
            resume=True,
            defaults={"holdout": 0.0},
        )


def test_an_option_that_changed_meaning_is_refused(runs, tmp_path, monkeypatch, capsys):
    root = copy(runs, tmp_path)
    (root / "sgd/summary.json").unlink()
    monkeypatch.setitem(lowdim.jobs.rundir.CHANGED_MEANING, "lr_gamma", ("99.0", "now per step"))
    sgd = ["train-sgd", *MLP, "--epochs", "2", "--samples-per-epoch", "2", "--resume"]
    assert main([*sgd, "--save-dir", str(root / "sgd")]) == 2
    err = capsys.readouterr().err
    assert "--lr-gamma changed meaning in lowdim 99.0" in err and err.count("\n") == 1


def test_a_subspace_run_that_failed_before_its_first_checkpoint_resumes(runs, tmp_path):
    """The folder a failed run left (config.json and a basis, no checkpoint) does not poison
    it: --resume derives the basis again instead of reloading the stale one."""
    root = copy(runs, tmp_path)
    psgd = root / "sgd/psgd"
    shutil.rmtree(psgd / "checkpoint")
    for name in ("summary.json", "metrics.jsonl", "model.safetensors"):
        (psgd / name).unlink()
    (psgd / "basis.safetensors").write_bytes(b"stale and broken")
    cmd = ["train-psgd", "--quiet", "--n-components", "2", "--epochs", "1", "--resume"]
    assert main([*cmd, "--save-dir", str(root / "sgd")]) == 0
    fresh = json.loads((psgd / "summary.json").read_text())
    assert fresh["test_acc"] == json.loads((runs / "sgd/psgd/summary.json").read_text())["test_acc"]


def test_an_unexpected_error_is_one_line_with_status_1(monkeypatch, capsys, tmp_path):
    import lowdim.jobs.sampling

    def broken(*args, **kwargs):
        raise TypeError("an unexpected bug\nspanning lines")

    monkeypatch.setattr(lowdim.jobs.sampling, "train_sgd", broken)
    monkeypatch.setattr("lowdim.cli.train_sgd.train_sgd", broken)
    cmd = ["train-sgd", "--quiet", "--save-dir", str(tmp_path / "x")]
    monkeypatch.delenv("LOWDIM_DEBUG", raising=False)
    assert main(cmd) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: TypeError: an unexpected bug" in err
    assert "--debug" in err and "Traceback" not in err
    with pytest.raises(TypeError):  # the traceback, for a developer
        main(["--debug", *cmd])
    monkeypatch.setenv("LOWDIM_DEBUG", "1")
    with pytest.raises(TypeError):
        main(cmd)


def test_pca_checks_crc32_in_its_gram_pass_and_names_the_snapshot(tmp_path):
    layout = [{"name": "w", "shape": [50]}]
    rec = TrajectoryRecorder(tmp_path / "t", layout)
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        rec.append(torch.randn(50, generator=g), epoch=i, step=i)
    traj = Trajectory(tmp_path / "t")
    window = traj.window()
    good = pca_of_rows(window, 3, checks=traj.checks())
    assert good.dim == 3
    data = np.fromfile(tmp_path / "t/snapshots.bin", dtype=np.float32)
    data[4 * 50 + 7] += 1.0
    data.tofile(tmp_path / "t/snapshots.bin")
    with pytest.raises(LowdimError, match="snapshot 4 .* crc32"):
        pca_of_rows(traj.window(), 3, checks=traj.checks())
    with pytest.raises(LowdimError, match="snapshot 4"):
        traj.verify()

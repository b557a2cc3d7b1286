"""The DLDR commands end to end on the bundled digits: sampling, PCA, P-SGD, P-BFGS, report."""

import json
import shutil

import pytest
import torch

from lowdim.bases import load_basis
from lowdim.cli import main
from lowdim.trajectory import Trajectory


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    save = tmp_path_factory.mktemp("dldr") / "sgd"
    assert (
        main(
            [
                "train-sgd",
                "--quiet",
                "--dataset",
                "digits",
                "--arch",
                "mlp",
                "--epochs",
                "15",
                "--save-dir",
                str(save),
            ]
        )
        == 0
    )
    return save


def summary(path):
    return json.loads((path / "summary.json").read_text())


def copy_of(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_pbfgs_and_psgd_match_sgd_on_digits(sgd_run, tmp_path, capsys):
    run = copy_of(sgd_run, tmp_path)
    window = ["--params-start", "0", "--params-end", "16", "--n-components", "10"]
    assert (
        main(
            [
                "train-pbfgs",
                "--quiet",
                "--save-dir",
                str(run),
                *window,
                "--epochs",
                "10",
                "--batch-size",
                "256",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train-psgd",
                "--quiet",
                "--save-dir",
                str(run),
                *window,
                "--epochs",
                "10",
                "--lr",
                "0.3",
            ]
        )
        == 0
    )
    sgd_acc = summary(run)["test_acc"]
    for method in ("pbfgs", "psgd"):
        s = summary(run / method)
        # Within 2% (7 of the 360 test digits): over train-sgd seeds 0-4 both methods scored
        # 3 below to 1 above SGD, and other hardware (sums in another order) acts like another
        # seed; the former 1% left 0.6 of an example at seed 4.
        assert s["test_acc"] >= sgd_acc - 0.02, (method, s["test_acc"], sgd_acc)
        assert s["subspace_dim"] == 10 and s["num_params"] == 55_210 and s["snapshots"] == 16
        for name in ("basis.safetensors", "spectrum.png", "model.safetensors", "metrics.jsonl"):
            assert (run / method / name).is_file(), name
    assert summary(run / "pbfgs")["line_search_failures"] >= 0
    # the weights end in the affine subspace anchor + span(P)
    basis = load_basis(run / "pbfgs" / "basis.safetensors")
    final = Trajectory(run / "trajectory").layout
    from lowdim.io import load_tensors

    weights = load_tensors(run / "pbfgs" / "model.safetensors")
    theta = torch.cat([weights[e["name"]].flatten() for e in final])
    delta = theta - basis.anchor
    assert (delta - basis.expand(basis.project(delta))).norm() < 1e-4 * delta.norm()
    capsys.readouterr()
    assert main(["report", "--save-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "pbfgs" in out and "psgd" in out and (run / "comparison.png").is_file()


def test_underscore_names_of_the_papers_scripts(sgd_run, tmp_path):
    run = copy_of(sgd_run, tmp_path)
    assert (
        main(
            [
                "train-psgd",
                "--quiet",
                "--save_dir",
                str(run),
                "--params_start",
                "0",
                "--params_end",
                "16",
                "--n_components",
                "5",
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    assert summary(run / "psgd")["subspace_dim"] == 5


@pytest.mark.parametrize(
    "args, expect",
    [
        (
            ["--n-components", "20", "--params-end", "16"],
            "--n-components 20 is not possible with the 16",
        ),
        (["--params-end", "30"], "outside the trajectory"),
        (["--params-start", "10", "--params-end", "5"], "outside the trajectory"),
        (["--params-stride", "0"], "stride must be >= 1"),
        (["--epochs", "0"], "--epochs must be >= 1"),
    ],
)
def test_bad_windows_exit_2_with_one_line(sgd_run, tmp_path, capsys, args, expect):
    run = copy_of(sgd_run, tmp_path)
    assert main(["train-pbfgs", "--quiet", "--save-dir", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err, err
    assert not (run / "pbfgs").exists()


def test_not_a_sgd_run_and_other_architecture(tmp_path, capsys):
    assert main(["train-psgd", "--save-dir", str(tmp_path)]) == 2
    assert "holds no train-sgd run" in capsys.readouterr().err


def test_noisy_labels_are_the_sampling_runs(tmp_path):
    run = tmp_path / "noisy"
    assert (
        main(["train-sgd", "--quiet", "--epochs", "3", "--corrupt", "0.4", "--save-dir", str(run)])
        == 0
    )
    assert (
        main(
            [
                "train-pbfgs",
                "--quiet",
                "--save-dir",
                str(run),
                "--n-components",
                "2",
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    assert summary(run / "pbfgs")["effective_noise_rate"] == summary(run)["effective_noise_rate"]
    # a sampling run whose labels differ (as if the data changed) is refused
    s = summary(run)
    s["train_labels_sha256"] = "0" * 64
    (run / "summary.json").write_text(json.dumps(s))
    assert main(["train-psgd", "--quiet", "--save-dir", str(run), "--n-components", "2"]) == 2


def test_improving_a_trained_model(sgd_run, tmp_path):
    more = tmp_path / "more"
    assert (
        main(
            [
                "train-sgd",
                "--quiet",
                "--epochs",
                "2",
                "--lr",
                "0.005",
                "--samples-per-epoch",
                "5",
                "--init-from",
                str(sgd_run),
                "--save-dir",
                str(more),
            ]
        )
        == 0
    )
    first = Trajectory(more / "trajectory").snapshot(0)
    trained = Trajectory(sgd_run / "trajectory").snapshot(15)
    assert torch.equal(first, trained)  # the new trajectory starts at the trained weights
    assert (
        main(
            [
                "train-pbfgs",
                "--quiet",
                "--save-dir",
                str(more),
                "--n-components",
                "8",
                "--epochs",
                "2",
                "--batch-size",
                "256",
            ]
        )
        == 0
    )
    # 2%, as in test_pbfgs_and_psgd_match_sgd_on_digits (seeds 0-4: 1 below to 1 above)
    assert summary(more / "pbfgs")["test_acc"] >= summary(sgd_run)["test_acc"] - 0.02
    bad = tmp_path / "bad"
    assert (
        main(
            [
                "train-sgd",
                "--quiet",
                "--arch",
                "fc",
                "--init-from",
                str(sgd_run),
                "--save-dir",
                str(bad),
            ]
        )
        == 2
    )
    assert not bad.exists()


def test_a_killed_pbfgs_run_resumes_to_the_same_result(sgd_run, tmp_path, monkeypatch, capsys):
    run = copy_of(sgd_run, tmp_path)
    args = [
        "train-pbfgs",
        "--quiet",
        "--save-dir",
        str(run),
        "--n-components",
        "6",
        "--batch-size",
        "128",
        "--epochs",
        "4",
    ]
    assert main([*args, "--name", "whole"]) == 0

    import lowdim.train.run_state as loop

    real_save, calls = loop.save_checkpoint, []

    def save_then_die(*a, **k):  # the process dies right after the second epoch's checkpoint
        real_save(*a, **k)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    assert main([*args, "--name", "cut"]) == 130
    assert "--resume" in capsys.readouterr().err
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert not (run / "cut" / "summary.json").exists()
    assert main([*args, "--name", "cut", "--resume"]) == 0
    whole, cut = summary(run / "whole"), summary(run / "cut")
    assert cut["test_acc"] == whole["test_acc"] and cut["test_loss"] == whole["test_loss"]
    assert cut["steps"] == whole["steps"] and cut["trials"] == whole["trials"]

"""Intrinsic dimension end to end on the bundled digits, compression, and the span property."""

import json

import pytest
import torch

from lowdim.bases import random_basis
from lowdim.bases.random import RANDOM_KINDS, per_compartment_basis
from lowdim.cli import main
from lowdim.errors import LowdimError
from lowdim.models import build_model
from lowdim.subspace_model import SubspaceModel


def materialise(basis):
    return torch.stack([basis.expand(e) for e in torch.eye(basis.dim)], dim=1)  # (D, d)


@pytest.mark.parametrize("kind", RANDOM_KINDS)
@pytest.mark.parametrize("per_layer", [False, True])
def test_training_stays_in_the_span_with_unit_columns(kind, per_layer):
    torch.manual_seed(0)
    net = build_model("mlp", (1, 4, 4), 3, hidden=(8,))
    num = sum(p.numel() for p in net.parameters())
    if per_layer:
        from lowdim.params import FlatParams

        layout = FlatParams(build_model("mlp", (1, 4, 4), 3, hidden=(8,))).layout()
        basis = per_compartment_basis(kind, layout, 12, seed=1)
    else:
        basis = random_basis(kind, num, 12, seed=1)
    p = materialise(basis)
    assert torch.allclose(p.norm(dim=0), torch.ones(12), atol=0.05 if kind == "fastfood" else 1e-5)
    model = SubspaceModel(net, basis)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 4, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        delta = (model.theta() - model.anchor).detach()
        coef = torch.linalg.lstsq(p.double(), delta.double().unsqueeze(1)).solution
        residual = (p.double() @ coef).squeeze(1) - delta.double()
        assert residual.norm() <= 1e-5 * max(delta.norm().item(), 1e-12)


def intrinsic(tmp_path, *extra):
    return main(
        [
            "intrinsic-dim",
            "--quiet",
            "--dataset",
            "digits",
            "--arch",
            "mlp",
            "--epochs",
            "3",
            "--lr",
            "0.1",
            "--save-dir",
            str(tmp_path),
            *extra,
        ]
    )


def test_sweep_reports_d_int90_with_accuracy_rising_in_d(tmp_path, capsys):
    assert (
        intrinsic(
            tmp_path / "ff", "--projection", "fastfood", "--dims", "20,80,320", "--epochs", "5"
        )
        == 0
    )
    s = json.loads((tmp_path / "ff" / "summary.json").read_text())
    means = [s["mean_acc"][k] for k in ("20", "80", "320")]
    assert means[0] < means[1] < means[2] and s["baseline_acc"] > 0.9
    assert s["d_int90"] in (80, 320) and s["threshold"] == pytest.approx(0.9 * s["baseline_acc"])
    assert (tmp_path / "ff" / "intrinsic_dim.png").is_file()
    assert len((tmp_path / "ff" / "metrics.jsonl").read_text().splitlines()) == 3
    assert "d_int90 = " in capsys.readouterr().out


def test_compressed_point_evaluates_to_the_same_accuracy(tmp_path, capsys):
    assert intrinsic(tmp_path / "run", "--projection", "fastfood", "--dims", "40") == 0
    row = json.loads((tmp_path / "run" / "summary.json").read_text())["rows"][0]
    capsys.readouterr()
    out = tmp_path / "model.lowdim"
    assert (
        main(["compress", "--save-dir", str(tmp_path / "run"), "--dim", "40", "--out", str(out)])
        == 0
    )
    assert "x smaller" in capsys.readouterr().out
    assert out.stat().st_size < 4 * 55_210 / 20  # a seed and 40 numbers, not the weights
    assert main(["evaluate", str(out)]) == 0
    assert f"test_acc {row['test_acc']:.4f}" in capsys.readouterr().out


def test_killed_sweep_resumes_without_retraining(tmp_path, monkeypatch):
    import lowdim.jobs.intrinsic_sweep as intrinsic_module  # Sweep calls its train_point

    real, calls = intrinsic_module.train_point, []

    def dies_on_the_third(cfg, data, dim, *rest, **options):
        calls.append(dim)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(cfg, data, dim, *rest, **options)

    monkeypatch.setattr(intrinsic_module, "train_point", dies_on_the_third)
    assert intrinsic(tmp_path, "--projection", "sparse", "--dims", "10,20,40") == 130
    trained = sorted(
        p.name for p in (tmp_path / "points").iterdir() if (p / "summary.json").exists()
    )
    assert trained == ["d10-s0", "d20-s0"]
    stamps = {n: (tmp_path / "points" / n / "summary.json").stat().st_mtime_ns for n in trained}
    monkeypatch.setattr(intrinsic_module, "train_point", real)
    assert intrinsic(tmp_path, "--projection", "sparse", "--dims", "10,20,40", "--resume") == 0
    for n, stamp in stamps.items():
        assert (tmp_path / "points" / n / "summary.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--dims", "0"], "--dims 0 must be between 1 and D = 55210"),
        (["--dims", "60000"], "--dims 60000 must be between 1 and D"),
        (["--projection", "hadamard", "--dims", "10"], "--projection 'hadamard' is unknown"),
        ([], "--dims lists no subspace dimension, and no search was asked for"),
    ],
)
def test_bad_input(tmp_path, capsys, args, expect):
    assert intrinsic(tmp_path / "bad", *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err, err
    assert not (tmp_path / "bad").exists()


def test_per_layer_dims_must_match_the_compartments():
    from lowdim.params import FlatParams

    layout = FlatParams(build_model("mlp", (1, 8, 8), 10)).layout()
    with pytest.raises(LowdimError, match="3"):
        per_compartment_basis("dense", layout, [10, 10], seed=0)


def test_small_data_rule_for_the_subspace_lr(tmp_path):
    assert (
        main(
            [
                "intrinsic-dim",
                "--quiet",
                "--dims",
                "40",
                "--epochs",
                "1",
                "--save-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    protocol = json.loads((tmp_path / "summary.json").read_text())["protocol"]
    assert protocol["lr"] == 0.1 and protocol["baseline_lr"] == 1e-3  # 1,437 digits < 10,000

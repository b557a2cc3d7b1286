"""TWA: the orthonormalised span of checkpoints, and `lowdim twa` on a train-sgd run."""

import json

import pytest
import torch
from torch import nn

from lowdim.bases import load_basis
from lowdim.bases.span import SpanBasis, span_of_rows
from lowdim.cli import main


def collinear_checkpoints(n=100, D=20_000, drift=1e-4):
    """n checkpoints of one run: a common point plus a slow random walk (nearly collinear)."""
    g = torch.Generator().manual_seed(0)
    start = torch.randn(D, generator=g, dtype=torch.float64)
    steps = drift * torch.randn(n, D, generator=g, dtype=torch.float64)
    return (start + steps.cumsum(0)).float()


def classical_gram_schmidt_float32(w):
    """The textbook orthonormalisation, for contrast: each vector minus its projections on
    the previous ones, all computed from the original vector, in float32."""
    q = []
    for v in w:
        u = v.clone()
        for prev in q:
            u -= (prev @ v) * prev
        q.append(u / u.norm())
    return torch.stack(q)


def orthogonality_error(rows):
    r = rows.double()
    return (r @ r.t() - torch.eye(len(r), dtype=torch.float64)).abs().max().item()


def test_span_of_100_nearly_collinear_checkpoints_stays_orthonormal():
    w = collinear_checkpoints()
    basis = span_of_rows(w)
    assert basis.dim == 100 and basis.rows.dtype == torch.float64
    assert orthogonality_error(basis.rows) < 1e-10
    assert basis.orthogonality_error() < 1e-10
    assert orthogonality_error(classical_gram_schmidt_float32(w)) > 1e-2  # what it replaces
    # The span holds every checkpoint, and the anchor is their plain average.
    w64 = w.double()
    residual = w64 - (w64 @ basis.rows.t()) @ basis.rows
    assert residual.norm(dim=1).max() < 1e-9 * w64.norm(dim=1).max()
    assert torch.allclose(basis.anchor, w64.mean(0))


def test_repeated_checkpoints_add_no_direction_and_the_basis_round_trips(tmp_path):
    w = collinear_checkpoints(n=6, D=500)
    basis = span_of_rows(torch.cat([w, w[:2]]), window=(0, 8, 1))
    assert basis.dim == 6
    basis.save(tmp_path / "b.safetensors")
    again = load_basis(tmp_path / "b.safetensors")
    assert isinstance(again, SpanBasis) and again.window == (0, 8, 1)
    assert torch.equal(again.rows, basis.rows) and torch.equal(again.anchor, basis.anchor)


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("twa") / "sgd"
    args = "train-sgd --quiet --dataset digits --arch mlp --epochs 10 --save-dir".split()
    assert main([*args, str(path)]) == 0
    return path


def test_twa_on_digits_reaches_sgd_and_reports_swa(sgd_run):
    args = "twa --quiet --params-start 0 --params-end 11 --epochs 2 --lr 0.3".split()
    assert main([*args, "--save-dir", str(sgd_run)]) == 0
    s = json.loads((sgd_run / "twa" / "summary.json").read_text())
    assert s["method"] == "twa" and s["subspace_dim"] == 11 and s["snapshots"] == 11
    assert s["test_acc"] >= s["sgd_test_acc"] - 0.01
    assert 0.5 < s["swa_test_acc"] <= 1 and s["orthogonality_error"] < 1e-10
    assert (sgd_run / "twa" / "basis.safetensors").is_file()
    assert (sgd_run / "twa" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--schedule", "cyclic"], "--schedule 'cyclic' is unknown"),
        (["--params-start", "20"], "snapshot window [20, 11) is outside"),
        (["--lr", "-1"], "--lr must be positive"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(sgd_run, capsys, args, expect):
    cmd = ["twa", "--quiet", "--save-dir", str(sgd_run), "--name", "bad", *args]
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err, err
    assert not (sgd_run / "bad").exists()


def test_linear_schedule_runs_to_zero(sgd_run):
    args = "twa --quiet --epochs 2 --lr 0.3 --schedule linear --name lin".split()
    assert main([*args, "--save-dir", str(sgd_run)]) == 0
    lrs = [json.loads(line)["lr"] for line in (sgd_run / "lin" / "metrics.jsonl").open()]
    assert lrs == pytest.approx([0.3, 0.15])


def test_projected_adamw_equals_torch_adamw_on_the_coordinates():
    from torch import nn

    from lowdim.bases import DenseBasis
    from lowdim.optim import PAdamW
    from lowdim.params import FlatParams
    from lowdim.subspace_model import SubspaceModel

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))

    D = sum(p.numel() for p in net().parameters())
    basis = DenseBasis(torch.randn(6, D, generator=torch.Generator().manual_seed(3)) / D**0.5)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(10, 5, generator=g), torch.randint(0, 3, (10,), generator=g))] * 4
    ours_net = net()
    flat = FlatParams(ours_net)
    ours = PAdamW(flat, basis, lr=0.05, weight_decay=0.1)
    sub = SubspaceModel(net(), basis)
    ref = torch.optim.AdamW(sub.parameters(), lr=0.05, weight_decay=0.1)
    for x, y in data:
        ours.zero_grad()
        nn.functional.cross_entropy(ours_net(x), y).backward()
        ours.step()
        ref.zero_grad()
        nn.functional.cross_entropy(sub(x), y).backward()
        ref.step()
    assert torch.allclose(flat.data, sub.theta().detach(), atol=1e-6)
    assert torch.allclose(ours.state[flat.data]["coords"], sub.coords.detach(), atol=1e-6)


def test_journal_variant_trains_per_layer_coefficients(sgd_run):
    args = "twa --quiet --variant journal --epochs 3 --name journal".split()
    assert main([*args, "--save-dir", str(sgd_run)]) == 0
    s = json.loads((sgd_run / "journal" / "summary.json").read_text())
    assert s["variant"] == "journal" and s["subspace_dim"] == 11 * 3  # checkpoints x layers
    assert s["test_acc"] >= s["sgd_test_acc"] - 0.01
    basis = load_basis(sgd_run / "journal" / "basis.safetensors")
    assert basis.kind == "layer-deviations" and basis.dim == 33
    for _, _, block in basis.blocks:  # unit deviation per checkpoint and layer
        assert torch.allclose(block.rows.norm(dim=1), torch.ones(block.dim), atol=1e-5)
    config = json.loads((sgd_run / "journal" / "config.json").read_text())
    assert config["schedule"] == "cosine" and config["lr"] == 0.01
    lrs = [json.loads(line)["lr"] for line in (sgd_run / "journal" / "metrics.jsonl").open()]
    # 20% warm-up rounds to 1 epoch of 3 (at lr from its start), then the cosine half-wave
    assert lrs == pytest.approx([0.01, 0.01, 0.005])


def test_twa_v_fits_the_coefficients_on_the_held_out_examples(tmp_path, capsys):
    sgd = tmp_path / "sgd"
    args = "train-sgd --quiet --dataset digits --arch mlp --epochs 4 --holdout 0.2 --save-dir"
    assert main([*args.split(), str(sgd)]) == 0
    twa = "twa --quiet --epochs 2 --lr 0.3 --batch-size 32 --fit-on holdout --save-dir"
    assert main([*twa.split(), str(sgd)]) == 0
    s = json.loads((sgd / "twa" / "summary.json").read_text())
    assert s["test_acc"] > 0.9
    lines = [json.loads(line) for line in (sgd / "twa" / "metrics.jsonl").open()]
    assert lines[0]["step"] == 9  # ceil(287 held-out examples / 32): the held-out part only
    sgd_steps = json.loads((sgd / "metrics.jsonl").read_text().splitlines()[0])["step"]
    assert sgd_steps == 9  # ceil(1150 / 128): SGD never saw the 287
    # A run that held nothing out cannot fit on a held-out part.
    assert main(["train-sgd", "--quiet", "--epochs", "1", "--save-dir", str(tmp_path / "s2")]) == 0
    assert main([*twa.split(), str(tmp_path / "s2")]) == 2
    assert "--fit-on holdout needs a train-sgd run with holdout > 0" in capsys.readouterr().err
    assert not (tmp_path / "s2" / "twa").exists()


def test_the_checkpoint_span_is_public_and_works_on_a_users_trajectory(tmp_path):
    import lowdim

    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    flat = lowdim.FlatParams(net)
    recorder = lowdim.TrajectoryRecorder(tmp_path / "t", flat.layout())
    g = torch.Generator().manual_seed(0)
    for i in range(5):
        recorder.append(flat.data + 0.1 * i * torch.randn(flat.numel, generator=g), epoch=i, step=i)
    span = lowdim.trajectory_span(lowdim.Trajectory(tmp_path / "t"), start=1)
    assert span.dim == 4 and span.window == (1, 5, 1)
    assert span.orthogonality_error() < 1e-12
    assert {"RBD", "trajectory_span", "span_of_rows"} <= set(lowdim.__all__)

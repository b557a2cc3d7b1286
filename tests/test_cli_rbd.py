"""`lowdim rbd` end to end on the bundled digits."""

import json

import pytest

from lowdim.cli import main
from lowdim.jobs.rundir import SUMMARY_KEYS

ARGS = "rbd --quiet --dataset digits --arch mlp --dim 50 --lr 10 --batch-size 32 --epochs 3"
ARGS = ARGS.split()


def test_rbd_writes_a_summary_and_resumes_after_a_kill(tmp_path, monkeypatch):
    assert main([*ARGS, "--save-dir", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(whole) and whole["subspace_dim"] == 50
    assert whole["world_size"] == 1 and whole["test_acc"] > 0.4
    lines = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    assert all(0 < json.loads(line)["step_cosine"] < 1 for line in lines)

    import lowdim.train.run_state as loop

    real = loop.save_checkpoint

    def save_then_die(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    assert main([*ARGS, "--save-dir", str(tmp_path / "cut")]) == 130
    monkeypatch.setattr(loop, "save_checkpoint", real)
    assert main([*ARGS, "--save-dir", str(tmp_path / "cut"), "--resume"]) == 0
    cut = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert cut["test_acc"] == whole["test_acc"] and cut["test_loss"] == whole["test_loss"]


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--dim", "0"], "--dim 0 must be between 1 and D = 55210"),
        (["--dim", "60000"], "--dim 60000 must be between 1 and D"),
        (["--distribution", "cauchy"], "--distribution must be one of gaussian, uniform, rad"),
        (["--compartments", "neurons"], "--compartments must be one of none, layer, param, chunk"),
        (["--compartments", "chunk"], "--chunk-size must be >= 1 (parameters per chunk) with"),
        (["--split", "random"], "--split must be one of size, equal, each, got 'random'"),
        (["--mode", "gossip"], "--mode must be one of independent, shared, got 'gossip'"),
    ],
)
def test_bad_input(tmp_path, capsys, args, expect):
    assert main([*ARGS, *args, "--save-dir", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err, err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "args, blocks",
    [
        ([], [(0, 55210, 50)]),
        (["--compartments", "layer"], [(0, 13000, 12), (13000, 40200, 36), (53200, 2010, 2)]),
        (["--compartments", "layer", "--split", "equal"], None),
        (["--compartments", "chunk", "--chunk-size", "20000", "--split", "each"], None),
    ],
)
def test_compartment_rules_tile_the_parameters(args, blocks):
    from lowdim.cli import build_parser
    from lowdim.jobs.random_bases import RBDConfig, rbd_compartments
    from lowdim.models import build_model
    from lowdim.params import FlatParams

    ns = build_parser().parse_args([*ARGS, *args, "--save-dir", "x"])
    cfg = RBDConfig(
        dim=ns.dim, compartments=ns.compartments, chunk_size=ns.chunk_size, split=ns.split
    )
    flat = FlatParams(build_model("mlp", (1, 8, 8), 10))
    got = [(c.offset, c.length, c.dim) for c in rbd_compartments(cfg, flat)]
    assert sum(n for _, n, _ in got) == flat.numel
    assert all(o == sum(n for _, n, _ in got[:i]) for i, (o, _, _) in enumerate(got))
    if blocks is not None:
        assert got == blocks
    if ns.split == "equal":
        assert [k for _, _, k in got] == [17, 17, 16]
    if ns.split == "each":
        assert [k for _, _, k in got] == [50, 50, 50]

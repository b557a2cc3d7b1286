"""`lowdim rbd` end to end on the bundled digits."""

import json

import pytest

from lowdim.cli import main
from lowdim.rundir import SUMMARY_KEYS

ARGS = "rbd --quiet --dataset digits --arch mlp --dim 50 --lr 10 --batch-size 32 --epochs 3"
ARGS = ARGS.split()


def test_rbd_writes_a_summary_and_resumes_after_a_kill(tmp_path, monkeypatch):
    assert main([*ARGS, "--save-dir", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(whole) and whole["subspace_dim"] == 50
    assert whole["world_size"] == 1 and whole["test_acc"] > 0.4
    lines = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    assert all(0 < json.loads(line)["step_cosine"] < 1 for line in lines)

    import lowdim.train.loop as loop

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
        (["--distribution", "cauchy"], "unknown --distribution 'cauchy'"),
        (["--compartments", "neurons"], "unknown --compartments 'neurons'"),
    ],
)
def test_bad_input(tmp_path, capsys, args, expect):
    assert main([*ARGS, *args, "--save-dir", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err, err
    assert not (tmp_path / "bad").exists()

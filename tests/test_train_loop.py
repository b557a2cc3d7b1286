import json

import pytest
import torch
from torch import nn

from lowdim.data import Split
from lowdim.errors import LowdimError
from lowdim.params import FlatParams
from lowdim.train import build_optimizer, build_schedule, fit, snapshot_steps
from lowdim.trajectory import Trajectory


def toy_splits(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = (x.flatten(1).sum(1) > 0).long()
    return Split(x[: n * 3 // 4], y[: n * 3 // 4]), Split(x[n * 3 // 4 :], y[n * 3 // 4 :])


def toy_run(tmp_path, epochs, optimizer="sgd", resume=False, samples=1, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    flat = FlatParams(model)
    opt = build_optimizer(optimizer, model.parameters(), lr=0.05, weight_decay=1e-4)
    sched = build_schedule("multistep", opt, epochs=6, milestones=[3])
    train, test = toy_splits()
    result = fit(
        model,
        opt,
        train,
        test,
        epochs=epochs,
        batch_size=25,
        seed=seed,
        scheduler=sched,
        run_dir=tmp_path,
        resume=resume,
        flat=flat,
        trajectory_dir=tmp_path / "traj",
        samples_per_epoch=samples,
        progress=False,
    )
    return model, flat, result


def test_snapshot_steps_are_evenly_spaced_and_end_the_epoch():
    assert snapshot_steps(10, 1) == {10}
    assert snapshot_steps(10, 2) == {5, 10}
    assert snapshot_steps(10, 4) == {2, 5, 8, 10}
    assert snapshot_steps(3, 5) == {1, 2, 3}  # never more than one per step


def test_fit_learns_and_records(tmp_path):
    model, flat, result = toy_run(tmp_path, 6, samples=3)
    assert result.test_acc > 0.8 and result.history[0]["train_loss"] > result.train_loss
    assert result.snapshots == 1 + 3 * 6
    traj = Trajectory(tmp_path / "traj")
    assert len(traj) == 19 and traj.num_params == flat.numel
    assert torch.equal(traj.snapshot(18), flat.data)
    assert [e["epoch"] for e in traj.entries[:4]] == [
        0,
        pytest.approx(1 / 3),
        pytest.approx(2 / 3),
        1,
    ]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert json.loads(lines[3])["lr"] == pytest.approx(0.005)  # multistep at epoch 3


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_resume_equals_uninterrupted(tmp_path, optimizer):
    straight, _, r1 = toy_run(tmp_path / "a", 6, optimizer)
    toy_run(tmp_path / "b", 2, optimizer)  # "killed" after epoch 2, with its checkpoint on disk
    resumed, _, r2 = toy_run(tmp_path / "b", 6, optimizer, resume=True)
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    assert r1.test_acc == r2.test_acc and len(r2.history) == 6
    a, b = Trajectory(tmp_path / "a" / "traj"), Trajectory(tmp_path / "b" / "traj")
    assert len(a) == len(b) == 7
    assert (a.window() == b.window()).all()


def test_divergence_is_a_clear_error(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=1e38)
    train, test = toy_splits()
    with pytest.raises(LowdimError, match="diverged"):
        fit(model, opt, train, test, epochs=3, batch_size=10, progress=False)


def test_bad_loop_options():
    model = nn.Linear(16, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train, test = toy_splits()
    with pytest.raises(LowdimError, match="^batch_size must be >= 1"):
        fit(model, opt, train, test, epochs=1, batch_size=0, progress=False)
    with pytest.raises(LowdimError, match="^lr_milestones 7 must lie strictly between 0 and"):
        build_schedule("multistep", opt, epochs=5, milestones=[7])
    with pytest.raises(LowdimError, match="unknown optimizer"):
        build_optimizer("lion", model.parameters(), lr=0.1)


def test_a_batch_larger_than_the_data_warns_at_the_callers_line():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train, test = toy_splits(n=40)
    with pytest.warns(UserWarning, match="batch_size 64 x 1 process") as caught:
        fit(model, opt, train, test, epochs=1, batch_size=64, progress=False)
    ours = [w for w in caught if "batch_size 64" in str(w.message)]
    assert ours[0].filename == __file__

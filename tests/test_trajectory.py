import json

import numpy as np
import pytest
import torch

from lowdim.errors import LowdimError
from lowdim.trajectory import DATA_FILE, MANIFEST_FILE, Trajectory, TrajectoryRecorder

LAYOUT = [{"name": "w", "shape": [3, 4], "offset": 0}, {"name": "b", "shape": [3], "offset": 12}]


def record(path, n, **kw):
    rec = TrajectoryRecorder(path, LAYOUT, **kw)
    rows = [torch.randn(15) for _ in range(n)]
    for i, r in enumerate(rows):
        rec.append(r, epoch=i, step=10 * i)
    return rec, rows


def test_round_trip_window_and_blocks(tmp_path):
    _, rows = record(tmp_path, 7)
    traj = Trajectory(tmp_path)
    assert len(traj) == 7 and traj.num_params == 15 and traj.layout == LAYOUT
    assert traj.entries[3]["epoch"] == 3 and traj.entries[3]["step"] == 30
    w = traj.window(1, 7, 2)
    assert isinstance(w, np.memmap) and w.shape == (3, 15)
    assert np.array_equal(w, torch.stack(rows[1:7:2]).numpy())
    got = torch.cat([b for _, b in traj.iter_blocks(0, 7, 1, block_rows=3)])
    assert torch.equal(got, torch.stack(rows))
    assert torch.equal(traj.snapshot(4), rows[4])
    traj.verify()


@pytest.mark.parametrize("window", [(0, 8, 1), (5, 5, 1), (-1, 3, 1), (0, 3, 0)])
def test_bad_windows(tmp_path, window):
    record(tmp_path, 7)
    with pytest.raises(LowdimError):
        Trajectory(tmp_path).window(*window)


def test_partial_row_after_a_kill_is_cut_on_resume(tmp_path):
    record(tmp_path, 3)
    with open(tmp_path / DATA_FILE, "ab") as f:  # a kill halfway through a fourth row
        f.write(b"\0" * 20)
    rec = TrajectoryRecorder(tmp_path, LAYOUT, resume=True)
    assert len(rec) == 3
    rec.append(torch.ones(15), epoch=3, step=30)
    traj = Trajectory(tmp_path)
    assert len(traj) == 4 and torch.equal(traj.snapshot(3), torch.ones(15))
    traj.verify()


def test_resume_keeps_only_the_checkpointed_snapshots(tmp_path):
    _, rows = record(tmp_path, 5)
    rec = TrajectoryRecorder(tmp_path, LAYOUT, resume=True, keep=2)
    assert len(rec) == 2
    assert (tmp_path / DATA_FILE).stat().st_size == 2 * 15 * 4
    assert torch.equal(Trajectory(tmp_path).snapshot(1), rows[1])


def test_corruption_and_mismatch_are_reported(tmp_path):
    record(tmp_path, 3)
    with open(tmp_path / DATA_FILE, "r+b") as f:
        f.seek(8)
        f.write(b"\xff\xff\xff\xff")
    with pytest.raises(LowdimError, match="checksum"):
        Trajectory(tmp_path).verify()
    other = [{"name": "w", "shape": [15], "offset": 0}]
    with pytest.raises(LowdimError, match="another model"):
        TrajectoryRecorder(tmp_path, other, resume=True)
    with open(tmp_path / DATA_FILE, "r+b") as f:
        f.truncate(10)
    with pytest.raises(LowdimError, match="truncated"):
        Trajectory(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"format": "x"}))
    with pytest.raises(LowdimError):
        Trajectory(tmp_path)


def test_float64_storage(tmp_path):
    _, rows = record(tmp_path, 2, dtype="float64")
    assert Trajectory(tmp_path).window().dtype == np.float64

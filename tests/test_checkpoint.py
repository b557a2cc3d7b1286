"""Checkpoints: every damaged record is one LowdimError naming the file, and leaves the model and
the optimiser as they were; mid-epoch checkpoints resume to the uninterrupted run's result."""

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lowdim.cli import main
from lowdim.data import Split
from lowdim.data.stream import StreamSplit
from lowdim.errors import LowdimError
from lowdim.io import load_tensors
from lowdim.params import FlatParams
from lowdim.train import build_optimizer, build_schedule, fit, load_checkpoint
from lowdim.train.metrics import read_records
from lowdim.trajectory import Trajectory


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: threads only contend (and on a busy machine, badly)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_splits(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = (x.flatten(1).sum(1) > 0).long()
    return Split(x[: n * 3 // 4], y[: n * 3 // 4]), Split(x[n * 3 // 4 :], y[n * 3 // 4 :])


def toy_parts(optimizer="sgd", seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = build_optimizer(optimizer, model.parameters(), lr=0.05, weight_decay=1e-4)
    sched = build_schedule("multistep", opt, epochs=4, milestones=[2])
    return model, opt, sched


class Stop(Exception):
    """Stands for a kill after a given number of optimiser steps."""


def toy_fit(folder, *, epochs=4, resume=False, stop_after=None, optimizer="sgd", split=None, **kw):
    model, opt, sched = toy_parts(optimizer)
    train, test = split or toy_splits()
    if stop_after is not None:
        count = [0]

        def hook(*_):
            count[0] += 1
            if count[0] > stop_after:
                raise Stop

        opt.register_step_pre_hook(hook)
    try:
        result = fit(
            model,
            opt,
            train,
            test,
            epochs=epochs,
            batch_size=16,
            seed=1,
            scheduler=sched,
            run_dir=folder,
            resume=resume,
            flat=FlatParams(model),
            trajectory_dir=folder / "traj",
            samples_per_epoch=3,
            progress=False,
            **kw,
        )
    except Stop:
        return None, None
    return model, result


# -- damaged checkpoints ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    toy_fit(folder, epochs=1)
    ckpt = folder / "checkpoint"
    record = json.loads((ckpt / "state.json").read_text())
    return record, load_tensors(ckpt / record["tensors_file"])


def _write_record(ckpt, record):
    (ckpt / "state.json").write_text(json.dumps(record))


def _write_tensors(ckpt, record, tensors=None, raw=None):
    """Replace the tensors file (and its digest in the record, so the damage is past that
    check)."""
    path = ckpt / record["tensors_file"]
    if raw is None:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    else:
        path.write_bytes(raw)
    record["tensors_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    _write_record(ckpt, record)


def _record(change):
    def damage(ckpt, record, tensors):
        change(record)
        _write_record(ckpt, record)

    return damage


def _tensors(change):
    def damage(ckpt, record, tensors):
        change(tensors)
        _write_tensors(ckpt, record, tensors)

    return damage


def _raw(make):
    def damage(ckpt, record, tensors):
        _write_tensors(ckpt, record, raw=make(ckpt / record["tensors_file"]))

    return damage


def _set(path, value):
    def change(obj):
        *head, last = path
        for key in head:
            obj = obj[key]
        obj[last] = value

    return change


def _drop(path):
    def change(obj):
        *head, last = path
        for key in head:
            obj = obj[key]
        del obj[last]

    return change


def _text(text):
    def damage(ckpt, record, tensors):
        (ckpt / "state.json").write_text(text)

    return damage


DAMAGES = {
    "record not JSON": (_text("{not json"), "state.json"),
    "record a list": (_text("[1, 2]"), "state.json"),
    "record empty": (_text("{}"), "state.json"),
    "record not UTF-8": (_text("\udcff"[:0] + "\x00"), "state.json"),
    "no progress": (_record(_drop(["progress"])), "state.json"),
    "progress a list": (_record(_set(["progress"], [1])), "state.json"),
    "epoch a string": (_record(_set(["progress", "epoch"], "1")), "state.json"),
    "epoch negative": (_record(_set(["progress", "epoch"], -1)), "state.json"),
    "epoch a float": (_record(_set(["progress", "epoch"], 1.5)), "state.json"),
    "epoch a bool": (_record(_set(["progress", "epoch"], True)), "state.json"),
    "step missing": (_record(_drop(["progress", "step"])), "state.json"),
    "step a string": (_record(_set(["progress", "step"], "12")), "state.json"),
    "step negative": (_record(_set(["progress", "step"], -3)), "state.json"),
    "step a float": (_record(_set(["progress", "step"], 12.0)), "state.json"),
    "snapshots negative": (_record(_set(["progress", "snapshots"], -1)), "state.json"),
    "wall time a string": (_record(_set(["progress", "wall_seconds"], "1s")), "state.json"),
    "epoch_step a float": (_record(_set(["progress", "epoch_step"], 0.5)), "state.json"),
    "mid-epoch without totals": (_record(_set(["progress", "epoch_step"], 3)), "state.json"),
    "no tensors_file": (_record(_drop(["tensors_file"])), "state.json"),
    "tensors_file a number": (_record(_set(["tensors_file"], 7)), "state.json"),
    "tensors_file outside": (_record(_set(["tensors_file"], "../x.safetensors")), "state.json"),
    "tensors_file absolute": (_record(_set(["tensors_file"], "/etc/passwd")), "state.json"),
    "tensors_file in a subfolder": (_record(_set(["tensors_file"], "a/b")), "state.json"),
    "tensors_file dot-dot": (_record(_set(["tensors_file"], "..")), "state.json"),
    "no digest": (_record(_drop(["tensors_sha256"])), "state.json"),
    "digest a list": (_record(_set(["tensors_sha256"], [1])), "state.json"),
    "digest mismatch": (_record(_set(["tensors_sha256"], "0" * 64)), "checkpoint"),
    "tensors file missing": (_record(_set(["tensors_file"], "state-x.safetensors")), "checkpoint"),
    "param_groups missing": (_record(_drop(["param_groups"])), "state.json"),
    "param_groups a dict": (_record(_set(["param_groups"], {})), "state.json"),
    "params not integers": (_record(_set(["param_groups", 0, "params"], ["a"])), "state.json"),
    "plain state a list": (_record(_set(["optim_plain_state"], [])), "state.json"),
    "plain state bad key": (_record(_set(["optim_plain_state"], {"x": {}})), "state.json"),
    "scheduler missing": (_record(_drop(["scheduler"])), "state.json"),
    "scheduler counter a string": (_record(_set(["scheduler", "last_epoch"], "1")), "state.json"),
    "scheduler lrs short": (_record(_set(["scheduler", "base_lrs"], [])), "state.json"),
    "scheduler counter missing": (_record(_drop(["scheduler", "_step_count"])), "state.json"),
    "two param groups": (
        _record(lambda r: r["param_groups"].append(dict(r["param_groups"][0]))),
        "state.json",
    ),
    "param group of another size": (
        _record(lambda r: r["param_groups"][0]["params"].pop()),
        "state.json",
    ),
    "param group without lr": (_record(_drop(["param_groups", 0, "lr"])), "state.json"),
    "lr a string": (_record(_set(["param_groups", 0, "lr"], "fast")), "state.json"),
    "plain state for a missing parameter": (
        _record(_set(["optim_plain_state"], {"9": {"momentum_buffer": None}})),
        "state.json",
    ),
    "momentum a string": (
        _record(_set(["optim_plain_state"], {"0": {"momentum_buffer": "x"}})),
        "state.json",
    ),
    "garbled tensors": (_raw(lambda p: bytes(range(256)) * 4), "safetensors"),
    "truncated tensors": (
        _raw(lambda p: p.read_bytes()[: len(p.read_bytes()) // 2]),
        "safetensors",
    ),
    "a pickle": (_raw(lambda p: pickle.dumps({"model.0.weight": [1, 2]})), "safetensors"),
    "empty tensors file": (_raw(lambda p: b""), "safetensors"),
    "no rng.cpu": (_tensors(lambda t: t.pop("rng.cpu")), "safetensors"),
    "bad rng.cpu": (_tensors(_set(["rng.cpu"], torch.zeros(7, dtype=torch.uint8))), "safetensors"),
    "rng.cpu floats": (_tensors(_set(["rng.cpu"], torch.zeros(5056))), "safetensors"),
    "a model tensor missing": (_tensors(lambda t: t.pop("model.1.weight")), "safetensors"),
    "an extra model tensor": (_tensors(_set(["model.9.weight"], torch.zeros(2))), "safetensors"),
    "a model tensor reshaped": (
        _tensors(lambda t: t.update({"model.1.weight": t["model.1.weight"].t()})),
        "safetensors",
    ),
    "a model tensor in float64": (
        _tensors(lambda t: t.update({"model.1.bias": t["model.1.bias"].double()})),
        "safetensors",
    ),
    "an unknown tensor": (_tensors(_set(["extra"], torch.zeros(1))), "safetensors"),
    "a bad optimiser tensor name": (_tensors(_set(["optim.x"], torch.zeros(1))), "safetensors"),
    "momentum of another shape": (
        _tensors(_set(["optim.0.momentum_buffer"], torch.zeros(3, 3))),
        "safetensors",
    ),
    "state for a missing parameter": (
        _tensors(_set(["optim.7.momentum_buffer"], torch.zeros(2))),
        "state.json",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGES))
def test_a_damaged_checkpoint_is_one_error_naming_the_file_and_changes_nothing(
    tmp_path, good_checkpoint, case
):
    damage, names = DAMAGES[case]
    record, tensors = good_checkpoint
    record = json.loads(json.dumps(record))
    tensors = {k: v.clone() for k, v in tensors.items()}
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    _write_tensors(ckpt, record, tensors)
    damage(ckpt, record, tensors)

    model, opt, sched = toy_parts(seed=5)
    # Some optimiser state to keep: one step's momentum.
    model(torch.randn(4, 1, 4, 4)).sum().backward()
    opt.step()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    groups = json.dumps(opt.state_dict()["param_groups"])
    sched_state = dict(sched.state_dict())
    rng = torch.get_rng_state()

    with pytest.raises(LowdimError) as err:
        load_checkpoint(ckpt, model=model, optimizer=opt, scheduler=sched)
    message = str(err.value)
    assert "\n" not in message and str(ckpt) in message and names in message, message
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    for p, m in zip(model.parameters(), momentum, strict=True):
        assert torch.equal(opt.state[p]["momentum_buffer"], m)
    assert json.dumps(opt.state_dict()["param_groups"]) == groups
    assert sched.state_dict() == sched_state
    assert torch.equal(torch.get_rng_state(), rng)


def test_the_undamaged_checkpoint_loads(tmp_path, good_checkpoint):
    record, tensors = good_checkpoint
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    _write_tensors(ckpt, json.loads(json.dumps(record)), tensors)
    model, opt, sched = toy_parts(seed=5)
    progress = load_checkpoint(ckpt, model=model, optimizer=opt, scheduler=sched)
    assert progress["epoch"] == 1 and progress["epoch_step"] == 0
    assert torch.equal(model.state_dict()["1.weight"], tensors["model.1.weight"])


def test_an_optimiser_that_refuses_its_state_is_left_as_it_was(tmp_path, good_checkpoint):
    class Picky(torch.optim.SGD):
        def load_state_dict(self, state_dict):
            if state_dict["state"] and len(state_dict["state"]) > 0 and not getattr(self, "ok", 0):
                super().load_state_dict(state_dict)  # changes it, then objects
                raise KeyError("momentum_buffer")
            super().load_state_dict(state_dict)

    record, tensors = good_checkpoint
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    _write_tensors(ckpt, json.loads(json.dumps(record)), tensors)
    model, _, _ = toy_parts(seed=5)
    opt = Picky(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    model(torch.randn(4, 1, 4, 4)).sum().backward()
    opt.step()
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    opt.ok = 0
    calls = []
    original = Picky.load_state_dict

    def load(self, state_dict):
        calls.append(1)
        self.ok = len(calls) > 1  # the restore goes through
        return original(self, state_dict)

    Picky.load_state_dict = load
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LowdimError, match="does not fit the optimiser"):
        load_checkpoint(ckpt, model=model, optimizer=opt, scheduler=None)
    for p, m in zip(model.parameters(), momentum, strict=True):
        assert torch.equal(opt.state[p]["momentum_buffer"], m)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_a_damaged_checkpoint_through_the_command_line(tmp_path, capsys):
    save = tmp_path / "run"
    args = ["train-sgd", "--quiet", "--epochs", "2", "--save-dir", str(save)]
    main(["train-sgd", "--quiet", "--epochs", "1", "--save-dir", str(save)])
    # A run stopped after its first epoch of two, whose record was then damaged.
    (save / "summary.json").unlink()
    config = json.loads((save / "config.json").read_text())
    (save / "config.json").write_text(json.dumps({**config, "epochs": 2}))
    (save / "checkpoint" / "state.json").write_text('{"progress": []}')
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "state.json" in err and "Traceback" not in err


# -- mid-epoch checkpoints -------------------------------------------------------------------


def _same_run(a, b, ra, rb, model_a, model_b):
    for p, q in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(p, q)

    def strip(records):
        return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in records]

    assert strip(ra.history) == strip(rb.history)
    lines = [
        strip(json.loads(line) for line in (f / "metrics.jsonl").read_text().splitlines())
        for f in (a, b)
    ]
    assert lines[0] == lines[1] and len(lines[0]) == ra.epochs
    ta, tb = Trajectory(a / "traj"), Trajectory(b / "traj")
    assert ta.entries == tb.entries and (ta.window() == tb.window()).all()
    assert ra.snapshots == rb.snapshots == len(ta)


@pytest.mark.parametrize(
    "optimizer, accumulate, every, stops",
    [
        ("sgd", 1, 3, [4, 5, 9, 1]),  # 19 steps per epoch: stops inside epochs 1, 2 and 3
        ("adam", 1, 5, [7, 30]),
        ("sgd", 2, 2, [3, 2, 6]),  # 10 steps of 2 batches, the last of 1
        ("adamw", 3, 1, [1, 1, 5, 2]),
    ],
)
def test_a_run_stopped_inside_epochs_resumes_to_the_same_result(
    tmp_path, optimizer, accumulate, every, stops
):
    a, b = tmp_path / "a", tmp_path / "b"
    kw = {"optimizer": optimizer, "accumulate": accumulate, "checkpoint_every": every}
    model_a, ra = toy_fit(a, **kw)
    inside = 0
    for stop in stops:
        assert toy_fit(b, resume=True, stop_after=stop, **kw) == (None, None)
        progress = json.loads((b / "checkpoint" / "state.json").read_text())["progress"]
        inside += progress["epoch_step"] > 0
    assert inside >= 2
    model_b, rb = toy_fit(b, resume=True, **kw)
    _same_run(a, b, ra, rb, model_a, model_b)


def test_checkpoints_inside_epochs_do_not_change_the_result(tmp_path):
    model_a, ra = toy_fit(tmp_path / "a")
    model_b, rb = toy_fit(tmp_path / "b", checkpoint_every=2)
    _same_run(tmp_path / "a", tmp_path / "b", ra, rb, model_a, model_b)


class Source:
    """A stream source over in-memory images, with seeded noise as its augmentation."""

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def load(self, index, seed):
        if seed is None:
            return self.x[index]
        g = torch.Generator().manual_seed(seed)
        return self.x[index] + 0.1 * torch.randn(self.x[index].shape, generator=g)


def test_a_streamed_split_resumes_inside_an_epoch(tmp_path):
    train, test = toy_splits()
    stream = StreamSplit(Source(train.x), train.y, augment=True)
    a, b = tmp_path / "a", tmp_path / "b"
    model_a, ra = toy_fit(a, split=(stream, test), checkpoint_every=4, epochs=2)
    for stop in (6, 9):
        toy_fit(b, resume=True, stop_after=stop, split=(stream, test), checkpoint_every=4, epochs=2)
    model_b, rb = toy_fit(b, resume=True, split=(stream, test), checkpoint_every=4, epochs=2)
    _same_run(a, b, ra, rb, model_a, model_b)


def test_a_mid_epoch_checkpoint_that_does_not_fit_the_epoch_is_refused(tmp_path):
    toy_fit(tmp_path, stop_after=17, checkpoint_every=17)  # 19 steps per epoch
    assert (
        json.loads((tmp_path / "checkpoint" / "state.json").read_text())["progress"]["epoch_step"]
        == 17
    )
    train, test = toy_splits()
    small = (Split(train.x[:100], train.y[:100]), test)  # 7 steps per epoch
    with pytest.raises(LowdimError, match="after step 17 of epoch 1, which has 7 steps"):
        toy_fit(tmp_path, resume=True, split=small, checkpoint_every=17)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_checkpoint_every(tmp_path, bad):
    with pytest.raises(LowdimError, match="^checkpoint_every must be"):
        toy_fit(tmp_path, checkpoint_every=bad)


def test_negative_checkpoint_every_on_the_command_line_writes_nothing(tmp_path, capsys):
    save = tmp_path / "run"
    assert main(["train-sgd", "--checkpoint-every", "-2", "--save-dir", str(save)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--checkpoint-every must be >= 0" in err
    assert not save.exists()


def _two_process_worker(rank: int, port: int, out: str) -> None:
    import os

    from lowdim import distributed

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    distributed.setup(torch.device("cpu"))
    out = Path(out)
    kw = {"checkpoint_every": 3, "accumulate": 2}
    model_a, ra = toy_fit(out / "a", epochs=3, **kw)
    inside = []
    for stop in (4, 5, 5):  # both processes stop before the same step (5 steps an epoch)
        toy_fit(out / "b", epochs=3, resume=True, stop_after=stop, **kw)
        distributed.barrier()  # the checkpoint is written before anyone reads it
        record = json.loads((out / "b" / "checkpoint" / "state.json").read_text())
        inside.append(record["progress"]["epoch_step"])
    model_b, rb = toy_fit(out / "b", epochs=3, resume=True, **kw)
    same = all(
        torch.equal(p, q) for p, q in zip(model_a.parameters(), model_b.parameters(), strict=True)
    )
    strip = [
        [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in x.history] for x in (ra, rb)
    ]
    (out / f"rank{rank}").write_text(
        json.dumps({"same": same, "history": strip[0] == strip[1], "inside": inside})
    )
    distributed.teardown()


def test_two_processes_resume_inside_an_epoch(tmp_path, free_port):
    """Each process's running sums come back (rank 0 writes them all), so the resumed data
    parallel run equals the uninterrupted one."""
    import torch.multiprocessing as mp

    mp.spawn(_two_process_worker, args=(free_port, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}").read_text())
        assert got == {"same": True, "history": True, "inside": [3, 3, 3]}
    progress = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())["progress"]
    assert progress["epoch"] == 3


# -- the metrics file a resume reads back ------------------------------------------------------


def test_a_metrics_line_torn_by_a_kill_is_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "x": 1}\n{"epoch": 2, "x": 2}\n{"epoch": 3, "x"')
    assert read_records(path, 5) == ['{"epoch": 1, "x": 1}', '{"epoch": 2, "x": 2}']
    assert read_records(path, 1) == ['{"epoch": 1, "x": 1}']
    assert read_records(tmp_path / "none.jsonl", 3) == []


@pytest.mark.parametrize(
    "text, expect",
    [
        ('{"epoch": 1}\n{"epo\n{"epoch": 3}\n', "line 2 of the metrics file"),
        ('{"epoch": 1}\n[1, 2]\n', "line 2 of the metrics file"),
        ('{"epoch": "1"}\n', "line 1 of the metrics file"),
        ('{"loss": 1}\n', "line 1 of the metrics file"),
        (b"\xff\xfe\n", "cannot read the metrics file"),
    ],
)
def test_a_damaged_metrics_file_is_one_error_naming_it(tmp_path, text, expect):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(LowdimError, match=expect) as err:
        read_records(path, 5)
    assert str(path) in str(err.value) and "\n" not in str(err.value)

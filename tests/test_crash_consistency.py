"""Crash consistency: a run killed with SIGKILL at any instant, then run again with --resume
(killed again, resumed again, ...), ends bit-identical to the uninterrupted run.

Each run is a forked child of this process (torch and lowdim are imported already, so a child
starts in milliseconds) that counts its I/O events (file writes, truncations, fsync, rename,
unlink, mkdir), its optimiser steps and the blocks of basis extraction, and SIGKILLs itself at
event number k; a write chosen as the kill point is torn (half its bytes reach the file). An
instrumented uninterrupted run lists every event first; the first kill of each chain is drawn
from that list by a seeded RNG, category by category (trajectory, checkpoint, metrics,
extraction, final outputs, steps, the rest), so every kind of write is hit; the kills after it,
in the resumed runs, are drawn from their own span. A few kills come from a timer instead.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import lowdim.bases.pca
import lowdim.cli
import lowdim.data.digits
import lowdim.io
import lowdim.jobs.dldr
import lowdim.jobs.plots
import lowdim.jobs.subspace
from lowdim.io import load_tensors
from lowdim.trajectory import Trajectory

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

# What every child would otherwise import or read again on its own: torch imports its compiler
# (and sympy) on the first optimiser step, seconds on a busy machine.
import torch._dynamo  # noqa: E402, F401

_READ_DIGITS = getattr(lowdim.data.digits, "_read_digits", None)
_DIGITS = _READ_DIGITS() if _READ_DIGITS is not None else None

CHILD_TIMEOUT = 180.0  # seconds for one child run, on a very busy machine

SGD = [
    "train-sgd",
    "--quiet",
    "--dataset",
    "digits",
    "--arch",
    "mlp",
    "--hidden",
    "32",
    "--epochs",
    "2",
    "--batch-size",
    "96",
    "--lr-milestones",
    "1",
    "--samples-per-epoch",
    "3",
    "--checkpoint-every",
    "4",
    "--seed",
    "2",
]
PSGD = [
    "train-psgd",
    "--quiet",
    "--n-components",
    "4",
    "--epochs",
    "2",
    "--lr",
    "0.3",
    "--batch-size",
    "128",
    "--checkpoint-every",
    "5",
]
INTRINSIC = [
    "intrinsic-dim",
    "--quiet",
    "--arch",
    "mlp",
    "--hidden",
    "32",
    "--dims",
    "10,20",
    "--epochs",
    "2",
    "--batch-size",
    "256",
]


# -- the child ---------------------------------------------------------------------------------


class _Events:
    """Counts events; at number `kill_at`, reports it and SIGKILLs the process. `kill_at` may
    also be (text, k): the event right after the k-th whose label contains `text`."""

    def __init__(self, kill_at, report: int, root: Path, listing: bool) -> None:
        self.n, self.report, self.root, self.listing = 0, report, root, listing
        self.kill_at, self.after = (
            (None, list(kill_at))
            if isinstance(kill_at, tuple)
            else (
                kill_at,
                None,
            )
        )

    def name(self, path) -> str:
        try:
            return os.path.relpath(os.fspath(path), self.root)
        except (TypeError, ValueError):
            return str(path)

    def hit(self, label: str, torn=None) -> None:
        self.n += 1
        if self.listing:
            os.write(self.report, f"event {label}\n".encode())
        if self.after is not None and self.after[0] in label:
            self.after[1] -= 1
            if self.after[1] == 0:
                self.kill_at, self.after = self.n + 1, None
                return
        if self.n == self.kill_at:
            os.write(self.report, f"killed {self.n} {label}\n".encode())
            if torn is not None:
                torn()
            os.kill(os.getpid(), signal.SIGKILL)


class _File:
    """A file opened for writing whose writes and truncations are events."""

    def __init__(self, f, label: str, events: _Events) -> None:
        self._f, self._label, self._events = f, label, events

    def write(self, data):
        def torn():
            self._f.write(data[: len(data) // 2])
            self._f.flush()

        self._events.hit(f"write {self._label}", torn)
        return self._f.write(data)

    def truncate(self, *args):
        self._events.hit(f"truncate {self._label}")
        return self._f.truncate(*args)

    def __enter__(self):
        self._f.__enter__()
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

    def __iter__(self):
        return iter(self._f)

    def __getattr__(self, name):
        return getattr(self._f, name)


def _instrument(events: _Events) -> None:
    real_open = io.open

    def open_(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if isinstance(file, int) or not any(c in mode for c in "wax+"):
            return f
        return _File(f, events.name(file), events)

    builtins.open = io.open = open_

    def fd_name(fd: int) -> str:
        try:
            return events.name(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return "?"

    def wrap(name: str, label) -> None:
        real = getattr(os, name)

        def call(*args, **kwargs):
            events.hit(f"{name} {label(*args)}")
            return real(*args, **kwargs)

        setattr(os, name, call)

    wrap("fsync", lambda fd: fd_name(fd if isinstance(fd, int) else fd.fileno()))
    wrap("replace", lambda src, dst, *a: events.name(dst))
    wrap("rename", lambda src, dst, *a: events.name(dst))
    wrap("unlink", lambda path, *a: events.name(path))
    wrap("remove", lambda path, *a: events.name(path))
    wrap("mkdir", lambda path, *a: events.name(path))
    register_optimizer_step_pre_hook(lambda *a: events.hit("step"))

    extract = lowdim.jobs.subspace.extract_basis

    def extract_basis(*args, **kwargs):
        events.hit("extract begin")
        basis = extract(*args, **kwargs)
        events.hit("extract end")
        return basis

    lowdim.jobs.subspace.extract_basis = extract_basis
    blocks = getattr(lowdim.bases.pca, "_column_blocks", None)
    if blocks is not None:

        def column_blocks(*args, **kwargs):
            for block in blocks(*args, **kwargs):
                events.hit("extract block")
                yield block

        lowdim.bases.pca._column_blocks = column_blocks

    # Plots are slow and never compared: a small atomic write stands in for each.
    def plot(*args, path=None, **kwargs):
        target = path if path is not None else args[1]
        lowdim.io.atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"plot"))

    lowdim.jobs.plots.plot_curves = plot
    if _DIGITS is not None:  # read once, by the parent
        lowdim.data.digits._read_digits = lambda: (_DIGITS[0].copy(), _DIGITS[1].copy())
    lowdim.jobs.plots.plot_intrinsic = plot
    lowdim.jobs.dldr.plot_spectrum = plot


def _child(argv: list[str], kill_at, report: Path, root: Path, listing: bool):
    fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    err = os.open(f"{report}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(err, 2)  # the one-line error of a failed run, for the parent to read
    sys.stderr = os.fdopen(err, "w", buffering=1)
    code = 70
    try:
        torch.set_num_threads(1)
        events = _Events(kill_at, fd, root, listing)
        _instrument(events)
        code = lowdim.cli.main(argv)
        os.write(fd, f"done {events.n} {code}\n".encode())
    except BaseException as e:  # noqa: BLE001 - a crash of the child is reported, not raised
        os.write(fd, f"crashed {type(e).__name__}: {e}\n".encode())
    finally:
        os._exit(code)


def run_child(argv, root: Path, *, kill_at=None, kill_after_s=None, listing=False) -> dict:
    """Run `lowdim argv` in a forked child; return {"status": "killed" | exit code, "events":
    [labels] (with `listing`), "killed_at": label, "count": events of a finished run,
    "stderr": what it printed there}."""
    report = root / f".report-{time.monotonic_ns()}"
    pid = os.fork()
    if pid == 0:
        _child([str(a) for a in argv], kill_at, report, root, listing)
    deadline = time.monotonic() + CHILD_TIMEOUT
    timed = None if kill_after_s is None else time.monotonic() + kill_after_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        now = time.monotonic()
        if timed is not None and now >= timed:
            os.kill(pid, signal.SIGKILL)
            timed = None
        if now > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"lowdim {' '.join(map(str, argv))} hung for {CHILD_TIMEOUT}s")
        time.sleep(0.002)
    lines = report.read_text().splitlines() if report.exists() else []
    report.unlink(missing_ok=True)
    err = Path(f"{report}.err")
    out = {"events": [ln[6:] for ln in lines if ln.startswith("event ")]}
    out["stderr"] = err.read_text() if err.exists() else ""
    err.unlink(missing_ok=True)
    for ln in lines:
        if ln.startswith("crashed"):
            pytest.fail(f"lowdim {' '.join(map(str, argv))}: {ln}")
        if ln.startswith("killed"):
            out["killed_at"] = ln.split(" ", 2)[2]
        if ln.startswith("done"):
            out["count"] = int(ln.split()[1])
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        out["status"] = "killed"
    else:
        out["status"] = os.WEXITSTATUS(status)
    return out


# -- comparing runs ----------------------------------------------------------------------------


def _no_timings(obj):
    """`obj` without the keys that measure time (wall_seconds, epoch_seconds, basis_seconds)."""
    if isinstance(obj, dict):
        return {k: _no_timings(v) for k, v in obj.items() if not k.endswith("seconds")}
    if isinstance(obj, list):
        return [_no_timings(v) for v in obj]
    return obj


def _json(path: Path):
    return _no_timings(json.loads(path.read_text()))


def _lines(path: Path):
    return [_no_timings(json.loads(line)) for line in path.read_text().splitlines()]


def _same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_tensors(a), load_tensors(b)
    assert ta.keys() == tb.keys(), (a, b)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), (b, k)


def _same_run(ref: Path, run: Path) -> None:
    """A finished run folder equals the reference (timings aside)."""
    assert (run / "summary.json").exists(), f"{run} did not finish"
    assert _json(run / "summary.json") == _json(ref / "summary.json")
    if (ref / "config.json").exists():
        assert _json(run / "config.json") == _json(ref / "config.json")
    assert _lines(run / "metrics.jsonl") == _lines(ref / "metrics.jsonl")
    for name in ("model.safetensors", "basis.safetensors", "subspace.safetensors"):
        if (ref / name).exists():
            _same_tensors(ref / name, run / name)
    if (ref / "trajectory").exists():
        a, b = Trajectory(ref / "trajectory"), Trajectory(run / "trajectory")
        assert a.entries == b.entries
        assert (ref / "trajectory" / "snapshots.bin").read_bytes() == (
            run / "trajectory" / "snapshots.bin"
        ).read_bytes()
        b.verify()
    if (ref / "checkpoint" / "state.json").exists():
        a, b = _json(ref / "checkpoint" / "state.json"), _json(run / "checkpoint" / "state.json")
        a.pop("tensors_sha256"), b.pop("tensors_sha256")  # its tensors are compared instead
        assert a == b
        name = a["tensors_file"]  # model, optimiser state, generator state
        _same_tensors(ref / "checkpoint" / name, run / "checkpoint" / name)


def _same_intrinsic(ref: Path, run: Path) -> None:
    _same_run(ref, run)
    _same_run(ref / "baseline", run / "baseline")
    points = sorted(p.name for p in (ref / "points").iterdir())
    assert sorted(p.name for p in (run / "points").iterdir()) == points
    for name in points:
        _same_run(ref / "points" / name, run / "points" / name)


# -- the chains of kills -----------------------------------------------------------------------

CATEGORIES = {
    "trajectory": lambda e: "trajectory/" in e,
    "checkpoint": lambda e: "checkpoint/" in e,
    "metrics": lambda e: "metrics.jsonl" in e,
    "extraction": lambda e: e.startswith("extract"),
    "outputs": lambda e: any(
        n in e for n in ("model.safetensors", "summary.json", "basis", "subspace", "config")
    ),
    "steps": lambda e: e == "step",
}


def _category(event: str) -> str:
    return next((c for c, test in CATEGORIES.items() if test(event)), "other")


def first_kills(events: list[str], rng: random.Random):
    """Distinct event numbers (1-based), drawn category by category in turn."""
    pools: dict[str, list[int]] = {}
    for i, e in enumerate(events, start=1):
        pools.setdefault(_category(e), []).append(i)
    for pool in pools.values():
        rng.shuffle(pool)
    while any(pools.values()):
        for cat in sorted(pools):
            if pools[cat]:
                yield pools[cat].pop()


def resume_to_the_end(cmd, save_dir, root, kills) -> None:
    out = run_child([*cmd.argv, "--save-dir", save_dir, "--resume"], root)
    assert out["status"] == 0, f"the resume after kills at {kills} failed: {out['stderr']}"


def kill_chain(cmd, tmp_path, i, kill_first, rng=None, span=0, follow_ups=0) -> list[str]:
    """In a fresh folder: a run killed at event `kill_first`, up to `follow_ups` resumed runs
    killed at random events (up to `span`) of their own, a last resume to the end; then the
    result is compared with the reference. Returns the labels of the events killed at."""
    folder, save_dir, root = cmd.make(tmp_path, i)
    out = run_child([*cmd.argv, "--save-dir", save_dir], root, kill_at=kill_first)
    assert out["status"] == "killed", f"event {kill_first} did not come"
    kills = [out["killed_at"]]
    for _ in range(follow_ups):
        out = run_child(
            [*cmd.argv, "--save-dir", save_dir, "--resume"], root, kill_at=rng.randint(1, span)
        )
        if out["status"] != "killed":
            break
        kills.append(out["killed_at"])
    if out["status"] != 0:
        resume_to_the_end(cmd, save_dir, root, kills)
    cmd.check(folder)
    return kills


def run_chains(chains) -> list[str]:
    """Run every chain (a function returning its kills); all the kills, in order."""
    return [kill for chain in chains for kill in chain()]


class Command:
    """One command under test: its arguments, its reference run, its fresh folders."""

    def __init__(self, name, argv, tmp_path_factory, base=None):
        self.name, self.argv, self.base = name, argv, base
        root = tmp_path_factory.mktemp(f"{name}-ref")
        save_dir = self._prepare(root)
        out = run_child([*argv, "--save-dir", save_dir], root, listing=True)
        assert out["status"] == 0
        self.events: list[str] = out["events"]
        self.reference = self._result(save_dir)

    def _prepare(self, root: Path) -> Path:
        """The --save-dir in `root`: a copy of the train-sgd run for a subspace command."""
        if self.base is not None:
            shutil.copytree(self.base, root / "run", ignore=shutil.ignore_patterns("psgd"))
        return root / "run"

    def _result(self, save_dir: Path) -> Path:
        return save_dir / "psgd" if self.name == "psgd" else save_dir

    def make(self, tmp_path: Path, i: int) -> tuple[Path, Path, Path]:
        root = tmp_path / f"c{i}"
        root.mkdir()
        save_dir = self._prepare(root)
        return self._result(save_dir), save_dir, root

    def check(self, folder: Path) -> None:
        if self.name == "intrinsic":
            _same_intrinsic(self.reference, folder)
        else:
            _same_run(self.reference, folder)

    def startup(self) -> list[int]:
        """The events before the first optimiser step; a no-op mkdir only once, and no fsync
        of a temporary file (a kill there leaves what a kill at its write leaves, whole)."""
        first_step = self.events.index("step")
        seen, picked = set(), []
        for i, e in enumerate(self.events[:first_step], start=1):
            if (e.startswith("mkdir") and e in seen) or (
                e.startswith("fsync") and e.endswith(".tmp")
            ):
                continue
            seen.add(e)
            picked.append(i)
        return picked


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    sgd = Command("sgd", SGD, tmp_path_factory)
    made = {"sgd": sgd}

    def get(name: str) -> Command:
        if name not in made:
            if name == "psgd":
                made[name] = Command("psgd", PSGD, tmp_path_factory, base=sgd.reference)
            else:
                made[name] = Command("intrinsic", INTRINSIC, tmp_path_factory)
        return made[name]

    return get


@pytest.mark.parametrize(
    "name, must_hit",
    [
        ("sgd", {"trajectory", "checkpoint", "metrics", "steps", "outputs"}),
        ("psgd", {"extraction", "checkpoint", "metrics", "steps", "outputs"}),
        ("intrinsic", {"checkpoint", "metrics", "steps", "outputs"}),
    ],
)
def test_killed_anywhere_resumes_bit_identical(commands, tmp_path, name, must_hit):
    """Chains of kills (a listed event, then up to two random ones in the resumed runs), each
    resumed to the end and compared with the reference: 20 kills at least."""
    cmd = commands(name)
    rng = random.Random(name)
    firsts = first_kills(cmd.events, rng)
    span = len(cmd.events) // 3
    kills: list[str] = []

    def chain(i: int):
        def run():
            got = kill_chain(cmd, tmp_path, i, next(firsts), rng, span, follow_ups=2)
            kills.extend(got)
            return got

        return run

    run_chains(chain(i) for i in range(40) if len(kills) < 20)
    assert len(kills) >= 20, kills
    assert must_hit <= {_category(k) for k in kills}, kills


@pytest.mark.parametrize("name", ["sgd", "psgd", "intrinsic"])
def test_killed_while_starting_resumes_bit_identical(commands, tmp_path, name):
    """A kill at each event before the first optimiser step (folders, config.json, whose
    atomic write leaves a temporary file behind, trajectory, metrics, basis extraction)."""
    cmd = commands(name)
    picked = list(cmd.startup())
    assert any("config.json" in cmd.events[k - 1] for k in picked)
    assert len(picked) >= 6
    run_chains(lambda i=i, k=k: kill_chain(cmd, tmp_path, i, k) for i, k in enumerate(picked))


@pytest.mark.parametrize("name", ["sgd", "intrinsic"])
def test_killed_while_resuming_resumes_bit_identical(commands, tmp_path, name):
    """A run killed after it recorded snapshots and metrics its checkpoint does not cover,
    resumed and killed again at each event before its first step (where it cuts back the
    trajectory and the metrics, and the sweep restarts its own metrics), then resumed to the
    end."""
    cmd = commands(name)
    # The first step after the second row written to a trajectory: past a checkpoint that
    # covers only the first.
    rows = [i for i, e in enumerate(cmd.events) if e.startswith("write") and "snapshots" in e]
    first = cmd.events.index("step", rows[1]) + 1
    _, save_dir, root = cmd.make(tmp_path, "template")
    out = run_child([*cmd.argv, "--save-dir", save_dir], root, kill_at=first)
    assert out["status"] == "killed"
    shutil.copytree(root, tmp_path / "killed")  # the state each chain starts from
    listing = run_child([*cmd.argv, "--save-dir", save_dir, "--resume"], root, listing=True)
    assert listing["status"] == 0
    events = listing["events"][: listing["events"].index("step")]
    picked = [
        k
        for k, e in enumerate(events, start=1)
        if not (e.startswith("fsync") and e.endswith(".tmp")) and not e.startswith("mkdir")
    ]
    assert len(picked) >= 4

    def chain(i: int, k: int):
        def run():
            root = tmp_path / f"c{i}"
            shutil.copytree(tmp_path / "killed", root)
            save_dir = root / "run"
            out = run_child([*cmd.argv, "--save-dir", save_dir, "--resume"], root, kill_at=k)
            assert out["status"] == "killed"
            resume_to_the_end(cmd, save_dir, root, [first, out["killed_at"]])
            cmd.check(save_dir)
            return [out["killed_at"]]

        return run

    assert len(run_chains(chain(i, k) for i, k in enumerate(picked))) == len(picked)


def test_killed_between_the_trajectory_manifest_and_its_cut(commands, tmp_path):
    """A resume from a checkpoint older than the last snapshot rewrites the manifest, then
    cuts the rows it no longer names; killed in between, it resumes again."""
    cmd = commands("sgd")
    rows = [i for i, e in enumerate(cmd.events) if e.startswith("write") and "snapshots" in e]
    first = cmd.events.index("step", rows[1]) + 1
    folder, save_dir, root = cmd.make(tmp_path, 0)
    assert run_child([*SGD, "--save-dir", save_dir], root, kill_at=first)["status"] == "killed"
    cut = ("replace run/trajectory/manifest.json", 1)  # killed at the cut that follows it
    out = run_child([*SGD, "--save-dir", save_dir, "--resume"], root, kill_at=cut)
    assert out["status"] == "killed"
    out = run_child([*SGD, "--save-dir", save_dir, "--resume"], root)
    assert out["status"] == 0, out["stderr"]
    cmd.check(folder)


def test_train_sgd_killed_by_a_timer_resumes_bit_identical(commands, tmp_path):
    """Kills at moments a timer picks: anywhere, as a real kill, not only at an event."""
    cmd = commands("sgd")
    start = time.monotonic()
    assert run_child([*SGD, "--save-dir", tmp_path / "whole"], tmp_path)["status"] == 0
    whole = time.monotonic() - start
    rng = random.Random(7)
    folder = tmp_path / "timed"
    resume: list[str] = []
    kills: list[float] = []
    for _ in range(5):
        wait = rng.uniform(0, whole)
        out = run_child([*SGD, "--save-dir", folder, *resume], tmp_path, kill_after_s=wait)
        if out["status"] == 0:
            break
        kills.append(wait)
        resume = ["--resume"]

    def chain():
        resume_to_the_end(cmd, folder, tmp_path, kills)
        cmd.check(folder)
        return kills

    run_chains([chain])

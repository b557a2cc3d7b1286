"""Damaged and hostile inputs, table-driven: every one ends with status 2, at most 3 lines on
stderr, no traceback, nothing written to the run folders, and the folder not poisoned (once the
damage is repaired, the good command works).

Classes: trajectory manifests and snapshot files, checkpoint records and tensors, run configs,
run summaries, basis files, compressed models, option values (non-finite, out of range) and
unwritable folders.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lowdim.cli import main
from lowdim.io import DIGEST_KEY
from lowdim.trajectory import crc32

QUIET = ["--quiet"]
MLP = ["--dataset", "digits", "--arch", "mlp", "--hidden", "16"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Finished runs to damage: a train-sgd run (7 snapshots) with a P-SGD run inside, an
    intrinsic-dim sweep with one point, and that point compressed."""
    root = tmp_path_factory.mktemp("hostile")
    sgd = root / "sgd"
    sgd_cmd = ["train-sgd", *QUIET, *MLP, "--epochs", "3", "--samples-per-epoch", "2"]
    assert main([*sgd_cmd, "--save-dir", str(sgd)]) == 0
    psgd = ["train-psgd", *QUIET, "--save-dir", str(sgd), "--n-components", "3", "--epochs", "1"]
    assert main(psgd) == 0
    sweep = ["intrinsic-dim", *QUIET, *MLP, "--dims", "12", "--epochs", "1"]
    assert main([*sweep, "--save-dir", str(root / "id")]) == 0
    compress = ["compress", "--save-dir", str(root / "id"), "--dim", "12"]
    assert main([*compress, "--out", str(root / "model.safetensors")]) == 0
    return root


# ---- damage: each takes the copied root folder and changes one file in place --------------


def edit_json(rel: str, change):
    def damage(root: Path) -> None:
        path = root / rel
        value = json.loads(path.read_text())
        change(value)  # in place
        path.write_text(json.dumps(value))

    return damage


def write_text(rel: str, text: str):
    def damage(root: Path) -> None:
        (root / rel).write_text(text)

    return damage


def manifest(change):
    return edit_json("sgd/trajectory/manifest.json", change)


def setitem(key, value):
    def change(d):
        d[key] = value

    return change


def snapshot_entry(key, value, index=1):
    def change(d):
        d["snapshots"][index][key] = value

    return change


def flip_bytes(rel: str, offset: int, count: int = 4):
    def damage(root: Path) -> None:
        path = root / rel
        data = bytearray(path.read_bytes())
        for i in range(offset, offset + count):
            data[i] ^= 0x5A
        path.write_bytes(bytes(data))

    return damage


def snapshot_offset(root: Path, index: int) -> int:
    m = json.loads((root / "sgd/trajectory/manifest.json").read_text())
    return index * m["num_params"] * 4 + 40


def flip_snapshot(index: int):
    def damage(root: Path) -> None:
        flip_bytes("sgd/trajectory/snapshots.bin", snapshot_offset(root, index))(root)

    return damage


def nonfinite_snapshot(index: int, value: float):
    """A value written into a snapshot with its crc32 updated: what a diverged run records."""

    def damage(root: Path) -> None:
        folder = root / "sgd/trajectory"
        m = json.loads((folder / "manifest.json").read_text())
        data = np.fromfile(folder / "snapshots.bin", dtype=np.float32).reshape(-1, m["num_params"])
        data[index, 10] = value
        data.tofile(folder / "snapshots.bin")
        m["snapshots"][index]["crc32"] = crc32(data[index].tobytes())
        (folder / "manifest.json").write_text(json.dumps(m))

    return damage


def truncate(rel: str, keep: float):
    def damage(root: Path) -> None:
        path = root / rel
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return damage


def append_bytes(rel: str, count_rows: int):
    def damage(root: Path) -> None:
        m = json.loads((root / "sgd/trajectory/manifest.json").read_text())
        with open(root / rel, "ab") as f:
            f.write(b"\0" * (4 * m["num_params"] * count_rows))

    return damage


def remove(rel: str):
    def damage(root: Path) -> None:
        (root / rel).unlink()

    return damage


def checkpoint_tensors(root: Path, run: str) -> Path:
    record = json.loads((root / run / "checkpoint/state.json").read_text())
    return root / run / "checkpoint" / record["tensors_file"]


def rewrite_checkpoint_tensors(run: str, change):
    """Rewrite the checkpoint's tensors file, and update its sha256 in the record (a tampered
    file that passes the digest)."""

    def damage(root: Path) -> None:
        import hashlib

        path = checkpoint_tensors(root, run)
        change(path)
        record_path = root / run / "checkpoint/state.json"
        record = json.loads(record_path.read_text())
        record["tensors_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        record_path.write_text(json.dumps(record))

    return damage


def as_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"model.0.weight": [1.0, 2.0]}))


def without_rng(path: Path) -> None:
    tensors = load_file(str(path))
    del tensors["rng.cpu"]
    save_file(tensors, str(path))


def garble_checkpoint(run: str):
    def damage(root: Path) -> None:
        path = checkpoint_tensors(root, run)
        flip_bytes(str(path.relative_to(root)), 200)(root)

    return damage


def edit_metadata(rel: str, change):
    """Change the safetensors metadata of `rel` (tensors kept)."""

    def damage(root: Path) -> None:
        path = root / rel
        raw = path.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
        change(header["__metadata__"])
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])

    return damage


def change_basis_seed(meta: dict) -> None:
    numbers = json.loads(meta["basis_numbers"])
    numbers["seed"] += 1
    meta["basis_numbers"] = json.dumps(numbers)


def edit_tensors(rel: str, change):
    def damage(root: Path) -> None:
        path = root / rel
        raw = path.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        meta = json.loads(raw[8 : 8 + n]).get("__metadata__")
        meta.pop(DIGEST_KEY)  # rewritten as a tamperer would: no stale file digest
        tensors = load_file(str(path))
        change(tensors)
        save_file(tensors, str(path), metadata=meta)

    return damage


def bump_coords(tensors: dict) -> None:
    tensors["coords"] = tensors["coords"] + 1.0


def drop(key):
    def change(tensors: dict) -> None:
        del tensors[key]

    return change


class Resume:
    """A damage to a run that is resumed: its summary is removed first, so that --resume
    continues it from its checkpoint (and the good command after the repair does too)."""

    def __init__(self, run: str, damage) -> None:
        self.run, self.damage = run, damage

    def unfinish(self, root: Path) -> None:
        (root / self.run / "summary.json").unlink()

    def __call__(self, root: Path) -> None:
        self.unfinish(root)
        self.damage(root)


def both(*damages):
    def damage(root: Path) -> None:
        for d in damages:
            d(root)

    return damage


def nothing(root: Path) -> None:
    pass


# ---- the commands, with {root} filled in -------------------------------------------------------

PBFGS = ["train-pbfgs", *QUIET, "--save-dir", "{root}/sgd", "--name", "new"]
PBFGS += ["--n-components", "3", "--epochs", "1", "--batch-size", "256"]
TWA = ["twa", *QUIET, "--save-dir", "{root}/sgd", "--name", "new", "--epochs", "1"]
PSGD = ["train-psgd", *QUIET, "--save-dir", "{root}/sgd", "--name", "new"]
PSGD += ["--n-components", "3", "--epochs", "1"]
PSGD_RESUME = ["train-psgd", *QUIET, "--save-dir", "{root}/sgd", "--n-components", "3"]
PSGD_RESUME += ["--epochs", "1", "--resume"]
SGD_RESUME = ["train-sgd", *QUIET, *MLP, "--epochs", "3", "--samples-per-epoch", "2"]
SGD_RESUME += ["--save-dir", "{root}/sgd", "--resume"]
SGD_NEW = ["train-sgd", *QUIET, *MLP, "--epochs", "1", "--save-dir", "{root}/new"]
REPORT = ["report", "--save-dir", "{root}/sgd"]
EVALUATE = ["evaluate", "{root}/model.safetensors"]
SWEEP = ["intrinsic-dim", *QUIET, *MLP, "--dims", "12", "--epochs", "1"]
SWEEP_NEW = [*SWEEP, "--save-dir", "{root}/id-new"]
SWEEP_RESUME = [*SWEEP, "--save-dir", "{root}/id", "--resume"]
RBD = ["rbd", *QUIET, *MLP, "--dim", "8", "--epochs", "1", "--save-dir", "{root}/rbd"]
TRAJ = "sgd/trajectory"
CKPT = "sgd/checkpoint/state.json"
SGD_CONFIG = "sgd/config.json"
SGD_SUMMARY = "sgd/summary.json"
POINT = "model.safetensors"

# (id, damage, bad command, what the one line must say, good command after the repair)
CASES = [
    # trajectory manifest
    ("manifest-D-one-less", manifest(lambda d: d.update(num_params=d["num_params"] - 1)), PBFGS, "num_params", PBFGS),
    ("manifest-D-one-more", manifest(lambda d: d.update(num_params=d["num_params"] + 1)), PBFGS, "num_params", PBFGS),
    ("manifest-dtype-int8", manifest(setitem("dtype", "int8")), PBFGS, "dtype 'int8'", PBFGS),
    ("manifest-dtype-float16", manifest(setitem("dtype", "float16")), PBFGS, "does not describe", PBFGS),
    ("manifest-dtype-float64", manifest(setitem("dtype", "float64")), PBFGS, "truncated", PBFGS),
    ("manifest-dtype-number", manifest(setitem("dtype", 4)), PBFGS, "dtype 4", PBFGS),
    ("manifest-snapshots-number", manifest(setitem("snapshots", 7)), PBFGS, "snapshots is a int", PBFGS),
    ("manifest-snapshots-missing", manifest(lambda d: d.pop("snapshots")), PBFGS, "snapshots", PBFGS),
    ("manifest-entry-no-crc", manifest(lambda d: d["snapshots"][2].pop("crc32")), PBFGS, "entry 2", PBFGS),
    ("manifest-entry-bad-index", manifest(snapshot_entry("index", 5)), PBFGS, "entry 1", PBFGS),
    ("manifest-entry-string-epoch", manifest(snapshot_entry("epoch", "1")), TWA, "entry 1", TWA),
    ("manifest-entry-crc-negative", manifest(snapshot_entry("crc32", -1)), PBFGS, "entry 1", PBFGS),
    ("manifest-format", manifest(setitem("format", "other-9")), PBFGS, "format", PBFGS),
    ("manifest-not-json", write_text(f"{TRAJ}/manifest.json", "{oops"), PBFGS, "as JSON", PBFGS),
    ("manifest-a-list", write_text(f"{TRAJ}/manifest.json", "[1, 2]"), PBFGS, "JSON list", PBFGS),
    ("manifest-missing", remove(f"{TRAJ}/manifest.json"), PBFGS, "missing manifest.json", PBFGS),
    ("manifest-layout-string-shape", manifest(lambda d: d["layout"][0].update(shape="16")), PBFGS, "layout", PBFGS),
    ("manifest-other-architecture", manifest(lambda d: d["layout"][0].update(name="x")), PBFGS, "another architecture", PBFGS),
    ("snapshots-truncated", truncate(f"{TRAJ}/snapshots.bin", 0.5), PBFGS, "truncated", PBFGS),
    ("snapshots-two-rows-too-many", append_bytes(f"{TRAJ}/snapshots.bin", 2), PBFGS, "does not describe", PBFGS),
    ("snapshot-flipped-pbfgs", flip_snapshot(3), PBFGS, "snapshot 3", PBFGS),
    ("snapshot-flipped-psgd", flip_snapshot(0), PSGD, "snapshot 0", PSGD),
    ("snapshot-flipped-twa", flip_snapshot(5), TWA, "snapshot 5", TWA),
    ("snapshot-nan-pbfgs", nonfinite_snapshot(2, math.nan), PBFGS, "snapshot 2", PBFGS),
    ("snapshot-inf-twa", nonfinite_snapshot(4, math.inf), TWA, "snapshot 4", TWA),
    # checkpoint records (resuming an unfinished run)
    ("checkpoint-empty-object", Resume("sgd", write_text(CKPT, "{}")), SGD_RESUME, "state.json", SGD_RESUME),
    ("checkpoint-string-epoch", Resume("sgd", edit_json(CKPT, lambda r: r["progress"].update(epoch="3"))), SGD_RESUME, "state.json", SGD_RESUME),
    ("checkpoint-negative-step", Resume("sgd", edit_json(CKPT, lambda r: r["progress"].update(step=-4))), SGD_RESUME, "state.json", SGD_RESUME),
    ("checkpoint-not-json", Resume("sgd", write_text(CKPT, "not json")), SGD_RESUME, "state.json", SGD_RESUME),
    ("checkpoint-a-list", Resume("sgd", write_text(CKPT, "[]")), SGD_RESUME, "state.json", SGD_RESUME),
    ("checkpoint-escaping-path", Resume("sgd", edit_json(CKPT, lambda r: r.update(tensors_file="../../model.safetensors"))), SGD_RESUME, "checkpoint", SGD_RESUME),
    ("checkpoint-no-tensors-file", Resume("sgd", edit_json(CKPT, lambda r: r.pop("tensors_file"))), SGD_RESUME, "state.json", SGD_RESUME),
    ("checkpoint-garbled-tensors", Resume("sgd", garble_checkpoint("sgd")), SGD_RESUME, "checkpoint", SGD_RESUME),
    ("checkpoint-pickle-tensors", Resume("sgd", rewrite_checkpoint_tensors("sgd", as_pickle)), SGD_RESUME, "safetensors", SGD_RESUME),
    ("checkpoint-no-rng", Resume("sgd", rewrite_checkpoint_tensors("sgd", without_rng)), SGD_RESUME, "rng.cpu", SGD_RESUME),
    ("subspace-checkpoint-garbled", Resume("sgd/psgd", garble_checkpoint("sgd/psgd")), PSGD_RESUME, "checkpoint", PSGD_RESUME),
    # run configs
    ("config-not-json", write_text(SGD_CONFIG, "{"), PBFGS, "config.json", PBFGS),
    ("config-a-list", write_text(SGD_CONFIG, "[]"), PBFGS, "JSON list", PBFGS),
    ("config-string-seed", edit_json(SGD_CONFIG, setitem("seed", "0")), PBFGS, "'seed'", PBFGS),
    ("config-null-lr", edit_json(SGD_CONFIG, setitem("lr", None)), PBFGS, "'lr'", PBFGS),
    ("config-negative-epochs", edit_json(SGD_CONFIG, setitem("epochs", -1)), PSGD, "--epochs", PSGD),
    ("config-hidden-strings", edit_json(SGD_CONFIG, setitem("hidden", ["a"])), PSGD, "'hidden'", PSGD),
    ("config-unknown-arch", edit_json(SGD_CONFIG, setitem("arch", "nope")), PSGD, "nope", PSGD),
    ("config-resume-not-json", Resume("sgd", write_text(SGD_CONFIG, "}")), SGD_RESUME, "config.json", SGD_RESUME),
    ("config-resume-a-number", Resume("sgd", write_text(SGD_CONFIG, "3")), SGD_RESUME, "config.json", SGD_RESUME),
    # run summaries
    ("summary-not-json", write_text(SGD_SUMMARY, "{"), PBFGS, "summary.json", PBFGS),
    ("summary-empty-object", write_text(SGD_SUMMARY, "{}"), PBFGS, "'method' is missing", PBFGS),
    ("summary-no-test-acc", edit_json(SGD_SUMMARY, lambda s: s.pop("test_acc")), PBFGS, "'test_acc'", PBFGS),
    ("summary-other-method", edit_json(SGD_SUMMARY, setitem("method", "psgd")), PBFGS, "train-sgd run", PBFGS),
    ("summary-other-labels", edit_json(SGD_SUMMARY, setitem("train_labels_sha256", "0" * 64)), PBFGS, "labels", PBFGS),
    ("report-no-method", edit_json(SGD_SUMMARY, lambda s: s.pop("method")), REPORT, "'method'", REPORT),
    ("report-string-acc", edit_json(SGD_SUMMARY, setitem("test_acc", "high")), REPORT, "'test_acc'", REPORT),
    ("report-sub-summary-list", write_text("sgd/psgd/summary.json", "[]"), REPORT, "JSON list", REPORT),
    ("sweep-point-summary-damaged", both(remove("id/summary.json"), write_text("id/points/d12-s0/summary.json", '{"dim": "12"}')), SWEEP_RESUME, "'dim'", SWEEP_RESUME),
    # basis files of a run resumed from its checkpoint
    ("basis-garbled", Resume("sgd/psgd", truncate("sgd/psgd/basis.safetensors", 0.6)), PSGD_RESUME, "basis", PSGD_RESUME),
    ("basis-metadata-not-json", Resume("sgd/psgd", edit_metadata("sgd/psgd/basis.safetensors", lambda m: m.update(numbers="{x"))), PSGD_RESUME, "basis", PSGD_RESUME),
    # compressed models
    ("compressed-basis-seed", edit_metadata(POINT, change_basis_seed), EVALUATE, "digest", EVALUATE),
    ("compressed-anchor-seed", edit_metadata(POINT, lambda m: m.update(anchor_seed="5")), EVALUATE, "digest", EVALUATE),
    ("compressed-coords", edit_tensors(POINT, bump_coords), EVALUATE, "digest", EVALUATE),
    ("compressed-no-coords", edit_tensors(POINT, drop("coords")), EVALUATE, "coords", EVALUATE),
    ("compressed-hidden-not-json", edit_metadata(POINT, lambda m: m.update(hidden="[16")), EVALUATE, "'hidden'", EVALUATE),
    ("compressed-shape-string", edit_metadata(POINT, lambda m: m.update(input_shape='"64"')), EVALUATE, "'input_shape'", EVALUATE),
    ("compressed-classes-word", edit_metadata(POINT, lambda m: m.update(num_classes="ten")), EVALUATE, "'num_classes'", EVALUATE),
    ("compressed-no-digest", edit_metadata(POINT, lambda m: m.pop("weights_sha256")), EVALUATE, "weights_sha256", EVALUATE),
    ("compressed-unknown-kind", edit_metadata(POINT, lambda m: m.update(basis_kind="magic")), EVALUATE, "magic", EVALUATE),
    ("compressed-truncated", truncate(POINT, 0.7), EVALUATE, "model.safetensors", EVALUATE),
    ("compressed-random-bytes", write_text(POINT, "\x00\x01garbage" * 9), EVALUATE, "model.safetensors", EVALUATE),
    # options
    ("lr-nan", nothing, [*PBFGS, "--lr", "nan"], "finite", PBFGS),
    ("lr-inf", nothing, [*PSGD, "--lr", "inf"], "finite", PSGD),
    ("momentum-nan", nothing, [*SGD_NEW, "--momentum", "nan"], "finite", SGD_NEW),
    ("weight-decay-minus-inf", nothing, [*TWA, "--weight-decay=-inf"], "finite", TWA),
    ("momentum-one", nothing, [*SGD_NEW, "--momentum", "1"], "--momentum", SGD_NEW),
    ("seed-negative", nothing, [*SGD_NEW, "--seed", "-1"], "--seed", SGD_NEW),
    ("seed-negative-rbd", nothing, [*RBD, "--seed", "-5"], "--seed", RBD),
    ("seed-negative-subspace", nothing, [*PSGD, "--seed", "-2"], "--seed", PSGD),
    ("sweep-lr-nan", nothing, [*SWEEP_NEW, "--lr", "nan"], "finite", SWEEP_NEW),
    ("sigma-out-of-range", nothing, [*PBFGS, "--sigma", "1.5"], "--sigma", PBFGS),
    ("corrupt-two", nothing, [*SGD_NEW, "--corrupt", "2"], "--corrupt", SGD_NEW),
    ("save-dir-under-a-file", nothing, ["train-sgd", *QUIET, "--save-dir", "{root}/model.safetensors/run"], "not a folder", SGD_NEW),
    ("save-dir-unwritable", nothing, ["train-sgd", *QUIET, *MLP, "--epochs", "1", "--save-dir", "/proc/lowdim-run"], "/proc/lowdim-run", SGD_NEW),
]  # fmt: skip


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and modification time (what a write changes)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run_cli(argv: list[str]) -> int:
    """`lowdim ARGV` in this process: its exit status (argparse exits by SystemExit)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_at_least_sixty_cases():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("damage", "bad", "expect", "good"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_one_line_status_2_and_poisons_nothing(
    base, tmp_path, capsys, monkeypatch, damage, bad, expect, good
):
    root = tmp_path / "root"
    shutil.copytree(base, root)
    damage(root)
    before = tree(root)
    monkeypatch.delenv("LOWDIM_DEBUG", raising=False)  # as a user runs it
    code = run_cli([a.format(root=root) for a in bad])
    out = capsys.readouterr()
    assert code == 2, out.err
    lines = out.err.strip().splitlines()
    assert 1 <= len(lines) <= 3 and "Traceback" not in out.err, out.err
    assert expect in out.err, out.err
    assert tree(root) == before, "the bad command wrote into the run folders"

    # repair: the damaged files back as they were; then the good command must work
    shutil.rmtree(root)
    shutil.copytree(base, root)
    if isinstance(damage, Resume):
        damage.unfinish(root)
    assert main([a.format(root=root) for a in good]) == 0, capsys.readouterr().err

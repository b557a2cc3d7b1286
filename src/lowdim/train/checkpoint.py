"""Training checkpoints: tensors in safetensors, everything else in JSON, nothing pickled.

A checkpoint is two files in `<run>/checkpoint/`:

    state-<step>.safetensors   model.<name> (parameters and buffers), optim.<param index>.<key>
                        (optimiser state tensors), rng.cpu / rng.cuda (generator states)
    state.json          `progress` (the finished epochs, the optimiser steps, the snapshots
                        recorded, the wall time; for a checkpoint taken inside an epoch also
                        `epoch_step`, the steps done in the running epoch, with that epoch's
                        lr, seconds so far and each process's running loss / hit / example
                        sums), the optimiser's param_groups and non-tensor state, the
                        scheduler's counters, and the name and sha256 of its tensors file

Both are written atomically, the new tensors file first and the JSON, the commit record, second;
only then is the previous tensors file removed. A kill at any moment therefore leaves a record
whose tensors file exists and matches its digest: the last complete checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import LowdimError, arg
from ..io import atomic_write_json, load_tensors, save_tensors
from .checkpoint_checks import (
    SCHEDULER_KEYS,
    check_record,
    check_scheduler,
    optimizer_state,
    split_tensors,
)

RECORD = "state.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    folder: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    progress: dict,
) -> None:
    """Write the full training state; `progress` is a JSON-ready dict (epoch, step, counters)."""
    folder = Path(folder)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    plain_state: dict[str, dict] = {}
    for pid, entry in opt["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                plain_state.setdefault(str(pid), {})[key] = value
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    name = f"state-{progress['step']:09d}.safetensors"
    for stale in folder.glob(".state*.tmp"):  # left by a writer killed before its rename
        stale.unlink(missing_ok=True)
    save_tensors(folder / name, tensors)
    record = {
        "progress": progress,
        "param_groups": opt["param_groups"],
        "optim_plain_state": plain_state,
        "scheduler": {
            k: v
            for k, v in (scheduler.state_dict() if scheduler else {}).items()
            if k in SCHEDULER_KEYS
        },
        "tensors_file": name,
        "tensors_sha256": _sha256(folder / name),
    }
    atomic_write_json(folder / RECORD, record)
    for old in folder.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink()


def has_checkpoint(folder: str | Path) -> bool:
    return (Path(folder) / RECORD).exists()


def load_checkpoint(
    folder: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
) -> dict:
    """Restore model, optimiser, scheduler and RNG in place; return the saved `progress` dict
    (with `epoch_step` 0 for a checkpoint taken at the end of an epoch).

    Every part of the checkpoint is checked against the model and the optimiser before any of
    them changes, so a damaged checkpoint raises `LowdimError` (naming the file) and leaves
    them as they were.
    """
    record, tensors, path, tensors_path = _read(Path(folder))
    model_state, optim_state = split_tensors(tensors, tensors_path, model)
    state = optimizer_state(record, optim_state, optimizer, path, tensors_path.name)
    check_scheduler(record["scheduler"], scheduler, optimizer, path)

    # Everything fits: now change the optimiser (undone if torch still objects), then the rest.
    before = optimizer.state_dict()
    try:
        optimizer.load_state_dict({"state": state, "param_groups": record["param_groups"]})
    except (ValueError, KeyError, RuntimeError, TypeError, IndexError) as e:
        optimizer.load_state_dict(before)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LowdimError(
            f"the optimiser state in {path} does not fit the optimiser: {first}"
        ) from None
    model.load_state_dict(model_state)
    if scheduler is not None:
        scheduler.__dict__.update(record["scheduler"])
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return {"epoch_step": 0, **record["progress"]}


def verify_checkpoint(folder: str | Path) -> dict:
    """Check the checkpoint in `folder` as far as it can be without the model: the record,
    the tensors file and its digest, the generator state, the tensor names. Return its
    `progress`; raise `LowdimError` naming the file otherwise."""
    record, tensors, _, tensors_path = _read(Path(folder))
    split_tensors(tensors, tensors_path, None)
    return {"epoch_step": 0, **record["progress"]}


def _read(folder: Path) -> tuple[dict, dict[str, torch.Tensor], Path, Path]:
    """(the checked record, its tensors, the record's path, the tensors file's path)."""
    path = folder / RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LowdimError(f"cannot read the checkpoint record {path}: {e}") from None
    check_record(record, path)
    tensors_path = folder / record["tensors_file"]
    if not tensors_path.is_file() or _sha256(tensors_path) != record["tensors_sha256"]:
        raise LowdimError(
            f"the checkpoint in {folder} is incomplete (its tensors file {tensors_path.name!r} is "
            "missing or does not match its record); start the run again with "
            f"{arg('resume', False)} in an empty {arg('save_dir')}"
        )
    try:
        tensors = load_tensors(tensors_path)
    except LowdimError:
        raise
    except Exception as e:  # safetensors raises its own error types for a bad header
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LowdimError(f"{tensors_path} is not a safetensors file ({first})") from None
    return record, tensors, path, tensors_path

"""Training checkpoints: tensors in safetensors, everything else in JSON, nothing pickled.

A checkpoint is two files in `<run>/checkpoint/`:

    state-<step>.safetensors   model.<name> (parameters and buffers), optim.<param index>.<key>
                        (optimiser state tensors), rng.cpu / rng.cuda (generator states)
    state.json          epoch, step, counters, the optimiser's param_groups and non-tensor state,
                        the scheduler's counters, and the name and sha256 of its tensors file

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

from ..errors import LowdimError
from ..io import atomic_write_json, load_tensors, save_tensors

RECORD = "state.json"
# The counters of a torch LR scheduler; the rest (milestones, lambdas) is rebuilt from the config.
_SCHEDULER_KEYS = ("last_epoch", "_step_count", "_last_lr", "base_lrs")


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
    save_tensors(folder / name, tensors)
    record = {
        "progress": progress,
        "param_groups": opt["param_groups"],
        "optim_plain_state": plain_state,
        "scheduler": {
            k: v
            for k, v in (scheduler.state_dict() if scheduler else {}).items()
            if k in _SCHEDULER_KEYS
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
    """Restore model, optimiser, scheduler and RNG in place; return the saved `progress` dict."""
    folder = Path(folder)
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError) as e:
        raise LowdimError(f"cannot read the checkpoint record {folder / RECORD}: {e}") from None
    tensors_path = folder / record["tensors_file"]
    if not tensors_path.exists() or _sha256(tensors_path) != record["tensors_sha256"]:
        raise LowdimError(
            f"the checkpoint in {folder} is incomplete (its tensors do not match its record); "
            "start the run again without --resume in an empty --save-dir"
        )
    device = next(iter(model.state_dict().values())).device
    tensors = load_tensors(tensors_path)
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_state)
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value.to(device)
    for pid, entry in record["optim_plain_state"].items():
        state.setdefault(int(pid), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": record["param_groups"]})
    if scheduler is not None:
        scheduler.__dict__.update(record["scheduler"])
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return record["progress"]

"""What a checkpoint must be before `load_checkpoint` restores anything from it: its record
(the shape `save_checkpoint` writes), its tensors (names, shapes and dtypes against the model),
the optimiser's groups and state, and the scheduler's counters. Each check raises one
`LowdimError` naming the file, so a damaged checkpoint leaves the model, the optimiser and the
scheduler as they were.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import LowdimError, is_int, is_number
from .precision import check_loss_scale

# The counters of a torch LR scheduler; the rest (milestones, lambdas) is rebuilt from the config.
SCHEDULER_KEYS = ("last_epoch", "_step_count", "_last_lr", "base_lrs")

_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _plain(value: object) -> object:
    """A group value as JSON gives it back (tuples become lists)."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_record(record: object, path: Path) -> None:
    """Raise LowdimError naming `path` unless `record` has the shape `save_checkpoint` writes."""

    def bad(what: str) -> LowdimError:
        return LowdimError(f"the checkpoint record {path} is damaged: {what}")

    if not isinstance(record, dict):
        raise bad(f"it holds a JSON {type(record).__name__}, not an object")
    progress = record.get("progress")
    if not isinstance(progress, dict):
        raise bad("no 'progress' object")
    for key in (
        "epoch",
        "step",
        "snapshots",
        *(("epoch_step",) if "epoch_step" in progress else ()),
    ):
        value = progress.get(key)
        if not is_int(value) or value < 0:
            raise bad(f"progress.{key} is {value!r}, not an integer >= 0")
    wall = progress.get("wall_seconds")
    if not is_number(wall) or not math.isfinite(wall) or wall < 0:
        raise bad(f"progress.wall_seconds is {wall!r}, not a number >= 0")
    if progress.get("epoch_step", 0) > 0:  # taken inside an epoch: the running epoch's state
        if not is_number(progress.get("epoch_lr")):
            raise bad(f"progress.epoch_lr is {progress.get('epoch_lr')!r}, not a number")
        seconds = progress.get("epoch_seconds", 0.0)
        if not is_number(seconds) or not math.isfinite(seconds) or seconds < 0:
            raise bad(f"progress.epoch_seconds is {seconds!r}, not a number >= 0")
        world = progress.get("world", 1)
        if not is_int(world) or world < 1:
            raise bad(f"progress.world is {world!r}, not an integer >= 1")
        totals = progress.get("totals")
        if (
            not isinstance(totals, list)
            or len(totals) != world
            or not all(
                isinstance(row, list) and len(row) == 3 and all(map(is_number, row))
                for row in totals
            )
        ):
            raise bad(f"progress.totals is {totals!r}, not {world} list(s) of 3 numbers")
    if "loss_scale" in progress:  # float16 training's dynamic loss scale
        check_loss_scale(progress["loss_scale"], path)
    name = record.get("tensors_file")
    if not isinstance(name, str):
        raise bad(f"tensors_file is {name!r}, not a file name")
    if name in ("", ".", "..") or Path(name).name != name or "/" in name or "\\" in name:
        raise bad(f"tensors_file {name!r} is not a file in the checkpoint folder")
    digest = record.get("tensors_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise bad(f"tensors_sha256 is {digest!r}, not a sha256 digest")
    groups = record.get("param_groups")
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) and all(map(is_int, g["params"]))
        for g in groups
    ):
        raise bad("param_groups is not a list of groups with integer 'params'")
    plain = record.get("optim_plain_state")
    if not isinstance(plain, dict) or not all(
        k.isdigit() and isinstance(v, dict) for k, v in plain.items()
    ):
        raise bad("optim_plain_state is not an object of per-parameter objects")
    if not isinstance(record.get("scheduler"), dict):
        raise bad("no 'scheduler' object")


def split_tensors(
    tensors: dict[str, torch.Tensor], path: Path, model: nn.Module | None
) -> tuple[dict[str, torch.Tensor], dict[int, dict[str, torch.Tensor]]]:
    """(the model's state, the optimiser's state tensors by parameter index), after checking
    that `path` holds valid generator states and exactly the model's tensors (any model
    tensors when `model` is None)."""
    rng = tensors.get("rng.cpu")
    if rng is None:
        raise LowdimError(f"{path} lacks the generator state rng.cpu")
    try:
        torch.Generator().set_state(rng)  # a throwaway generator: nothing changes if it fails
    except (RuntimeError, TypeError) as e:
        raise LowdimError(f"{path} holds a bad generator state rng.cpu ({e})") from None
    if "rng.cuda" in tensors and tensors["rng.cuda"].dtype != torch.uint8:
        raise LowdimError(f"{path} holds a bad generator state rng.cuda")
    model_state: dict[str, torch.Tensor] = {}
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("model."):
            model_state[key[len("model.") :]] = value
        elif key.startswith("optim."):
            parts = key.split(".", 2)
            if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
                raise LowdimError(f"{path} holds an optimiser tensor with a bad name {key!r}")
            optim_state.setdefault(int(parts[1]), {})[parts[2]] = value
        elif key not in ("rng.cpu", "rng.cuda"):
            raise LowdimError(f"{path} holds an unknown tensor {key!r}")
    if model is None:
        return model_state, optim_state
    expected = model.state_dict()
    missing = sorted(set(expected) - set(model_state))
    extra = sorted(set(model_state) - set(expected))
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has an unexpected {extra[0]!r}"
        raise LowdimError(f"the model tensors in {path} do not fit the model: it {what}")
    for name, value in model_state.items():
        want = expected[name]
        if value.shape != want.shape or value.dtype != want.dtype:
            raise LowdimError(
                f"the model tensors in {path} do not fit the model: {name} is "
                f"{value.dtype} {tuple(value.shape)}, the model's is {want.dtype} "
                f"{tuple(want.shape)}"
            )
    return model_state, optim_state


# State that torch's own optimisers keep per parameter, shaped like the parameter.
_PARAM_SHAPED = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def optimizer_state(
    record: dict,
    optim_state: dict[int, dict],
    optimizer: torch.optim.Optimizer,
    path: Path,
    tensors_name: str,
) -> dict[int, dict]:
    """The optimiser state to load, after checking that it fits `optimizer`."""

    def bad(what: str) -> LowdimError:
        return LowdimError(
            f"the optimiser state in {path} (tensors in {tensors_name}) does not fit the "
            f"optimiser: {what}"
        )

    groups = record["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        raise bad(
            f"{len(groups)} parameter groups, the optimiser has {len(optimizer.param_groups)}"
        )
    params: dict[int, torch.Tensor] = {}
    for saved, current in zip(groups, optimizer.param_groups, strict=True):
        if len(saved["params"]) != len(current["params"]):
            raise bad("a parameter group of another size")
        params.update(zip(saved["params"], current["params"], strict=True))
        for key, value in current.items():
            if key in ("params", "param_names"):
                continue
            if key not in saved:
                if isinstance(value, bool) or value is None:  # a flag this torch added
                    saved[key] = value
                    continue
                raise bad(f"a parameter group lacks {key!r}")
            if is_number(value) and not is_number(saved[key]):
                raise bad(f"the group's {key} is {saved[key]!r}, not a number")
            if key == "lr":  # the one value a schedule changes: finite, >= 0, a float32
                if not 0 <= saved[key] <= _FLOAT32_MAX:
                    raise bad(f"the group's lr is {saved[key]!r}, not a learning rate")
            elif _plain(saved[key]) != _plain(value):
                # the run's options are equal (RunDir checks), so every other value is too
                raise bad(f"the group's {key} is {saved[key]!r:.40}, the optimiser's {value!r:.40}")
            if isinstance(value, (list, tuple)) and (
                not isinstance(saved[key], (list, tuple)) or len(saved[key]) != len(value)
            ):
                raise bad(f"the group's {key} is {saved[key]!r}, not {len(value)} values")
    if len(params) != sum(len(g["params"]) for g in groups):
        raise bad("a parameter index repeats")
    state: dict[int, dict] = {}
    device = next(iter(params.values())).device if params else torch.device("cpu")
    for pid, entry in optim_state.items():
        state[pid] = {name: value.to(device) for name, value in entry.items()}
    for pid, entry in record["optim_plain_state"].items():
        state.setdefault(int(pid), {}).update(entry)
    builtin = type(optimizer).__module__.startswith("torch.optim")
    for pid, entry in state.items():
        if pid not in params:
            raise bad(f"state for parameter {pid}, which it does not have")
        for name, value in entry.items():
            if not torch.is_tensor(value):
                if builtin and (
                    (name in _PARAM_SHAPED and value is not None)
                    or (name == "step" and not is_number(value))
                ):
                    raise bad(f"{name} of parameter {pid} is {value!r:.40}, not a tensor")
                continue
            if builtin and name in _PARAM_SHAPED and value.shape != params[pid].shape:
                raise bad(
                    f"{name} of parameter {pid} has shape {tuple(value.shape)}, the parameter "
                    f"{tuple(params[pid].shape)}"
                )
            if builtin and name == "step" and value.numel() != 1:
                raise bad(f"step of parameter {pid} has {value.numel()} values")
    return state


def check_scheduler(saved: dict, scheduler: Any | None, optimizer, path: Path) -> None:
    if scheduler is None:
        return
    for key in SCHEDULER_KEYS:
        if key not in scheduler.__dict__:
            continue
        if key not in saved:
            raise LowdimError(f"the checkpoint record {path} lacks the scheduler's {key}")
        value = saved[key]
        if key in ("last_epoch", "_step_count"):
            ok = is_int(value)
        else:
            ok = (
                isinstance(value, list)
                and len(value) == len(optimizer.param_groups)
                and all(map(is_number, value))
            )
        if not ok:
            raise LowdimError(
                f"the checkpoint record {path} is damaged: scheduler.{key} is {value!r}"
            )
    unknown = sorted(set(saved) - set(SCHEDULER_KEYS))
    if unknown:
        raise LowdimError(f"the checkpoint record {path} is damaged: scheduler.{unknown[0]}")

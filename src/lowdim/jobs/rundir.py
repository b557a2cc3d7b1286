"""A run's folder: its config, its summary, and the rule that one folder holds one run.

    config.json     the options that define the run (written once the options are known good)
    summary.json    the result; written last and atomically, so its presence means "finished"

A folder that already holds a run is only reopened with `resume=True` and the same options;
anything else is refused before a byte is written, so no half-run can pass for a finished one.
A run begun by an older lowdim resumes: an option its config.json lacks (added since) takes
its default; an option whose meaning changed since (`CHANGED_MEANING`) is refused.

Every JSON file lowdim reads back goes through `read_json_object`, and configs through
`config_from_json`, which check types against the config dataclass: a damaged or edited file
gives one `LowdimError` naming it, never a traceback from deep inside a job.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import types
import typing
from pathlib import Path

import torch

from .. import distributed
from ..errors import BadArgument, LowdimError, arg, is_int, is_number
from ..io import atomic_write_json

CONFIG = "config.json"
SUMMARY = "summary.json"
SUMMARY_KEYS = (
    "method",
    "dataset",
    "arch",
    "test_acc",
    "test_loss",
    "train_acc",
    "epochs",
    "wall_seconds",
    "num_params",
    "subspace_dim",
    "snapshots",
    "corrupt",
    "effective_noise_rate",
)
# option -> (the lowdim version whose runs first used its present meaning, what changed).
# A run begun by an older version that stored the option is refused on resume.
CHANGED_MEANING: dict[str, tuple[str, str]] = {}


def read_json_object(path: str | Path, what: str = "file") -> dict:
    """The JSON object in `path`, or a `LowdimError` naming the file and what is wrong."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise LowdimError(f"{path} is missing (the {what})") from None
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise LowdimError(f"{path} (the {what}) is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise LowdimError(f"{path} (the {what}) holds a JSON {type(value).__name__}, not an object")
    return value


def _fits(value, hint) -> bool:
    """Whether a JSON value fits a config field's type hint (int, float, str, bool, list[X],
    X | None); a float must be finite."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        (item, *_) = typing.get_args(hint) or (typing.Any,)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_int(value)
    if hint is float:
        return is_number(value) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    return True


def config_from_json(cls, path: str | Path):
    """The config dataclass `cls` from a run's config.json: every stored field type-checked,
    fields it lacks (added since the run began) at their defaults, unknown keys ignored."""
    raw = read_json_object(path, "run's options")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            if not _fits(raw[f.name], hints[f.name]):
                raise LowdimError(
                    f"{path}: option {f.name!r} is {raw[f.name]!r:.60}, not a "
                    f"{_type_name(hints[f.name])}; the file was damaged or edited"
                )
            values[f.name] = raw[f.name]
    return cls(**values)


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_summary(summary: dict, path: str | Path, keys: dict[str, type]) -> dict:
    """`summary` if it holds each of `keys` with a value of its type, else `LowdimError` (a
    key whose type admits None must still be present)."""
    for key, kind in keys.items():
        if key not in summary or not _fits(summary[key], kind):
            got = "missing" if key not in summary else f"{summary[key]!r:.40}"
            raise LowdimError(
                f"{path}: {key!r} is {got}, not a {_type_name(kind)}; the summary was damaged "
                "or edited"
            )
    return summary


def _leftover(path: Path) -> bool:
    """A temporary file of `atomic_write` that a kill left behind (never read, safe to ignore:
    a run killed while writing its config.json can still be resumed)."""
    return path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp")


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _v

    try:
        return _v("lowdim")
    except PackageNotFoundError:
        return "unknown"


class RunDir:
    """Claims `path` for a run with options `config` (a JSON-ready dict).

    Under several processes every one makes the same checks, and rank 0 alone writes.

    Args:
        path: the folder.
        config: the options that define the run; with `resume`, they must equal the stored ones
            except for the keys in `may_differ`.
        resume: reopen a run begun with the same options (a folder with no run yet is simply
            started, so a restarted job can always pass --resume).
        may_differ: option names whose change does not alter the result (device, data folder).
    """

    def __init__(
        self,
        path: str | Path,
        config: dict,
        *,
        resume: bool = False,
        may_differ: tuple[str, ...] = ("device", "data_dir", "download", "resume"),
        defaults: dict | None = None,
    ) -> None:
        self.path = Path(path)
        self.config = config
        if self.path.exists() and not self.path.is_dir():
            raise BadArgument("save_dir", f"{self.path} is a file, not a folder")
        parent = next((p for p in self.path.absolute().parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise BadArgument("save_dir", f"{self.path}: {parent} is a file, not a folder")
        stored = self.path / CONFIG
        self.resumed = False
        if stored.exists():
            if not resume:
                raise BadArgument(
                    "save_dir",
                    f"{self.path} already holds a run ({CONFIG}); resume it "
                    f"({arg('resume', True)}), or choose another folder",
                )
            old = read_json_object(stored, "run's options")
            self._check_same_options(old, defaults or {}, may_differ)
            self.resumed = True
        elif self.path.exists() and any(not _leftover(p) for p in self.path.iterdir()):
            raise BadArgument(
                "save_dir",
                f"{self.path} is not empty and holds no lowdim run; choose an empty or new folder",
            )

    def _check_same_options(self, old: dict, defaults: dict, may_differ: tuple[str, ...]) -> None:
        """Refuse to resume with other options; a key the stored config lacks (an option added
        since that run began) counts as its default."""
        versions = old.get("_versions")
        began = str(versions.get("lowdim_version", "0")) if isinstance(versions, dict) else "0"
        for key, (since, what) in CHANGED_MEANING.items():
            if key in old and _version_tuple(began) < _version_tuple(since):
                raise BadArgument(
                    key,
                    f"changed meaning in lowdim {since} ({what}); the "
                    f"run in {self.path} was begun by lowdim {began}: finish it with that "
                    "version, or start a new run",
                )
        for key in sorted(set(old) | set(self.config)):
            if key.startswith("_") or key in may_differ:
                continue
            stored, given = old.get(key, defaults.get(key)), self.config.get(key)
            if stored != given:
                # both as the arguments are written: a switch such as --no-bn-recompute
                # reads "no --no-bn-recompute" where it was not given
                raise BadArgument(
                    key,
                    f"differs from the run in {self.path} (begun with {arg(key, stored)}, now "
                    f"{arg(key, given)}); resume with the same options",
                )

    @property
    def finished(self) -> bool:
        return (self.path / SUMMARY).exists()

    def start(self) -> None:
        """Write config.json (once every option has been checked)."""
        # No process may write before every process has checked the folder as it was.
        distributed.barrier()
        if not distributed.is_main():
            return
        if not self.resumed:
            meta = {
                "lowdim_version": version(),
                "torch_version": torch.__version__,
                "python_version": platform.python_version(),
            }
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                atomic_write_json(self.path / CONFIG, {**self.config, "_versions": meta})
            except OSError as e:
                raise BadArgument(
                    "save_dir", f"{self.path} cannot be written: {e.strerror or e}"
                ) from None
            self.config["_versions"] = meta

    def save_outputs(
        self, model, history: list[dict], *, arch: str, dataset: str, title: str
    ) -> None:
        """The trained weights (model.safetensors, parameters and buffers) and the loss and
        accuracy curves (curves.png): what every run writes before its summary."""
        from ..io import save_tensors
        from .plots import plot_curves

        if not distributed.is_main():
            return
        save_tensors(
            self.path / "model.safetensors",
            model.state_dict(),
            metadata={"arch": arch, "dataset": dataset},
        )
        plot_curves(history, self.path / "curves.png", title=title)

    def write_summary(self, summary: dict) -> None:
        missing = [k for k in SUMMARY_KEYS if k not in summary]
        if missing:
            raise ValueError(f"summary lacks {missing}")
        if distributed.is_main():
            atomic_write_json(self.path / SUMMARY, summary)

    def read_summary(self, keys: dict[str, type] | None = None) -> dict:
        """The finished run's summary, checked to hold `keys` (default: those every training
        run's summary has) with values of their types."""
        path = self.path / SUMMARY
        summary = read_json_object(path, "run's summary")
        return check_summary(summary, path, SUMMARY_TYPES if keys is None else keys)


# What every summary.json holds, with its type (what later commands read back).
SUMMARY_TYPES: dict[str, type] = {
    "method": str,
    "dataset": str,
    "arch": str,
    "test_acc": float,
    "wall_seconds": float,
    "epochs": int,
}

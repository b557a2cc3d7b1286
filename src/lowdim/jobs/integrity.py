"""`lowdim verify`: check every file of a run folder, and the runs inside it, without training.

Each file lowdim writes is read back through the same validating reader a later command would
use: options and summaries (types), metrics (one JSON object a line), the trajectory (its
manifest, then every snapshot against its crc32 and for NaN or inf), the checkpoint (its record,
the sha256 of its tensors), weights and bases (readable, finite), and compressed models (rebuilt,
and compared with the digest of the network they were saved from). What is damaged is named;
nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..bases import load_basis
from ..compress import read_subspace
from ..compress_zoo import load_subspace_model
from ..errors import BadArgument, LowdimError
from ..io import first_nonfinite, load_tensors
from ..train.checkpoint import RECORD, verify_checkpoint
from ..trajectory import MANIFEST_FILE, Trajectory
from .rundir import CONFIG, SUMMARY, read_json_object


@dataclass
class Finding:
    """One file (or folder) checked: `problem` is None when it is sound; `error` is the
    LowdimError that said so, if one did (the command line writes it with its flags)."""

    path: Path
    problem: str | None = None
    error: LowdimError | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.problem is None


def _check_metrics(path: Path) -> None:
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            raise LowdimError(f"line {n} is not JSON") from None
        if not isinstance(record, dict):
            raise LowdimError(f"line {n} is not a JSON object")


def _check_weights(path: Path) -> None:
    if (name := first_nonfinite(load_tensors(path))) is not None:
        raise LowdimError(f"tensor {name!r} holds NaN or inf values")


def _check_trajectory(folder: Path) -> None:
    Trajectory(folder).verify()


def _check_subspace(path: Path) -> None:
    """A zoo network's compressed model is rebuilt and its digest checked; one of the user's
    own modules can only be read and type-checked here (rebuilding it needs the module)."""
    meta, _ = read_subspace(path)
    if "arch" in meta:
        load_subspace_model(path)


def _checks(folder: Path) -> Iterator[tuple[Path, Callable[[Path], object]]]:
    """(path, check) for each file lowdim may have written in `folder` (not its subfolders)."""
    table: list[tuple[str, Callable[[Path], object]]] = [
        (CONFIG, lambda p: read_json_object(p, "run's options")),
        (SUMMARY, lambda p: read_json_object(p, "run's summary")),
        ("metrics.jsonl", _check_metrics),
        ("model.safetensors", _check_weights),
        ("basis.safetensors", load_basis),
        ("subspace.safetensors", _check_subspace),
        (f"checkpoint/{RECORD}", lambda p: verify_checkpoint(p.parent)),
        (f"trajectory/{MANIFEST_FILE}", lambda p: _check_trajectory(p.parent)),
    ]
    for name, check in table:
        if (folder / name).exists():
            yield folder / name, check


def run_folders(save_dir: Path) -> list[Path]:
    """`save_dir` and every run folder below it (any folder holding a config.json or a
    summary.json: subspace runs, an intrinsic-dim sweep's baseline and points)."""
    found = {p.parent for name in (CONFIG, SUMMARY) for p in save_dir.rglob(name)}
    return sorted(found | {save_dir})


def verify_run(save_dir: str | Path) -> list[Finding]:
    """Check every file of the run in `save_dir` and of the runs inside it."""
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        raise BadArgument("save_dir", f"{save_dir} is not a folder")
    findings = []
    for folder in run_folders(save_dir):
        for path, check in _checks(folder):
            try:
                check(path)
                findings.append(Finding(path))
            except LowdimError as e:
                findings.append(Finding(path, str(e), e))
            except OSError as e:
                findings.append(Finding(path, f"cannot read it: {e.strerror or e}"))
    if not findings:
        raise BadArgument("save_dir", f"{save_dir} holds no lowdim run")
    return findings

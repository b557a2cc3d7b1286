"""A run's folder: its config, its summary, and the rule that one folder holds one run.

    config.json     the options that define the run (written once the options are known good)
    summary.json    the result; written last and atomically, so its presence means "finished"

A folder that already holds a run is only reopened with `resume=True` and the same options;
anything else is refused before a byte is written, so no half-run can pass for a finished one.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from . import distributed
from .errors import LowdimError
from .io import atomic_write_json

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
    ) -> None:
        self.path = Path(path)
        self.config = config
        if self.path.exists() and not self.path.is_dir():
            raise LowdimError(f"--save-dir {self.path} is a file, not a folder")
        stored = self.path / CONFIG
        self.resumed = False
        if stored.exists():
            if not resume:
                raise LowdimError(
                    f"--save-dir {self.path} already holds a run ({CONFIG}); pass --resume to "
                    "continue it, or choose another folder"
                )
            try:
                old = json.loads(stored.read_text())
            except ValueError:
                raise LowdimError(f"{stored} is not valid JSON; cannot resume that run") from None
            for key in sorted(set(old) | set(config)):
                if key.startswith("_") or key in may_differ:
                    continue
                if old.get(key) != config.get(key):
                    raise LowdimError(
                        f"--{key.replace('_', '-')} {config.get(key)} differs from the run in "
                        f"{self.path} ({old.get(key)}); resume with the same options"
                    )
            self.resumed = True
        elif self.path.exists() and any(self.path.iterdir()):
            raise LowdimError(
                f"--save-dir {self.path} is not empty and holds no lowdim run; choose an empty "
                "or new folder"
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
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.resumed:
            meta = {
                "lowdim_version": version(),
                "torch_version": torch.__version__,
                "python_version": platform.python_version(),
            }
            atomic_write_json(self.path / CONFIG, {**self.config, "_versions": meta})
            self.config["_versions"] = meta

    def save_outputs(
        self, model, history: list[dict], *, arch: str, dataset: str, title: str
    ) -> None:
        """The trained weights (model.safetensors, parameters and buffers) and the loss and
        accuracy curves (curves.png): what every run writes before its summary."""
        from .io import save_tensors
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

    def read_summary(self) -> dict:
        return json.loads((self.path / SUMMARY).read_text())

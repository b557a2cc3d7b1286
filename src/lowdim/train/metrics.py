"""Per-epoch metrics: one JSON object per line in `metrics.jsonl`, optional TensorBoard, and the
one line per epoch that a person reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import BadArgument, LowdimError
from ..io import atomic_write_text


def read_records(path: str | Path, keep_epochs: int) -> list[str]:
    """The lines of a metrics file for epochs <= keep_epochs (none if it does not exist),
    without a last line torn by a kill; `LowdimError` naming the file if it is damaged."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise LowdimError(f"cannot read the metrics file {path}: {e}") from None
    kept: list[str] = []
    for n, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            if n == len(lines):  # the record a kill interrupted: it is written again
                break
            raise LowdimError(f"line {n} of the metrics file {path} is not JSON") from None
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise LowdimError(
                f"line {n} of the metrics file {path} is not an epoch record (no integer epoch)"
            )
        if epoch <= keep_epochs:
            kept.append(line)
    return kept


class MetricsLog:
    """Appends epoch records to `path`; on resume, keeps only the records up to `keep_epochs`.

    Each line is flushed as it is written, so `tail -f metrics.jsonl` follows a run, and a killed
    run leaves whole lines (the resumed run rewrites the file without the epochs it will redo).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        resume: bool = False,
        keep_epochs: int = 0,
        tensorboard_dir: str | Path | None = None,
    ) -> None:
        self.path = Path(path)
        kept = read_records(self.path, keep_epochs) if resume else []
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))
        self.records = [json.loads(k) for k in kept]
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise BadArgument(
                    "tensorboard",
                    "needs the tensorboard package: pip install 'lowdim[tensorboard]'",
                ) from None
            self._tb = SummaryWriter(str(tensorboard_dir))

    def log(self, record: dict) -> None:
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self._tb.add_scalar(key, value, record["epoch"])
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def format_epoch(record: dict, epochs: int) -> str:
    """`epoch  3/10  loss 0.4123  acc 0.8712  test_loss 0.3990  test_acc 0.8801  lr 0.05  2.1s`."""
    parts = [f"epoch {record['epoch']:>3}/{epochs}"]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        if record.get(key) is not None:  # accuracy is None where targets are not classes
            parts.append(f"{key} {record[key]:.4f}")
    if "lr" in record:
        parts.append(f"lr {record['lr']:.4g}")
    parts.append(f"{record['epoch_seconds']:.1f}s")
    return "  ".join(parts)


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on an interactive terminal; nothing when output is piped or logged, where the
    one line per epoch from `format_epoch` is the whole progress report."""
    return tqdm(
        total=total,
        desc=desc,
        leave=False,
        dynamic_ncols=True,
        disable=not (enabled and sys.stderr.isatty()),
    )

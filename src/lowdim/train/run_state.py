"""The bookkeeping around `fit`'s steps: where a resumed run starts, the trajectory snapshots,
the metrics log, the checkpoints and the epoch summaries. `fit` calls these small parts; none
of them touches the model's training itself."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import distributed
from ..errors import LowdimError
from ..params import FlatParams
from ..trajectory import TrajectoryRecorder
from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .metrics import MetricsLog, format_epoch, read_records


def snapshot_steps(num_batches: int, samples_per_epoch: int) -> set[int]:
    """The steps within an epoch (1-based) after which a snapshot is taken: K evenly spaced ones,
    the last at the end of the epoch."""
    k = min(samples_per_epoch, num_batches)
    return {round((i + 1) * num_batches / k) for i in range(k)}


class TrainingRun:
    """One `fit` call's state outside the model: what a checkpoint restored (`done`), the
    trajectory recorder, the metrics log and the history. Only rank 0 writes files."""

    def __init__(
        self,
        model,
        optimizer,
        scheduler,
        *,
        run_dir: str | Path | None,
        resume: bool,
        flat: FlatParams | None,
        trajectory_dir: str | Path | None,
        tensorboard: bool,
        log: Callable[[str], None] | None,
        progress: bool,
    ) -> None:
        if trajectory_dir is not None and flat is None:
            raise ValueError("recording a trajectory needs the model's FlatParams (flat=...)")
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0
        self.progress = progress and self.main
        self.log = (log if log is not None and self.main else None) or (
            _stderr if self.progress else (lambda _: None)
        )
        self.model, self.optimizer, self.scheduler, self.flat = model, optimizer, scheduler, flat
        run_dir = Path(run_dir) if run_dir is not None else None
        self.ckpt_dir = run_dir / "checkpoint" if run_dir is not None else None
        self.done = {"epoch": 0, "step": 0, "snapshots": 0, "wall_seconds": 0.0}
        if resume and self.ckpt_dir is not None and has_checkpoint(self.ckpt_dir):
            self.done = load_checkpoint(
                self.ckpt_dir, model=model, optimizer=optimizer, scheduler=scheduler
            )
        distributed.same_on_all(self.done["step"], "the step to resume from")
        self.step = self.done["step"]
        self.recorder = None
        if trajectory_dir is not None and self.main:
            self.recorder = TrajectoryRecorder(
                trajectory_dir, flat.layout(), resume=resume, keep=self.done["snapshots"]
            )
            if len(self.recorder) == 0:
                self.recorder.append(flat.data, epoch=0, step=0)
        self.metrics = None
        if run_dir is not None and self.main:
            tb = run_dir / "tensorboard" if tensorboard else None
            self.metrics = MetricsLog(
                run_dir / "metrics.jsonl",
                resume=resume,
                keep_epochs=self.done["epoch"],
                tensorboard_dir=tb,
            )
        self.history = list(self.metrics.records) if self.metrics else []
        if run_dir is not None and resume and not self.main:  # rank 0's history, read only
            self.history = [
                json.loads(r) for r in read_records(run_dir / "metrics.jsonl", self.done["epoch"])
            ]
        self.started = time.perf_counter()

    def inside(self, num_steps: int | None) -> int:
        """Steps already done in the first epoch to run (a mid-epoch checkpoint), checked."""
        inside = self.done.get("epoch_step", 0)
        if inside and self.done.get("world", 1) != self.world:
            raise LowdimError(
                f"the checkpoint in {self.ckpt_dir} was taken inside an epoch by "
                f"{self.done.get('world', 1)} process(es); resume it with as many, not {self.world}"
            )
        if inside and num_steps is not None and inside >= num_steps:
            raise LowdimError(
                f"the checkpoint in {self.ckpt_dir} was taken after step {inside} of epoch "
                f"{self.done['epoch'] + 1}, which has {num_steps} steps here; resume with the same "
                "data and batch options"
            )
        return inside

    def wall_seconds(self) -> float:
        return self.done["wall_seconds"] + time.perf_counter() - self.started

    def snapshots(self) -> int:
        return len(self.recorder) if self.recorder is not None else 0

    def snapshot(self, epoch: float) -> None:
        if self.recorder is not None:
            self.recorder.append(self.flat.data, epoch=epoch, step=self.step)

    def checkpoint(self, epoch: int, epoch_step: int = 0, **running) -> None:
        """Save the training state after `epoch` epochs and `epoch_step` steps into the next;
        `running`: what resuming inside an epoch needs (its lr, time and every process's sums)."""
        if self.ckpt_dir is None:
            return
        if epoch_step:  # every process's running sums, exactly (a sum with zeros changes nothing)
            rows = torch.zeros(self.world, 3, dtype=torch.float64, device=running["totals"].device)
            rows[self.rank] = running["totals"]
            running["totals"] = distributed.all_reduce_sum(rows).tolist()
            running["world"] = self.world
        if self.main:
            progress = {
                "epoch": epoch,
                "step": self.step,
                "snapshots": self.snapshots(),
                "wall_seconds": self.wall_seconds(),
                "epoch_step": epoch_step,
                **running,
            }
            save_checkpoint(
                self.ckpt_dir,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                progress=progress,
            )

    def end_epoch(self, record: dict, epochs: int, **running) -> None:
        """Log an epoch's record, then checkpoint at its end (with `running`: the loss scale)."""
        self.history.append(record)
        self.log(format_epoch(record, epochs))
        if self.metrics is not None:
            self.metrics.log(record)
        self.checkpoint(record["epoch"], **running)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)

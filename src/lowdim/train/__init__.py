"""One training loop (`fit`), evaluation, optimisers and schedules by name, checkpoints."""

from .builders import OPTIMIZERS, SCHEDULES, build_optimizer, build_schedule
from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .loop import FitResult, evaluate, fit, snapshot_steps

__all__ = [
    "FitResult",
    "OPTIMIZERS",
    "SCHEDULES",
    "build_optimizer",
    "build_schedule",
    "evaluate",
    "fit",
    "has_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "snapshot_steps",
]

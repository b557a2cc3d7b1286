"""Mixed precision in the training loop: the forward passes under `torch.autocast`, and for
float16 dynamic loss scaling.

Library layer, part of the training loop (`lowdim.train.loop`). bfloat16 has float32's exponent
range and needs nothing more. float16's smallest normal number is 6e-5, so small gradients of
the activations underflow to zero in the backward pass unless the loss is first multiplied by a
scale S: the gradients are then S times too large, are divided by S in float32 (the parameters'
dtype) before anything uses them, and a step whose gradients overflowed (inf or NaN somewhere,
on any process) is skipped and S halved; after GROWTH_INTERVAL good steps in a row S doubles.
The scale and the run of good steps are part of a checkpoint, so a resumed run continues
exactly.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor

from ..errors import BadArgument, LowdimError, is_int, is_number

INITIAL_SCALE = 2.0**16
GROWTH_INTERVAL = 2000  # good steps in a row before S doubles


class Overflow(Exception):
    """Raised by a step's closure when the scaled gradients overflowed: the step is skipped."""


# The names the jobs and the command line take (--autocast), and their dtypes.
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_of(name: str | None) -> torch.dtype | None:
    """The dtype of an autocast name (None: off); BadArgument for another name."""
    if name is not None and name not in AUTOCAST:
        choices = ", ".join(AUTOCAST)
        raise BadArgument("autocast", f"must be one of {choices} (or None), got {name!r}")
    return None if name is None else AUTOCAST[name]


def check_autocast(dtype) -> None:
    """BadArgument unless `dtype` (fit's `autocast`) is None, torch.bfloat16 or torch.float16,
    or one of their names in AUTOCAST."""
    if isinstance(dtype, str):
        autocast_of(dtype)
    elif dtype is not None and dtype not in (torch.bfloat16, torch.float16):
        raise BadArgument(
            "autocast", f"must be None, torch.bfloat16 or torch.float16, got {dtype!r}"
        )


class Precision:
    """The forward passes' dtype (None: the model's own) and, for float16, the loss scale.

    `state` (from a checkpoint's progress, "loss_scale"): {"scale": S, "good_steps": n}."""

    def __init__(
        self, device_type: str, dtype: torch.dtype | str | None, state: dict | None = None
    ):
        check_autocast(dtype)
        dtype = autocast_of(dtype) if isinstance(dtype, str) else dtype
        self.device_type, self.dtype = device_type, dtype
        self.scaling = dtype == torch.float16
        self.scale, self.good_steps, self.skipped = INITIAL_SCALE, 0, 0
        if self.scaling and state is not None:
            self.scale, self.good_steps = state["scale"], state["good_steps"]

    def forward(self):
        """The context the forward passes run in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaled(self, loss: Tensor) -> Tensor:
        """What to call backward on: the loss, times S when scaling."""
        return loss * self.scale if self.scaling else loss

    def unscale(self, grads: list[Tensor], world: int) -> None:
        """Divide the gradients by S in place; raise Overflow if any holds inf or NaN on any
        process (one number all-reduced, and read on the host: float16 costs one wait per
        step, as torch's GradScaler does)."""
        if not self.scaling:
            return
        bad = None
        for g in grads:
            g.mul_(1.0 / self.scale)
            flag = g.isfinite().logical_not().any()
            bad = flag if bad is None else bad.logical_or(flag)
        if bad is None:
            return
        bad = bad.float()
        if world > 1:
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        if bad.item():
            raise Overflow

    def update(self, overflowed: bool) -> None:
        """After a step: halve S after an overflow, double it after GROWTH_INTERVAL good steps."""
        if not self.scaling:
            return
        if overflowed:
            self.scale, self.good_steps, self.skipped = self.scale / 2, 0, self.skipped + 1
            return
        self.good_steps += 1
        if self.good_steps == GROWTH_INTERVAL:
            self.scale, self.good_steps = self.scale * 2, 0

    def state(self) -> dict:
        """What a checkpoint keeps ({} without scaling)."""
        return (
            {"loss_scale": {"scale": self.scale, "good_steps": self.good_steps}}
            if self.scaling
            else {}
        )


def check_loss_scale(value: object, path) -> None:
    """LowdimError naming `path` unless `value` is a checkpoint's {"scale", "good_steps"}."""
    ok = (
        isinstance(value, dict)
        and is_number(value.get("scale"))
        and math.isfinite(value["scale"])
        and value["scale"] > 0
        and is_int(value.get("good_steps"))
        and 0 <= value["good_steps"] < GROWTH_INTERVAL
    )
    if not ok:
        raise LowdimError(
            f"the checkpoint record {path} is damaged: progress.loss_scale is {value!r:.80}, "
            f"not {{'scale': a number > 0, 'good_steps': an integer in [0, {GROWTH_INTERVAL})}}"
        )

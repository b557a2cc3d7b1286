"""RBD's random directions: chunks R_j drawn from counter-based keys, each a pure function
of (seed, step, worker, compartment, chunk) and of the device type (CPU and CUDA generators
give different streams), so any chunk can be regenerated alone, by any worker, in any order.

Entries have unit variance: N(0, 1), U(-sqrt 3, sqrt 3) or +-1 ("gaussian", "uniform",
"rademacher"; the fourth distribution, "hadamard", is structured and made whole by
`RedrawnHadamardBasis` instead), drawn in float32 on the device from generator("rbd", seed,
step, worker, compartment, chunk). Each row is scaled by s: 1 / sqrt(length) ("sqrt", the
paper's: unit norm in expectation) or 1 / its norm ("unit"). `RedrawnBasis` (redrawn.py) is
the basis they make; `DirectionChunks` serves them to it.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import Tensor

from ..errors import BadArgument, LowdimError, check_seed, is_int
from ..seeding import generator
from .base import Basis
from .gaussian import dtype_name, parse_dtype

DISTRIBUTIONS = ("gaussian", "uniform", "rademacher", "hadamard")
# Drawn entry by entry in chunks (this module); "hadamard" directions are structured, made
# whole by a transform (redrawn_hadamard.py).
CHUNKED = DISTRIBUTIONS[:3]
NORMALISATIONS = ("sqrt", "unit")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """BadArgument(name) unless `value` is one of `choices`."""
    if value not in choices:
        raise BadArgument(name, f"must be one of {', '.join(choices)}, got {value!r}")


def _raw(seed, step, worker, compartment, chunk, rows, length, distribution, device) -> Tensor:
    """Unit-variance entries of one chunk, drawn on `device` from the chunk's own generator."""
    g = generator("rbd", seed, step, worker, compartment, chunk, device=device)
    if distribution == "gaussian":
        return torch.randn(rows, length, generator=g, device=device)
    if distribution == "uniform":
        out = torch.rand(rows, length, generator=g, device=device)
        return out.mul_(2 * math.sqrt(3)).sub_(math.sqrt(3))
    if distribution == "rademacher":
        out = torch.empty(rows, length, device=device).bernoulli_(0.5, generator=g)
        return out.mul_(2).sub_(1)
    raise BadArgument(
        "distribution",
        f"must be one of {', '.join(CHUNKED)} for directions drawn in chunks, got "
        f"{distribution!r} (hadamard directions come from RedrawnHadamardBasis)",
    )


def _scale(raw: Tensor, normalise: str) -> Tensor | float:
    """s: the factor per direction normalising raw's rows: one number for "sqrt" (rounded to
    float32, as the entries are drawn; a Python number, so no copy to a GPU waits for it), a
    (rows,) tensor for "unit"."""
    if normalise == "sqrt":
        return torch.tensor(1 / math.sqrt(raw.shape[1])).item()
    if normalise == "unit":
        return raw.norm(dim=1).reciprocal_()
    raise BadArgument("normalise", f"must be one of {', '.join(NORMALISATIONS)}, got {normalise!r}")


def directions(
    seed: int,
    step: int,
    worker: int,
    compartment: int,
    chunk: int,
    rows: int,
    length: int,
    *,
    distribution: str = "gaussian",
    normalise: str = "sqrt",
    device="cpu",
) -> Tensor:
    """s * R_j: chunk `chunk` of the directions of compartment `compartment` at `step` for
    `worker`, a (rows, length) float32 tensor (see the module doc; distribution defaults to
    "gaussian", normalise to "sqrt", device to "cpu")."""
    raw = _raw(seed, step, worker, compartment, chunk, rows, length, distribution, device)
    scale = _scale(raw, normalise)
    return raw.mul_(scale.unsqueeze(-1) if torch.is_tensor(scale) else scale)


class DirectionChunks:
    """(R_j, s) of every chunk of a step's compartments, in key order (compartment, chunk),
    drawn on settings' device and cast to its dtype.

    Args:
        settings: the shared key and options, from `redrawn_settings`.
        parts: (compartment key k, length n_k, directions d_k) for each position.
        threads: generator threads on the CPU (None: torch.get_num_threads()). Asking for
            chunk i also submits chunks i + 1 ... i + threads to a pool, so the next ones
            (of this compartment or the next) are drawn while this one is used. The pool lives
            for one pass over the chunks and is shut down (its threads joined) when the last
            chunk is taken: no generator thread outlives the product that needed it.
        keep: hold every chunk once drawn (d x D numbers) instead of drawing it again.
    """

    def __init__(self, settings: dict, parts: list[tuple[int, int, int]], threads, keep):
        self.settings, self.parts, self.keep = settings, parts, bool(keep)
        self.first, self.keys = [], []
        for position, (_, _, rows) in enumerate(parts):
            self.first.append(len(self.keys))
            self.keys += [(position, j) for j in range(-(-rows // settings["chunk_rows"]))]
        self.threads = torch.get_num_threads() if threads is None else int(threads)
        cpu = torch.device(settings["device"]).type == "cpu"
        self.ahead = self.threads if cpu and self.threads > 1 and len(self.keys) > 1 else 0
        self.pending: dict[int, Future] = {}
        self.pool: ThreadPoolExecutor | None = None
        self.kept: dict[int, tuple[Tensor, Tensor | float]] = {}

    def _make(self, i: int) -> tuple[Tensor, Tensor | float]:
        position, j = self.keys[i]
        compartment, length, rows = self.parts[position]
        s = self.settings
        start = j * s["chunk_rows"]
        raw = _raw(
            s["seed"],
            s["step"],
            s["worker"],
            compartment,
            j,
            min(s["chunk_rows"], rows - start),
            length,
            s["distribution"],
            s["device"],
        )
        scale, dtype = _scale(raw, s["normalise"]), s["dtype"]
        if torch.is_tensor(scale):
            return raw.to(dtype), scale.to(dtype)
        return raw.to(dtype), torch.tensor(scale, dtype=dtype).item()  # rounded to dtype

    def get(self, position: int, j: int) -> tuple[Tensor, Tensor | float]:
        """(R_j, s) of chunk j of the compartment at `position`."""
        i = self.first[position] + j
        if i in self.kept:
            return self.kept[i]
        if self.ahead:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.ahead, thread_name_prefix="lowdim-directions")
            for n in range(i, min(i + self.ahead + 1, len(self.keys))):
                if n not in self.pending and n not in self.kept:
                    self.pending[n] = self.pool.submit(self._make, n)
            out = self.pending.pop(i).result()
            if not self.pending:  # the pass is over: join its threads
                self.pool.shutdown(wait=True)
                self.pool = None
        else:
            out = self._make(i)
        if self.keep:
            self.kept[i] = out
        return out


def redrawn_settings(seed, step, worker, distribution, normalise, chunk_rows, device, dtype):
    """The key and options every redrawn chunk of a step shares, checked."""
    check_seed(seed)
    for name, value in (("step", step), ("worker", worker)):
        if not is_int(value, 0):
            raise BadArgument(name, f"must be an integer >= 0, got {value!r}")
    check_choice("distribution", distribution, DISTRIBUTIONS)
    check_choice("normalise", normalise, NORMALISATIONS)
    if not is_int(chunk_rows, 1):
        raise BadArgument("chunk_rows", f"must be an integer >= 1, got {chunk_rows!r}")
    return {
        "seed": seed,
        "step": step,
        "worker": worker,
        "distribution": distribution,
        "normalise": normalise,
        "chunk_rows": chunk_rows,
        "device": torch.device(device),
        "dtype": parse_dtype(dtype_name(dtype)),
    }


class KeyedBasis(Basis):
    """What the redrawn kinds share: saved as their numbers alone (the key and options, no
    tensors), rebuilt from them, and re-keyed. Subclasses give `_key()` (constructor
    arguments, with num_params and dim first, dtype by name) and `_options()` (the arguments
    it leaves out: device, dtype, ...).

    Directions are drawn on the device that uses them, and torch's CPU and CUDA generators
    give different streams from one seed: a key is reproducible on one device type. So the
    saved numbers hold `drawn_on`, the device type, and a file is rebuilt there (on the first
    GPU for "cuda"; a LowdimError where there is none) rather than silently on another.
    """

    def tensors(self) -> dict[str, Tensor]:
        return {}

    def numbers(self) -> dict:
        return {**self._key(), "drawn_on": self.device.type}

    def _options(self) -> dict:
        return {"dtype": self.dtype, "device": self.device}

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], numbers: dict) -> KeyedBasis:
        drawn_on = numbers.get("drawn_on", "cpu")  # files from before it was recorded: CPU
        if drawn_on not in ("cpu", "cuda"):
            raise LowdimError(f"drawn_on must be cpu or cuda, got {drawn_on!r}")
        if drawn_on == "cuda" and not torch.cuda.is_available():
            raise LowdimError(
                "its directions were drawn on a CUDA device, and CPU generators give another "
                "stream from the same key: load it on a machine with a GPU"
            )
        return cls._rebuild(numbers, dtype=parse_dtype(numbers["dtype"]), device=drawn_on)

    @classmethod
    def _rebuild(cls, numbers: dict, **changes) -> KeyedBasis:
        n = numbers | changes
        n.pop("drawn_on", None)
        return cls(n.pop("num_params"), n.pop("dim"), **n)

    def to(self, device=None, dtype=None) -> KeyedBasis:
        """The same key on another device (a different stream on another device type) or in
        another dtype (the same directions, in that dtype)."""
        changes = {"dtype": dtype or self.dtype, "device": device or self.device}
        return self._rebuild(self.numbers(), **(self._options() | changes))

    def at_step(self, step: int) -> KeyedBasis:
        """The same basis keyed at another step."""
        return self._rebuild(self.numbers(), **self._options(), step=step)

"""Random bases descent (Gressmann, Eaton-Rosen, Luschi, NeurIPS 2020): a fresh random subspace
every step. The subspace is a `redrawn_basis` (lowdim.bases.redrawn: generated in chunks from
counter-based keys, never stored whole); this optimiser is the bookkeeping around it: which
key, which step, and what the workers exchange."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .. import distributed
from ..bases.blocks import BlockBasis
from ..bases.compartments import Compartment, as_compartments
from ..bases.directions import (
    DISTRIBUTIONS,
    NORMALISATIONS,
    check_choice,
    directions,
    redrawn_settings,
)
from ..bases.redrawn import redrawn_basis
from ..errors import LowdimError
from ..params import FlatParams
from .optimizer import FlatOptimizer, check_rates

__all__ = ["DISTRIBUTIONS", "MODES", "NORMALISATIONS", "RBD", "directions"]

MODES = ("independent", "shared")
# The settings that decide the directions: a state saved under other values is refused.
# `device_type` is one of them: CPU and CUDA generators give different streams from one key.
BASIS_KEYS = (
    "seed",
    "distribution",
    "normalise",
    "mode",
    "fixed_basis",
    "chunk_rows",
    "device_type",
)


class RBD(FlatOptimizer):
    """theta <- theta - lr * P (P^T g), with P (D x d) drawn anew at every step.

    P is `redrawn_basis(compartments, seed, step=step, worker=w, ...)`: block diagonal, one
    block of d_k directions per compartment. Structured directions (the default) are d_k rows
    of a randomised Hadamard transform drawn from the key (seed, step, w, k), two transforms
    per step whatever d is. Chunked ones (Gaussian, uniform, Rademacher) are regenerated chunk
    by chunk from the key (seed, step, w, k, chunk) for each of the two products
    (`keep_directions=True` holds this worker's chunks between the two instead: d x D floats
    of memory for half the generation; with `fixed_basis`, for good). `fixed_basis=True` keys
    every step as step 0: the fixed random projection baseline. Chunked directions are drawn
    in float32 on the model's device, then cast to the model's dtype (a float64 model steps
    along the same directions in float64); structured ones are computed in the model's dtype.

    Under several processes (`torch.distributed` initialised), each computes the gradient of its
    own minibatch and its coordinates c_w = P_w^T g_w, and only coordinates are exchanged:
      - mode "independent" (default): worker w draws its own P_w (key worker = w); an
        all-gather gives every process all the c_w, each regenerates every P_w from its key and
        applies the mean, theta -= lr / W * sum_w P_w c_w: W*d directions per step;
      - mode "shared": all draw the same P (key worker 0); one all-reduce averages the c_w, and
        theta -= lr * P mean_w(c_w), which is one process's step on the global batch.
    Each process sends d numbers per step (`bytes_sent_per_step`), never a D-sized vector.

    Args:
        flat: the model's flat parameters (see `lowdim.FlatParams`).
        dim: d, the total number of directions, split over compartments without dims by
            size; None when the compartments carry their dims (else it must be their sum).
        lr: learning rate (plain SGD, no momentum, as in the paper).
        seed: the key's seed (default 0).
        worker: the key's worker index (default: this process's rank, 0 alone).
        distribution: "hadamard" (default: structured directions, d rows of a randomised
            Hadamard transform, two transforms per step whatever d is; see
            lowdim.bases.redrawn_hadamard), or entries drawn i.i.d. in chunks: "gaussian"
            (the paper's), "uniform" or "rademacher".
        normalise: "sqrt" (default: divide by sqrt(length)) or "unit".
        compartments: `Compartment`s tiling 0..D (see `lowdim.bases.compartments_of`), or
            the older (offset, length, d_k) tuples (default None: one, all of theta).
        fixed_basis, keep_directions: see above (default False).
        mode: "independent" (default) or "shared"; see above (no effect on one process).
        chunk_rows: directions per generated chunk (default 64); part of the key.
        threads: generator threads on the CPU (default: torch.get_num_threads()).

    seed, distribution, normalise, mode, fixed_basis, chunk_rows, the device type the
    directions are drawn on (the model's: CPU and CUDA generators give different streams from
    one key, so a run resumes on the device type it started on) and compartments (as a list
    of {name, offset, length, dim}) sit in `param_groups` beside lr, so they are in
    `state_dict()`; `load_state_dict` refuses a state saved with other values (see there).
    After each step, `last_cosine` holds the cosine between the step and this process's
    minibatch gradient (the true gradient, on one process).
    """

    def __init__(
        self,
        flat: FlatParams,
        dim: int | None,
        lr: float,
        *,
        seed: int = 0,
        worker: int | None = None,
        distribution: str = "hadamard",
        normalise: str = "sqrt",
        compartments: list[Compartment] | list[tuple[int, int, int]] | None = None,
        fixed_basis: bool = False,
        keep_directions: bool = False,
        mode: str = "independent",
        chunk_rows: int = 64,
        threads: int | None = None,
    ) -> None:
        parts = as_compartments(compartments, flat.numel, dim)
        check_rates(lr)
        check_choice("mode", mode, MODES)
        data = flat.data
        redrawn_settings(seed, 0, 0, distribution, normalise, chunk_rows, data.device, data.dtype)
        settings = dict(seed=seed, distribution=distribution, normalise=normalise, mode=mode)
        settings |= dict(fixed_basis=bool(fixed_basis), chunk_rows=chunk_rows)
        settings["device_type"] = data.device.type
        parts_json = [c.as_dict() for c in parts]
        super().__init__(flat, dict(lr=lr, **settings, compartments=parts_json))
        self.world = distributed.world_size()
        self.worker = distributed.rank() if worker is None else worker
        self.keep_directions = bool(keep_directions)
        self.threads = threads or torch.get_num_threads()
        self._cosine: Tensor | float = float("nan")
        self._fixed: dict[tuple[int, str], BlockBasis] = {}  # kept fixed bases, by worker

    # The settings live in param_groups alone (what state_dict saves and load_state_dict
    # checks); these read them there, so the object and its state can never disagree.
    seed = property(lambda self: self.param_groups[0]["seed"])
    distribution = property(lambda self: self.param_groups[0]["distribution"])
    normalise = property(lambda self: self.param_groups[0]["normalise"])
    mode = property(lambda self: self.param_groups[0]["mode"])
    fixed_basis = property(lambda self: self.param_groups[0]["fixed_basis"])
    chunk_rows = property(lambda self: self.param_groups[0]["chunk_rows"])

    @property
    def compartments(self) -> list[Compartment]:
        """The compartments, with their dims, in coordinate (and key) order."""
        return [Compartment(**c) for c in self.param_groups[0]["compartments"]]

    @property
    def dim(self) -> int:
        """d, the coordinates of one worker's step (the sum of the compartments' dims)."""
        return sum(c["dim"] for c in self.param_groups[0]["compartments"])

    # Each process projects its own gradient and the coordinates are exchanged: `fit` leaves
    # the gradients unreduced.
    combines_gradients = True

    @property
    def last_cosine(self) -> float:
        """The cosine between the last step and this process's minibatch gradient (NaN before
        the first step, or where either is zero); reading it waits for the step's kernels."""
        return float(self._cosine)

    @property
    def bytes_sent_per_step(self) -> int:
        """What this process hands to the collective each step: its d coordinates (0 alone)."""
        return 0 if self.world == 1 else self.dim * self.flat.data.element_size()

    def _key_worker(self) -> int:
        return 0 if self.mode == "shared" else self.worker

    def basis_at(self, step: int, worker: int | None = None, keep: bool = False) -> BlockBasis:
        """P at `step` for `worker`'s key (default: this process's), as the group's settings
        say; `keep` holds its chunks once drawn (a kept fixed basis is reused for good)."""
        group = self.param_groups[0]
        worker = self._key_worker() if worker is None else worker

        def make(keep: bool) -> BlockBasis:
            return redrawn_basis(
                self.compartments,
                group["seed"],
                step=0 if group["fixed_basis"] else step,
                worker=worker,
                distribution=group["distribution"],
                normalise=group["normalise"],
                chunk_rows=group["chunk_rows"],
                device=self.flat.data.device,
                dtype=self.flat.data.dtype,
                threads=self.threads,
                keep=keep,
            )

        if not (group["fixed_basis"] and self.keep_directions):
            return make(keep)
        key = (worker, repr([group[k] for k in (*BASIS_KEYS, "compartments")]))
        if key not in self._fixed:
            self._fixed[key] = make(True)
        return self._fixed[key]

    def coordinates(self, step: int, grad: Tensor, worker: int | None = None) -> Tensor:
        """c = P^T g at `step` for `worker`'s directions (default: this process's key): the d
        numbers workers exchange."""
        return self.basis_at(step, worker).project(grad)

    def apply(self, step: int, coords: Tensor, update: Tensor, worker: int | None = None):
        """update += P c for `worker`'s directions of `step`, regenerated chunk by chunk."""
        return self.basis_at(step, worker).expand_add_(update, coords)

    @torch.no_grad()
    def step(self, closure=None) -> Tensor | None:
        loss = self._evaluate(closure)
        state = self.state[self.flat.data]
        step = state.get("step", 0)
        grad = self.flat.grad
        mine = self._key_worker()
        basis = self.basis_at(step, mine, keep=self.keep_directions)
        coords = basis.project(grad)
        if self.world == 1:
            parts = [(mine, coords)]
        elif self.mode == "shared":
            dist.all_reduce(coords)
            parts = [(mine, coords.div_(self.world))]
        else:
            gathered = [torch.empty_like(coords) for _ in range(self.world)]
            dist.all_gather(gathered, coords)
            parts = list(enumerate(gathered))
        update = torch.zeros_like(self.flat.data)
        for w, c in parts:
            (basis if w == mine else self.basis_at(step, w)).expand_add_(update, c)
        if len(parts) > 1:
            update.div_(len(parts))
        # kept on the device (0/0 is NaN there too): read as a number only when asked for
        self._cosine = (update @ grad) / (update.norm() * grad.norm())
        self.flat.data.add_(update, alpha=-self.param_groups[0]["lr"])
        state["step"] = step + 1
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's, after a check: a state whose seed, distribution, normalise, mode,
        fixed_basis, chunk_rows, device type (directions are drawn on the model's device, and
        CPU and CUDA generators differ) or compartments (offsets, lengths and dims; names aside)
        differ from this optimiser's, or that lacks them, is refused with a LowdimError naming
        the first difference: its steps were taken along other directions, and continuing
        them along these would silently mix two runs. Build the optimiser with the saved
        settings to resume it. lr and the step count are taken from the state, as torch does.
        """
        saved_groups = state_dict.get("param_groups", [])
        if len(saved_groups) == len(self.param_groups):
            for saved, current in zip(saved_groups, self.param_groups, strict=True):
                saved = {"device_type": "cpu", **saved}  # states from before it was kept
                for key in (*BASIS_KEYS, "compartments"):
                    if key not in saved:
                        raise LowdimError(
                            f"the RBD state has no {key}: it was saved by another optimiser "
                            "or an older lowdim, so its directions cannot be checked"
                        )
                    theirs, ours = _comparable(key, saved[key]), _comparable(key, current[key])
                    if theirs != ours:
                        raise LowdimError(
                            f"the RBD state was saved with {key} {_describe(key, theirs)}, "
                            f"this optimiser has {_describe(key, ours)}; build RBD with the "
                            "saved settings to resume it"
                        )
        super().load_state_dict(state_dict)


def _comparable(key: str, value):
    """A group value as it decides the directions: compartments as (offset, length, dim)."""
    if key == "compartments":
        return [(int(c["offset"]), int(c["length"]), int(c["dim"])) for c in value]
    return value


def _describe(key: str, value) -> str:
    if key != "compartments":
        return repr(value)
    shown = ", ".join(f"{o}+{n}:{d}" for o, n, d in value[:4])
    more = f", ... ({len(value)} in all)" if len(value) > 4 else ""
    return f"[{shown}{more}] (offset+length:dim)"

"""Random bases descent (Gressmann, Eaton-Rosen, Luschi, NeurIPS 2020): a fresh random subspace
every step, generated on the fly from counter-based keys and never stored whole."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import LowdimError
from ..params import FlatParams
from ..seeding import generator

DISTRIBUTIONS = ("gaussian", "uniform", "rademacher")
NORMALISATIONS = ("sqrt", "unit")


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
    dtype=torch.float32,
) -> Tensor:
    """Chunk `chunk` of the random directions of one step: a (rows, length) tensor, a pure
    function of its key (seed, step, worker, compartment, chunk), so any worker can regenerate
    any chunk alone.

    Entries have unit variance: N(0, 1), U(-sqrt 3, sqrt 3) or +-1. `normalise` "sqrt" divides
    every direction by sqrt(length) (the paper's: unit norm in expectation), "unit" scales each
    to norm 1 exactly.
    """
    g = generator("rbd", seed, step, worker, compartment, chunk)
    if distribution == "gaussian":
        out = torch.randn(rows, length, generator=g)
    elif distribution == "uniform":
        out = torch.rand(rows, length, generator=g).mul_(2 * math.sqrt(3)).sub_(math.sqrt(3))
    elif distribution == "rademacher":
        out = torch.randint(0, 2, (rows, length), generator=g).mul_(2).sub_(1).float()
    else:
        raise LowdimError(
            f"unknown distribution {distribution!r}; choose one of: {', '.join(DISTRIBUTIONS)}"
        )
    if normalise == "sqrt":
        out /= math.sqrt(length)
    elif normalise == "unit":
        out /= out.norm(dim=1, keepdim=True)
    else:
        raise LowdimError(
            f"unknown normalisation {normalise!r}; choose one of: {', '.join(NORMALISATIONS)}"
        )
    return out.to(device=device, dtype=dtype)


class RBD(torch.optim.Optimizer):
    """theta <- theta - lr * P (P^T g), with P (D x d) drawn anew at every step.

    The d directions are generated in chunks of `chunk_rows` from the key (seed, step, worker,
    compartment, chunk): once to form the coordinates P^T g and again to apply the step, so the
    whole of P never exists. With compartments, each block of parameters has its
    own directions and coordinates (a block-diagonal P). `fixed_basis=True` draws P once (the
    step key is always 0): the fixed random projection baseline.

    Args:
        flat: the model's flat parameters (see `lowdim.FlatParams`).
        dim: d, the total number of directions (split over compartments by size unless
            `compartments` gives each its own).
        lr: learning rate (plain SGD, no momentum, as in the paper).
        seed: the key's seed (default 0); `worker` its worker index (default 0).
        distribution: "gaussian" (default), "uniform" or "rademacher".
        normalise: "sqrt" (default: divide by sqrt(length)) or "unit".
        compartments: [(offset, length, d_k), ...] tiling 0..D (default: one, all of theta).
        fixed_basis, chunk_rows: see above (defaults False and 64).

    After each step, `last_cosine` holds the cosine between the step and the true gradient.
    """

    def __init__(
        self,
        flat: FlatParams,
        dim: int,
        lr: float,
        *,
        seed: int = 0,
        worker: int = 0,
        distribution: str = "gaussian",
        normalise: str = "sqrt",
        compartments: list[tuple[int, int, int]] | None = None,
        fixed_basis: bool = False,
        chunk_rows: int = 64,
    ) -> None:
        if not 1 <= dim <= flat.numel:
            raise LowdimError(f"--dim {dim} must be between 1 and D = {flat.numel}")
        if lr <= 0:
            raise LowdimError(f"--lr must be positive, got {lr}")
        if distribution not in DISTRIBUTIONS:
            raise LowdimError(
                f"unknown distribution {distribution!r}; choose one of: {', '.join(DISTRIBUTIONS)}"
            )
        if normalise not in NORMALISATIONS:
            raise LowdimError(
                f"unknown normalisation {normalise!r}; choose one of: {', '.join(NORMALISATIONS)}"
            )
        compartments = compartments or [(0, flat.numel, dim)]
        if sum(n for _, n, _ in compartments) != flat.numel or any(
            not 1 <= k <= n for _, n, k in compartments
        ):
            raise LowdimError(
                "compartments must tile the parameters, each with 1 <= d_k <= its length"
            )
        super().__init__([flat.data], dict(lr=lr))
        self.flat, self.seed, self.worker = flat, seed, worker
        self.distribution, self.normalise = distribution, normalise
        self.compartments = compartments
        self.fixed_basis = fixed_basis
        self.chunk_rows = chunk_rows
        self.last_cosine = float("nan")

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the model's flat gradient in place (its views must survive)."""
        self.flat.zero_grad()

    def _chunks(self, step: int, k: int):
        """(first row, the chunk's directions) of compartment k at `step`."""
        _, length, rows = self.compartments[k]
        key_step = 0 if self.fixed_basis else step
        for j, start in enumerate(range(0, rows, self.chunk_rows)):
            n = min(self.chunk_rows, rows - start)
            yield (
                start,
                directions(
                    self.seed,
                    key_step,
                    self.worker,
                    k,
                    j,
                    n,
                    length,
                    distribution=self.distribution,
                    normalise=self.normalise,
                    device=self.flat.data.device,
                    dtype=self.flat.data.dtype,
                ),
            )

    def coordinates(self, step: int, grad: Tensor) -> list[Tensor]:
        """P^T g per compartment at `step` (what workers exchange: d numbers)."""
        out = []
        for k, (offset, length, rows) in enumerate(self.compartments):
            g = grad[offset : offset + length]
            coords = torch.empty(rows, dtype=grad.dtype, device=grad.device)
            for start, chunk in self._chunks(step, k):
                coords[start : start + len(chunk)] = chunk @ g
            out.append(coords)
        return out

    def apply(self, step: int, coords: list[Tensor], update: Tensor) -> None:
        """update += P c for the directions of `step` (regenerated chunk by chunk)."""
        for k, (offset, length, _) in enumerate(self.compartments):
            part = update[offset : offset + length]
            for start, chunk in self._chunks(step, k):
                part.addmv_(chunk.t(), coords[k][start : start + len(chunk)])

    @torch.no_grad()
    def step(self, closure=None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        state = self.state[self.flat.data]
        step = state.get("step", 0)
        grad = self.flat.grad
        coords = self.coordinates(step, grad)
        update = torch.zeros_like(self.flat.data)
        self.apply(step, coords, update)
        # <P c, g> = |c|^2 with c = P^T g, so the cosine needs only |update| besides.
        along = sum(float(c.square().sum()) for c in coords)
        norm = float(update.norm()) * float(grad.norm())
        self.last_cosine = along / norm if norm > 0 else float("nan")
        self.flat.data.add_(update, alpha=-self.param_groups[0]["lr"])
        state["step"] = step + 1
        return loss

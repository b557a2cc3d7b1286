"""A basis split along the parameter axis over the processes of a run: each of R processes holds
P's rows for its own D/R parameters, so the basis's memory per process falls by R, and a step
sends what plain data parallelism sends, plus d numbers.

    P^T g = sum_r P_r^T g_r     g summed onto each process's own slice by a reduce-scatter,
                                each process its partial product, one all-reduce of d numbers
    P c   = [P_1 c; ...; P_R c] each process its own slice, one all-gather (D/R numbers in)

A ring all-reduce of the gradient, what data parallelism with the whole basis sends, is itself
a reduce-scatter and an all-gather, (R-1)/R D numbers on the wire each: the sharded step puts
the same on the wire, plus d. Per step a process hands D + D/R + d numbers to NCCL's
collectives (the reduce-scatter's input, its slice, the partial products); on gloo, whose own
reduce-scatter costs a whole all-reduce, the reduce-scatter is a ring of R - 1 sends of D/R
numbers, so it hands (R-1)/R D + D/R + d = D + d. So the training loop must not all-reduce the
gradient first (`combines_gradients`): `project` takes each process's own gradient and returns
P^T of their mean (of identical vectors, P^T of that vector).

Extraction is sharded too: PCA sums the processes' partial Gram matrices (t x t), and the span
of checkpoints is a tall-skinny QR (each process factors its block, the small R factors are
gathered and factored again), so no process ever holds a D-long row of the basis.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .. import distributed
from ..errors import LowdimError
from .base import Basis
from .dense import DenseBasis
from .pca import pca_of_rows
from .span import SpanBasis


def shard_size(num_params: int, world: int) -> int:
    """ceil(D / R): the length of every process's share once the D-vector is padded to R of
    them (the chunks a reduce-scatter or an all-gather of equal pieces works on)."""
    return -(-num_params // world)


def shard_bounds(num_params: int, world: int, rank: int) -> tuple[int, int]:
    """[lo, hi): process `rank`'s contiguous share of `num_params`, ceil(D/R) long (the last
    shares shorter where R does not divide D)."""
    size = shard_size(num_params, world)
    lo = min(rank * size, num_params)
    return lo, min(lo + size, num_params)


class ShardedBasis(Basis):
    """P (D x d) of which this process holds `local`, the rows for parameters [lo, hi).

    Needs torch.distributed initialised; every process must call `project` and `expand` at
    the same points (they are collectives). `project(g)` is P^T of the processes' mean g, so
    `fit` hands it each process's own gradient (`combines_gradients`), and a step sends what
    data parallelism sends, plus d numbers (see the module docstring). Not saved to files: it
    is rebuilt per process. `anchor` (the whole D-vector the subspace is attached to), `window`
    and `explained_variance_ratio` are carried for the training job, as the unsharded bases
    have.
    """

    kind = ""  # never written: a run layout, not a kind of basis

    def __init__(
        self,
        local: DenseBasis,
        lo: int,
        hi: int,
        num_params: int,
        *,
        anchor: Tensor | None = None,
        window: tuple[int, int, int] | None = None,
        explained_variance_ratio: Tensor | None = None,
    ) -> None:
        if local.num_params != hi - lo:
            raise LowdimError(f"the shard holds {local.num_params} parameters, not {hi - lo}")
        self.local, self.lo, self.hi, self._num_params = local, lo, hi, num_params
        self.anchor, self.window = anchor, window
        self.explained_variance_ratio = explained_variance_ratio
        self.world = distributed.world_size()
        self.combines_gradients = self.world > 1

    @property
    def num_params(self) -> int:
        return self._num_params

    @property
    def dim(self) -> int:
        return self.local.dim

    def project(self, g: Tensor) -> Tensor:
        """P^T (1/R sum_r g_r), where g_r is process r's `g`."""
        if self.world == 1:
            return self.local.project(g)
        own = reduce_scatter_vector(g)[: self.hi - self.lo]
        partial = self.local.project(own)
        dist.all_reduce(partial)
        return partial.div_(self.world)

    def expand(self, c: Tensor) -> Tensor:
        return gather_vector(self.local.expand(c), self.num_params)

    def expand_add_(self, target: Tensor, c: Tensor, alpha: float = 1.0) -> Tensor:
        return target.add_(self.expand(c).to(target.dtype), alpha=alpha)

    def tensors(self) -> dict[str, Tensor]:
        return self.local.tensors()

    def save(self, path, *, layout=None) -> None:
        """Refused: the inherited save would write this process's rows under no kind, a file
        that `load_basis` cannot read (and only a part of P where there are several)."""
        raise LowdimError("a sharded basis is rebuilt by each process, not saved to a file")

    def bytes_held(self) -> int:
        """Bytes of P this process holds: about 1/R of the whole."""
        return self.local.bytes_held()

    def orthogonality_error(self) -> float:
        """max |P^T P - I| over the whole basis (the Gram of the shards, summed)."""
        r = self.local.rows.double()
        gram = r @ r.t()
        if self.world > 1:
            dist.all_reduce(gram)
        return (gram - torch.eye(len(r), dtype=gram.dtype, device=gram.device)).abs().max().item()

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], numbers: dict) -> ShardedBasis:
        raise LowdimError("a sharded basis is rebuilt by each process, not loaded from a file")

    def to(self, device=None, dtype=None) -> ShardedBasis:
        return ShardedBasis(
            self.local.to(device, dtype),
            self.lo,
            self.hi,
            self.num_params,
            anchor=self.anchor,
            window=self.window,
            explained_variance_ratio=self.explained_variance_ratio,
        )


def _padded(v: Tensor, length: int) -> Tensor:
    """`v`, zero-padded to `length` (itself where it is that long already)."""
    if len(v) == length:
        return v.contiguous()
    out = torch.zeros(length, dtype=v.dtype, device=v.device)
    out[: len(v)] = v
    return out


def reduce_scatter_vector(v: Tensor) -> Tensor:
    """This process's share of the sum over processes of the D-vector `v`: ceil(D/R) numbers
    (zero-padded past D), its slice [lo, hi) first (see `shard_bounds`). `v` is not changed.

    NCCL (and any backend but gloo): torch's reduce-scatter, handed the D numbers. gloo: a
    ring of R - 1 exchanges of D/R numbers with the neighbours, what a reduce-scatter puts on
    the wire, (R-1)/R D, because gloo's own reduce-scatter costs a whole all-reduce (measured
    4.3 ms against 3.9 ms for the all-reduce of D = 269,722 on 2 processes, where one
    exchange of D/2 takes 1.2 ms)."""
    world = distributed.world_size()
    size = shard_size(len(v), world)
    padded = _padded(v, size * world)
    if dist.get_backend() == "gloo":
        return _ring_reduce_scatter(padded.view(world, size))
    own = torch.empty(size, dtype=v.dtype, device=v.device)
    # torch 2.10 renamed the single-tensor collectives (*_single); older builds, the old names
    (getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor)(own, padded)
    return own


def _ring_reduce_scatter(chunks: Tensor) -> Tensor:
    """Row `rank` of the sum over processes of `chunks` (R x S), by R - 1 ring steps: at step
    k process r sends its partial sum of chunk (r - k - 1) mod R to r + 1, and adds what r - 1
    sends, its partial sum of chunk (r - k - 2) mod R, to its own; after the last step
    (k = R - 2) that chunk is r, summed over all R processes."""
    world, rank = len(chunks), distributed.rank()
    after, before = (rank + 1) % world, (rank - 1) % world
    partial = chunks[(rank - 1) % world].clone()
    received = torch.empty_like(partial)
    for k in range(world - 1):
        sent = dist.isend(partial, after)
        dist.irecv(received, before).wait()
        sent.wait()
        partial = received + chunks[(rank - k - 2) % world]
    return partial


def gather_vector(piece: Tensor, num_params: int) -> Tensor:
    """The whole D-vector from every process's piece [lo, hi) (see `shard_bounds`); its
    ceil(D/R) numbers in. On gloo by the list form of all-gather, which is twice as fast there
    as the single-tensor form (1.8 ms against 3.4 ms for D/2 = 134,861 on 2 processes)."""
    world = distributed.world_size()
    if world == 1:
        return piece
    size = shard_size(num_params, world)
    mine = _padded(piece, size)
    if dist.get_backend() == "gloo":
        pieces = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(pieces, mine)
        return torch.cat(pieces)[:num_params]
    whole = torch.empty(size * world, dtype=piece.dtype, device=piece.device)
    (getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor)(whole, mine)
    return whole[:num_params]


def sharded_span(block: Tensor, *, rtol: float = 1e-10) -> tuple[Tensor, Tensor, Tensor]:
    """Tall-skinny QR of the checkpoints, split by columns over the processes.

    `block` is this process's (n, D_r) slice of the n checkpoints. Returns (rows, mean, keep):
    this process's (r, D_r) slice of the orthonormal rows that `span_of_rows` would give for
    the whole matrix (up to the signs of the directions, fixed by R's diagonal), its slice of
    the checkpoints' mean, and which of the n directions were kept. Each process factors
    W_r^T = Q_r R_r; the R_r are gathered and factored, [R_1; ...; R_R] = Q' R; then
    Q = diag(Q_r) Q' and only n x n matrices ever travel.
    """
    w = block.to(torch.float64)
    n, width = w.shape
    if width < n:
        raise LowdimError(
            f"each process needs at least as many parameters ({width}) as checkpoints ({n}); "
            "use fewer processes or fewer checkpoints"
        )
    q_local, r_local = torch.linalg.qr(w.t(), mode="reduced")
    world, rank = distributed.world_size(), distributed.rank()
    stack = [torch.empty_like(r_local) for _ in range(world)]
    if world > 1:
        dist.all_gather(stack, r_local.contiguous())
    else:
        stack = [r_local]
    q_small, r = torch.linalg.qr(torch.cat(stack), mode="reduced")
    diag = r.diagonal().abs()
    keep = diag > rtol * diag.max()
    q = q_local @ q_small[rank * n : (rank + 1) * n]
    return q[:, keep].t().contiguous(), w.mean(0), keep


def shard_span_basis(block: Tensor, lo: int, hi: int, num_params: int, window) -> ShardedBasis:
    """The TWA basis of a sharded window, with its whole anchor (the average) on every process."""
    rows, mean, _ = sharded_span(block)
    anchor = gather_vector(mean, num_params)
    return ShardedBasis(
        SpanBasis(rows, mean, window), lo, hi, num_params, anchor=anchor, window=tuple(window)
    )


def shard_pca_basis(
    block, n_components: int, lo: int, hi: int, num_params: int, window
) -> ShardedBasis:
    """DLDR's PCA basis of a sharded window: the partial Gram matrices are summed across the
    processes, so every process gets the same spectrum and its own slice of the directions;
    the anchor (the window's first snapshot) is whole on every process."""

    def all_reduce(gram: Tensor) -> None:
        if distributed.world_size() > 1:
            dist.all_reduce(gram)

    local = pca_of_rows(block, n_components, window=tuple(window), reduce=all_reduce)
    return ShardedBasis(
        local,
        lo,
        hi,
        num_params,
        anchor=gather_vector(local.anchor, num_params),
        window=local.window,
        explained_variance_ratio=local.explained_variance_ratio,
    )

"""DLDR's basis: the principal directions of a window of the training trajectory.

For t snapshots w_1..w_t (rows of W, t x D) with mean m, the centred matrix X = W - 1 m^T has the
SVD X = U S V^T; the basis is the top n rows of V^T. With t << D, the exact and cheap route is the
t x t Gram matrix G = X X^T = U S^2 U^T: eigendecompose it in float64 and map each eigenvector
back, v_i = X^T u_i / s_i. Cost O(t^2 D) and O(t^2) extra memory, against O(t D min(t, D)) for an
SVD of X; no randomised approximation (what scikit-learn's PCA silently uses at this size).

G is accumulated over column blocks of W read from the memory-mapped trajectory, so t x D never
has to fit in memory; each block is centred by its own column means, which is exact because
centring acts column by column.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import BadArgument, LowdimError
from ..trajectory import Trajectory, WindowChecks
from .dense import DenseBasis

# Column blocks of about this many bytes (as float64) are read, centred and multiplied at a
# time: on the CPU small enough to stay in cache, so the buffers are reused rather than
# re-allocated; on a GPU large enough that each block's few kernels are long ones.
BLOCK_BYTES = 2 << 20
GPU_BLOCK_BYTES = 256 << 20


class PCABasis(DenseBasis):
    """A dense basis of principal directions, with what PCA knows about them.

    Attributes:
        rows: (n, D) the principal directions, orthonormal.
        anchor: (D,) the snapshot at the window's start (the paper trains from there).
        mean: (D,) the mean of the window's snapshots.
        singular_values: (n,) s_i of the centred snapshot matrix, in decreasing order.
        explained_variance_ratio: (n,) s_i^2 / sum of all s_j^2 over the window.
        window: (start, end, stride) of the snapshots used, end exclusive.
    """

    kind = "pca"

    def __init__(
        self,
        rows: Tensor,
        anchor: Tensor,
        mean: Tensor,
        singular_values: Tensor,
        explained_variance_ratio: Tensor,
        window: tuple[int, int, int],
    ) -> None:
        super().__init__(rows)
        self.anchor = anchor
        self.mean = mean
        self.singular_values = singular_values
        self.explained_variance_ratio = explained_variance_ratio
        self.window = tuple(window)

    def tensors(self) -> dict[str, Tensor]:
        return {
            "rows": self.rows,
            "anchor": self.anchor,
            "mean": self.mean,
            "singular_values": self.singular_values,
            "explained_variance_ratio": self.explained_variance_ratio,
        }

    def numbers(self) -> dict:
        return {"window": list(self.window)}

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], numbers: dict) -> PCABasis:
        return cls(
            tensors["rows"],
            tensors["anchor"],
            tensors["mean"],
            tensors["singular_values"],
            tensors["explained_variance_ratio"],
            tuple(numbers["window"]),
        )


def _column_blocks(matrix, block_cols: int):
    """(first column, the block as a tensor) over the columns of a (t, D) array or tensor; a
    view, no copy, unless the array is read-only."""
    for j in range(0, matrix.shape[1], block_cols):
        view = matrix[:, j : j + block_cols]
        if isinstance(view, Tensor):
            yield j, view
        else:
            yield j, torch.from_numpy(view if view.flags.writeable else np.array(view))


def pca_of_rows(
    matrix,
    n_components: int,
    *,
    dtype: torch.dtype = torch.float32,
    window: tuple[int, int, int] | None = None,
    reduce=None,
    checks: WindowChecks | None = None,
) -> PCABasis:
    """The top `n_components` principal directions of the rows of `matrix` (t x D).

    `matrix` is anything sliceable by columns into arrays: a numpy array or memory map (read a
    block at a time), or a tensor, on whose device everything runs (a CUDA tensor's Gram
    matrix, eigendecomposition and directions stay on its GPU, as does the basis). The Gram
    matrix and its eigendecomposition run in float64; the directions are formed in float32 and
    stored in `dtype` (default float32).
    `reduce(gram)`, if given, completes the t x t Gram matrix in place before it is
    decomposed: with `matrix` a slice of the parameters, summing the slices' Gram matrices
    across processes gives each its slice of the whole PCA (see `bases.sharded`).
    `checks` (from `Trajectory.checks`) verifies each row's crc32 in the same pass that
    accumulates the Gram matrix. NaN or inf in the rows raise `LowdimError` naming them.
    """
    device = torch.device("cpu")
    if isinstance(matrix, Tensor):
        matrix, device = matrix.detach(), matrix.device
    t, num_params = matrix.shape
    if not 1 <= n_components <= t - 1:
        raise BadArgument(
            "n_components",
            f"{n_components} is not possible with {t} snapshots: "
            f"centred PCA of t snapshots gives at most t - 1 = {t - 1} components",
        )
    block_bytes = GPU_BLOCK_BYTES if device.type == "cuda" else BLOCK_BYTES
    block_cols = max(1, min(num_params, block_bytes // (8 * t)))
    on = {"device": device}
    gram = torch.empty(t, t, dtype=torch.float64, **on)
    mean = torch.empty(num_params, dtype=torch.float32, **on)
    buf = torch.empty(t, block_cols, dtype=torch.float64, **on)  # reused: no page faults
    # G is symmetric: with the rows split in halves a and b, G_aa, G_ba and G_bb are enough,
    # a quarter less work than the full product.
    h = t // 2
    g_aa, g_ba, g_bb = (
        torch.zeros(m, n, dtype=torch.float64, **on)
        for m, n in ((h, h), (t - h, h), (t - h, t - h))
    )
    for j, block in _column_blocks(matrix, block_cols):
        block_mean = block.mean(0, dtype=torch.float64)
        centred = torch.sub(block, block_mean, out=buf[:, : block.shape[1]])
        a, b = centred[:h], centred[h:]
        g_aa.addmm_(a, a.t())
        g_ba.addmm_(b, a.t())
        g_bb.addmm_(b, b.t())
        mean[j : j + block.shape[1]] = block_mean
        if checks is not None:
            checks.update(j + block.shape[1])
    if checks is not None:
        checks.verify_checksums()
    gram[:h, :h], gram[h:, :h], gram[:h, h:], gram[h:, h:] = g_aa, g_ba, g_ba.t(), g_bb
    if reduce is not None:
        reduce(gram)
    if not torch.isfinite(gram).all():  # one non-finite value anywhere spoils all of G
        if checks is not None:
            raise checks.nonfinite_error()
        bad = [i for i in range(t) if not bool(_finite(matrix[i]))]
        raise LowdimError(f"rows {bad[:6]} of the snapshot matrix hold NaN or inf values")
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)
    total = evals.clamp(min=0).sum()
    top = evals[:n_components]
    # Directions with (numerically) zero variance have no defined v_i = X^T u_i / s_i.
    rank = int((evals > evals[0] * t * 1e-13).sum()) if evals[0] > 0 else 0
    if rank < n_components:
        raise BadArgument(
            "n_components",
            f"{n_components}: the snapshots span only {rank} directions (repeated or constant "
            "snapshots?); ask for fewer components or a wider window",
        )
    s = top.sqrt()
    # Fix each direction's sign (eigh's is arbitrary): the largest |u| entry is positive.
    u = evecs[:, :n_components]
    signs = u.gather(0, u.abs().argmax(0, keepdim=True)).sign()
    u = u * torch.where(signs == 0, 1.0, signs)
    # v_i = X^T u_i / s_i, formed in float32 from the float32 snapshots centred by the float32
    # mean: the mean's rounding error is the same in every row, and u_i is orthogonal to the
    # all-ones vector (u_i is an eigenvector of a centred Gram matrix), so it cancels.
    a = (u / s).t().float().contiguous()
    rows = torch.empty(n_components, num_params, dtype=dtype, **on)
    centred32 = torch.empty(t, block_cols, dtype=torch.float32, **on)
    for j, block in _column_blocks(matrix, block_cols):
        cols = slice(j, j + block.shape[1])
        centred = torch.sub(block, mean[cols], out=centred32[:, : block.shape[1]])
        rows[:, cols] = a @ centred
    return PCABasis(
        rows,
        anchor=_row(matrix, 0),
        mean=mean,
        singular_values=s,
        explained_variance_ratio=top / total,
        window=window or (0, t, 1),
    )


def _finite(row) -> bool:
    return torch.isfinite(row).all() if isinstance(row, Tensor) else np.isfinite(row).all()


def _row(matrix, i: int) -> Tensor:
    """Row i of an array or tensor, as a new float32 tensor (on the tensor's device)."""
    if isinstance(matrix, Tensor):
        return matrix[i].to(torch.float32, copy=True)
    return torch.from_numpy(np.array(matrix[i], dtype=np.float32))


def trajectory_pca(
    trajectory: Trajectory,
    n_components: int,
    *,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    dtype: torch.dtype = torch.float32,
) -> PCABasis:
    """DLDR's subspace: PCA of snapshots start, start+stride, ... < end (end exclusive; default
    the whole trajectory) of a recorded trajectory, read block by block from its memory map.
    The anchor is the snapshot at `start`."""
    end = len(trajectory) if end is None else end
    window = trajectory.window(start, end, stride)
    checks = trajectory.checks(start, end, stride)
    return pca_of_rows(
        window, n_components, dtype=dtype, window=(start, end, stride), checks=checks
    )

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

from ..errors import LowdimError
from ..trajectory import Trajectory
from .dense import DenseBasis

# Column blocks of about this many bytes (float64) are read, centred and multiplied at a time;
# below KEEP_BYTES the centred blocks stay in memory for the second pass instead of being re-read.
BLOCK_BYTES = 64 << 20
KEEP_BYTES = 1 << 30


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
    """(first column, centred float64 block, the block's column means), block by block."""
    for j in range(0, matrix.shape[1], block_cols):
        block = torch.from_numpy(np.asarray(matrix[:, j : j + block_cols], dtype=np.float64))
        mean = block.mean(0)
        yield j, block.sub_(mean), mean


def pca_of_rows(
    matrix,
    n_components: int,
    *,
    dtype: torch.dtype = torch.float32,
    window: tuple[int, int, int] | None = None,
) -> PCABasis:
    """The top `n_components` principal directions of the rows of `matrix` (t x D).

    `matrix` is anything sliceable by columns into arrays: a numpy array or memory map (read a
    block at a time), or a CPU tensor. The rows of the result are stored in `dtype` (default
    float32); everything before that runs in float64.
    """
    if isinstance(matrix, Tensor):
        matrix = matrix.detach().cpu().numpy()
    t, num_params = matrix.shape
    if not 1 <= n_components <= t - 1:
        raise LowdimError(
            f"--n-components {n_components} is not possible with {t} snapshots: "
            f"centred PCA of t snapshots gives at most t - 1 = {t - 1} components"
        )
    block_cols = max(1, BLOCK_BYTES // (8 * t))
    keep = t * num_params * 8 <= KEEP_BYTES
    kept: list[tuple[int, Tensor, Tensor]] = []
    gram = torch.zeros(t, t, dtype=torch.float64)
    mean = torch.empty(num_params, dtype=torch.float32)
    for j, block, block_mean in _column_blocks(matrix, block_cols):
        gram.addmm_(block, block.t())
        mean[j : j + block.shape[1]] = block_mean
        if keep:
            kept.append((j, block, block_mean))
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)
    total = evals.clamp(min=0).sum()
    top = evals[:n_components]
    # Directions with (numerically) zero variance have no defined v_i = X^T u_i / s_i.
    rank = int((evals > evals[0] * t * 1e-13).sum()) if evals[0] > 0 else 0
    if rank < n_components:
        raise LowdimError(
            f"--n-components {n_components}: the snapshots span only {rank} directions "
            "(repeated or constant snapshots?); ask for fewer components or a wider window"
        )
    s = top.sqrt()
    # Fix each direction's sign (eigh's is arbitrary): the largest |u| entry is positive.
    u = evecs[:, :n_components]
    signs = u.gather(0, u.abs().argmax(0, keepdim=True)).sign()
    u = u * torch.where(signs == 0, 1.0, signs)
    rows = torch.empty(n_components, num_params, dtype=dtype)
    blocks = kept if keep else _column_blocks(matrix, block_cols)
    for j, block, _ in blocks:
        rows[:, j : j + block.shape[1]] = (u.t() @ block / s[:, None]).to(dtype)
    return PCABasis(
        rows,
        anchor=torch.from_numpy(np.array(matrix[0], dtype=np.float32)),
        mean=mean,
        singular_values=s,
        explained_variance_ratio=top / total,
        window=window or (0, t, 1),
    )


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
    return pca_of_rows(window, n_components, dtype=dtype, window=(start, end, stride))

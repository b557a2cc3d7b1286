"""The span of a window of checkpoints, orthonormalised: the subspace of trainable weight
averaging (TWA, Li et al., ICLR 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import LowdimError
from .base import Basis
from .blocks import BlockBasis
from .compartments import compartments_of
from .dense import DenseBasis


class SpanBasis(DenseBasis):
    """An orthonormal basis Q of span{w_1, ..., w_n} (n checkpoints), with their average.

    Attributes:
        rows: (r, D) float64, orthonormal rows spanning the checkpoints (r <= n: directions of
            a numerically rank-deficient window are dropped).
        anchor: (D,) the plain average of the checkpoints (where TWA starts; it lies in the
            span, so anchor + span(Q) is span(Q) itself).
        window: (start, end, stride) of the checkpoints used, end exclusive.
    """

    kind = "span"

    def __init__(self, rows: Tensor, anchor: Tensor, window: tuple[int, int, int]) -> None:
        super().__init__(rows)
        self.anchor = anchor
        self.window = tuple(window)

    def tensors(self) -> dict[str, Tensor]:
        return {"rows": self.rows, "anchor": self.anchor}

    def numbers(self) -> dict:
        return {"window": list(self.window)}

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], numbers: dict) -> SpanBasis:
        return cls(tensors["rows"], tensors["anchor"], tuple(numbers["window"]))


def span_of_rows(
    matrix, *, rtol: float = 1e-10, window: tuple[int, int, int] | None = None
) -> SpanBasis:
    """Orthonormal rows spanning the rows of `matrix` (n x D: checkpoints), by a thin
    Householder QR of matrix^T in float64.

    Checkpoints of one run are nearly collinear; classical Gram-Schmidt in float32 loses
    orthogonality on them, Householder QR in float64 keeps max |Q^T Q - I| near 1e-15. A
    direction whose |R_ii| falls below `rtol` (default 1e-10) times the largest is dropped:
    that checkpoint adds nothing numerically new to the span.
    """
    w = torch.as_tensor(matrix).to(torch.float64)
    if w.dim() != 2 or w.shape[0] < 1:
        raise LowdimError(f"a span needs an (n, D) matrix of checkpoints, got {tuple(w.shape)}")
    q, r = torch.linalg.qr(w.t(), mode="reduced")
    diag = r.diagonal().abs()
    keep = diag > rtol * diag.max()
    rows = q[:, keep].t().contiguous()
    return SpanBasis(rows, w.mean(0), window or (0, w.shape[0], 1))


def trajectory_span(
    trajectory, *, start: int = 0, end: int | None = None, stride: int = 1, rtol: float = 1e-10
) -> SpanBasis:
    """`span_of_rows` of the snapshots start, start + stride, ... < end of a `Trajectory`."""
    rows = trajectory.window(start, end, stride)
    stop = start + stride * len(rows)
    return span_of_rows(
        torch.from_numpy(rows.astype("float64")), rtol=rtol, window=(start, stop, stride)
    )


class LayerDeviationBasis(BlockBasis):
    """TWA's journal-version subspace: per layer l, the checkpoints' deviations from their mean,
    each scaled to unit norm within the layer: P = diag(E_1, ..., E_L) with the rows of E_l
    (w_i^l - mean^l) / |w_i^l - mean^l|. Not orthogonalised; c holds one averaging coefficient
    per checkpoint and layer, and c = 0 is the plain average (`anchor`)."""

    kind = "layer-deviations"

    def __init__(
        self, blocks: list[tuple[int, int, Basis]], anchor: Tensor, window: tuple[int, int, int]
    ) -> None:
        super().__init__(blocks)
        self.anchor, self.window = anchor, tuple(window)

    def tensors(self) -> dict[str, Tensor]:
        return {**super().tensors(), "anchor": self.anchor}

    def numbers(self) -> dict:
        return {**super().numbers(), "window": list(self.window)}

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], numbers: dict) -> LayerDeviationBasis:
        blocks = BlockBasis.from_state(tensors, numbers).blocks
        return cls(blocks, tensors["anchor"], tuple(numbers["window"]))

    def to(self, device=None, dtype=None) -> LayerDeviationBasis:
        moved = BlockBasis.to(self, device=device, dtype=dtype).blocks
        return LayerDeviationBasis(moved, self.anchor.to(device), self.window)


def layer_deviations(
    matrix, layout: list[dict], *, window: tuple[int, int, int] | None = None
) -> LayerDeviationBasis:
    """The `LayerDeviationBasis` of the rows of `matrix` (n x D checkpoints) for a parameter
    `layout` (see `FlatParams.layout`); a deviation that vanishes in a layer (a layer that
    never moved) gives that layer no direction for it."""
    w = torch.as_tensor(matrix).to(torch.float64)
    mean = w.mean(0)
    blocks = []
    for part in compartments_of(layout, "layer"):
        offset, length = part.offset, part.length
        dev = w[:, offset : offset + length] - mean[offset : offset + length]
        norms = dev.norm(dim=1)
        keep = norms > 1e-12 * max(1.0, float(mean[offset : offset + length].norm()))
        if not keep.any():
            raise LowdimError(
                f"the parameters at {offset}..{offset + length - 1} never moved across the "
                "checkpoints: no direction to train there"
            )
        rows = (dev[keep] / norms[keep, None]).float()
        blocks.append((offset, length, DenseBasis(rows)))
    return LayerDeviationBasis(blocks, mean.float(), window or (0, w.shape[0], 1))

"""The search of an intrinsic-dim sweep: which d to train, and d_int90 from their accuracy.

Job layer: `measure_intrinsic_dim` (in `intrinsic.py`) builds a `Sweep` once the baseline has
set the 90% threshold; the sweep trains the points it needs through `train_point` (in
`intrinsic_points.py`), every seed of a d, on a grid of d or by a search (doubling, then
bisection), and keeps the rows of every point it trained.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from .. import distributed
from .intrinsic_points import ModelArg, train_point

if TYPE_CHECKING:
    from ..data import Data
    from .intrinsic import IntrinsicConfig


class Sweep:
    """The points trained so far and the rule that turns them into d_int90.

    Args:
        cfg: the sweep's options (seeds per d, the first seed, the protocol).
        data: what every point trains and is tested on.
        save_dir: the sweep's folder; points go to points/d<d>-s<seed>/, rows to metrics.jsonl.
        threshold: the mean test accuracy a d must reach to pass (90% of the baseline's).
        progress: per-epoch lines of each point.
        checkpoint_every: see `fit` (default 0: at the end of each epoch only).
        model: the user's network, as `point_module` takes it (default None: the zoo's).
    """

    def __init__(
        self,
        cfg: IntrinsicConfig,
        data: Data,
        save_dir: Path,
        threshold: float,
        progress: bool,
        checkpoint_every: int = 0,
        model: ModelArg = None,
    ) -> None:
        self.cfg, self.data, self.dir, self.threshold = cfg, data, save_dir, threshold
        self.progress = progress
        self.checkpoint_every = checkpoint_every
        self.model = model
        self.rows: list[dict] = []

    def point(self, dim: int, seed: int) -> dict:
        """The row of the point (dim, seed), trained if needed, recorded once."""
        folder = self.dir / "points" / f"d{dim}-s{seed}"
        row = train_point(
            self.cfg,
            self.data,
            dim,
            seed,
            folder,
            self.progress,
            self.checkpoint_every,
            model=self.model,
        )
        if row not in self.rows:
            self.rows.append(row)
            if distributed.is_main():
                with open(self.dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
        return row

    def mean_acc(self, dim: int) -> float:
        """Mean test accuracy over the seeds at d = dim (training them if needed)."""
        seeds = range(self.cfg.seed, self.cfg.seed + self.cfg.seeds)
        accs = [self.point(dim, seed)["test_acc"] for seed in seeds]
        mean = sum(accs) / len(accs)
        if distributed.is_main():
            print(
                f"d = {dim:>7}: mean test_acc {mean:.4f} over {len(accs)} seed(s)"
                f"{'  >= 90%' if mean >= self.threshold else ''}",
                flush=True,
            )
        return mean

    def means(self) -> dict[str, float]:
        """The mean test accuracy per d over the rows so far, keyed by str(d), d ascending."""
        by_dim: dict[int, list[float]] = {}
        for row in self.rows:
            by_dim.setdefault(row["dim"], []).append(row["test_acc"])
        return {str(d): sum(a) / len(a) for d, a in sorted(by_dim.items())}

    def d_int90(self, num_params: int) -> int | None:
        """The smallest d that passes, None if none does: searched from `cfg.search_min` up to
        `cfg.search_max` (None: D = `num_params`) with `cfg.search`, else among `cfg.dims`."""
        if self.cfg.search:
            return self.search(self.cfg.search_min, self.cfg.search_max or num_params)
        return self.grid(self.cfg.dims)

    def grid(self, dims: list[int]) -> int | None:
        """The smallest of `dims` that passes (every one is trained), or None."""
        passing = [d for d in sorted(dims) if self.mean_acc(d) >= self.threshold]
        return passing[0] if passing else None

    def search(self, low: int, high: int) -> int | None:
        """Doubling from `low` until a d passes, then bisection down to a 10% bracket; None
        when not even `high` passes."""
        last_fail, d = None, low
        while True:
            if self.mean_acc(d) >= self.threshold:
                break
            last_fail = d
            if d >= high:
                return None
            d = min(high, 2 * d)
        lo, hi = last_fail, d
        while lo is not None and hi - lo > max(1, math.ceil(0.1 * lo)):
            mid = (lo + hi) // 2
            if self.mean_acc(mid) >= self.threshold:
                hi = mid
            else:
                lo = mid
        return hi

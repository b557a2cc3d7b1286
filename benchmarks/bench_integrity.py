"""What checking files costs, each measured side by side in one run (ratios, not absolute times):

1. DLDR's PCA of a recorded trajectory of t = 81 snapshots of D = 270,000 (ResNet-20-sized,
   read from its memory map as `lowdim train-pbfgs` does): with every snapshot's crc32 checked
   inside the pass that accumulates the Gram matrix, against the same PCA with no check, and
   against a separate verifying pass (`Trajectory.verify`) before it.
2. Saving and loading that PCA basis (40 x 270,000) with the crc32 digest of its tensors that
   `save_tensors` stores and `read_tensors` checks, against the digest alone.

    python benchmarks/bench_integrity.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import median_ms, write_result

from lowdim.bases import pca_of_rows
from lowdim.io import load_tensors, save_tensors, tensors_digest
from lowdim.trajectory import Trajectory, TrajectoryRecorder


def record_trajectory(folder: Path, t: int = 81, dim: int = 270_000) -> Trajectory:
    """A trajectory-like window: a common start, a drift that slows down, and noise."""
    g = torch.Generator().manual_seed(0)
    recorder = TrajectoryRecorder(folder, [{"name": "w", "shape": [dim]}])
    point = torch.randn(dim, generator=g)
    for i in range(t):
        point += 0.01 * torch.randn(dim, generator=g) * (1 - 0.9 * i / t)
        recorder.append(point, epoch=i, step=i)
    return Trajectory(folder)


def bench_pca_checks(traj: Trajectory, repeats: int, k: int = 40) -> dict:
    window = traj.window()
    ms = median_ms(
        {
            "unchecked": lambda: pca_of_rows(window, k),
            "folded": lambda: pca_of_rows(window, k, checks=traj.checks()),
            "separate": lambda: (traj.verify(), pca_of_rows(window, k)),
        },
        repeats,
    )
    # The same cost measured inside the pass: seconds spent in the crc32 calls of a folded
    # run over its whole time (steadier than a difference of two noisy medians).
    shares = []
    for _ in range(repeats):
        checks, spent = traj.checks(), [0.0]
        feed = checks._feed

        def timed_feed(upto, feed=feed, spent=spent):
            start = time.perf_counter()
            feed(upto)
            spent[0] += time.perf_counter() - start

        checks._feed = timed_feed
        start = time.perf_counter()
        pca_of_rows(window, k, checks=checks)
        shares.append(spent[0] / (time.perf_counter() - start))
    return {
        "shape": f"{len(traj)} x {traj.num_params}, {k} components",
        "unchecked_ms": ms["unchecked"],
        "folded_crc_ms": ms["folded"],
        "separate_pass_ms": ms["separate"],
        "folded_over_unchecked": ms["folded"] / ms["unchecked"],
        "separate_over_unchecked": ms["separate"] / ms["unchecked"],
        "crc_share_inside_folded_pass": statistics.median(shares),
    }


def bench_digest(traj: Trajectory, folder: Path, repeats: int) -> dict:
    basis = pca_of_rows(traj.window(), 40)
    tensors = basis.tensors()
    path = folder / "basis.safetensors"
    ms = median_ms(
        {
            "save": lambda: save_tensors(path, tensors),
            "load": lambda: load_tensors(path),
            "digest": lambda: tensors_digest(tensors),
        },
        repeats,
    )
    size = sum(v.numel() * v.element_size() for v in tensors.values())
    return {
        "bytes": size,
        "save_ms": ms["save"],
        "load_ms": ms["load"],
        "digest_ms": ms["digest"],
        "digest_share_of_save": ms["digest"] / ms["save"],
        "digest_share_of_load": ms["digest"] / ms["load"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        traj = record_trajectory(Path(tmp) / "trajectory")
        rows = [{"bench": "pca_checks", **bench_pca_checks(traj, args.repeats)}]
        print(rows[-1], flush=True)
        rows.append({"bench": "tensors_digest", **bench_digest(traj, Path(tmp), args.repeats)})
        print(rows[-1], flush=True)
    path = write_result("integrity", rows, notes=f"medians of interleaved runs, {args.repeats}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()

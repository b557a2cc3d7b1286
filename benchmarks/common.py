"""Shared by the benchmarks: timing, the results file, and the machine they ran on."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lowdim.io import atomic_write_json

RESULTS = Path(__file__).parent / "results"


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_ms(
    fns: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None] | None = None
) -> dict[str, float]:
    """Median milliseconds of each function over `repeats` rounds (after one warm-up call
    each), the functions interleaved within a round so that machine drift hits all alike.
    `sync` (default None), if given, runs after each call inside the timing: on a GPU,
    `torch.cuda.synchronize`, so that the time is the kernels' and not their launch's."""
    done = sync or (lambda: None)
    for fn in fns.values():
        fn()
        done()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            done()
            times[k].append(time.perf_counter() - start)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def write_result(name: str, rows: list[dict], notes: str = "") -> Path:
    """benchmarks/results/<name>.json, atomically."""
    path = RESULTS / f"{name}.json"
    atomic_write_json(path, {"benchmark": name, "machine": machine(), "notes": notes, "rows": rows})
    return path

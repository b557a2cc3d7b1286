"""`make bench`: every benchmark in turn; each writes benchmarks/results/<name>.json."""

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHMARKS = [
    "bench_train_loop.py",
    "bench_dldr.py",
    "bench_subspace.py",
    "bench_rbd.py",
    "bench_twa.py",
    "bench_integrity.py",
    "bench_view_check.py",
    "bench_finetune.py",
]

if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        sys.argv = [name]
        runpy.run_path(str(HERE / name), run_name="__main__")

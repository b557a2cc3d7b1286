"""TWA on real data: the experiments behind the README's TWA table.

    python experiments/twa.py [--only NAME ...]

For Fashion-MNIST with LeNet and with the 784-200-200-10 MLP: full SGD (20 epochs, lr 0.05,
momentum 0.9, weight decay 1e-4, lr x0.1 at epochs 10 and 15) against the first half of that
run (10 epochs, 5 checkpoints per epoch) followed by TWA in the span of the checkpoints of
epochs 4 to 10 (31 of them; 1 epoch of projected SGD, batch 128, lr 0.2, momentum 0.9, weight
decay 1e-5), and against SWA, the plain average of the same checkpoints with BatchNorm
statistics recomputed. Test accuracy and total wall time. The window and the lr were chosen
among 8 variants on the LeNet task (see the README).
Runs go to runs/experiments/, numbers to experiments/results/twa.json; finished runs are
reused, so a killed script resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lowdim.io import atomic_write_json
from lowdim.jobs import SGDConfig, SubspaceConfig, train_in_subspace, train_sgd

RUNS = Path("runs/experiments")
# name: (arch, TWA lr, first checkpoint of the window, TWA epochs)
TASKS = {"fmnist-lenet": ("lenet", 0.2, 20, 1), "fmnist-mlp": ("mlp", 0.2, 20, 1)}


def compare(name: str) -> dict:
    arch, lr, start, epochs = TASKS[name]
    common = dict(dataset="fashion-mnist", arch=arch, lr=0.05, momentum=0.9, weight_decay=1e-4)
    full = train_sgd(
        SGDConfig(epochs=20, lr_milestones=[10, 15], **common),
        RUNS / f"twa-{name}-full",
        resume=True,
        progress=False,
    )
    half_dir = RUNS / f"twa-{name}-half"
    half = train_sgd(
        SGDConfig(epochs=10, samples_per_epoch=5, **common), half_dir, resume=True, progress=False
    )
    twa = train_in_subspace(
        half_dir,
        SubspaceConfig(method="twa", params_start=start, epochs=epochs, lr=lr),
        resume=True,
        progress=False,
    )
    total = half["wall_seconds"] + twa["wall_seconds"]
    return {
        "full_sgd": {
            "test_acc": round(full["test_acc"], 4),
            "seconds": round(full["wall_seconds"], 1),
        },
        "half_sgd": {
            "test_acc": round(half["test_acc"], 4),
            "seconds": round(half["wall_seconds"], 1),
        },
        "swa": {"test_acc": round(twa["swa_test_acc"], 4)},
        "twa": {
            "test_acc": round(twa["test_acc"], 4),
            "seconds": round(twa["wall_seconds"], 1),
            "dim": twa["subspace_dim"],
            "window": twa["window"],
            "lr": lr,
            "orthogonality_error": twa["orthogonality_error"],
        },
        "half_plus_twa_seconds": round(total, 1),
        "time_saved": round(1 - total / full["wall_seconds"], 3),
        "acc_gain_points": round(100 * (twa["test_acc"] - full["test_acc"]), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    out = Path("experiments/results/twa.json")
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in args.only or list(TASKS):
        results[name] = compare(name)
        print(name, json.dumps(results[name]), flush=True)
        atomic_write_json(out, results)


if __name__ == "__main__":
    main()

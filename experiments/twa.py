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

`--only validated` (behind the README's table; key "validated" of twa.json) runs the same
comparison under the validation protocol of holdout.py, seeds 0, 1, 2: every run trains on 90%
of the training images; for each seed and net, TWA's window start (the checkpoint ending epoch
2, 4 or 6, so 41, 31 or 21 checkpoints up to epoch 10) and lr (0.05, 0.2, 0.5) are chosen on
the other 10%, and SWA's window (same three) on its own validation accuracy; test accuracy is
measured once, for the chosen runs. The LeNet full SGD runs are those of
`dldr.py --only fmnist-lenet-validated`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import holdout

from lowdim.io import atomic_write_json
from lowdim.jobs import SGDConfig, SubspaceConfig, train_in_subspace, train_sgd

RUNS = Path("runs/experiments")
# name: (arch, TWA lr, first checkpoint of the window, TWA epochs)
TASKS = {"fmnist-lenet": ("lenet", 0.2, 20, 1), "fmnist-mlp": ("mlp", 0.2, 20, 1)}
# the validation grid of `--only validated`: first snapshot of the window (5 per epoch, so the
# checkpoint that ends epoch 2, 4, 6) and TWA's lr; one TWA epoch, batch 128, as above
WINDOW_STARTS = (10, 20, 30)
TWA_LRS = (0.05, 0.2, 0.5)


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


def validated_seed(arch: str, seed: int) -> dict:
    """One net and seed of the validation protocol: the runs, the choices on validation, then
    the test accuracy of each row."""
    full_dir, full = holdout.full_sgd(arch, seed)
    half_dir, half = holdout.sgd(
        f"fmnist-{arch}-half10", arch, seed, epochs=10, samples_per_epoch=5
    )
    grid = {
        (start, lr): holdout.subspace(
            half_dir,
            f"twa-start{start}-lr{lr:g}",
            seed,
            method="twa",
            params_start=start,
            epochs=1,
            lr=lr,
        )
        for start in WINDOW_STARTS
        for lr in TWA_LRS
    }
    summaries = {key: summary for key, (_, summary) in grid.items()}
    start, lr = holdout.best(summaries)
    # SWA does not depend on the lr: its accuracy is that of each window's plain average,
    # measured before TWA trains (taken from the first lr that did not diverge)
    swa_runs = {}
    for s in WINDOW_STARTS:
        finished = [grid[(s, r)] for r in TWA_LRS if grid[(s, r)][1] is not None]
        if finished:
            swa_runs[s] = finished[0]
    swa = {s: summary for s, (_, summary) in swa_runs.items()}
    swa_start = holdout.best(swa, "swa_test_acc", "swa_test_loss")
    twa_dir, twa = grid[(start, lr)]
    # choices are made; now the test split, once per row
    total = half["wall_seconds"] + twa["wall_seconds"]
    out = {
        "full_sgd": {
            "validation_acc": full["test_acc"],
            "test_acc": holdout.test_accuracy(full_dir, arch),
            "seconds": full["wall_seconds"],
        },
        "half_sgd": {
            "validation_acc": half["test_acc"],
            "test_acc": holdout.test_accuracy(half_dir, arch),
            "seconds": half["wall_seconds"],
        },
        "swa": {
            "window_start": swa_start,
            "window": swa[swa_start]["window"],
            "validation_acc": swa[swa_start]["swa_test_acc"],
            "test_acc": holdout.average_test_accuracy(swa_runs[swa_start][0], arch),
        },
        "twa": {
            "window_start": start,
            "lr": lr,
            "window": twa["window"],
            "dim": twa["subspace_dim"],
            "validation_acc": twa["test_acc"],
            "test_acc": holdout.test_accuracy(twa_dir, arch),
            "seconds": twa["wall_seconds"],
        },
        "half_plus_twa_seconds": total,
        "time_saved": 1 - total / full["wall_seconds"],
        "time_saved_paired": 1
        - (holdout.first_epochs_seconds(full_dir, 10) + twa["wall_seconds"]) / full["wall_seconds"],
        "twa_validation_acc_by_start_lr": {
            f"{s}/{r:g}": holdout.validation_acc(v) for (s, r), v in summaries.items()
        },
        "swa_validation_acc_by_start": {s: v["swa_test_acc"] for s, v in swa.items()},
        "twa_grid_seconds": sum(holdout.seconds(v) for v in summaries.values()),
    }
    print(f"validated {arch} seed {seed}: {json.dumps(out)}", flush=True)
    return out


def validated() -> dict:
    """The validation protocol for both nets over the seeds: mean +- std per row."""
    holdout.use_one_thread()
    out = {
        "protocol": {
            **holdout.PROTOCOL,
            "half": "the first 10 epochs at constant lr, 5 checkpoints per epoch",
            "twa": "1 epoch of projected SGD, batch 128, momentum 0.9, weight decay 1e-5; "
            f"window start in {list(WINDOW_STARTS)} (checkpoints of epochs 2, 4, 6) and lr "
            f"in {list(TWA_LRS)} chosen per seed on validation",
            "swa": f"plain average of the window; start chosen per seed among "
            f"{list(WINDOW_STARTS)} on validation",
            "std": "sample standard deviation over the seeds (n - 1)",
            "time_saved_paired": "the half run timed as the first 10 epochs of the same "
            "seed's full run (the same computation), so drift between runs cancels",
        }
    }
    for arch in ("lenet", "mlp"):
        seeds = [validated_seed(arch, seed) for seed in holdout.SEEDS]
        rows = {
            row: {
                field: holdout.spread([s[row][field] for s in seeds], 4 if "acc" in field else 1)
                for field in ("validation_acc", "test_acc", "seconds")
                if field in seeds[0][row]
            }
            for row in ("full_sgd", "half_sgd", "swa", "twa")
        }
        rows["half_plus_twa_seconds"] = holdout.spread(
            [s["half_plus_twa_seconds"] for s in seeds], 1
        )
        rows["time_saved"] = holdout.spread([s["time_saved"] for s in seeds], 3)
        rows["time_saved_paired"] = holdout.spread([s["time_saved_paired"] for s in seeds], 3)
        rows["twa_minus_full_points"] = holdout.spread(
            [100 * (s["twa"]["test_acc"] - s["full_sgd"]["test_acc"]) for s in seeds], 2
        )
        rows["twa_minus_swa_points"] = holdout.spread(
            [100 * (s["twa"]["test_acc"] - s["swa"]["test_acc"]) for s in seeds], 2
        )
        rows["twa_chosen"] = [(s["twa"]["window_start"], s["twa"]["lr"]) for s in seeds]
        rows["swa_chosen"] = [s["swa"]["window_start"] for s in seeds]
        out[f"fmnist-{arch}"] = {
            "rows": rows,
            "per_seed": dict(zip(holdout.SEEDS, seeds, strict=True)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    out = Path("experiments/results/twa.json")
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in args.only or [*TASKS, "validated"]:
        results[name] = validated() if name == "validated" else compare(name)
        print(name, json.dumps(results[name]), flush=True)
        atomic_write_json(out, results)


if __name__ == "__main__":
    main()

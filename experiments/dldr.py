"""DLDR on real data: the experiments behind the README's DLDR tables.

    python experiments/dldr.py [--only NAME ...] [--mnist-dir DIR] [--out experiments/results]

Each experiment trains through the library (the same code as `lowdim train-sgd` and
`lowdim train-pbfgs`), writes its runs under runs/experiments/, and its numbers to
experiments/results/dldr.json; finished runs are reused, so a killed script resumes.

  fmnist-lenet   full SGD (20 epochs, lr 0.05, x0.1 at 10 and 15) against 8 epochs of SGD
                 sampled 5x per epoch plus P-BFGS (2 epochs, batch 256) or P-SGD (4 epochs)
                 in 40 dimensions
  mnist-mlp      the same comparison on MNIST with the 784-200-200-10 MLP
  noise          MNIST MLP with 20% / 40% label noise: the last epoch of 30 of full SGD against
                 DLDR from the first 5 epochs' snapshots
  improve        continue the trained Fashion-MNIST LeNet for 2 epochs at lr 0.001 with 10
                 snapshots per epoch, then P-BFGS (2 epochs, batch 256) in 10 and 20 dimensions
  fmnist-lenet-validated
                 the fmnist-lenet comparison (behind the README's table) under the validation
                 protocol of holdout.py: every run trains on 90% of the training images, seeds
                 0, 1, 2; P-SGD's lr is chosen per seed among 0.3, 1, 3 on the other 10%; test
                 accuracy is measured once, for the chosen runs. Its full SGD runs are those
                 of `twa.py --only validated`. Key "fmnist-lenet-validated" of dldr.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import holdout

from lowdim.io import atomic_write_json
from lowdim.jobs import SGDConfig, SubspaceConfig, train_in_subspace, train_sgd

RUNS = Path("runs/experiments")
PSGD_LRS = (0.3, 1.0, 3.0)  # the validation grid of fmnist-lenet-validated


def sgd(name: str, **options) -> dict:
    return train_sgd(SGDConfig(**options), RUNS / name, resume=True, progress=False)


def subspace(name: str, method: str, run_name: str | None = None, **options) -> dict:
    cfg = SubspaceConfig(method=method, **options)
    return train_in_subspace(RUNS / name, cfg, resume=True, progress=False, name=run_name)


def row(label: str, summary: dict, total_seconds: float | None = None) -> dict:
    return {
        "run": label,
        "test_acc": round(summary["test_acc"], 4),
        "dim": summary["subspace_dim"],
        "epochs": summary["epochs"],
        "seconds": round(summary["wall_seconds"], 1),
        "total_seconds": round(
            total_seconds if total_seconds is not None else summary["wall_seconds"], 1
        ),
    }


def compare(
    dataset: str,
    arch: str,
    data_dir: str | None,
    full_epochs: int,
    milestones,
    sample_epochs: int,
    pbfgs_epochs: int,
    psgd_epochs: int,
) -> list[dict]:
    common = dict(dataset=dataset, arch=arch, data_dir=data_dir, lr=0.05, seed=0)
    tag = f"{dataset}-{arch}"
    full = sgd(f"{tag}-full", epochs=full_epochs, lr_milestones=milestones, **common)
    short = sgd(f"{tag}-sample", epochs=sample_epochs, samples_per_epoch=5, **common)
    pb = subspace(f"{tag}-sample", "pbfgs", epochs=pbfgs_epochs, n_components=40, batch_size=256)
    ps = subspace(f"{tag}-sample", "psgd", epochs=psgd_epochs, n_components=40, lr=1.0)
    return [
        row(f"SGD {full_epochs} epochs", full),
        row(f"SGD {sample_epochs} epochs (5 snapshots/epoch)", short),
        row(
            f"+ P-BFGS {pbfgs_epochs} epochs, batch 256, d=40",
            pb,
            short["wall_seconds"] + pb["wall_seconds"],
        ),
        row(f"+ P-SGD {psgd_epochs} epochs, d=40", ps, short["wall_seconds"] + ps["wall_seconds"]),
    ]


def noise(mnist_dir: str) -> list[dict]:
    rows = []
    for corrupt in (0.2, 0.4):
        name = f"mnist-mlp-noise{corrupt}"
        full = sgd(
            name,
            dataset="mnist",
            arch="mlp",
            data_dir=mnist_dir,
            epochs=30,
            lr=0.05,
            corrupt=corrupt,
            seed=0,
        )
        best = max(
            json.loads(line)["test_acc"]
            for line in (RUNS / name / "metrics.jsonl").read_text().splitlines()
        )
        pb = subspace(name, "pbfgs", params_end=6, n_components=5, epochs=5, batch_size=1024)
        rows.append(
            {
                "corrupt": corrupt,
                "effective_noise_rate": round(full["effective_noise_rate"], 4),
                "sgd_final_test_acc": round(full["test_acc"], 4),
                "sgd_best_epoch_test_acc": round(best, 4),
                "dldr_test_acc": round(pb["test_acc"], 4),
                "dldr_window": pb["window"],
                "dldr_dim": pb["subspace_dim"],
                "gain_points": round(100 * (pb["test_acc"] - full["test_acc"]), 2),
            }
        )
    return rows


def improve(fashion_full: Path) -> list[dict]:
    base = json.loads((fashion_full / "summary.json").read_text())
    common = dict(
        dataset="fashion-mnist",
        arch="lenet",
        seed=0,
        weight_decay=1e-4,
        init_from=str(fashion_full / "model.safetensors"),
    )
    more = sgd("fmnist-lenet-improve", epochs=2, lr=0.001, samples_per_epoch=10, **common)
    rows = [
        row("trained model (SGD 20 epochs)", base),
        row("+ SGD 2 epochs at lr 0.001 (10 snapshots/epoch)", more),
    ]
    for d in (10, 20):
        pb = subspace(
            "fmnist-lenet-improve",
            "pbfgs",
            run_name=f"pbfgs-d{d}",
            epochs=2,
            n_components=d,
            batch_size=256,
        )
        rows.append(row(f"+ P-BFGS 2 epochs in that window, d={d}", pb))
    return rows


def spectrum(run: Path) -> dict:
    summary = json.loads((run / "pbfgs" / "summary.json").read_text())
    from lowdim.bases import load_basis

    ratios = load_basis(run / "pbfgs" / "basis.safetensors").explained_variance_ratio
    cum = ratios.cumsum(0)
    return {
        "window": summary["window"],
        "first_10_ratios": [round(float(r), 4) for r in ratios[:10]],
        "cumulative_at": {k: round(float(cum[k - 1]), 4) for k in (1, 5, 10, 20, 40)},
    }


def validated_seed(seed: int) -> dict:
    """One seed of fmnist-lenet-validated: the runs, P-SGD's lr chosen on validation, then
    the test accuracy of each row's final weights."""
    full_dir, full = holdout.full_sgd("lenet", seed)
    short_dir, short = holdout.sgd(
        "fmnist-lenet-sample8", "lenet", seed, epochs=8, samples_per_epoch=5
    )
    pbfgs_dir, pbfgs = holdout.subspace(
        short_dir, "pbfgs", seed, method="pbfgs", epochs=2, n_components=40, batch_size=256
    )
    psgd = {
        lr: holdout.subspace(
            short_dir, f"psgd-lr{lr:g}", seed, method="psgd", epochs=4, n_components=40, lr=lr
        )
        for lr in PSGD_LRS
    }
    chosen = holdout.best({lr: summary for lr, (_, summary) in psgd.items()})
    psgd_dir, psgd_run = psgd[chosen]
    # choices are made; now the test split, once per row
    rows = {
        "sgd_full": (full_dir, full, None),
        "sgd_sample": (short_dir, short, None),
        "pbfgs": (pbfgs_dir, pbfgs, short),
        "psgd": (psgd_dir, psgd_run, short),
    }
    out = {}
    for key, (folder, summary, before) in rows.items():
        seconds = summary["wall_seconds"] + (before["wall_seconds"] if before else 0.0)
        out[key] = {
            "validation_acc": summary["test_acc"],
            "test_acc": holdout.test_accuracy(folder, "lenet"),
            "seconds": summary["wall_seconds"],
            "total_seconds": seconds,
        }
    for key in ("pbfgs", "psgd"):
        paired = holdout.first_epochs_seconds(full_dir, 8) + rows[key][1]["wall_seconds"]
        out[key]["time_saved_paired"] = 1 - paired / full["wall_seconds"]
    out["psgd"]["lr"] = chosen
    out["psgd_validation_acc_by_lr"] = {
        f"{lr:g}": holdout.validation_acc(s) for lr, (_, s) in psgd.items()
    }
    out["psgd_grid_seconds"] = sum(holdout.seconds(s) for _, s in psgd.values())
    print(f"fmnist-lenet-validated seed {seed}: {json.dumps(out)}", flush=True)
    return out


def validated() -> dict:
    """fmnist-lenet-validated over the seeds: per-seed numbers and mean +- std per row."""
    holdout.use_one_thread()
    seeds = {seed: validated_seed(seed) for seed in holdout.SEEDS}
    rows = {}
    for key in ("sgd_full", "sgd_sample", "pbfgs", "psgd"):
        runs = [seeds[s][key] for s in holdout.SEEDS]
        rows[key] = {
            field: holdout.spread([r[field] for r in runs], 4 if "acc" in field else 1)
            for field in ("test_acc", "validation_acc", "seconds", "total_seconds")
        }
        if key in ("pbfgs", "psgd"):
            saved = [
                1 - r["total_seconds"] / s["sgd_full"]["seconds"]
                for r, s in zip(runs, seeds.values(), strict=True)
            ]
            gap = [
                100 * (r["test_acc"] - s["sgd_full"]["test_acc"])
                for r, s in zip(runs, seeds.values(), strict=True)
            ]
            rows[key]["time_saved"] = holdout.spread(saved, 3)
            rows[key]["time_saved_paired"] = holdout.spread(
                [r["time_saved_paired"] for r in runs], 3
            )
            rows[key]["test_acc_minus_full_points"] = holdout.spread(gap, 2)
    rows["psgd"]["lr_chosen"] = [seeds[s]["psgd"]["lr"] for s in holdout.SEEDS]
    return {
        "protocol": {
            **holdout.PROTOCOL,
            "sample": "8 epochs, constant lr, 5 snapshots per epoch (41 snapshots)",
            "pbfgs": "2 epochs, batch 256, d = 40 (fixed, no choice)",
            "psgd": "4 epochs, batch 128, d = 40, lr x0.1 at epoch 3; lr chosen per seed "
            f"on validation among {list(PSGD_LRS)}",
            "std": "sample standard deviation over the seeds (n - 1)",
            "time_saved_paired": "the 8 sampling epochs timed as the first 8 epochs of the "
            "same seed's full run (the same computation), so drift between runs cancels",
        },
        "rows": rows,
        "per_seed": seeds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--mnist-dir", default="data/mnist")
    parser.add_argument("--out", default="experiments/results")
    args = parser.parse_args()
    out = Path(args.out)
    results_file = out / "dldr.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    todo = args.only or [
        "fmnist-lenet",
        "mnist-mlp",
        "noise",
        "improve",
        "fmnist-lenet-validated",
    ]
    if "fmnist-lenet" in todo:
        results["fmnist-lenet"] = compare("fashion-mnist", "lenet", None, 20, [10, 15], 8, 2, 4)
        results["fmnist-lenet-spectrum"] = spectrum(RUNS / "fashion-mnist-lenet-sample")
        shutil.copy(
            RUNS / "fashion-mnist-lenet-sample" / "pbfgs" / "spectrum.png",
            out / "fmnist-lenet-spectrum.png",
        )
    if "mnist-mlp" in todo:
        results["mnist-mlp"] = compare("mnist", "mlp", args.mnist_dir, 20, [10, 15], 8, 2, 4)
    if "noise" in todo:
        results["noise"] = noise(args.mnist_dir)
    if "improve" in todo:
        results["improve"] = improve(RUNS / "fashion-mnist-lenet-full")
    if "fmnist-lenet-validated" in todo:
        results["fmnist-lenet-validated"] = validated()
    atomic_write_json(results_file, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

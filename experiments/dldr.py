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
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from lowdim.io import atomic_write_json
from lowdim.jobs import SGDConfig, SubspaceConfig, train_in_subspace, train_sgd

RUNS = Path("runs/experiments")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--mnist-dir", default="data/mnist")
    parser.add_argument("--out", default="experiments/results")
    args = parser.parse_args()
    out = Path(args.out)
    results_file = out / "dldr.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    todo = args.only or ["fmnist-lenet", "mnist-mlp", "noise", "improve"]
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
    atomic_write_json(results_file, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

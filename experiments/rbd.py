"""Random bases descent on real data: the experiments behind the README's RBD table.

    python experiments/rbd.py [--only NAME ...] [--epochs E] [--mnist-dir DIR]

For each of fc-mnist, fc-fmnist, cnn-mnist and cnn-fmnist (the paper's nets: FC 784-128-10,
D = 101,770; CNN conv32-conv64-conv64-dense64, D = 93,322), with the paper's settings (d = 250,
batch 32, plain SGD without momentum or schedule, its learning rates; no augmentation): RBD,
the fixed random projection (the same, with one basis drawn once), and plain SGD. Plus the
compartment ablation on fc-mnist: one global basis against one per layer, equal total d, one
epoch.

Epochs: 3 for fc-mnist and 2 for the others by default (the paper: 100), because one RBD step
on 2 CPU cores takes about 0.12 s. Runs go to runs/experiments/, numbers (with every epoch's
test accuracy, to show how far the curves were still rising) to experiments/results/rbd.json,
the curves to experiments/results/rbd-curves.png; finished runs are reused, so a killed script
resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lowdim.io import atomic_write_json
from lowdim.jobs import SGDConfig, train_sgd
from lowdim.jobs.random_bases import RBDConfig, train_rbd

RUNS = Path("runs/experiments")
OUT = Path("experiments/results")
# name: (dataset, arch, RBD lr, SGD lr, default epochs, paper's fixed / RBD / SGD test acc)
TASKS = {
    "fc-mnist": ("mnist", "fc", 1.0, 0.125, 3, (80.0, 93.89, 98.27)),
    "fc-fmnist": ("fashion-mnist", "fc", 0.5, 0.25, 2, (77.3, 85.65, 87.32)),
    "cnn-mnist": ("mnist", "cnn", 0.0625, 0.031, 2, (88.9, 97.17, 99.41)),
    "cnn-fmnist": ("fashion-mnist", "cnn", 0.125, 0.0625, 2, (77.8, 85.56, 91.95)),
}


def curve(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [round(json.loads(line)["test_acc"], 4) for line in lines]


def rbd_run(name, dataset, arch, lr, epochs, data_dir, **options) -> dict:
    cfg = RBDConfig(
        dataset=dataset,
        arch=arch,
        dim=250,
        lr=lr,
        epochs=epochs,
        batch_size=32,
        data_dir=data_dir,
        keep_directions=True,
        **options,
    )
    path = RUNS / name
    s = train_rbd(cfg, path, resume=True, progress=False)
    return {
        "test_acc": round(s["test_acc"], 4),
        "seconds": round(s["wall_seconds"], 1),
        "curve": curve(path),
    }


def task(name: str, epochs: int | None, mnist_dir: str) -> dict:
    dataset, arch, rbd_lr, sgd_lr, default_epochs, paper = TASKS[name]
    epochs = epochs or default_epochs
    data_dir = mnist_dir if dataset == "mnist" else None
    row = {
        "epochs": epochs,
        "paper_epochs": 100,
        "rbd_lr": rbd_lr,
        "sgd_lr": sgd_lr,
        "paper": dict(zip(("fixed", "rbd", "sgd"), paper, strict=True)),
    }
    row["rbd"] = rbd_run(f"rbd-{name}-e{epochs}", dataset, arch, rbd_lr, epochs, data_dir)
    print(name, "rbd", row["rbd"], flush=True)
    row["fixed"] = rbd_run(
        f"rbd-{name}-fixed-e{epochs}", dataset, arch, rbd_lr, epochs, data_dir, fixed_basis=True
    )
    print(name, "fixed", row["fixed"], flush=True)
    cfg = SGDConfig(
        dataset=dataset,
        arch=arch,
        epochs=epochs,
        lr=sgd_lr,
        momentum=0.0,
        weight_decay=0.0,
        batch_size=32,
        data_dir=data_dir,
    )
    path = RUNS / f"sgd-{name}-e{epochs}"
    s = train_sgd(cfg, path, resume=True, progress=False)
    row["sgd"] = {
        "test_acc": round(s["test_acc"], 4),
        "seconds": round(s["wall_seconds"], 1),
        "curve": curve(path),
    }
    print(name, "sgd", row["sgd"], flush=True)
    return row


def ablation(mnist_dir: str) -> dict:
    """fc-mnist, one epoch: one global basis against independent bases per layer (d = 250
    split by size). The global run is epoch 1 of the fc-mnist RBD run (no schedule, so the
    same as a one-epoch run)."""
    epochs = TASKS["fc-mnist"][4]
    whole = rbd_run(f"rbd-fc-mnist-e{epochs}", "mnist", "fc", 1.0, epochs, mnist_dir)
    layer = rbd_run("rbd-fc-mnist-layer-e1", "mnist", "fc", 1.0, 1, mnist_dir, compartments="layer")
    out = {
        "epochs": 1,
        "none": whole["curve"][0],
        "layer": layer["test_acc"],
        "layer_seconds": layer["seconds"],
    }
    print("ablation", out, flush=True)
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in TASKS if n in results]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        row = results[name]
        for method, style in (("sgd", "k-"), ("rbd", "C0-"), ("fixed", "C3-")):
            c = row[method]["curve"]
            ax.plot(range(1, len(c) + 1), c, style, marker="o", label=method)
            ax.axhline(
                row["paper"][method] / 100,
                color=style[:-1] if style[0] == "C" else "k",
                ls=":",
                lw=0.8,
            )
        ax.set_title(f"{name} (dotted: paper, 100 ep.)", fontsize=8)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="task names, or 'ablation'")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--mnist-dir", default="data/mnist")
    args = parser.parse_args()
    out = OUT / "rbd.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in args.only or [*TASKS, "ablation"]:
        if name == "ablation":
            results["ablation"] = ablation(args.mnist_dir)
        else:
            results[name] = task(name, args.epochs, args.mnist_dir)
        atomic_write_json(out, results)
    plot(results, OUT / "rbd-curves.png")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Random bases descent on real data: the experiments behind the README's RBD tables.

    python experiments/rbd.py [--only NAME ...] [--epochs E] [--mnist-dir DIR]

The paper's nets (FC 784-128-10, D = 101,770; CNN conv32-conv64-conv64-dense64, D = 93,322)
and settings: d = 250, batch 32, plain SGD without momentum or schedule, its learning rates
(RBD / SGD: FC-MNIST 1.0 / 0.125, FC-FMNIST 0.5 / 0.25, CNN-MNIST 0.0625 / 0.031,
CNN-FMNIST 0.125 / 0.0625). Nothing is tuned: every setting is the paper's, so no choice
is made on test accuracy.

  directions   structured (randomised Hadamard) against Gaussian directions at equal d, on
               fc-mnist and cnn-mnist, 3 epochs (--epochs), seeds 0, 1, 2, no augmentation:
               test accuracy after each epoch, mean and spread of the last
  fc-mnist, fc-fmnist, cnn-mnist, cnn-fmnist
               the paper's table: RBD with structured directions and the fixed random
               projection (the same directions drawn once) for 100 epochs (--epochs to
               change; --baseline-epochs for the fixed projection and SGD), training images
               shifted at random by up to 2 pixels; plain SGD (unshifted) beside them on FC
  ablation     fc-mnist, one epoch: one global basis against one per layer (Gaussian)

Runs go to runs/experiments/, numbers (every epoch's test accuracy) to
experiments/results/rbd.json, the curves to experiments/results/rbd-curves.png; finished
runs are reused and unfinished ones resumed, so a killed script picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from holdout import spread  # the mean and spread every experiment reports

from lowdim.io import atomic_write_json
from lowdim.jobs import SGDConfig, train_sgd
from lowdim.jobs.random_bases import RBDConfig, train_rbd

RUNS = Path("runs/experiments")
OUT = Path("experiments/results")
SHIFT = 2  # pixels of random shift in the paper-table runs
SEEDS = (0, 1, 2)
# name: (dataset, arch, RBD lr, SGD lr, paper's fixed / RBD / SGD test accuracy at 100 epochs)
TASKS = {
    "fc-mnist": ("mnist", "fc", 1.0, 0.125, (80.0, 93.89, 98.27)),
    "fc-fmnist": ("fashion-mnist", "fc", 0.5, 0.25, (77.3, 85.65, 87.32)),
    "cnn-mnist": ("mnist", "cnn", 0.0625, 0.031, (88.9, 97.17, 99.41)),
    "cnn-fmnist": ("fashion-mnist", "cnn", 0.125, 0.0625, (77.8, 85.56, 91.95)),
}


def curve(run: Path) -> list[float]:
    """Test accuracy after each finished epoch (metrics.jsonl)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [round(json.loads(line)["test_acc"], 4) for line in lines]


def outcome(summary: dict, run: Path) -> dict:
    return {
        "test_acc": round(summary["test_acc"], 4),
        "seconds": round(summary["wall_seconds"], 1),
        "curve": curve(run),
    }


def unfinished(path: Path) -> dict | None:
    """What a run stopped before its last epoch recorded (None if it recorded nothing)."""
    if not (path / "metrics.jsonl").exists():
        return None
    done = curve(path)
    return {"test_acc": done[-1], "finished": False, "curve": done} if done else None


COLLECT = False  # --collect: report runs as they stand, train none


def rbd_run(name: str, task: str, epochs: int, data_dir: str, **options) -> dict:
    dataset, arch, lr, _, _ = TASKS[task]
    cfg = RBDConfig(
        dataset=dataset,
        arch=arch,
        dim=250,
        lr=lr,
        epochs=epochs,
        batch_size=32,
        data_dir=data_dir if dataset == "mnist" else None,
        **options,
    )
    path = RUNS / name
    if COLLECT and not (path / "summary.json").exists():
        return unfinished(path)
    return outcome(train_rbd(cfg, path, resume=True, progress=False), path)


def directions(data_dir: str, epochs: int, distributions: list[str]) -> dict:
    """Structured against Gaussian directions, equal d, 3 seeds (see the module doc)."""
    out = {"epochs": epochs, "dim": 250, "seeds": list(SEEDS)}
    for task in ("fc-mnist", "cnn-mnist"):
        row = {}
        for distribution in distributions:
            runs = []
            for seed in SEEDS:
                name = f"rbd-dir-{task}-{distribution}-s{seed}-e{epochs}"
                if COLLECT and not (RUNS / name / "summary.json").exists():
                    continue  # only finished runs: one epoch is the measurement
                options = dict(distribution=distribution, seed=seed)
                if distribution == "gaussian":
                    options["keep_directions"] = True  # half the generation, same steps
                runs.append({"seed": seed, **rbd_run(name, task, epochs, data_dir, **options)})
                print(task, distribution, seed, runs[-1], flush=True)
            if not runs:
                continue
            row[distribution] = {
                "seeds_run": [r["seed"] for r in runs],
                **spread([r["test_acc"] for r in runs]),
                "seconds": spread([r["seconds"] for r in runs]),
                "curves": [r["curve"] for r in runs],
            }
        out[task] = row
    return out


def paper_row(task: str, epochs: int, baseline_epochs: int, data_dir: str) -> dict:
    """RBD for `epochs`, the fixed projection (structured directions, shifted images, both)
    and SGD on FC for `baseline_epochs`."""
    dataset, arch, rbd_lr, sgd_lr, paper = TASKS[task]
    row = {
        "epochs": epochs,
        "baseline_epochs": baseline_epochs,
        "shift": SHIFT,
        "rbd_lr": rbd_lr,
        "sgd_lr": sgd_lr,
        "distribution": "hadamard",
        "paper": dict(zip(("fixed", "rbd", "sgd"), paper, strict=True)),
    }
    common = dict(distribution="hadamard", shift=SHIFT)
    row["rbd"] = rbd_run(f"rbd-{task}-hadamard-e{epochs}", task, epochs, data_dir, **common)
    print(task, "rbd", row["rbd"], flush=True)
    row["fixed"] = rbd_run(
        f"rbd-{task}-hadamard-fixed-e{baseline_epochs}",
        task,
        baseline_epochs,
        data_dir,
        fixed_basis=True,
        **common,
    )
    print(task, "fixed", row["fixed"], flush=True)
    if arch == "fc":
        cfg = SGDConfig(
            dataset=dataset,
            arch=arch,
            epochs=baseline_epochs,
            lr=sgd_lr,
            momentum=0.0,
            weight_decay=0.0,
            batch_size=32,
            data_dir=data_dir if dataset == "mnist" else None,
        )
        path = RUNS / f"sgd-{task}-e{baseline_epochs}"  # unshifted: train-sgd has no shifts
        if COLLECT and not (path / "summary.json").exists():
            row["sgd"] = unfinished(path)
        else:
            row["sgd"] = outcome(train_sgd(cfg, path, resume=True, progress=False), path)
        print(task, "sgd", row["sgd"], flush=True)
    return row


def ablation(data_dir: str) -> dict:
    """fc-mnist, one epoch, Gaussian directions: one global basis against independent bases
    per layer (d = 250 split by size)."""
    whole = rbd_run("rbd-fc-mnist-e1", "fc-mnist", 1, data_dir, keep_directions=True)
    layer = rbd_run(
        "rbd-fc-mnist-layer-e1", "fc-mnist", 1, data_dir, compartments="layer", keep_directions=True
    )
    out = {"epochs": 1, "none": whole["test_acc"], "layer": layer["test_acc"]}
    print("ablation", out, flush=True)
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in TASKS if n in results]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        row = results[name]
        for method, style in (("sgd", "k-"), ("rbd", "C0-"), ("fixed", "C3-")):
            if not row.get(method):
                continue
            c = row[method]["curve"]
            ax.plot(range(1, len(c) + 1), c, style, label=method)
            ax.axhline(row["paper"][method] / 100, color=style[:-1], ls=":", lw=0.8)
        ax.set_title(f"{name} (dotted: paper, 100 ep.)", fontsize=8)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="experiment names (module doc)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 3 / 100 (see above)")
    parser.add_argument(
        "--baseline-epochs",
        type=int,
        default=None,
        help="epochs of the fixed projection and SGD in the paper's table (default: --epochs)",
    )
    parser.add_argument("--mnist-dir", default="data/mnist")
    parser.add_argument(
        "--distributions",
        nargs="*",
        default=["hadamard", "gaussian"],
        help="for 'directions' (one per process lets two run side by side)",
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="report the runs as they stand (unfinished ones by their last epoch), train none",
    )
    args = parser.parse_args()
    global COLLECT
    COLLECT = args.collect
    out = OUT / "rbd.json"
    for name in args.only or ["directions", *TASKS, "ablation"]:
        if name == "directions":
            result = directions(args.mnist_dir, args.epochs or 3, args.distributions)
        elif name == "ablation":
            result = ablation(args.mnist_dir)
        else:
            epochs = args.epochs or 100
            result = paper_row(name, epochs, args.baseline_epochs or epochs, args.mnist_dir)
        # read again just before writing: another process may have added its experiments
        results = json.loads(out.read_text()) if out.exists() else {}
        results[name] = result
        atomic_write_json(out, results)
    plot(results, OUT / "rbd-curves.png")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

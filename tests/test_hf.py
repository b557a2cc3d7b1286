"""Hugging Face models in subspaces: a tiny randomly initialised BERT (no download) through
SubspaceModel with the model's own loss, SAID scales and a head trained beside the subspace,
inside `transformers.Trainer`, through the flat optimisers, and saved as seeds + d numbers."""

import pytest
import torch
import transformers
from own_models import assert_moved_within
from transformers import BertConfig, BertForSequenceClassification

import lowdim

VOCAB, LENGTH, CLASSES = 40, 12, 3


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=LENGTH, num_labels=CLASSES,
    )  # fmt: skip
    return BertForSequenceClassification(config).eval()


def token_split(n: int, seed: int) -> lowdim.Split:
    """Sequences whose label is their first token's class: learnable from the embeddings."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
    mask = torch.ones(n, LENGTH, dtype=torch.long)
    return lowdim.Split({"input_ids": ids, "attention_mask": mask}, ids[:, 0] % CLASSES)


TRAIN, TEST = token_split(192, 0), token_split(96, 1)


def said(module) -> lowdim.SubspaceModel:
    return lowdim.SubspaceModel.random(
        module, "fastfood", 60, seed=1, direct=["classifier.*"], layer_scales="param"
    )


def test_said_fine_tunes_with_the_models_own_loss_and_reloads_exactly(tmp_path):
    sub = said(tiny_bert())
    frozen_before = sub.module.bert.embeddings.word_embeddings.weight.clone()
    before = lowdim.evaluate(sub, TEST)
    adam = torch.optim.Adam(sub.parameters(), lr=0.05)
    result = lowdim.fit(sub, adam, TRAIN, TEST, epochs=4, batch_size=32, progress=False)
    assert result.test_acc is not None and result.test_loss < before[0] - 0.05
    # theta moved only through c and the scales; the module's own weights hold the anchor
    assert torch.equal(sub.module.bert.embeddings.word_embeddings.weight, frozen_before)
    sub.save(tmp_path / "said", extra={"base_model": "tiny-bert (seed 0)"})
    restored = lowdim.SubspaceModel.load(tiny_bert(), tmp_path / "said").eval()
    batch = next(TEST.batches(96))
    assert torch.equal(restored(**batch).logits, sub.eval()(**batch).logits)
    with pytest.raises(lowdim.LowdimError, match="anchor digest differs"):
        lowdim.SubspaceModel.load(tiny_bert(seed=1), tmp_path / "said")


def test_a_subspace_model_trains_inside_the_transformers_trainer(tmp_path):
    sub = said(tiny_bert())
    head = sub.module.classifier.weight.detach().clone()
    rows = [
        {"input_ids": b["input_ids"][0], "attention_mask": b["attention_mask"][0],
         "labels": b["labels"][0]}
        for b in TRAIN.batches(1)
    ]  # fmt: skip
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, num_train_epochs=2,
        learning_rate=0.05, save_strategy="no", report_to=[], use_cpu=True,
        remove_unused_columns=False, logging_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = transformers.Trainer(model=sub, args=args, train_dataset=rows)
    output = trainer.train()
    assert output.global_step == 2 * 192 // 16
    assert sub.coords.detach().abs().sum() > 0 and not torch.equal(
        sub.scales, torch.ones_like(sub.scales)
    )
    assert not torch.equal(sub.module.classifier.weight, head)  # trained directly
    # what the Trainer optimised: c, the scales and the head, nothing else
    trained = {n for n, p in sub.named_parameters() if p.requires_grad}
    assert trained == {"coords", "scales", "module.classifier.weight", "module.classifier.bias"}


def test_the_flat_optimisers_take_a_hugging_face_model_and_dict_batches():
    model = tiny_bert().train()
    flat = lowdim.FlatParams(model)
    start = flat.data.clone()
    basis = lowdim.random_basis("orthogonal", flat.numel, 8, seed=0)
    optimizer = lowdim.PSGD(flat, basis, lr=0.5)
    lowdim.fit(model, optimizer, TRAIN, TEST, epochs=1, batch_size=32, progress=False)
    assert_moved_within(flat, basis, start)  # only along the 8 directions


def test_the_intrinsic_dimension_of_fine_tuning_a_hugging_face_model(tmp_path):
    """`measure_intrinsic_dim` on the user's pretrained-style module and token dicts: SAID's
    scales counted in each d, the head trained beside the subspace, points that reload."""
    data = lowdim.Data("tiny-tokens", TRAIN, TEST, CLASSES, (LENGTH,), 0.0, 0.0, None)
    base = tiny_bert()
    cfg = lowdim.IntrinsicConfig(
        dims=[60, 120], epochs=2, batch_size=32, lr=0.05, baseline_lr=1e-3,
        layer_scales="param", direct=["classifier.*"], device="cpu",
    )  # fmt: skip
    summary = lowdim.measure_intrinsic_dim(cfg, tmp_path, data=data, model=base, progress=False)
    theta = sum(p.numel() for n, p in base.named_parameters() if not n.startswith("classifier"))
    assert summary["num_params"] == theta and summary["arch"] == "BertForSequenceClassification"
    assert [r["dim"] for r in summary["rows"]] == [60, 120]
    point = lowdim.SubspaceModel.load(tiny_bert(), tmp_path / "points" / "d120-s0")
    assert point.scales.numel() + point.coords.numel() == 120  # SAID's d counts its scales
    _, acc = lowdim.evaluate(point, TEST)
    assert acc == pytest.approx(summary["rows"][1]["test_acc"])
    too_small = lowdim.IntrinsicConfig(
        dims=[20], layer_scales="param", direct=["classifier.*"], device="cpu"
    )
    with pytest.raises(lowdim.LowdimError, match="must exceed the 39 layer scales"):
        lowdim.measure_intrinsic_dim(too_small, tmp_path / "no", data=data, model=base)
    assert not (tmp_path / "no").exists()  # refused before anything was written

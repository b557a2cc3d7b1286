"""`fit` and `evaluate` on data that is not a lowdim split of tensors: a torch `DataLoader` (with
an exact mid-epoch resume when its sampler's order depends only on the epoch), dict batches
with the user's own `loss_fn(output, batch)`, and lowdim splits of dict inputs (as a Hugging
Face tokenizer returns them) trained with the model's own loss."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import lowdim

G = torch.Generator().manual_seed(0)
X, Y = torch.randn(96, 5, generator=G), torch.randint(0, 3, (96,), generator=G)


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def loader(shuffle: bool = True) -> DataLoader:
    """Batches of 8; with `shuffle`, an order drawn from (seed 0, epoch) by a sampler with
    `set_epoch` (torch's DistributedSampler for one replica needs no process group)."""
    data = TensorDataset(X, Y)
    if not shuffle:
        return DataLoader(data, batch_size=8)
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0)
    return DataLoader(data, batch_size=8, sampler=sampler)


def train(data, epochs=2, **options):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    result = lowdim.fit(model, opt, data, data, epochs=epochs, progress=False, **options)
    return model, result


def test_a_dataloader_trains_as_the_same_batches_in_a_list():
    batches = [(X[i : i + 8], Y[i : i + 8]) for i in range(0, 96, 8)]
    from_loader, result = train(loader(shuffle=False))
    from_list, _ = train(batches)
    for a, b in zip(from_loader.parameters(), from_list.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(result.history) == 2 and result.history[-1]["step"] == 24


def test_evaluate_reads_a_dataloader_as_the_split_it_holds():
    model = net()
    on_loader = lowdim.evaluate(model, DataLoader(TensorDataset(X, Y), batch_size=1000))
    on_split = lowdim.evaluate(model, lowdim.Split(X, Y))
    assert on_loader[1] == on_split[1]
    assert on_loader[0] == pytest.approx(on_split[0], rel=1e-6)


class Interrupted(Exception):
    pass


class StopsAt:
    """The loader, interrupted after `stop` batches of epoch `epoch` (a kill, as fit sees it)."""

    def __init__(self, loader: DataLoader, epoch: int, stop: int) -> None:
        self.loader, self.stop_epoch, self.stop = loader, epoch, stop
        self.sampler, self.epoch = loader.sampler, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.epoch += 1
        for i, batch in enumerate(self.loader):
            if self.epoch == self.stop_epoch and i == self.stop:
                raise Interrupted
            yield batch


def test_a_run_on_a_seeded_dataloader_resumes_mid_epoch_exactly(tmp_path):
    whole, _ = train(loader(), epochs=3, run_dir=tmp_path / "whole", checkpoint_every=5)
    with pytest.raises(Interrupted):
        train(StopsAt(loader(), 2, 7), epochs=3, run_dir=tmp_path / "cut", checkpoint_every=5)
    resumed, result = train(
        loader(), epochs=3, run_dir=tmp_path / "cut", checkpoint_every=5, resume=True
    )
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]


class DictModel(nn.Module):
    """Hugging Face style: keyword inputs, an output object holding logits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = net()

    def forward(self, input_ids, labels=None, attention_mask=None):
        return {"logits": self.body(input_ids * attention_mask)}


def dict_batches():
    return [
        {"input_ids": X[i : i + 16], "attention_mask": torch.ones(16, 5), "labels": Y[i : i + 16]}
        for i in range(0, 96, 16)
    ]


def dict_loss(output, batch):
    return F.cross_entropy(output["logits"], batch["labels"])


@pytest.mark.parametrize("in_subspace", [False, True])
def test_dict_batches_train_with_the_users_loss(in_subspace):
    model = DictModel()
    if in_subspace:
        model = lowdim.SubspaceModel.random(model, "fastfood", 20, seed=0)
    before = lowdim.evaluate(model, dict_batches(), loss_fn=dict_loss)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    data = dict_batches()
    result = lowdim.fit(model, opt, data, data, epochs=5, loss_fn=dict_loss, progress=False)
    assert before[1] is not None and result.test_acc is not None  # logits against labels
    assert result.test_loss < before[0] - 0.05
    assert result.history[-1]["step"] == 5 * 6


class OwnLoss(nn.Module):
    """Hugging Face style: computes its own loss when given labels."""

    def __init__(self) -> None:
        super().__init__()
        self.body = net()

    def forward(self, input_ids, attention_mask, labels=None):
        logits = self.body(input_ids * attention_mask)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return {"loss": loss, "logits": logits}


def dict_split() -> lowdim.Split:
    return lowdim.Split({"input_ids": X, "attention_mask": torch.ones(96, 5)}, Y)


def test_a_split_of_dict_inputs_yields_dict_batches_with_labels():
    batches = list(dict_split().batches(40, shuffle=True, seed=3, epoch=1))
    assert [len(b["labels"]) for b in batches] == [40, 40, 16]
    order = torch.cat([b["labels"] for b in batches])
    plain = torch.cat([y for _, y in lowdim.Split(X, Y).batches(40, shuffle=True, seed=3, epoch=1)])
    assert torch.equal(order, plain)  # the same order as a tensor split's
    assert set(batches[0]) == {"input_ids", "attention_mask", "labels"}


def test_a_dict_split_trains_with_the_models_own_loss_and_resumes_exactly(tmp_path):
    def run(folder, epochs, resume=False):
        torch.manual_seed(0)
        model = OwnLoss()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        result = lowdim.fit(
            model, opt, dict_split(), dict_split(), epochs=epochs, batch_size=8,
            run_dir=folder, checkpoint_every=5, resume=resume, progress=False,
        )  # fmt: skip
        return model, result

    whole, result = run(tmp_path / "whole", 2)
    assert result.test_acc is not None and result.history[0]["train_acc"] is not None
    assert result.test_loss < result.history[0]["train_loss"]
    run(tmp_path / "cut", 1)  # one epoch, then resumed to two
    resumed, _ = run(tmp_path / "cut", 2, resume=True)
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_model_without_a_loss_needs_a_loss_fn():
    model = DictModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(lowdim.LowdimError, match="loss_fn is needed for dict batches"):
        lowdim.fit(model, opt, dict_split(), dict_split(), epochs=1, batch_size=8, progress=False)

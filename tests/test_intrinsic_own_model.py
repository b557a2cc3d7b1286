"""An intrinsic-dim sweep of a user's own network on its own data: an Embedding + mean-pool +
Linear classifier on token sequences (no zoo arch, no named dataset)."""

import copy
import json

import pytest
import torch
from torch import nn

from lowdim.data import Data, Split
from lowdim.errors import BadArgument, LowdimError
from lowdim.jobs.integrity import verify_run
from lowdim.jobs.intrinsic import IntrinsicConfig, measure_intrinsic_dim
from lowdim.subspace_model import SubspaceModel
from lowdim.train import evaluate


class BagOfTokens(nn.Module):
    def __init__(self, vocab: int = 12, width: int = 8, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens):
        return self.head(self.embed(tokens).mean(1))


def token_data() -> Data:
    """Sequences of 11 tokens; the label says whether most of them are below 6."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 12, (600, 11), generator=g)
    y = ((x < 6).sum(1) > 5).long()
    return Data("my-tokens", Split(x[:500], y[:500]), Split(x[500:], y[500:]), 2, (11,), 0, 0, None)


CFG = IntrinsicConfig(dims=[2, 40], epochs=1, batch_size=32, baseline_lr=0.05, device="cpu")


def sweep(folder, model, cfg=CFG):
    return measure_intrinsic_dim(cfg, folder, data=token_data(), model=model, progress=False)


@pytest.fixture(scope="module")
def built_per_seed(tmp_path_factory):
    """A sweep whose network is built by a function (the class itself), once per seed."""
    root = tmp_path_factory.mktemp("own-intrinsic")
    return root, sweep(root, BagOfTokens)


def materialise(basis):
    return torch.stack([basis.expand(e) for e in torch.eye(basis.dim)], dim=1)  # (D, d)


def test_the_sweep_records_the_users_data_and_module(built_per_seed):
    root, summary = built_per_seed
    config = json.loads((root / "config.json").read_text())
    baseline = json.loads((root / "baseline" / "summary.json").read_text())
    for record in (summary, config, baseline):
        assert record["dataset"] == "my-tokens" and record["arch"] == "BagOfTokens"
    assert summary["num_params"] == 12 * 8 + 8 * 2 + 2
    assert [r["dim"] for r in summary["rows"]] == [2, 40]
    assert summary["baseline_acc"] > 0.8 and summary["mean_acc"]["40"] > 0.7


def test_a_point_moved_only_its_d_coordinates_from_the_seeded_init(built_per_seed):
    root, summary = built_per_seed
    for row in summary["rows"]:
        torch.manual_seed(row["seed"])  # the function was called under the point's seed
        sub = SubspaceModel.load(BagOfTokens(), root / "points" / f"d{row['dim']}-s0")
        assert sub.coords.numel() == row["dim"]
        delta = (sub.theta() - sub.anchor).detach().double()
        p = materialise(sub.basis).double()
        coef = torch.linalg.lstsq(p, delta.unsqueeze(1)).solution
        assert delta.norm() > 1e-3  # it trained ...
        assert (p @ coef).squeeze(1).sub(delta).norm() < 1e-6 * delta.norm()  # ... in the span
        _, acc = evaluate(sub.export(), token_data().test)
        assert acc == pytest.approx(row["test_acc"])


def test_verify_reads_the_points_of_a_users_own_module(built_per_seed):
    root, _ = built_per_seed
    findings = verify_run(root)
    assert any(f.path.name == "subspace.safetensors" for f in findings)
    assert all(f.ok for f in findings), [f.problem for f in findings if not f.ok]


def test_a_module_is_the_anchor_of_every_run_and_is_left_untouched(tmp_path):
    torch.manual_seed(7)
    mine = BagOfTokens()
    before = copy.deepcopy(mine.state_dict())
    summary = sweep(tmp_path, mine, IntrinsicConfig(dims=[40], epochs=1, device="cpu"))
    assert summary["arch"] == "BagOfTokens"
    assert all(torch.equal(v, mine.state_dict()[k]) for k, v in before.items())
    SubspaceModel.load(copy.deepcopy(mine), tmp_path / "points" / "d40-s0")  # its anchor
    torch.manual_seed(0)
    with pytest.raises(LowdimError, match="anchor digest differs"):
        SubspaceModel.load(BagOfTokens(), tmp_path / "points" / "d40-s0")


@pytest.mark.parametrize(
    "model, cfg, argument",
    [
        ("not a network", CFG, "model"),
        (lambda: "still not one", CFG, "model"),
        (BagOfTokens, IntrinsicConfig(dims=[115]), "dims"),  # D = 114
        (BagOfTokens, IntrinsicConfig(dims=[4], projection="hadamard"), "projection"),
        (BagOfTokens, IntrinsicConfig(dims=[], search=True, search_min=0), "search_min"),
        (BagOfTokens, IntrinsicConfig(search=True, search_min=8, search_max=4), "search_max"),
    ],
)
def test_bad_arguments_name_the_python_argument_and_write_nothing(tmp_path, model, cfg, argument):
    with pytest.raises(BadArgument) as e:
        sweep(tmp_path / "run", model, cfg)
    assert e.value.argument == argument and "--" not in str(e.value)
    assert not (tmp_path / "run").exists()

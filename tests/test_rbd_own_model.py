"""`train_rbd` on a user's own module and data: an Embedding + GRU classifier over token
sequences (no zoo arch, no named dataset), with one random basis per layer or per tensor."""

import json

import pytest
import torch
from torch import nn

from lowdim.data import Data, Split
from lowdim.errors import BadArgument
from lowdim.io import load_tensors
from lowdim.jobs import RBDConfig, train_rbd
from lowdim.train import evaluate


class TokenGRU(nn.Module):
    def __init__(self, vocab: int = 12, width: int = 8, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens):
        _, h = self.gru(self.embed(tokens))
        return self.head(h[-1])


def token_data() -> Data:
    """Sequences of 10 tokens; the label says whether token 3 occurs more often than token 5."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 12, (300, 10), generator=g)
    y = ((x == 3).sum(1) > (x == 5).sum(1)).long()
    return Data(
        "my-tokens", Split(x[:240], y[:240]), Split(x[240:], y[240:]), 2, (10,), 0.0, 0.0, None
    )


def fresh() -> TokenGRU:
    torch.manual_seed(0)
    return TokenGRU()


CFG = dict(dim=20, epochs=2, lr=1.0, batch_size=16)
# embed | gru | head, and embed.weight | the GRU's four tensors | head.weight | head.bias
BLOCKS = {"layer": 3, "param": 7}


@pytest.mark.parametrize("compartments", ["layer", "param"])
def test_rbd_trains_a_users_module_on_a_users_data_and_says_so(tmp_path, compartments):
    cfg = RBDConfig(compartments=compartments, **CFG)
    model = fresh()
    before, _ = evaluate(model, token_data().test)
    summary = train_rbd(cfg, tmp_path, data=token_data(), model=model, progress=False)

    assert (summary["dataset"], summary["arch"]) == ("my-tokens", "TokenGRU")
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["dataset"], config["arch"]) == ("my-tokens", "TokenGRU")
    assert summary["compartments"] == BLOCKS[compartments] and summary["subspace_dim"] == 20
    assert summary["num_params"] == sum(p.numel() for p in fresh().parameters())
    assert summary["test_loss"] < before - 0.05, (before, summary["test_loss"])
    # the module given is the one trained, and the one saved
    saved = load_tensors(tmp_path / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert not torch.equal(model.head.weight, fresh().head.weight)

    again = train_rbd(cfg, tmp_path, data=token_data(), model=fresh(), resume=True, progress=False)
    assert again == summary
    with pytest.raises(BadArgument, match="^save_dir .* already holds a run"):
        train_rbd(cfg, tmp_path, data=token_data(), model=fresh(), progress=False)


def test_a_dim_too_large_for_the_users_module_is_refused_before_anything_is_written(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(BadArgument, match=r"^dim 5000 must be between 1 and D = \d+$"):
        train_rbd(RBDConfig(dim=5000), run, data=token_data(), model=fresh(), progress=False)
    assert not run.exists()

"""`train_rbd` on a user's own module and data: an Embedding + GRU classifier over token
sequences (no zoo arch, no named dataset), with one random basis per layer or per tensor."""

import json

import own_models
import pytest
import torch
from own_models import GRUClassifier

from lowdim.errors import BadArgument
from lowdim.io import load_tensors
from lowdim.jobs import RBDConfig, train_rbd
from lowdim.train import evaluate


def fresh() -> GRUClassifier:
    torch.manual_seed(0)
    return GRUClassifier(width=8)


def token_data():
    return own_models.token_data(300, 240)


CFG = dict(dim=20, epochs=2, lr=1.0, batch_size=16)
# embed | gru | head, and embed.weight | the GRU's four tensors | head.weight | head.bias
BLOCKS = {"layer": 3, "param": 7}


@pytest.mark.parametrize("compartments", ["layer", "param"])
def test_rbd_trains_a_users_module_on_a_users_data_and_says_so(tmp_path, compartments):
    cfg = RBDConfig(compartments=compartments, **CFG)
    model = fresh()
    before, _ = evaluate(model, token_data().test)
    summary = train_rbd(cfg, tmp_path, data=token_data(), model=model, progress=False)

    assert (summary["dataset"], summary["arch"]) == ("my-tokens", "GRUClassifier")
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["dataset"], config["arch"]) == ("my-tokens", "GRUClassifier")
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

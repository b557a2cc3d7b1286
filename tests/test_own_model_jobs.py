"""The jobs on a user's own module and data: train-sgd, then DLDR and TWA on its trajectory, with
an Embedding + GRU classifier on token sequences (no zoo arch, no named dataset)."""

import pytest
import torch
from own_models import GRUClassifier, token_data

from lowdim import SGDConfig, SubspaceConfig, train_in_subspace, train_sgd
from lowdim.errors import LowdimError


def fresh(seed: int = 0) -> GRUClassifier:
    torch.manual_seed(seed)
    return GRUClassifier()


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    cfg = SGDConfig(epochs=6, lr=0.1, batch_size=32)
    summary = train_sgd(cfg, root, data=token_data(), model=fresh(), progress=False)
    return root, summary


def test_train_sgd_records_what_it_trained_on(sgd_run):
    _, summary = sgd_run
    assert summary["dataset"] == "my-tokens" and summary["arch"] == "GRUClassifier"
    assert summary["snapshots"] == 7 and summary["test_acc"] > 0.6


@pytest.mark.parametrize("method", ["pbfgs", "twa"])
def test_dldr_and_twa_take_the_same_data_and_a_fresh_module(sgd_run, method):
    root, sgd = sgd_run
    cfg = SubspaceConfig(method=method, n_components=4, epochs=2, params_start=1)
    summary = train_in_subspace(
        root, cfg, data=token_data(), model=fresh(), progress=False, name=f"{method}-own"
    )
    assert summary["dataset"] == "my-tokens" and summary["arch"] == "GRUClassifier"
    assert summary["test_acc"] > 0.6


def test_a_later_stage_without_the_users_data_or_module_says_what_to_pass(sgd_run):
    root, _ = sgd_run
    with pytest.raises(LowdimError, match=r"your own data 'my-tokens'.*data="):
        train_in_subspace(root, SubspaceConfig(method="psgd", n_components=4), progress=False)
    with pytest.raises(LowdimError, match=r"your own module 'GRUClassifier'.*model="):
        train_in_subspace(
            root, SubspaceConfig(method="psgd", n_components=4), data=token_data(), progress=False
        )

"""Slow real-data checks of DLDR (`make test-slow`): the label-noise claim on MNIST."""

import pytest

from lowdim.jobs import SGDConfig, SubspaceConfig, train_in_subspace, train_sgd


@pytest.mark.slow
@pytest.mark.realdata
def test_dldr_beats_the_last_sgd_epoch_under_40_percent_label_noise(tmp_path, mnist_path):
    cfg = SGDConfig(
        dataset="mnist",
        arch="mlp",
        data_dir=str(mnist_path),
        epochs=30,
        lr=0.05,
        corrupt=0.4,
        seed=0,
    )
    sgd = train_sgd(cfg, tmp_path / "noisy", progress=False)
    dldr = train_in_subspace(
        tmp_path / "noisy",
        SubspaceConfig(method="pbfgs", params_end=6, n_components=5, epochs=5, batch_size=1024),
        progress=False,
    )
    assert dldr["effective_noise_rate"] == sgd["effective_noise_rate"] > 0.35
    assert dldr["test_acc"] >= sgd["test_acc"] + 0.03

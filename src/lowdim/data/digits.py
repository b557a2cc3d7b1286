"""scikit-learn's bundled 8x8 digits: always available, no download."""

from __future__ import annotations

import gzip
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch

from lowdim.data.split import Split
from lowdim.seeding import generator

TEST_FRACTION = 0.2


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float, labels (1797,) int) from scikit-learn's bundled file.

    Importing sklearn.datasets takes over a second, a hundred times longer than reading the
    file, so the file is read directly when it is where scikit-learn keeps it; otherwise (a
    future layout) this falls back to `sklearn.datasets.load_digits`.
    """
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        try:
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",", dtype=np.float32)
            if table.shape == (1797, 65):
                return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
        except (OSError, ValueError):
            pass  # fall back to the public API below
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return np.asarray(bunch.images, dtype=np.float32), np.asarray(bunch.target, dtype=np.int64)


def load_digits() -> tuple[Split, Split]:
    """The (train, test) splits of the 1797 digits, 1437/360 images of shape (1, 8, 8).

    The 80/20 split is drawn from a fixed seed, independent of the run seed, so every run of
    every experiment is scored on the same 360 test images. Pixels (0-16) are divided by 16 and
    standardised with the mean and std of the training pixels.
    """
    pixels, target = _read_digits()
    images = torch.from_numpy(pixels).unsqueeze(1) / 16.0
    labels = torch.from_numpy(target)
    n = len(labels)
    n_test = math.ceil(TEST_FRACTION * n)  # 360 of 1797, as scikit-learn's train_test_split
    order = torch.randperm(n, generator=generator("digits-split"))
    test_idx, train_idx = order[:n_test].sort().values, order[n_test:].sort().values
    train_x = images[train_idx]
    mean, std = train_x.mean(), train_x.std()
    train = Split((train_x - mean) / std, labels[train_idx])
    test = Split((images[test_idx] - mean) / std, labels[test_idx])
    return train, test

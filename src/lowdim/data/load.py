"""`load_dataset`: one entry point for every dataset lowdim knows, with optional label noise."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from lowdim.data.noise import check_fraction, corrupt_labels
from lowdim.data.split import Split
from lowdim.data.stream import StreamSplit
from lowdim.errors import LowdimError

DATASETS: tuple[str, ...] = (
    "digits",
    "mnist",
    "fashion-mnist",
    "cifar10",
    "cifar100",
    "imagefolder",
)

# Keyword options each dataset accepts through `load_dataset(**options)`.
_OPTIONS: dict[str, tuple[str, ...]] = {
    "digits": (),
    "mnist": ("verify_checksums",),
    "fashion-mnist": ("verify_checksums",),
    "cifar10": ("augment",),
    "cifar100": ("augment",),
    "imagefolder": ("image_size", "num_workers", "augment"),
}


@dataclass
class Data:
    """A loaded dataset: its splits, its shape and the label noise applied to its train split."""

    name: str
    train: Split | StreamSplit
    test: Split | StreamSplit
    num_classes: int
    input_shape: tuple[int, ...]  # (C, H, W)
    corrupt: float  # the requested label-noise fraction
    effective_noise_rate: float  # fraction of training labels that differ from the clean ones
    clean_train_labels: Tensor | None  # the labels before corruption; None when corrupt == 0


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    aliases = {
        "fashion": "fashion-mnist",
        "fashionmnist": "fashion-mnist",
        "cifar-10": "cifar10",
        "cifar-100": "cifar100",
    }
    key = aliases.get(key, key)
    if key not in DATASETS:
        raise LowdimError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return key


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    corrupt: float = 0.0,
    seed: int = 0,
    **options: Any,
) -> Data:
    """Load dataset `name` (one of `DATASETS`) with a `corrupt` fraction of noisy train labels.

    `data_dir` (default None) is searched first, then `$LOWDIM_DATA`, then system copies and
    `~/.cache/lowdim`; `download` (default False) fetches missing files, into `data_dir` if
    given, else `$LOWDIM_DATA/<name>`, else `~/.cache/lowdim/<name>`. `corrupt` (default 0.0)
    is the fraction of train labels redrawn by `corrupt_labels(..., seed, salt=name)`, so the
    noisy labels are a pure function of (dataset, corrupt, seed); `seed` (default 0) affects
    nothing else here. Test labels are never corrupted.

    Options by dataset (all optional):
      mnist, fashion-mnist: `verify_checksums` (default True) - require the canonical counts
        and sha256 of the files; turn off for subsets.
      cifar10, cifar100: `augment` (default True) - random crop + flip on shuffled train passes.
      imagefolder: `image_size` (default 224), `num_workers` (default min(8, CPU count)),
        `augment` (default True); `data_dir` is required.

    Raises `LowdimError` for an unknown name or option, a bad `corrupt`, or missing or corrupt
    files, with a one-line message.
    """
    key = _canonical(name)
    corrupt = check_fraction(corrupt)
    bad = sorted(set(options) - set(_OPTIONS[key]))
    if bad:
        valid = ", ".join(_OPTIONS[key]) or "none"
        raise LowdimError(f"unknown option {bad[0]!r} for dataset '{key}'; valid options: {valid}")

    if key == "digits":
        from lowdim.data.digits import load_digits

        train, test = load_digits()
        num_classes = 10
    elif key in ("mnist", "fashion-mnist"):
        from lowdim.data.mnist import load_idx_dataset

        train, test = load_idx_dataset(key, data_dir, download, **options)
        num_classes = 10
    elif key in ("cifar10", "cifar100"):
        from lowdim.data.cifar import SOURCES, load_cifar

        train, test = load_cifar(key, data_dir, download, **options)
        num_classes = SOURCES[key].num_classes
    else:
        from lowdim.data.imagefolder import load_imagefolder

        train, test, classes = load_imagefolder(data_dir, **options)
        num_classes = len(classes)

    if isinstance(train, Split):
        input_shape = tuple(train.x.shape[1:])
    else:
        size = options.get("image_size", 224)
        input_shape = (3, size, size)

    clean = None
    rate = 0.0
    if corrupt > 0:
        clean = train.y
        noisy = corrupt_labels(clean, num_classes, corrupt, seed, salt=key)
        rate = (noisy != clean).float().mean().item() if len(clean) else 0.0
        train = train.with_labels(noisy)
    return Data(
        name=key,
        train=train,
        test=test,
        num_classes=num_classes,
        input_shape=input_shape,
        corrupt=corrupt,
        effective_noise_rate=rate,
        clean_train_labels=clean,
    )

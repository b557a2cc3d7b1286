"""CIFAR-10 and CIFAR-100 from the python-pickle batch folders, with optional download."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lowdim.data.augment import RandomCropFlip
from lowdim.data.fetch import candidate_dirs, describe_dirs, download, download_dir
from lowdim.data.safepickle import load_pickle
from lowdim.data.split import Split
from lowdim.errors import LowdimError, arg


@dataclass(frozen=True)
class CifarSource:
    """Everything lowdim knows about one CIFAR variant."""

    title: str
    folder: str  # the folder the archive unpacks to
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    urls: tuple[str, ...]  # the .tar.gz, tried in order
    md5: str  # of the .tar.gz


# Module-level so that tests (and users with a local mirror) can patch URLs and digests.
SOURCES: dict[str, CifarSource] = {
    "cifar10": CifarSource(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        label_key="labels",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        md5="c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": CifarSource(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        label_key="fine_labels",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
        md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
}


def _complete(folder: Path, source: CifarSource) -> bool:
    names = (*source.train_files, source.test_file)
    return all((folder / n).is_file() for n in names)


def locate(name: str, data_dir: str | os.PathLike | None, fetch: bool) -> Path:
    """The batch folder of `name`, found like MNIST's (data_dir, data_dir/<folder>, the same
    under $LOWDIM_DATA), else downloaded and unpacked when `fetch`, else a `LowdimError`."""
    source = SOURCES[name]
    dirs = candidate_dirs(data_dir, source.folder)
    for folder in dirs:
        if _complete(folder, source):
            return folder
    if fetch:
        target = download_dir(data_dir, "")
        _download_and_unpack(source, target)
        if _complete(target / source.folder, source):
            return target / source.folder
        raise LowdimError(f"the {source.title} archive did not contain {source.folder}/")
    wanted = ", ".join((*source.train_files, source.test_file))
    raise LowdimError(
        f"no {source.title} batches in {describe_dirs(dirs)} (looked for {wanted}); pass "
        f"{arg('data_dir')}, set LOWDIM_DATA, or {arg('download', True)}"
    )


def _safe_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    # Fallback for Pythons without extraction filters: regular files and folders only, no
    # absolute paths, no "..", no links.
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in parts:
            raise LowdimError(f"{archive} has an unsafe member {m.name!r}; delete it")
    return members


def _download_and_unpack(source: CifarSource, target: Path) -> None:
    archive = download(list(source.urls), target / Path(source.urls[0]).name, source.md5)
    # Unpack into a temporary folder first and move the result into place, so an interrupted
    # extraction never leaves a half-filled batch folder that later looks complete.
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # pragma: no cover - Python < 3.10.12
                tar.extractall(tmp, members=_safe_members(tar, archive))
        final = target / source.folder
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp / source.folder, final)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise LowdimError(f"cannot unpack {archive}: {e}; delete it and try again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    archive.unlink(missing_ok=True)


def _labels(value: object, path: Path, key: str) -> np.ndarray:
    # Integers only: floats would be truncated silently, strings parsed, objects called.
    bad = f"{path}: '{key}' is not a list of integers"
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iub":
            raise LowdimError(f"{bad} (an array of dtype {value.dtype})")
        items = value
    elif isinstance(value, (list, tuple)):
        if not all(isinstance(v, (int, np.integer)) for v in value):
            kinds = sorted({type(v).__name__ for v in value})
            raise LowdimError(f"{bad} (it holds {', '.join(kinds)})")
        items = value
    else:
        raise LowdimError(f"{bad} (a {type(value).__name__})")
    try:
        return np.asarray(items, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise LowdimError(f"{bad} ({reason})") from None


def _read_batch(path: Path, source: CifarSource) -> tuple[np.ndarray, np.ndarray]:
    batch = load_pickle(path)
    if not isinstance(batch, dict) or "data" not in batch or source.label_key not in batch:
        # repr: a hostile pickle's keys may be of mixed types (sorted would fail) or hold newlines;
        # the first ten, shortened, keep the message short.
        if isinstance(batch, dict):
            keys = ", ".join(r[:40] for r in sorted(map(repr, batch))[:10]) or "none"
        else:
            keys = type(batch).__name__
        raise LowdimError(
            f"{path} is not a {source.title} batch: it needs keys 'data' and "
            f"'{source.label_key}', found {keys}"
        )
    data = batch["data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or (data.shape[1] != 3072)
    ):
        shape = list(data.shape) if isinstance(data, np.ndarray) else type(data).__name__
        raise LowdimError(f"{path}: 'data' must be a uint8 array of shape [N, 3072], got {shape}")
    labels = _labels(batch[source.label_key], path, source.label_key)
    if len(labels) != len(data):
        raise LowdimError(f"{path} has {len(data)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= source.num_classes):
        raise LowdimError(
            f"{path} has labels in [{labels.min()}, {labels.max()}]; valid labels are "
            f"0-{source.num_classes - 1}"
        )
    return data, labels


def _to_split(source: CifarSource, arrays: list[tuple[np.ndarray, np.ndarray]]) -> Split:
    data = np.concatenate([a for a, _ in arrays])
    labels = np.concatenate([b for _, b in arrays])
    x = torch.from_numpy(data).view(-1, 3, 32, 32).float().div_(255.0)
    mean = torch.tensor(source.mean).view(1, 3, 1, 1)
    std = torch.tensor(source.std).view(1, 3, 1, 1)
    x.sub_(mean).div_(std)
    return Split(x, torch.from_numpy(labels))


def load_cifar(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    augment: bool = True,
) -> tuple[Split, Split]:
    """The (train, test) splits of `name` ("cifar10" or "cifar100"), shape (N, 3, 32, 32).

    Pixels are scaled to [0, 1] and standardised per channel. With `augment` (default True) the
    train split carries a 4-pixel padded random crop with horizontal flips, padding with black.
    """
    source = SOURCES[name]
    folder = locate(name, data_dir, download)
    train = _to_split(source, [_read_batch(folder / f, source) for f in source.train_files])
    test = _to_split(source, [_read_batch(folder / source.test_file, source)])
    if augment:
        # The normalised value of a black pixel, so padding matches zero-padding the raw image.
        black = [-m / s for m, s in zip(source.mean, source.std, strict=True)]
        train.augment = RandomCropFlip(padding=4, fill=black)
    return train, test

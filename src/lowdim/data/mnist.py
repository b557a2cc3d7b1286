"""MNIST and Fashion-MNIST from their IDX files: look-up, optional download, verification."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lowdim.data.fetch import candidate_dirs, describe_dirs, download, download_dir
from lowdim.data.idx import parse_idx, read_payload
from lowdim.data.split import Split
from lowdim.errors import LowdimError, arg

PARTS = ("train-images", "train-labels", "t10k-images", "t10k-labels")
_IDX_SUFFIX = {"images": "idx3", "labels": "idx1"}
_COUNTS = {"train": 60000, "t10k": 10000}


@dataclass(frozen=True)
class IdxSource:
    """Everything lowdim knows about one IDX dataset."""

    title: str
    mean: float
    std: float
    mirrors: tuple[str, ...]  # base URLs, tried in order
    gz_md5: dict[str, str]  # part -> md5 of the canonical .gz file
    payload_sha256: dict[str, str]  # part -> sha256 of the decompressed file
    system_dirs: tuple[str, ...] = ()  # system-wide copies, searched after $LOWDIM_DATA


# Module-level so that tests (and users behind a proxy mirror) can patch the URLs and digests.
SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
        title="MNIST",
        mean=0.1307,
        std=0.3081,
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        gz_md5={
            "train-images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        payload_sha256={
            "train-images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion-mnist": IdxSource(
        title="Fashion-MNIST",
        mean=0.2860,
        std=0.3530,
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        gz_md5={
            "train-images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        payload_sha256={
            "train-images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        # Debian's fashion-mnist package installs the gzipped files here.
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
}


def file_names(part: str) -> list[str]:
    """Accepted names for `part`, preferred first: the canonical dash spelling and the dot one
    (`train-images.idx3-ubyte`), each raw or gzipped."""
    kind = part.split("-")[1]
    stems = [f"{part}-{_IDX_SUFFIX[kind]}-ubyte", f"{part}.{_IDX_SUFFIX[kind]}-ubyte"]
    return [stem + ext for stem in stems for ext in ("", ".gz")]


def _find_in(folder: Path) -> dict[str, Path]:
    found = {}
    for part in PARTS:
        for name in file_names(part):
            if (folder / name).is_file():
                found[part] = folder / name
                break
    return found


def locate(name: str, data_dir: str | os.PathLike | None, fetch: bool) -> dict[str, Path]:
    """The four files of dataset `name`, from the first folder that has them all, else
    downloaded (if `fetch`), else a `LowdimError` saying where it looked."""
    source = SOURCES[name]
    dirs = candidate_dirs(data_dir, name, source.system_dirs)
    partial = ""
    for folder in dirs:
        found = _find_in(folder)
        if len(found) == len(PARTS):
            return found
        if found and not partial:
            missing = [file_names(p)[0] + "[.gz]" for p in PARTS if p not in found]
            partial = f"; {folder} lacks {', '.join(missing)}"
    if fetch:
        return _download_all(name, download_dir(data_dir, name))
    wanted = ", ".join(file_names(p)[0] + "[.gz]" for p in PARTS)
    raise LowdimError(
        f"no {source.title} files in {describe_dirs(dirs)} (looked for {wanted}, or spelled like "
        f"'train-images.idx3-ubyte'){partial}; pass {arg('data_dir')}, set LOWDIM_DATA, or "
        f"{arg('download', True)}"
    )


def _download_all(name: str, folder: Path) -> dict[str, Path]:
    source = SOURCES[name]
    found = _find_in(folder)
    for part in PARTS:
        if part in found:
            continue  # keep what an earlier, interrupted download already fetched
        gz = file_names(part)[1]
        urls = [base.rstrip("/") + "/" + gz for base in source.mirrors]
        found[part] = download(urls, folder / gz, source.gz_md5[part])
    return found


def _load_part(path: Path, part: str, source: IdxSource, verify: bool) -> np.ndarray:
    data = read_payload(path)
    arr = parse_idx(data, str(path))
    split, kind = part.split("-")
    want_ndim, want_tail = (3, (28, 28)) if kind == "images" else (1, ())
    if arr.dtype != np.uint8 or arr.ndim != want_ndim or arr.shape[1:] != want_tail:
        raise LowdimError(
            f"{path} holds {arr.dtype} data of shape {list(arr.shape)}; {source.title} {kind} "
            f"need uint8 of shape [N{', 28, 28' if kind == 'images' else ''}]"
        )
    if verify:
        if len(arr) != _COUNTS[split]:
            raise LowdimError(
                f"{path} holds {len(arr)} {kind}, the {source.title} file has {_COUNTS[split]}"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != source.payload_sha256[part]:
            raise LowdimError(
                f"{path} has sha256 {digest[:16]}..., not the {source.title} {part} checksum "
                f"{source.payload_sha256[part][:16]}...; the file is corrupt, delete it and fetch "
                f"it again"
            )
    return arr


def load_idx_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    verify_checksums: bool = True,
) -> tuple[Split, Split]:
    """The (train, test) splits of `name` ("mnist" or "fashion-mnist"), shape (N, 1, 28, 28).

    Pixels are scaled to [0, 1] and standardised with the dataset's usual mean and std. With
    `verify_checksums` (default True) the item counts (60000/10000) and the sha256 of every
    decompressed file must match the canonical files; turn it off for subsets or test fixtures.
    """
    source = SOURCES[name]
    paths = locate(name, data_dir, download)
    arrays = {p: _load_part(paths[p], p, source, verify_checksums) for p in PARTS}
    splits = []
    for split in ("train", "t10k"):
        images, labels = arrays[f"{split}-images"], arrays[f"{split}-labels"]
        if len(images) != len(labels):
            raise LowdimError(
                f"{paths[split + '-images']} has {len(images)} images but "
                f"{paths[split + '-labels']} has {len(labels)} labels; they must match"
            )
        if labels.size and labels.max() > 9:
            raise LowdimError(
                f"{paths[split + '-labels']} has label {int(labels.max())}; valid labels are 0-9"
            )
        # astype makes a writable float copy, so the in-place arithmetic below is safe.
        x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
        x.mul_(1.0 / 255.0).sub_(source.mean).div_(source.std)
        y = torch.from_numpy(labels.astype(np.int64))
        splits.append(Split(x, y))
    return splits[0], splits[1]

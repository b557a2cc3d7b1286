"""lowdim.data: CIFAR-10/100 batch folders, the restricted unpickler, archive download."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lowdim.data import RandomCropFlip, load_dataset
from lowdim.data import cifar as cifar_mod
from lowdim.data.safepickle import load_pickle
from lowdim.errors import LowdimError

# --- writing fake batches -----------------------------------------------------------------------


def _s(b: bytes) -> bytes:  # a Python 2 str (SHORT_BINSTRING / BINSTRING)
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def _i(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    return b"M" + struct.pack("<H", v) if 0 <= v < 65536 else b"J" + struct.pack("<i", v)


def py2_pickle(data: np.ndarray, labels: list[int], label_key: bytes) -> bytes:
    """A protocol-2 pickle as Python 2 + numpy 1.x wrote the real CIFAR files: str keys (bytes
    under encoding="bytes") and numpy.core.multiarray._reconstruct."""
    dtype = (
        b"cnumpy\ndtype\n" + _s(b"u1") + _i(0) + _i(1) + b"\x87R"
        b"(" + _i(3) + _s(b"|") + b"NNN" + _i(-1) + _i(-1) + _i(0) + b"tb"
    )
    shape = b"(" + b"".join(_i(s) for s in data.shape) + b"t"
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _i(0) + b"\x85" + _s(b"b")
        + b"\x87R(" + _i(1) + shape + dtype + b"\x89" + _s(data.tobytes()) + b"tb"
    )  # fmt: skip
    items = _s(b"data") + array + _s(label_key) + b"](" + b"".join(_i(v) for v in labels) + b"e"
    return b"\x80\x02}(" + items + b"u."


def fake_batch(n: int, classes: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, classes, n).tolist()


def write_cifar10(folder: Path, n: int = 20, py2: bool = True) -> dict[str, tuple]:
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data, labels = batches[name] = fake_batch(n, 10, i)
        if py2:
            blob = py2_pickle(data, labels, b"labels")
        else:
            blob = pickle.dumps({"data": data, "labels": labels, "batch_label": "x"})
        (folder / name).write_bytes(blob)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list("abcdefghij")}))
    return batches


def write_cifar100(folder: Path, n: int = 30) -> dict[str, tuple]:
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate(["train", "test"]):
        data, labels = batches[name] = fake_batch(n, 100, 10 + i)
        coarse = [v // 5 for v in labels]
        blob = {"data": data, "fine_labels": labels, "coarse_labels": coarse}
        (folder / name).write_bytes(pickle.dumps(blob, protocol=2))
    return batches


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("LOWDIM_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# --- loading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("py2", [True, False])
def test_cifar10_small_folder(tmp_path, clean_env, py2):
    batches = write_cifar10(tmp_path / "cifar-10-batches-py", py2=py2)
    data = load_dataset("cifar10", data_dir=tmp_path)
    assert data.train.x.shape == (100, 3, 32, 32) and data.test.x.shape == (20, 3, 32, 32)
    assert data.num_classes == 10 and data.input_shape == (3, 32, 32)
    assert data.train.y.tolist() == sum((batches[f"data_batch_{k}"][1] for k in range(1, 6)), [])
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    raw = (data.test.x * std + mean) * 255
    expected = torch.from_numpy(batches["test_batch"][0]).view(-1, 3, 32, 32).float()
    assert torch.allclose(raw, expected, atol=1e-3)
    assert isinstance(data.train.augment, RandomCropFlip) and data.test.augment is None


def test_cifar100_small_folder(tmp_path, clean_env, monkeypatch):
    batches = write_cifar100(tmp_path / "store" / "cifar-100-python")
    monkeypatch.setenv("LOWDIM_DATA", str(tmp_path / "store"))
    data = load_dataset("cifar100", corrupt=0.5, seed=1)
    assert data.num_classes == 100 and data.train.x.shape == (30, 3, 32, 32)
    assert data.clean_train_labels.tolist() == batches["train"][1]
    assert data.test.y.tolist() == batches["test"][1]
    assert 0 < data.effective_noise_rate <= 0.5


def test_cifar_augmented_batches_are_reproducible(tmp_path, clean_env):
    write_cifar10(tmp_path)
    train = load_dataset("cifar10", data_dir=tmp_path).train
    a = [x for x, _ in train.batches(16, shuffle=True, seed=2, epoch=1)]
    b = [x for x, _ in train.batches(16, shuffle=True, seed=2, epoch=1)]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    plain = [x for x, _ in train.batches(16, shuffle=True, seed=2, epoch=1, augment=False)]
    assert not all(torch.equal(p, q) for p, q in zip(a, plain, strict=True))
    off = load_dataset("cifar10", data_dir=tmp_path, augment=False).train
    assert off.augment is None


def test_cifar_missing_folder_message(tmp_path, clean_env):
    with pytest.raises(LowdimError) as e:
        load_dataset("cifar100", data_dir=tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"no CIFAR-100 batches in {tmp_path}, {tmp_path}/cifar-100-python")
    assert "\n" not in msg and msg.endswith("or download=True")


def test_truncated_pickle_is_rejected(tmp_path, clean_env):
    write_cifar10(tmp_path)
    path = tmp_path / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(LowdimError, match="data_batch_3 is not a valid dataset pickle"):
        load_dataset("cifar10", data_dir=tmp_path)


@pytest.mark.parametrize(
    "blob, match",
    [
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}), "needs keys 'data' and 'labels'"),
        (pickle.dumps([1, 2]), "found list"),
        (pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}), "shape"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}), "0-9"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}), "1 labels"),
        (b"garbage", "not a valid dataset pickle"),
    ],
)
def test_malformed_batches(tmp_path, clean_env, blob, match):
    write_cifar10(tmp_path, py2=False)
    (tmp_path / "test_batch").write_bytes(blob)
    with pytest.raises(LowdimError, match=match):
        load_dataset("cifar10", data_dir=tmp_path)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_does_not_run(tmp_path, clean_env):
    write_cifar10(tmp_path, py2=False)
    marker = tmp_path / "pwned"
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({"data": _Evil(marker), "labels": []}))
    with pytest.raises(LowdimError, match=r"data_batch_1 .*forbidden"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()
    # A sanity check that the payload is real: the stock unpickler would run it.
    pickle.loads(pickle.dumps(_Evil(marker)))
    assert marker.exists()


def test_restricted_unpickler_reads_every_protocol(tmp_path):
    arr = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}"
        path.write_bytes(pickle.dumps({b"data": arr, "n": np.int64(3)}, protocol=protocol))
        out = load_pickle(path)
        assert np.array_equal(out["data"], arr) and out["n"] == 3
    path.write_bytes(pickle.dumps(io.BytesIO(b"x")))
    with pytest.raises(LowdimError, match="forbidden"):
        load_pickle(path)


# --- download -----------------------------------------------------------------------------------


def test_download_archive_from_mirror(tmp_path, clean_env, monkeypatch):
    src = tmp_path / "src"
    write_cifar10(src / "cifar-10-batches-py", n=4)
    archive = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    good = hashlib.md5(archive.read_bytes()).hexdigest()
    source = cifar_mod.SOURCES["cifar10"]
    wrong = dataclasses.replace(source, urls=(archive.as_uri(),), md5="0" * 32)
    monkeypatch.setitem(cifar_mod.SOURCES, "cifar10", wrong)
    with pytest.raises(LowdimError, match="md5"):
        load_dataset("cifar10", data_dir=tmp_path / "dl", download=True)
    assert list((tmp_path / "dl").iterdir()) == []
    right = dataclasses.replace(wrong, md5=good)
    monkeypatch.setitem(cifar_mod.SOURCES, "cifar10", right)
    data = load_dataset("cifar10", data_dir=tmp_path / "dl", download=True)
    assert len(data.train) == 20 and len(data.test) == 4
    assert [p.name for p in (tmp_path / "dl").iterdir()] == ["cifar-10-batches-py"]

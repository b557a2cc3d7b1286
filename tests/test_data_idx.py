"""lowdim.data: IDX files, MNIST / Fashion-MNIST look-up, verification and download."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lowdim.data import load_dataset, read_idx
from lowdim.data import mnist as mnist_mod
from lowdim.errors import LowdimError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
PARTS = ("train-images", "train-labels", "t10k-images", "t10k-labels")


def require_folder(path: Path) -> None:
    """Skip when `path` is missing, except in CI (env var CI set), where that is a failure."""
    if path.is_dir():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{path} is missing, and CI must run the real-data tests")
    pytest.skip(f"{path} is missing")


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype("uint8"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}[arr.dtype]
    header = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def fake_arrays(n_train: int = 50, n_test: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "train-images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def name_of(part: str, dot: bool, gz: bool) -> str:
    suffix = "idx3" if part.endswith("images") else "idx1"
    return f"{part}{'.' if dot else '-'}{suffix}-ubyte{'.gz' if gz else ''}"


def write_mnist(folder: Path, *, dot: bool = False, gz: bool = False, arrays=None) -> dict:
    arrays = arrays or fake_arrays()
    folder.mkdir(parents=True, exist_ok=True)
    for part, arr in arrays.items():
        data = idx_bytes(arr)
        (folder / name_of(part, dot, gz)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No $LOWDIM_DATA, a fresh home (so no cached downloads), no Debian Fashion-MNIST."""
    monkeypatch.delenv("LOWDIM_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    fashion = mnist_mod.SOURCES["fashion-mnist"]
    monkeypatch.setitem(
        mnist_mod.SOURCES, "fashion-mnist", dataclasses.replace(fashion, system_dirs=())
    )


def load_fake(name="mnist", **kw):
    return load_dataset(name, verify_checksums=False, **kw)


# --- read_idx -----------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    for arr in [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([1, -2, 70000], dtype=">i4"),
        np.array([[0.5, -1.25]], dtype=">f4"),
    ]:
        data = idx_bytes(arr)
        path = tmp_path / "a.idx"
        path.write_bytes(gzip.compress(data) if gz else data)
        out = read_idx(path)
        assert out.shape == arr.shape and np.array_equal(out, arr)
        assert out.dtype.isnative and out.flags.writeable


def test_read_idx_truncated_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((5, 28, 28), np.uint8))[:-10])
    with pytest.raises(LowdimError, match=r"train-images-idx3-ubyte is truncated"):
        read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(LowdimError, match="truncated"):
        read_idx(path)


def test_read_idx_wrong_magic(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(LowdimError, match=r"x is not an IDX file: magic 0x12340801"):
        read_idx(path)


def test_read_idx_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:-8])
    with pytest.raises(LowdimError, match="x.gz is not a valid gzip file"):
        read_idx(path)
    with pytest.raises(LowdimError, match="cannot read"):
        read_idx(tmp_path / "missing")


# --- loading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dot", [False, True])
@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_spellings(tmp_path, clean_env, dot, gz):
    arrays = write_mnist(tmp_path, dot=dot, gz=gz)
    (tmp_path / "._train-images.idx3-ubyte").write_bytes(b"macOS junk")
    data = load_fake(data_dir=tmp_path)
    assert data.train.x.shape == (50, 1, 28, 28) and data.test.x.shape == (20, 1, 28, 28)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert torch.equal(data.train.y, torch.from_numpy(arrays["train-labels"].astype(np.int64)))
    raw = data.test.x[:, 0] * 0.3081 + 0.1307
    assert torch.allclose(raw * 255, torch.from_numpy(arrays["t10k-images"]).float(), atol=1e-3)


def test_load_fashion_uses_its_own_statistics(tmp_path, clean_env):
    arrays = write_mnist(tmp_path / "fashion-mnist", gz=True)
    data = load_fake("fashion-mnist", data_dir=tmp_path)  # found in data_dir/<name>
    raw = data.train.x[:, 0] * 0.3530 + 0.2860
    assert torch.allclose(raw * 255, torch.from_numpy(arrays["train-images"]).float(), atol=1e-3)


def test_lowdim_data_env_lookup(tmp_path, clean_env, monkeypatch):
    write_mnist(tmp_path / "store" / "mnist")
    monkeypatch.setenv("LOWDIM_DATA", str(tmp_path / "store"))
    assert len(load_fake().train) == 50
    # data_dir is searched first, then $LOWDIM_DATA.
    write_mnist(tmp_path / "mine", arrays=fake_arrays(30, 10))
    assert len(load_fake(data_dir=tmp_path / "mine").train) == 30
    assert len(load_fake(data_dir=tmp_path / "empty").train) == 50


def test_missing_folder_message(tmp_path, clean_env):
    with pytest.raises(LowdimError) as e:
        load_fake(data_dir=tmp_path / "nope")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("no MNIST files in ")
    assert str(tmp_path / "nope") in msg and "$LOWDIM_DATA unset" in msg
    assert "train-images-idx3-ubyte[.gz]" in msg and "t10k-labels-idx1-ubyte[.gz]" in msg
    assert msg.endswith("pass data_dir, set LOWDIM_DATA, or download=True")


def test_partial_folder_says_what_is_missing(tmp_path, clean_env):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(LowdimError, match=r"lacks t10k-labels-idx1-ubyte\[\.gz\]"):
        load_fake(data_dir=tmp_path)


def test_truncated_dataset_file_names_it(tmp_path, clean_env):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(LowdimError, match=r"train-images-idx3-ubyte is truncated"):
        load_fake(data_dir=tmp_path)


def test_image_label_count_mismatch(tmp_path, clean_env):
    arrays = fake_arrays()
    arrays["train-labels"] = arrays["train-labels"][:40]
    write_mnist(tmp_path, arrays=arrays)
    with pytest.raises(LowdimError, match="has 50 images but .* has 40 labels"):
        load_fake(data_dir=tmp_path)


def test_checksums_verified_by_default(tmp_path, clean_env, monkeypatch):
    arrays = write_mnist(tmp_path)
    with pytest.raises(LowdimError, match="holds 50 images, the MNIST file has 60000"):
        load_dataset("mnist", data_dir=tmp_path)
    # Pretend the tiny files are canonical: right digests pass, one wrong digest is named.
    monkeypatch.setattr(mnist_mod, "_COUNTS", {"train": 50, "t10k": 20})
    digests = {p: hashlib.sha256(idx_bytes(a)).hexdigest() for p, a in arrays.items()}
    source = dataclasses.replace(mnist_mod.SOURCES["mnist"], payload_sha256=digests)
    monkeypatch.setitem(mnist_mod.SOURCES, "mnist", source)
    assert len(load_dataset("mnist", data_dir=tmp_path).train) == 50
    bad = dataclasses.replace(source, payload_sha256={**digests, "t10k-labels": "0" * 64})
    monkeypatch.setitem(mnist_mod.SOURCES, "mnist", bad)
    with pytest.raises(LowdimError, match=r"t10k-labels-idx1-ubyte has sha256 .*corrupt"):
        load_dataset("mnist", data_dir=tmp_path)


# --- download -----------------------------------------------------------------------------------


def serve(tmp_path: Path, monkeypatch, md5_override: dict | None = None) -> Path:
    """Put gzipped fake files in a local mirror and point the MNIST source at it."""
    mirror = tmp_path / "mirror"
    write_mnist(mirror, gz=True)
    md5 = {
        p: hashlib.md5(mirror.joinpath(name_of(p, False, True)).read_bytes()).hexdigest()
        for p in PARTS
    }
    md5.update(md5_override or {})
    source = dataclasses.replace(
        mnist_mod.SOURCES["mnist"],
        mirrors=((tmp_path / "dead").as_uri() + "/", mirror.as_uri() + "/"),
        gz_md5=md5,
    )
    monkeypatch.setitem(mnist_mod.SOURCES, "mnist", source)
    return mirror


def test_download_from_mirror(tmp_path, clean_env, monkeypatch):
    serve(tmp_path, monkeypatch)
    with pytest.raises(LowdimError, match="download=True"):
        load_fake(data_dir=tmp_path / "dl")
    data = load_fake(data_dir=tmp_path / "dl", download=True)
    assert len(data.train) == 50
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == sorted(
        name_of(p, False, True) for p in PARTS
    )
    assert len(load_fake(data_dir=tmp_path / "dl").test) == 20  # no download needed now


def test_download_default_destinations(tmp_path, clean_env, monkeypatch):
    serve(tmp_path, monkeypatch)
    load_fake(download=True)
    assert (tmp_path / "home/.cache/lowdim/mnist/train-images-idx3-ubyte.gz").is_file()
    assert len(load_fake().train) == 50  # the cache is searched afterwards
    monkeypatch.setenv("LOWDIM_DATA", str(tmp_path / "store"))
    load_fake(download=True)  # found in the cache: nothing to fetch
    assert not (tmp_path / "store").exists()


def test_download_into_lowdim_data(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOWDIM_DATA", str(tmp_path / "store"))
    serve(tmp_path, monkeypatch)
    load_fake(download=True)
    assert (tmp_path / "store/mnist/t10k-labels-idx1-ubyte.gz").is_file()


def test_download_wrong_md5_leaves_nothing(tmp_path, clean_env, monkeypatch):
    serve(tmp_path, monkeypatch, {"train-labels": "0" * 32})
    with pytest.raises(LowdimError) as e:
        load_fake(data_dir=tmp_path / "dl", download=True)
    msg = str(e.value)
    assert "\n" not in msg and "train-labels-idx1-ubyte.gz" in msg and "md5" in msg
    left = [p.name for p in (tmp_path / "dl").iterdir()]
    assert "train-labels-idx1-ubyte.gz" not in left
    assert not [n for n in left if n.startswith(".") or n.endswith(".part")]


def test_download_keeps_a_verified_earlier_file(tmp_path):
    from lowdim.data.fetch import download

    dest = tmp_path / "x.gz"
    dest.write_bytes(b"payload")
    good = hashlib.md5(b"payload").hexdigest()
    dead = [(tmp_path / "dead" / "x.gz").as_uri()]
    assert download(dead, dest, good) == dest  # no fetch needed
    with pytest.raises(LowdimError, match="could not download x.gz"):
        download(dead, dest, "0" * 32)
    assert dest.read_bytes() == b"payload"


# --- the real files -----------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_fashion_mnist(monkeypatch):
    require_folder(DEBIAN_FASHION)
    monkeypatch.delenv("LOWDIM_DATA", raising=False)
    data = load_dataset("fashion-mnist", data_dir=DEBIAN_FASHION)  # checksums verified
    assert data.train.x.shape == (60000, 1, 28, 28) and data.test.x.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.test.y).tolist() == [1000] * 10
    assert abs(data.train.x.mean().item()) < 0.01 and abs(data.train.x.std().item() - 1) < 0.01

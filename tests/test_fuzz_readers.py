"""Property-based fuzzing of every file reader: damaged or hostile input raises `LowdimError`.

Each test starts from a valid file that lowdim wrote itself (or, for the datasets, one in the
published format), lets hypothesis damage it (flipped, inserted and deleted bytes, truncation,
interesting integers over size fields, JSON fields replaced by values of other types, keys
dropped or added, tensors of the wrong shape or dtype) and asserts that the reader either
succeeds and returns well-formed data or raises `LowdimError` with a one-line message naming the
file; any other exception (IndexError, KeyError, struct.error, OverflowError, RuntimeError from
torch, MemoryError from a huge declared size...) fails the test.

The default run is deterministic (derandomized, no example database) and short. `make fuzz` sets
LOWDIM_FUZZ_EXAMPLES to run many more, randomized, examples per test.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gzip
import hashlib
import json
import os
import pickle
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from lowdim.bases.gaussian import GaussianBasis
from lowdim.compress import read_subspace
from lowdim.compress_zoo import load_subspace_model, save_subspace_model
from lowdim.data import cifar as cifar_mod
from lowdim.data.idx import parse_idx, read_idx
from lowdim.data.safepickle import load_pickle
from lowdim.errors import LowdimError
from lowdim.io import load_tensors, save_tensors
from lowdim.models import build_model
from lowdim.params import FlatParams
from lowdim.subspace_model import SubspaceModel
from lowdim.train.checkpoint import RECORD, load_checkpoint, save_checkpoint
from lowdim.trajectory import DATA_FILE, MANIFEST_FILE, Trajectory, TrajectoryRecorder

# --- settings ------------------------------------------------------------------------------------

EXAMPLES = int(os.environ.get("LOWDIM_FUZZ_EXAMPLES", "0"))


def fuzz(default: int) -> settings:
    """`default` examples, deterministic, in the ordinary suite; many randomized ones under
    `make fuzz` (LOWDIM_FUZZ_EXAMPLES)."""
    return settings(
        max_examples=EXAMPLES or default,
        deadline=None,
        derandomize=not EXAMPLES,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# --- the property --------------------------------------------------------------------------------


def _vm_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


@contextlib.contextmanager
def memory_cap(extra: int = 3 << 30) -> Iterator[None]:
    """Cap the address space at its current size plus `extra` while a reader runs, so that a
    reader that believes a huge declared size fails at once (MemoryError, a failure of the
    test) instead of allocating and touching gigabytes on a shared machine."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        yield
        return
    now = _vm_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if now is None or (soft != resource.RLIM_INFINITY and soft <= now + extra):
        yield
        return
    cap = now + extra if hard == resource.RLIM_INFINITY else min(now + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def read_or_reject(read: Callable[[], Any], name: str) -> Any:
    """`read()`'s result, or None when it raised `LowdimError` with a one-line message naming
    `name`; any other exception propagates and fails the test."""
    try:
        with memory_cap(), torch.random.fork_rng(devices=[]):
            return read()
    except LowdimError as e:
        message = str(e)
        assert message and "\n" not in message, f"not a one-line message: {message!r}"
        assert name in message, f"the message does not name {name}: {message!r}"
        return None


# --- mutations -----------------------------------------------------------------------------------

INTERESTING = [0, 1, 2, 7, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1]
INTERESTING += [2**53, 2**63 - 1, 2**63, 2**64 - 1]
OPS = ["flip", "set", "insert", "delete", "truncate", "int", "dup"]


@st.composite
def mutated_bytes(draw, original: bytes, hot: int = 64, max_ops: int = 4) -> bytes:
    """`original` with 1..max_ops byte-level mutations, biased towards its first `hot` bytes
    (where the headers and size fields are)."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, max_ops))):
        n = len(data)
        pos = draw(st.one_of(st.integers(0, min(n, hot)), st.integers(0, n)))
        op = draw(st.sampled_from(OPS))
        if op == "flip" and pos < n:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and pos < n:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
        elif op == "int":
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from(INTERESTING)) % (1 << (8 * width))
            order = draw(st.sampled_from(["little", "big"]))
            data[pos : pos + width] = value.to_bytes(width, order)
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))]
    return bytes(data)


WEIRD = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 1, 3, 2**31, 2**53 + 1, 2**63, 2**64, -(2**63), 10**30]),
    st.integers(-1000, 1000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "float32", "float128", "gaussian", "mlp", "../x", "/etc/passwd"]),
    st.sampled_from([RECORD, "state.json/..", "nan", "1e999", "null", "[1, 2]", '{"a": 1}']),
    st.text(max_size=8),
    st.lists(st.integers(-2, 5), max_size=3),
    st.lists(st.text(max_size=2), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(-2, 5), max_size=2),
)


def _paths(obj: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated_json(draw, original: Any, max_ops: int = 3) -> Any:
    """A deep copy of `original` with 1..max_ops values replaced by values of other types,
    removed, or joined by new ones."""
    obj = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, max_ops))):
        path = draw(st.sampled_from(list(_paths(obj))))
        op = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if not path:
            if op == "replace":
                obj = draw(WEIRD)
            continue
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if op == "replace":
            parent[key] = draw(WEIRD)
        elif op == "drop":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=4))] = draw(WEIRD)
        else:
            parent.insert(key, draw(WEIRD))
    return obj


def dump_json(obj: Any) -> bytes:
    return json.dumps(obj, indent=1).encode()


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        (folder / name).write_bytes(content)


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="lowdim-fuzz-") as d:
        yield Path(d)


# === (1) IDX ====================================================================================


def idx_bytes(arr: np.ndarray, code: int) -> bytes:
    header = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


_rng = np.random.default_rng(0)
IDX_ORIGINALS = [
    idx_bytes(_rng.integers(0, 256, (3, 4, 5), dtype=np.uint8), 0x08),
    idx_bytes(_rng.integers(0, 10, (6,), dtype=np.uint8), 0x08),
    idx_bytes(_rng.integers(-(2**31), 2**31, (2, 3), dtype=np.int32), 0x0C),
    idx_bytes(_rng.standard_normal((2, 2, 2)).astype(np.float32), 0x0D),
    idx_bytes(_rng.standard_normal((3,)), 0x0E),
    idx_bytes(np.arange(4, dtype=np.int16), 0x0B),
]

idx_inputs = st.one_of(
    st.sampled_from(IDX_ORIGINALS).flatmap(mutated_bytes),
    st.sampled_from(IDX_ORIGINALS).flatmap(lambda b: mutated_bytes(b, hot=24, max_ops=1)),
    st.binary(max_size=64),
    # a header of random type code, rank and sizes over a short body
    st.builds(
        lambda code, dims, body: (
            struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + body
        ),
        st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]),
        st.lists(st.sampled_from([0, 1, 2, 3, 2**16, 2**31, 2**32 - 1]), max_size=70),
        st.binary(max_size=32),
    ),
)

IDX_CODES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32}
IDX_CODES[0x0E] = np.float64


def check_idx(arr: np.ndarray, data: bytes) -> None:
    """A successful parse is the array the header describes, over all of the bytes."""
    code, ndim = data[2], data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    assert isinstance(arr, np.ndarray) and arr.shape == shape
    assert arr.dtype == np.dtype(IDX_CODES[code])
    assert 4 + 4 * ndim + arr.nbytes == len(data)


# Regression: 65536**4 wraps to 0 in int64, so the length check passed and reshape raised.
@example(struct.pack(">HBB4I", 0, 8, 4, 65536, 65536, 65536, 65536))
# Regression: numpy refuses a zero-size shape whose other sizes overflow (0, 2, 2**31, 2**31).
@example(struct.pack(">HBB4I", 0, 8, 4, 0, 2, 2**31, 2**31))
# Regression: a zero-size array of more dimensions than numpy allows made reshape raise.
@example(struct.pack(">HBB", 0, 8, 65) + bytes(4 * 65))
@example(struct.pack(">HBB", 0, 8, 255) + bytes(4 * 255))
@example(b"\x00\x00\x08")
@example(b"\x00\x00\x08\x01\x00\x00")
@fuzz(400)
@given(idx_inputs)
def test_parse_idx_rejects_bad_bytes_cleanly(data):
    arr = read_or_reject(lambda: parse_idx(data, "fuzzed.idx"), "fuzzed.idx")
    if arr is not None:
        check_idx(arr, data)


@example(gzip.compress(IDX_ORIGINALS[0])[:-4], True)
@example(b"\x1f\x8b", False)
@fuzz(150)
@given(idx_inputs, st.booleans())
def test_read_idx_rejects_bad_files_cleanly(data, gzipped):
    with scratch() as d:
        path = d / "images-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(data, mtime=0) if gzipped else data)
        arr = read_or_reject(lambda: read_idx(path), str(path))
        if arr is not None:
            check_idx(arr, data)
            assert arr.flags.writeable


@fuzz(150)
@given(
    st.sampled_from(IDX_ORIGINALS).map(lambda b: gzip.compress(b, mtime=0)).flatmap(mutated_bytes)
)
def test_read_idx_rejects_damaged_gzip_cleanly(data):
    with scratch() as d:
        path = d / "labels-idx1-ubyte.gz"
        path.write_bytes(data)
        arr = read_or_reject(lambda: read_idx(path), str(path))
        if arr is not None:
            assert isinstance(arr, np.ndarray) and arr.ndim >= 1


# === (2) CIFAR batches and the restricted unpickler ==============================================

CIFAR10 = cifar_mod.SOURCES["cifar10"]


def _batch(n: int = 3, protocol: int = 2, key: Any = "labels") -> bytes:
    rng = np.random.default_rng(n)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    return pickle.dumps({"data": data, key: labels, "filenames": ["a"] * n}, protocol=protocol)


PICKLE_ORIGINALS = [_batch(protocol=p) for p in (0, 2, 4, 5)] + [_batch(2, 2, b"labels")]

# Hostile opcode streams: forbidden globals, huge declared sizes, truncation, bad memo.
HOSTILE_PICKLES = [
    b"cos\nsystem\n(S'touch PWNED'\ntR.",
    b"cbuiltins\neval\n(S'1+1'\ntR.",
    b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93.",
    pickle.dumps(os.system, protocol=4),
    pickle.dumps(print, protocol=2),
    b"\x80\x04\x8e" + struct.pack("<Q", 2**63) + b".",  # BINBYTES8 of 2**63 bytes
    b"\x80\x04\x95" + struct.pack("<Q", 2**63 - 1) + b"}.",  # FRAME of 2**63 bytes
    b"\x80\x02\x8b" + struct.pack("<i", 2**31 - 1) + b".",  # LONG4 of 2 GiB
    b"\x80\x02X" + struct.pack("<I", 2**32 - 1) + b"abc.",  # BINUNICODE of 4 GiB
    b"\x80\x02X\x02\x00\x00\x00\xff\xfe.",  # invalid UTF-8
    b"\x80\x02T" + struct.pack("<i", -1) + b".",  # BINSTRING of negative length
    b"\x80\x02h\x05.",  # BINGET of a missing memo entry
    b"\x80\x02Q.",  # BINPERSID with an empty stack
    b"\x80\x02]" + b"(" * 1000 + b".",
    b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.",
    # numpy's own reconstructor asked for a huge array
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\xff\xff\xff\x7f\x85"
    b"C\x01b\x87R.",
    b"\x80\x02cnumpy\nndarray\n\x8a\x06\x00\x00\x00\x00\x00\x01\x85R.",  # ndarray((2**40,))
    b"\x80\x02cnumpy\ndtype\nX\x01\x00\x00\x00O\x85R.",  # an object dtype
    b"",
    b".",
    b"\x80\x02}q\x00(X\x04\x00\x00\x00dataq\x01",  # truncated
]

# Values of the wrong type for a batch's 'data' and 'labels'.
BAD_VALUES = st.one_of(
    WEIRD,
    st.sampled_from(
        [
            np.zeros((2, 3072), np.float32),
            np.zeros((2, 3072), np.int64),
            np.zeros((2, 3072, 1), np.uint8),
            np.zeros((2, 100), np.uint8),
            np.zeros((0, 3072), np.uint8),
            np.zeros((2,), np.uint8),
            np.zeros((), np.uint8),
            np.asfortranarray(np.zeros((3, 3072), np.uint8)),
            np.array([1.5, 2.5]),
            np.array([1, 2], dtype=np.uint64) * (2**63),
            np.array(["a", "b"]),
            np.array([1, None], dtype=object),
            np.zeros(2, dtype=[("a", "i4")]),
            np.array([2**40, 1]),
            np.array([True, False]),
            [1, 2.0],
            [1, "2"],
            [2**70, 1],
            [-1, 3],
            [np.int64(1), np.uint64(3)],
            (1, 2),
            "12",
            b"\x01\x02",
            {1: 2},
            1,
        ]
    ),
)
KEYS = st.sampled_from(["data", "labels", "fine_labels", b"data", b"labels", 1, 2.5, None, ()])


@st.composite
def hostile_batches(draw) -> bytes:
    """A pickled dict of plausible and implausible keys and values, at any protocol."""
    obj = draw(st.dictionaries(KEYS, BAD_VALUES, max_size=4))
    if draw(st.booleans()):
        n = draw(st.integers(0, 3))
        obj["data"] = np.zeros((n, 3072), np.uint8)
    if draw(st.booleans()):
        obj = draw(st.sampled_from([obj, [obj], (obj,), None, 3, "data"]))
    return pickle.dumps(obj, protocol=draw(st.integers(0, 5)))


pickle_inputs = st.one_of(
    st.sampled_from(PICKLE_ORIGINALS).flatmap(mutated_bytes),
    st.sampled_from(PICKLE_ORIGINALS + HOSTILE_PICKLES).flatmap(
        lambda b: mutated_bytes(b, hot=len(b) or 1, max_ops=2)
    ),
    st.sampled_from(HOSTILE_PICKLES),
    hostile_batches(),
    st.binary(max_size=64),
)


def check_batch(data: np.ndarray, labels: np.ndarray) -> None:
    assert isinstance(data, np.ndarray) and data.dtype == np.uint8
    assert data.ndim == 2 and data.shape[1] == 3072
    assert isinstance(labels, np.ndarray) and labels.dtype == np.int64
    assert labels.shape == (len(data),)
    assert labels.size == 0 or (labels.min() >= 0 and labels.max() < CIFAR10.num_classes)


@example(pickle.dumps({1: 2, "x": 3}))  # regression: mixed key types made sorted() raise
@example(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [2**70]}))  # overflow
@example(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1.7, 2.2]}))
@example(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": "7"}))
@fuzz(300)
@given(pickle_inputs)
def test_cifar_batch_reader_rejects_bad_pickles_cleanly(raw):
    with scratch() as d:
        path = d / "data_batch_1"
        path.write_bytes(raw)
        got = read_or_reject(lambda: cifar_mod._read_batch(path, CIFAR10), str(path))
        if got is not None:
            check_batch(*got)
        assert not (d / "PWNED").exists()


@fuzz(150)
@given(pickle_inputs)
def test_restricted_unpickler_rejects_bad_pickles_cleanly(raw):
    with scratch() as d:
        path = d / "batches.meta"
        path.write_bytes(raw)
        obj = read_or_reject(lambda: load_pickle(path), str(path))
        if isinstance(obj, dict):
            assert not any(isinstance(k, bytes) for k in obj)


@pytest.mark.parametrize("raw", HOSTILE_PICKLES[:5], ids=lambda b: repr(b[:24]))
def test_forbidden_globals_never_run(raw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(raw)
    with pytest.raises(LowdimError, match="forbidden"):
        load_pickle(path)
    assert not (tmp_path / "PWNED").exists()


def test_valid_batches_read_back():
    """The originals the fuzzer starts from are valid, so the fuzzer exercises real parsing."""
    with scratch() as d:
        for raw in PICKLE_ORIGINALS:
            (d / "b").write_bytes(raw)
            data, labels = cifar_mod._read_batch(d / "b", CIFAR10)
            check_batch(data, labels)
            assert len(data) == len(labels) > 0


# === (3) safetensors files (lowdim.io.load_tensors) ===============================================

TENSORS = {
    "a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
    "b": torch.tensor([1, -2, 3, 2**40]),
    "c": torch.zeros(0, dtype=torch.float16),
}
SAFETENSORS = st_save(TENSORS, metadata={"kind": "x", "numbers": "{}"})


def split_safetensors(raw: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join_safetensors(header: Any, body: bytes, length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + body


@st.composite
def mutated_headers(draw) -> bytes:
    header, body = split_safetensors(SAFETENSORS)
    header = draw(mutated_json(header))
    text_len = len(json.dumps(header).encode())
    length = draw(
        st.one_of(
            st.none(),
            st.sampled_from([0, 1, 7, text_len - 1, text_len + 1, 2**32, 2**63, 2**64 - 1]),
        )
    )
    body = draw(st.one_of(st.just(body), st.binary(max_size=80)))
    return join_safetensors(header, body, None if length is None else max(0, length))


safetensors_inputs = st.one_of(
    mutated_bytes(SAFETENSORS, hot=200),
    mutated_headers(),
    st.binary(max_size=40),
)


def check_tensors(got: dict) -> None:
    assert isinstance(got, dict)
    for name, t in got.items():
        assert isinstance(name, str) and isinstance(t, torch.Tensor)
        assert t.is_contiguous() and t.data_ptr() % 16 == 0  # cloned into aligned memory


@example(struct.pack("<Q", 2**64 - 1) + b"{}")  # huge declared header
@example(join_safetensors([], b""))  # header not an object
@example(join_safetensors({"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 1]}}, b"\0"))
@example(join_safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 99]}}, b""))
@example(
    join_safetensors({"a": {"dtype": "F32", "shape": [2**62, 8], "data_offsets": [0, 4]}}, b"")
)
@example(
    join_safetensors({"a": {"dtype": "F6_E2M3", "shape": [8], "data_offsets": [0, 6]}}, bytes(6))
)
@example(join_safetensors({"__metadata__": {"k": 1}}, b""))
@example(b"")
@fuzz(400)
@given(safetensors_inputs)
def test_load_tensors_rejects_bad_files_cleanly(raw):
    with scratch() as d:
        path = d / "model.safetensors"
        path.write_bytes(raw)
        got = read_or_reject(lambda: load_tensors(path), str(path))
        if got is not None:
            check_tensors(got)


def test_load_tensors_round_trip_and_missing_file(tmp_path):
    save_tensors(tmp_path / "t.safetensors", TENSORS)
    got = load_tensors(tmp_path / "t.safetensors")
    assert set(got) == set(TENSORS) and all(torch.equal(got[k], TENSORS[k]) for k in TENSORS)
    check_tensors(got)
    with pytest.raises(LowdimError, match="missing.safetensors"):
        load_tensors(tmp_path / "missing.safetensors")


# === shared originals for the trajectory, checkpoint and compressed-model readers ==============


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3))


def tiny_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


# What the training loop records in a checkpoint taken two steps into an epoch.
PROGRESS = {"epoch": 1, "step": 7, "snapshots": 3, "wall_seconds": 1.5, "epoch_step": 2}
PROGRESS |= {"epoch_lr": 0.1, "epoch_seconds": 0.5, "world": 1, "totals": [[1.0, 2.0, 3.0]]}


@functools.cache
def originals() -> dict[str, Any]:
    """Valid files written by lowdim itself: a trajectory, a checkpoint, a compressed model."""
    out: dict[str, Any] = {}
    with scratch() as d, torch.random.fork_rng(devices=[]):
        model = tiny_model()
        flat = FlatParams(model)
        rec = TrajectoryRecorder(d / "traj", flat.layout())
        for i in range(3):
            rec.append(flat.data + i, epoch=i / 2, step=i)
        out["trajectory"] = {n: (d / "traj" / n).read_bytes() for n in (MANIFEST_FILE, DATA_FILE)}

        opt = tiny_optimizer(model)
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        save_checkpoint(
            d / "ckpt", model=model, optimizer=opt, scheduler=None, progress=dict(PROGRESS)
        )
        record = json.loads((d / "ckpt" / RECORD).read_text())
        out["record"] = record
        out["checkpoint_tensors"] = (d / "ckpt" / record["tensors_file"]).read_bytes()

        torch.manual_seed(3)
        net = build_model("mlp", (1, 2, 2), 2, hidden=(3,))
        num = sum(p.numel() for p in net.parameters())
        sub = SubspaceModel(net, GaussianBasis(num, 4, seed=5))
        with torch.no_grad():
            sub.coords.normal_()
        save_subspace_model(
            d / "m.safetensors",
            sub,
            arch="mlp",
            dataset="digits",
            input_shape=(1, 2, 2),
            num_classes=2,
            anchor_seed=3,
            hidden=[3],
        )
        out["compressed"] = (d / "m.safetensors").read_bytes()
    return out


# === (4) trajectory manifest ====================================================================


@st.composite
def trajectory_files(draw) -> dict[str, bytes]:
    files = dict(originals()["trajectory"])
    manifest = json.loads(files[MANIFEST_FILE])
    how = draw(st.sampled_from(["json", "json", "bytes", "data", "drop"]))
    if how == "json":
        files[MANIFEST_FILE] = dump_json(draw(mutated_json(manifest)))
    elif how == "bytes":
        files[MANIFEST_FILE] = draw(mutated_bytes(files[MANIFEST_FILE], hot=4096))
    elif how == "data":
        files[DATA_FILE] = draw(mutated_bytes(files[DATA_FILE], hot=len(files[DATA_FILE])))
    else:
        del files[draw(st.sampled_from(sorted(files)))]
    return files


def read_trajectory(folder: Path) -> tuple[Trajectory, np.ndarray | None, list]:
    traj = Trajectory(folder)
    window = traj.window() if len(traj) else None
    blocks = list(traj.iter_blocks(block_rows=2)) if len(traj) else []
    traj.verify()
    return traj, window, blocks


def check_trajectory(got: tuple) -> None:
    traj, window, blocks = got
    t, num = len(traj), traj.num_params
    assert isinstance(num, int) and num >= 0
    if window is not None:
        assert window.shape == (t, num)
        assert [i for idx, _ in blocks for i in idx] == list(range(t))
        for idx, block in blocks:
            assert isinstance(block, torch.Tensor) and tuple(block.shape) == (len(idx), num)


@fuzz(200)
@given(trajectory_files())
def test_trajectory_reader_rejects_bad_manifests_cleanly(files):
    with scratch() as d:
        write_files(d, files)
        got = read_or_reject(lambda: read_trajectory(d), str(d))
        if got is not None:
            check_trajectory(got)


def test_trajectory_original_reads():
    with scratch() as d:
        write_files(d, originals()["trajectory"])
        got = read_trajectory(d)
        check_trajectory(got)
        assert len(got[0]) == 3


# === (5) checkpoint record ======================================================================


@st.composite
def checkpoint_files(draw) -> dict[str, bytes]:
    """A mutated state.json and/or tensors file; a mutated tensors file's digest is written into
    the record (a hostile file, not just a damaged one, passes the digest check)."""
    record = copy.deepcopy(originals()["record"])
    tensors = originals()["checkpoint_tensors"]
    how = draw(st.sampled_from(["json", "json", "bytes", "tensor-bytes", "tensors", "both"]))
    if how in ("tensor-bytes", "both"):
        tensors = draw(mutated_bytes(tensors, hot=400))
    if how == "tensors":
        tensors = draw(mutated_tensor_dict(st_load(tensors)))
    record["tensors_sha256"] = hashlib.sha256(tensors).hexdigest()
    text = dump_json(record)
    if how in ("json", "both"):
        text = dump_json(draw(mutated_json(record)))
    elif how == "bytes":
        text = draw(mutated_bytes(text, hot=len(text)))
    return {RECORD: text, record["tensors_file"]: tensors}


@st.composite
def mutated_tensor_dict(draw, tensors: dict[str, torch.Tensor]) -> bytes:
    """Safetensors bytes of `tensors` with entries dropped, renamed, reshaped or retyped."""
    tensors = dict(tensors)
    for _ in range(draw(st.integers(1, 3))):
        names = sorted(tensors)
        op = draw(st.sampled_from(["drop", "reshape", "retype", "rename", "add"]))
        if op == "add" or not names:
            name = draw(st.sampled_from(["optim.0", "optim.x.y", "optim.9.momentum_buffer"]))
            name = draw(st.one_of(st.just(name), st.sampled_from(["model.z", "rng.cpu", "x"])))
            tensors[name] = draw(
                st.sampled_from([torch.zeros(3), torch.zeros(()), torch.ones(2, 2)])
            )
            continue
        name = draw(st.sampled_from(names))
        if op == "drop":
            del tensors[name]
        elif op == "reshape":
            tensors[name] = torch.zeros(draw(st.lists(st.integers(0, 3), max_size=3)))
        elif op == "retype":
            dtype = draw(st.sampled_from([torch.float16, torch.int64, torch.bool, torch.uint8]))
            tensors[name] = tensors[name].to(dtype)
        else:
            tensors[draw(st.sampled_from(["model.w", "optim.1", "optim.a.b", "rng.cuda"]))] = (
                tensors.pop(name)
            )
    return st_save({k: v.contiguous() for k, v in tensors.items()})


def read_checkpoint(folder: Path) -> tuple[Any, torch.nn.Module]:
    model = tiny_model()
    opt = tiny_optimizer(model)
    progress = load_checkpoint(folder, model=model, optimizer=opt, scheduler=None)
    # Well-formed means usable: the restored optimiser can take a step on the restored model.
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return progress, model


def check_checkpoint(got: tuple) -> None:
    progress, model = got
    assert isinstance(progress, dict)
    assert [tuple(p.shape) for p in model.parameters()] == [(3, 4), (3,)]


@fuzz(150)
@given(checkpoint_files())
def test_checkpoint_reader_rejects_bad_records_cleanly(files):
    with scratch() as d:
        write_files(d, files)
        got = read_or_reject(lambda: read_checkpoint(d), str(d))
        if got is not None:
            check_checkpoint(got)


def test_checkpoint_original_reads():
    with scratch() as d:
        record = originals()["record"]
        write_files(
            d,
            {RECORD: dump_json(record), record["tensors_file"]: originals()["checkpoint_tensors"]},
        )
        with torch.random.fork_rng(devices=[]):
            progress, _ = read_checkpoint(d)
        assert progress == PROGRESS


# === (6) compressed model =========================================================================


@st.composite
def compressed_files(draw) -> bytes:
    raw = originals()["compressed"]
    how = draw(st.sampled_from(["meta", "meta", "tensors", "bytes"]))
    if how == "bytes":
        return draw(mutated_bytes(raw, hot=600))
    header, _ = split_safetensors(raw)
    meta = dict(header["__metadata__"])
    tensors = st_load(raw)
    if how == "tensors":
        return _with_meta(draw(mutated_compressed_tensors(tensors)), meta)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(meta) + ["extra"]))
        op = draw(st.sampled_from(["json", "json", "text", "drop"]))
        if op == "drop":
            meta.pop(key, None)
        elif op == "text":
            meta[key] = draw(
                st.one_of(st.text(max_size=10), st.sampled_from(["NaN", "{", "1e999"]))
            )
        else:
            try:
                value = json.loads(meta.get(key, "null"))
            except ValueError:
                value = meta.get(key)
            meta[key] = json.dumps(draw(mutated_json(value, max_ops=2)))
    return _with_meta(tensors, meta)


def _with_meta(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    return st_save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)


@st.composite
def mutated_compressed_tensors(draw, tensors: dict[str, torch.Tensor]) -> dict:
    tensors = dict(tensors)
    for _ in range(draw(st.integers(1, 2))):
        op = draw(st.sampled_from(["drop", "reshape", "retype", "add"]))
        names = sorted(tensors)
        if op == "add" or not names:
            name = draw(st.sampled_from(["anchor", "basis.rows", "buffer.x", "coords", "basis.q"]))
            tensors[name] = torch.zeros(draw(st.lists(st.integers(0, 30), max_size=2)))
            continue
        name = draw(st.sampled_from(names))
        if op == "drop":
            del tensors[name]
        elif op == "reshape":
            tensors[name] = torch.zeros(draw(st.lists(st.integers(0, 30), max_size=3)))
        else:
            dtype = draw(st.sampled_from([torch.float64, torch.int64, torch.bool, torch.float16]))
            tensors[name] = tensors[name].to(dtype)
    return tensors


def read_compressed(path: Path) -> tuple:
    meta, tensors = read_subspace(path)
    module, meta2 = load_subspace_model(path)

    def field(key: str) -> Any:  # decoded by the reader, or still JSON text
        value = meta2[key]
        return json.loads(value) if isinstance(value, str) else value

    out = module(torch.zeros(2, *field("input_shape")))
    return meta, tensors, module, out, int(field("num_classes"))


def check_compressed(got: tuple) -> None:
    meta, tensors, module, out, classes = got
    assert isinstance(meta, dict) and all(isinstance(k, str) for k in meta)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    assert isinstance(module, torch.nn.Module) and tuple(out.shape) == (2, classes)


@fuzz(150)
@given(compressed_files())
def test_compressed_model_reader_rejects_bad_files_cleanly(raw):
    with scratch() as d:
        path = d / "model.safetensors"
        path.write_bytes(raw)
        got = read_or_reject(lambda: read_compressed(path), str(path))
        if got is not None:
            check_compressed(got)


def test_compressed_original_reads():
    with scratch() as d:
        (d / "m.safetensors").write_bytes(originals()["compressed"])
        with torch.random.fork_rng(devices=[]):
            meta, _, _, out, classes = read_compressed(d / "m.safetensors")
        assert meta["arch"] == "mlp" and tuple(out.shape) == (2, classes) == (2, 2)


# === the smallest inputs of each bug the fuzzer found in the trajectory, checkpoint and
# compressed-model readers, kept as regression cases (each comment says what once escaped).


def _manifest_with(**changes: Any) -> dict[str, bytes]:
    files = dict(originals()["trajectory"])
    manifest = json.loads(files[MANIFEST_FILE]) | changes
    files[MANIFEST_FILE] = dump_json(manifest)
    return files


def _checkpoint_with(group: dict | None = None, **changes: Any) -> dict[str, bytes]:
    record = copy.deepcopy(originals()["record"])
    name = record["tensors_file"]
    record |= changes
    record["param_groups"][0].update(group or {})
    return {RECORD: dump_json(record), name: originals()["checkpoint_tensors"]}


def _compressed_with(drop: tuple = (), tensors: dict | None = None, **meta: str) -> bytes:
    raw = originals()["compressed"]
    header, _ = split_safetensors(raw)
    new_meta = {k: v for k, v in (header["__metadata__"] | meta).items() if k not in drop}
    new_tensors = {k: v for k, v in st_load(raw).items() if k not in drop}
    return _with_meta(new_tensors | (tensors or {}), new_meta)


def _numbers(**changes: Any) -> str:
    header, _ = split_safetensors(originals()["compressed"])
    numbers = json.loads(header["__metadata__"]["basis_numbers"]) | changes
    return json.dumps({k: v for k, v in numbers.items() if v is not ...})


REGRESSIONS = {
    # trajectory.py: an unhashable dtype in the manifest -> TypeError: unhashable type: 'list'
    "trajectory-dtype-list": ("trajectory", lambda: _manifest_with(dtype=[])),
    # checkpoint.py accepted param_groups numbers that overflow torch's float: the next
    # optimizer.step() raises RuntimeError (value cannot be converted to type float without
    # overflow) or OverflowError (can't convert negative int to unsigned)
    "checkpoint-lr-1e308": ("checkpoint", lambda: _checkpoint_with({"lr": 1.7976931348623157e308})),
    "checkpoint-dampening-1e30": ("checkpoint", lambda: _checkpoint_with({"dampening": 10**30})),
    # checkpoint.py: a tensors_file name with a newline made a two-line LowdimError message
    "checkpoint-tensors-file-newline": (
        "checkpoint",
        lambda: _checkpoint_with(tensors_file="a\nb"),
    ),
    # compress.py: missing metadata keys -> KeyError
    "compress-no-anchor-seed": ("compress", lambda: _compressed_with(drop=("anchor_seed",))),
    "compress-no-arch": ("compress", lambda: _compressed_with(drop=("arch",))),
    "compress-no-basis-kind": ("compress", lambda: _compressed_with(drop=("basis_kind",))),
    "compress-no-hidden": ("compress", lambda: _compressed_with(drop=("hidden",))),
    # compress.py: metadata that is not JSON -> json.JSONDecodeError
    "compress-anchor-seed-not-json": ("compress", lambda: _compressed_with(anchor_seed="")),
    "compress-numbers-not-json": ("compress", lambda: _compressed_with(basis_numbers="{")),
    # compress.py: JSON of the wrong type -> TypeError / ValueError
    "compress-hidden-int": ("compress", lambda: _compressed_with(hidden="7")),
    "compress-input-shape-nan": ("compress", lambda: _compressed_with(input_shape="NaN")),
    "compress-num-classes-null": ("compress", lambda: _compressed_with(num_classes="null")),
    "compress-numbers-string": ("compress", lambda: _compressed_with(basis_numbers='""')),
    # bases/gaussian.py via compress.py: bad basis numbers -> KeyError / TypeError / ValueError
    "compress-numbers-no-seed": (
        "compress",
        lambda: _compressed_with(basis_numbers=_numbers(seed=...)),
    ),
    "compress-numbers-seed-list": (
        "compress",
        lambda: _compressed_with(basis_numbers=_numbers(seed=[])),
    ),
    "compress-numbers-seed-nan": (
        "compress",
        lambda: _compressed_with(basis_numbers=_numbers(seed="nan")),
    ),
    # compress.py: tensors missing or of the wrong shape -> KeyError / RuntimeError
    "compress-no-coords": ("compress", lambda: _compressed_with(drop=("coords",))),
    "compress-coords-shape": (
        "compress",
        lambda: _compressed_with(tensors={"coords": torch.zeros(1, 1, 4)}),
    ),
    "compress-anchor-size": (
        "compress",
        lambda: _compressed_with(tensors={"anchor": torch.zeros(8)}),
    ),
    "compress-unknown-buffer": (
        "compress",
        lambda: _compressed_with(tensors={"buffer.x": torch.zeros(())}),
    ),
    "compress-basis-tensor-without-rows": (
        "compress",
        lambda: _compressed_with(tensors={"basis.q": torch.zeros(())}),
    ),
    # compress.py: torch's multi-line load_state_dict error made a two-line LowdimError (this
    # and the unknown-buffer case above); build_model's LowdimError did not name the file
    "compress-message-names-no-file": (
        "compress",
        lambda: _compressed_with(input_shape="[1, -1, 2]"),
    ),
}


@pytest.mark.parametrize("case", list(REGRESSIONS))
def test_reader_regressions(case):
    reader, build = REGRESSIONS[case]
    with scratch() as d:
        if reader == "compress":
            path = d / "model.safetensors"
            path.write_bytes(build())
            got = read_or_reject(lambda: read_compressed(path), str(path))
            if got is not None:
                check_compressed(got)
        else:
            write_files(d, build())
            read = read_trajectory if reader == "trajectory" else read_checkpoint
            got = read_or_reject(lambda: read(d), str(d))
            if got is not None:
                (check_trajectory if reader == "trajectory" else check_checkpoint)(got)

"""Parameter snapshots recorded during training, on disk, readable without loading them whole.

Layout of a trajectory folder:

    snapshots.bin    t x D values, row-major, raw little-endian (float32 by default): row i is
                     snapshot i, so a window of rows is a plain `numpy.memmap` slice
    manifest.json    format, dtype, D, the parameter layout (names, shapes, offsets), and one entry
                     per snapshot: index, epoch, step, crc32 of its bytes

Rows are appended as they come (written and flushed before the manifest names them), and the
manifest is replaced atomically, so a run killed at any moment leaves a trajectory whose manifest
lists only complete snapshots; `TrajectoryRecorder` truncates any partial row when it reopens.
For ResNet-18 on ImageNet, 121 snapshots of 11.7M floats are 5.7 GB: `Trajectory.window` returns
a memory map, and `iter_blocks` reads a window a few rows at a time.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import LowdimError, arg, is_int, is_number
from .io import atomic_write_text, crc32

FORMAT = "lowdim-trajectory-1"
DATA_FILE = "snapshots.bin"
MANIFEST_FILE = "manifest.json"
_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16}


class TrajectoryRecorder:
    """Appends flat parameter vectors to a trajectory folder.

    Args:
        path: the folder (created if needed).
        layout: the parameter layout of the flat vector (`FlatParams.layout()`), stored in the
            manifest so a reader can check it belongs to the same architecture.
        dtype: storage dtype, "float32" (default), "float64" or "float16".
        resume: reopen an existing trajectory and keep its first `keep` snapshots (default: all
            that the manifest lists); any rows past them are cut off.
        keep: with `resume`, how many snapshots to keep (a run resumed from an earlier checkpoint
            drops the snapshots it will record again).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        layout: list[dict],
        *,
        dtype: str = "float32",
        resume: bool = False,
        keep: int | None = None,
    ) -> None:
        if dtype not in _DTYPES:
            raise LowdimError(f"trajectory dtype {dtype!r} is not one of {sorted(_DTYPES)}")
        self.path = Path(path)
        self.layout = layout
        self.dtype = dtype
        self.num_params = sum(int(np.prod(e["shape"])) for e in layout)
        self.entries: list[dict] = []
        self.path.mkdir(parents=True, exist_ok=True)
        data = self.path / DATA_FILE
        if resume and (self.path / MANIFEST_FILE).exists():
            old = Trajectory(self.path, unlisted_rows_ok=True)
            if old.layout != layout or old.dtype != dtype:
                raise LowdimError(
                    f"the trajectory in {self.path} was recorded for another model or dtype"
                )
            self.entries = old.entries[: keep if keep is not None else len(old.entries)]
        elif data.exists() or (self.path / MANIFEST_FILE).exists():
            data.unlink(missing_ok=True)
        row_bytes = self.num_params * np.dtype(_DTYPES[dtype]).itemsize
        # The manifest first, then the cut: a kill between them leaves rows the manifest does
        # not name (cut at the next open), never a manifest naming rows that are gone.
        self._write_manifest()
        with open(data, "ab") as f:
            f.truncate(len(self.entries) * row_bytes)

    def __len__(self) -> int:
        return len(self.entries)

    def append(self, flat: Tensor, *, epoch: float, step: int) -> None:
        """Write one snapshot (a flat parameter vector of length D) and name it in the manifest."""
        if flat.numel() != self.num_params:
            raise ValueError(
                f"snapshot has {flat.numel()} values, trajectory expects {self.num_params}"
            )
        row = flat.detach().to("cpu", torch.float64 if self.dtype == "float64" else torch.float32)
        raw = row.numpy().astype(_DTYPES[self.dtype], copy=False).tobytes()
        with open(self.path / DATA_FILE, "ab") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        self.entries.append(
            {"index": len(self.entries), "epoch": epoch, "step": step, "crc32": crc32(raw)}
        )
        self._write_manifest()

    def _write_manifest(self) -> None:
        manifest = {
            "format": FORMAT,
            "dtype": self.dtype,
            "num_params": self.num_params,
            "layout": self.layout,
            "snapshots": self.entries,
        }
        atomic_write_text(self.path / MANIFEST_FILE, json.dumps(manifest, indent=1))


class Trajectory:
    """A recorded trajectory, read lazily through a memory map.

    `len(traj)` is the number of snapshots t; `traj.num_params` is D; `traj.entries` holds each
    snapshot's epoch and step. The manifest is validated, and the data file must hold exactly
    its rows plus at most one unlisted (partial) row; `unlisted_rows_ok` admits more, for the
    recorder reopening a trajectory it was cutting back when it was killed.
    """

    def __init__(self, path: str | os.PathLike, *, unlisted_rows_ok: bool = False) -> None:
        self.path = Path(path)
        manifest = read_manifest(self.path / MANIFEST_FILE)
        self.dtype: str = manifest["dtype"]
        self.num_params: int = manifest["num_params"]
        self.layout: list[dict] = manifest["layout"]
        self.entries: list[dict] = manifest["snapshots"]
        self._np_dtype = np.dtype(_DTYPES[self.dtype])
        row = self.num_params * self._np_dtype.itemsize
        need = len(self.entries) * row
        data = self.path / DATA_FILE
        have = data.stat().st_size if data.exists() else 0
        if have < need:
            raise LowdimError(f"{data} is truncated: {have} bytes, the manifest needs {need}")
        # A run killed inside an append leaves at most one row the manifest does not name yet;
        # more than that means the manifest does not describe this file (its dtype or D edited).
        if have > need + row and not unlisted_rows_ok:
            raise LowdimError(
                f"{data} holds {have} bytes, more than the {need} (+ one partial row) that "
                f"{len(self.entries)} snapshots of {self.num_params} {self.dtype} values need: "
                f"{self.path / MANIFEST_FILE} does not describe it"
            )

    def __len__(self) -> int:
        return len(self.entries)

    def _memmap(self) -> np.memmap:
        # Copy-on-write: writable in memory (so torch can view it without a copy), never
        # written back to the file.
        return np.memmap(
            self.path / DATA_FILE,
            dtype=self._np_dtype,
            mode="c",
            shape=(len(self.entries), self.num_params),
        )

    def _check_window(self, start: int, end: int | None, stride: int) -> range:
        end = len(self) if end is None else end
        if stride < 1:
            raise LowdimError(f"the snapshot stride must be >= 1, got {stride}")
        if not 0 <= start < end <= len(self):
            raise LowdimError(
                f"snapshot window [{start}, {end}) is outside the trajectory's 0..{len(self)} "
                f"({len(self)} snapshots in {self.path})"
            )
        return range(start, end, stride)

    def window(self, start: int = 0, end: int | None = None, stride: int = 1) -> np.ndarray:
        """Rows start, start+stride, ... < end as a memory map (nothing is loaded; changes to it
        stay in memory and never reach the file)."""
        rows = self._check_window(start, end, stride)
        return self._memmap()[rows.start : rows.stop : rows.step]

    def snapshot(self, index: int) -> Tensor:
        """Snapshot `index` as a float tensor (a copy in memory)."""
        self._check_window(index, index + 1, 1)
        return torch.from_numpy(np.array(self._memmap()[index]))

    def iter_blocks(
        self, start: int = 0, end: int | None = None, stride: int = 1, block_rows: int = 8
    ) -> Iterator[tuple[list[int], Tensor]]:
        """The window's rows `block_rows` at a time: (their indices, a (b, D) tensor copy)."""
        rows = list(self._check_window(start, end, stride))
        mm = self._memmap()
        for i in range(0, len(rows), block_rows):
            idx = rows[i : i + block_rows]
            yield idx, torch.from_numpy(np.array(mm[idx]))

    def verify(self, start: int = 0, end: int | None = None, stride: int = 1) -> None:
        """Check the window's snapshots (default: all) against their crc32 and for NaN or inf,
        in one pass; raise `LowdimError` naming the first bad snapshot."""
        rows = self._check_window(start, end, stride) if len(self) else range(0)
        mm = self._memmap() if len(self) else None
        for i in rows:
            if crc32(mm[i]) != self.entries[i]["crc32"]:
                raise LowdimError(self.checksum_error(i))
            if not np.isfinite(mm[i]).all():
                raise LowdimError(self.nonfinite_error([i]))

    def checksum_error(self, index: int) -> str:
        return (
            f"snapshot {index} in {self.path / DATA_FILE} fails its crc32 checksum: the file was "
            "damaged after it was written; record the trajectory again (train-sgd in a new "
            f"{arg('save_dir')})"
        )

    def nonfinite_error(self, indices: Sequence[int]) -> str:
        first = indices[0]
        return (
            f"snapshot {first} in {self.path} holds NaN or inf values (training diverged there?): "
            f"choose a window that ends before it ({arg('params_end', first)}) or record the "
            "trajectory again with a lower learning rate"
            + (f" (also non-finite: {', '.join(map(str, indices[1:6]))})" if indices[1:] else "")
        )

    def checks(self, start: int = 0, end: int | None = None, stride: int = 1) -> WindowChecks:
        """The checks of a window that `pca_of_rows` folds into the pass that reads it."""
        return WindowChecks(self, list(self._check_window(start, end, stride)))


class WindowChecks:
    """crc32 and finiteness checks of a window's snapshots, folded into a pass that reads the
    window column block by column block (the Gram accumulation of PCA): crc32 runs over each
    row's bytes in order, so it can be fed the blocks as they come and costs no extra pass.
    The blocks are fed in runs of about `RUN_BYTES` over all rows (the last few blocks, still
    in the last-level cache), so that one crc32 call covers enough bytes to hide its cost:
    measured 2.4% of a PCA of 81 x 270,000 (benchmarks/bench_integrity.py)."""

    RUN_BYTES = 16 << 20

    def __init__(self, trajectory: Trajectory, rows: list[int]) -> None:
        self.trajectory, self.rows = trajectory, rows
        mm = trajectory._memmap()
        self._bytes = [memoryview(mm[i]).cast("B") for i in rows]
        self._crcs = [0] * len(rows)
        self._itemsize = mm.dtype.itemsize
        self._done = 0  # bytes of each row already in its crc32
        self._run = max(64 << 10, self.RUN_BYTES // max(1, len(rows)))  # bytes per row

    def update(self, end_col: int) -> None:
        """Every row's columns before `end_col` have been read (blocks come in order)."""
        if end_col * self._itemsize - self._done >= self._run:
            self._feed(end_col * self._itemsize)

    def _feed(self, upto: int) -> None:
        lo = self._done
        for k, view in enumerate(self._bytes):
            self._crcs[k] = crc32(view[lo:upto], self._crcs[k])
        self._done = upto

    def verify_checksums(self) -> None:
        """After the last block: raise `LowdimError` naming the first snapshot that differs."""
        if self._bytes and self._done < len(self._bytes[0]):
            self._feed(len(self._bytes[0]))
        entries = self.trajectory.entries
        for i, crc in zip(self.rows, self._crcs, strict=True):
            if crc != entries[i]["crc32"]:
                raise LowdimError(self.trajectory.checksum_error(i))

    def nonfinite_error(self) -> LowdimError:
        """The error naming the window's non-finite snapshots (a pass, only on failure)."""
        mm = self.trajectory._memmap()
        bad = [i for i in self.rows if not np.isfinite(mm[i]).all()]
        return LowdimError(self.trajectory.nonfinite_error(bad or self.rows[:1]))


def read_manifest(path: Path) -> dict:
    """A trajectory manifest, validated: the format, a dtype lowdim writes, D equal to the
    layout's total, and one well-formed entry per snapshot; else `LowdimError` naming the file
    and the field."""
    if not path.exists():
        raise LowdimError(f"no trajectory in {path.parent} (missing {MANIFEST_FILE})")

    def bad(what: str) -> LowdimError:
        return LowdimError(f"{path} is not a valid lowdim trajectory manifest: {what}")

    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise bad(f"cannot read it as JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise bad(f"a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT:
        raise bad(f"format {manifest.get('format')!r}, expected {FORMAT!r}")
    if not isinstance(manifest.get("dtype"), str) or manifest["dtype"] not in _DTYPES:
        raise bad(f"dtype {manifest.get('dtype')!r} is not one of {sorted(_DTYPES)}")
    num_params, layout = manifest.get("num_params"), manifest.get("layout")
    if not is_int(num_params, 1):
        raise bad(f"num_params {num_params!r} is not a positive integer")
    if not isinstance(layout, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("name"), str)
        and isinstance(e.get("shape"), list)
        and all(is_int(n, 0) for n in e["shape"])
        for e in layout
    ):
        raise bad("layout is not a list of {name, shape} entries")
    total = sum(math.prod(e["shape"]) for e in layout)
    if total != num_params:
        raise bad(f"num_params {num_params} differs from its layout's {total} parameters")
    snapshots = manifest.get("snapshots")
    if not isinstance(snapshots, list):
        raise bad(f"snapshots is a {type(snapshots).__name__}, not a list")
    for i, e in enumerate(snapshots):
        if not (
            isinstance(e, dict)
            and e.get("index") == i
            and is_int(e.get("index"), 0)
            and is_int(e.get("step"), 0)
            and is_number(e.get("epoch"))
            and math.isfinite(e["epoch"])
            and is_int(e.get("crc32"), 0)
            and e["crc32"] < 2**32
        ):
            raise bad(f"snapshot entry {i} is not {{index: {i}, epoch, step, crc32}}: {e!r:.80}")
    return manifest

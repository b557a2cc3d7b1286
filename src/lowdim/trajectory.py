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
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import LowdimError
from .io import atomic_write_text

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
            old = Trajectory(self.path)
            if old.layout != layout or old.dtype != dtype:
                raise LowdimError(
                    f"the trajectory in {self.path} was recorded for another model or dtype"
                )
            self.entries = old.entries[: keep if keep is not None else len(old.entries)]
        elif data.exists() or (self.path / MANIFEST_FILE).exists():
            data.unlink(missing_ok=True)
        row_bytes = self.num_params * np.dtype(_DTYPES[dtype]).itemsize
        with open(data, "ab") as f:
            f.truncate(len(self.entries) * row_bytes)
        self._write_manifest()

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
            {"index": len(self.entries), "epoch": epoch, "step": step, "crc32": zlib.crc32(raw)}
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
    snapshot's epoch and step.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST_FILE
        if not manifest_path.exists():
            raise LowdimError(f"no trajectory in {self.path} (missing {MANIFEST_FILE})")
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest["format"] != FORMAT:
                raise ValueError(manifest["format"])
            self.dtype: str = manifest["dtype"]
            self.num_params: int = int(manifest["num_params"])
            self.layout: list[dict] = manifest["layout"]
            self.entries: list[dict] = manifest["snapshots"]
        except (ValueError, KeyError, TypeError) as e:
            raise LowdimError(
                f"{manifest_path} is not a lowdim trajectory manifest ({e})"
            ) from None
        self._np_dtype = np.dtype(_DTYPES[self.dtype])
        need = len(self.entries) * self.num_params * self._np_dtype.itemsize
        have = (self.path / DATA_FILE).stat().st_size if (self.path / DATA_FILE).exists() else 0
        if have < need:
            raise LowdimError(
                f"{self.path / DATA_FILE} is truncated: {have} bytes, the manifest needs {need}"
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

    def verify(self) -> None:
        """Check every snapshot's crc32 against the manifest; raise `LowdimError` on a mismatch."""
        mm = self._memmap()
        for e in self.entries:
            if zlib.crc32(mm[e["index"]].tobytes()) != e["crc32"]:
                raise LowdimError(f"snapshot {e['index']} in {self.path} fails its checksum")

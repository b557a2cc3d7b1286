"""Atomic file writes: a temporary file in the same folder, flushed, then renamed over the target.

A reader (or a later run) therefore sees either the old file or the complete new one, never a
half-written result, even when the writer is killed mid-write.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` to produce the file, then atomically rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata=None) -> None:
    """Save named tensors as safetensors, atomically (contiguous CPU copies, shared storage ok)."""
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}

    def write(tmp: str) -> None:
        save_file(clean, tmp, metadata=metadata)

    atomic_write(path, write)


def load_tensors(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Load a safetensors file (no code runs, unlike a pickle).

    Each tensor is cloned into memory of torch's own: safetensors places them at the file's byte
    offsets, and BLAS reductions over a misaligned tensor can round differently, which would
    break bit-exact resume.
    """
    return {k: v.clone() for k, v in load_file(str(path), device=str(device)).items()}

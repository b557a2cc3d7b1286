"""Atomic file writes: a temporary file in the same folder, flushed, then renamed over the target.

A reader (or a later run) therefore sees either the old file or the complete new one, never a
half-written result, even when the writer is killed mid-write.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import LowdimError


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


try:  # zlib-ng's crc32 is zlib's function, about 5x faster (carry-less multiplication)
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover - zlib-ng is a dependency; stay usable without it
    from zlib import crc32

# The metadata key under which `save_tensors` stores the crc32 `tensors_digest` of its tensors.
DIGEST_KEY = "lowdim_tensors_crc32"


def tensors_digest(tensors: dict[str, torch.Tensor], algorithm: str = "crc32") -> str:
    """A digest of named tensors (names, dtypes, shapes and bytes, in name order): "crc32"
    (default; at memory speed, for damage) or "sha256" (what a compressed model pins)."""
    h = hashlib.sha256() if algorithm == "sha256" else None
    crc = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        parts = [f"{name}|{t.dtype}|{tuple(t.shape)}|".encode()]
        if t.numel():
            parts.append(t.reshape(-1).view(torch.uint8).numpy().data)
        for part in parts:
            if h is not None:
                h.update(part)
            else:
                crc = crc32(part, crc)
    return h.hexdigest() if h is not None else f"{crc:08x}"


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata=None) -> None:
    """Save named tensors as safetensors, atomically (contiguous CPU copies, shared storage ok),
    with their crc32 `tensors_digest` in the metadata so a reader can tell a damaged file."""
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    metadata = {**(metadata or {}), DIGEST_KEY: tensors_digest(clean)}

    def write(tmp: str) -> None:
        save_file(clean, tmp, metadata=metadata)

    atomic_write(path, write)


def read_tensors(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata of a safetensors file (no code runs, unlike a pickle).

    Each tensor is cloned into memory of torch's own: safetensors places them at the file's byte
    offsets, and BLAS reductions over a misaligned tensor can round differently, which would
    break bit-exact resume. A missing, damaged or hostile file, or one whose tensors differ from
    the digest `save_tensors` stored, raises `LowdimError` naming it.
    """
    device = str(torch.device(device))  # a bad device is the caller's error, not the file's
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    except (OSError, SafetensorError, ValueError, TypeError, RuntimeError, OverflowError) as e:
        # A damaged or hostile file: bad header length, a header that is not a JSON object,
        # offsets out of range, an unknown dtype (safetensors checks them all before mapping).
        reason = " ".join(str(e).split()) or type(e).__name__
        raise LowdimError(f"cannot read the tensors file {path}: {reason}") from None
    if DIGEST_KEY in metadata and metadata[DIGEST_KEY] != tensors_digest(tensors):
        raise LowdimError(
            f"the tensors in {path} differ from the digest stored when it was written: the file "
            "is damaged"
        )
    return tensors, metadata


def load_tensors(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, checked as `read_tensors` does."""
    return read_tensors(path, device)[0]


def first_nonfinite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating tensor holding NaN or inf, or None."""
    return next(
        (k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()),
        None,
    )

"""The IDX file format of MNIST and Fashion-MNIST, gzipped or raw, parsed with numpy.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import numpy as np

from lowdim.errors import LowdimError

# Type code (third magic byte) -> big-endian numpy dtype.
_IDX_TYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"
# The most dimensions a numpy array can have in every numpy lowdim supports (1.x allows 32).
_MAX_DIMS = 32


def read_payload(path: str | os.PathLike) -> bytes:
    """The decompressed bytes of an IDX file; gzip is recognised by its magic, not its name.

    Raises `LowdimError` naming the file if it cannot be read or its gzip stream is corrupt.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LowdimError(f"cannot read {os.fspath(path)}: {e.strerror or e}") from None
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise LowdimError(
                f"{os.fspath(path)} is not a valid gzip file ({reason}); delete it and fetch it "
                "again"
            ) from None
    return data


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a read-only array in native byte order (a view for uint8 data).

    `name` is only used in error messages. Raises `LowdimError` on a bad magic number or when the
    length differs from what the header announces (a truncated or padded file).
    """
    if len(data) < 4:
        raise LowdimError(f"{name} is truncated: {len(data)} bytes, too short for an IDX header")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _IDX_TYPES or ndim == 0:
        raise LowdimError(
            f"{name} is not an IDX file: magic 0x{data[:4].hex()}, expected 0x0000TTDD with type "
            f"TT in {{08, 09, 0b, 0c, 0d, 0e}} and DD >= 1 dimensions"
        )
    if ndim > _MAX_DIMS:
        raise LowdimError(
            f"{name} declares {ndim} dimensions in its IDX header; at most {_MAX_DIMS} are valid"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise LowdimError(f"{name} is truncated: {len(data)} bytes, header needs {header}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[code])
    # Python integers: a product of 32-bit sizes can overflow int64 and wrap to a small number.
    # numpy refuses a shape whose nonzero sizes overflow even when another size is 0.
    if math.prod(max(n, 1) for n in shape) * dtype.itemsize > np.iinfo(np.intp).max:
        raise LowdimError(f"{name} declares an impossible shape {list(shape)} in its IDX header")
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long"
        raise LowdimError(
            f"{name} is {what}: {len(data)} bytes, its header {list(shape)} needs {expected}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    if dtype.itemsize > 1:
        # Big-endian multi-byte values: convert once to native order for torch and arithmetic.
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a writable numpy array of its declared shape.

    Raises `LowdimError` naming the file if it is unreadable, not IDX, truncated or too long.
    """
    # Copy so that callers get an ordinary writable array rather than a view on immutable bytes.
    return parse_idx(read_payload(path), os.fspath(path)).copy()

"""A pickle reader that can rebuild numpy arrays and nothing else.

The CIFAR batches are Python pickles, and unpickling can call any importable function. This
unpickler resolves only the few globals that pickled uint8/int arrays refer to, so a tampered
file fails to load instead of running code.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
from typing import Any

import numpy as np

from lowdim.errors import LowdimError

# Take numpy's reconstruction helpers from its own pickling hooks: this stays correct whether
# numpy calls its private package `numpy.core` (1.x) or `numpy._core` (2.x).
_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # multiarray._reconstruct (protocols 0-4)
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # numeric._frombuffer (protocol 5)
_SCALAR = np.uint8(0).__reduce__()[0]  # multiarray.scalar (numpy scalars, e.g. np.int64 labels)


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 pickles bytes at protocols 0-2 as _codecs.encode(str, "latin1"); admit only that,
    # so no other codec can be reached through this door.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1", errors)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _RECONSTRUCT
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = _SCALAR
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _FROMBUFFER
_ALLOWED[("_codecs", "encode")] = _latin1_encode


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose `find_class` admits only numpy array reconstruction."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is forbidden in a dataset file"
            ) from None


def _str_keys(obj: Any) -> Any:
    # Python 2 pickles read with encoding="bytes" have bytes keys; Python 3 ones have str keys.
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    return obj


def load_pickle(path: str | os.PathLike) -> Any:
    """Unpickle `path` with `RestrictedUnpickler` (encoding "bytes"); dict keys become `str`.

    Any failure - missing file, truncation, a forbidden global, garbage - is a `LowdimError`
    naming the file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LowdimError(f"cannot read {os.fspath(path)}: {e.strerror or e}") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - a corrupt pickle can raise almost anything
        reason = " ".join(str(e).split()) or type(e).__name__
        raise LowdimError(
            f"{os.fspath(path)} is not a valid dataset pickle ({reason}); delete it and fetch it "
            f"again"
        ) from None
    return _str_keys(obj)

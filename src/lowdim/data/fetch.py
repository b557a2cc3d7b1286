"""Where dataset files are looked for, and how they are downloaded when the user asks for it."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from lowdim.errors import LowdimError

ENV_VAR = "LOWDIM_DATA"
"""Environment variable naming a folder that holds datasets (itself or one subfolder each)."""

_CHUNK = 1 << 20
_TIMEOUT_S = 60


def cache_root() -> Path:
    """`~/.cache/lowdim`: where downloads go when neither a data dir nor $LOWDIM_DATA is set."""
    return Path.home() / ".cache" / "lowdim"


def candidate_dirs(
    data_dir: str | os.PathLike | None, subdir: str, extra: Sequence[str] = ()
) -> list[Path]:
    """The folders to search, in order: `data_dir`, `data_dir/subdir`, the same two under
    `$LOWDIM_DATA`, then `extra` (system-wide copies such as Debian's), then
    `~/.cache/lowdim/subdir`, so that an earlier download is found without asking again."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        roots.append(Path(env).expanduser())
    dirs: list[Path] = []
    for root in roots:
        dirs += [root, root / subdir]
    dirs += [Path(p) for p in extra]
    dirs.append(cache_root() / subdir)
    # Drop repeats (data_dir may equal $LOWDIM_DATA) while keeping the order.
    return list(dict.fromkeys(dirs))


def download_dir(data_dir: str | os.PathLike | None, subdir: str) -> Path:
    """Where a download goes: `data_dir` itself, else `$LOWDIM_DATA/subdir`, else
    `~/.cache/lowdim/subdir`."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser() / subdir
    return cache_root() / subdir


def describe_dirs(dirs: Sequence[Path]) -> str:
    """The searched folders for an error message, with the environment variable noted if unset."""
    text = ", ".join(str(d) for d in dirs) or "no folder"
    if not os.environ.get(ENV_VAR):
        text += f" (${ENV_VAR} unset)"
    return text


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def download(urls: Sequence[str], dest: Path, md5: str | None) -> Path:
    """Fetch the first of `urls` that works into the file `dest`, checking its md5 if given.

    The bytes go to a temporary file next to `dest` that replaces it only once complete and
    verified, so an interrupted or corrupt download never leaves a partial `dest` behind.
    Raises `LowdimError` listing every URL tried and why it failed.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LowdimError(f"cannot create download folder {dest.parent}: {e.strerror}") from None
    if md5 is not None and dest.is_file() and _md5_of(dest) == md5:
        return dest  # fetched by an earlier run that stopped before using it
    failures = []
    for url in urls:
        try:
            _fetch_to(url, dest, md5)
            return dest
        except (OSError, urllib.error.URLError, ValueError) as e:
            # URLError is an OSError; ValueError covers malformed URLs and the md5 mismatch.
            reason = getattr(e, "reason", None) or e
            failures.append(f"{url}: {_one_line(reason)}")
    raise LowdimError(
        f"could not download {dest.name} (tried {'; '.join(failures) or 'no mirror'}); "
        f"check the network or put the file in {dest.parent} yourself"
    )


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_to(url: str, dest: Path, md5: str | None) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        request = urllib.request.Request(url, headers={"User-Agent": "lowdim"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=_TIMEOUT_S) as r:
            while chunk := r.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if md5 is not None and digest.hexdigest() != md5:
            raise ValueError(f"md5 {digest.hexdigest()} differs from the expected {md5}")
        os.replace(tmp, dest)
    except BaseException:
        # Whatever went wrong (including Ctrl-C), leave no partial file behind.
        Path(tmp).unlink(missing_ok=True)
        raise

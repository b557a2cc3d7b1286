"""Compressed networks of lowdim's zoo: the subspace file of `lowdim.compress` with the arch,
dataset and shapes recorded beside it, so that the file alone rebuilds its network (what
`lowdim compress` and `lowdim evaluate` read and write). A user's own module loads with
`SubspaceModel.load(module, path)` instead.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from .compress import load_subspace, read_subspace, save_subspace
from .errors import LowdimError
from .models import build_model
from .subspace_model import SubspaceModel


def save_subspace_model(
    path: str | Path,
    model: SubspaceModel,
    *,
    arch: str,
    dataset: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    anchor_seed: int | None,
    hidden=None,
    test_acc: float | None = None,
) -> None:
    """A zoo network's compressed file: `save_subspace` plus the names `load_subspace_model`
    rebuilds it from. `anchor_seed` is the torch seed `lowdim.build_model` built the anchor
    under; None stores the anchor itself (D numbers)."""
    zoo = {
        "arch": arch,
        "dataset": dataset,
        "hidden": list(hidden) if hidden else None,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "test_acc": test_acc,
    }
    save_subspace(path, model, store_anchor=anchor_seed is None, anchor_seed=anchor_seed, extra=zoo)


def load_subspace_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Rebuild a zoo network from its compressed file: (plain module with theta, metadata)."""
    meta, _ = read_subspace(path)
    if "arch" not in meta:
        raise LowdimError(
            f"{path} holds a model outside lowdim's zoo: load it onto your own module with "
            "SubspaceModel.load(module, path)"
        )
    options = {"hidden": tuple(meta["hidden"])} if meta["hidden"] else {}
    try:
        with torch.random.fork_rng(devices=[]):  # the anchor's seed, not the caller's stream
            torch.manual_seed(meta["anchor_seed"] if meta["anchor_seed"] is not None else 0)
            module = build_model(
                meta["arch"], tuple(meta["input_shape"]), meta["num_classes"], **options
            )
    except (LowdimError, TypeError, ValueError, RuntimeError) as e:
        raise LowdimError(f"{path}: {' '.join(str(e).split())[:300]}") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sub = load_subspace(module, path, device=device)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return sub.export(), meta

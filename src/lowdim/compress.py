"""A trained subspace model stored as (architecture, basis seed, anchor seed, c).

The file is safetensors: the tensors `coords` (d numbers) and `buffer.<name>` (BatchNorm
statistics, if any), plus `basis.<name>` and `anchor` only when the basis or the anchor cannot
be regenerated from a seed; the metadata names the architecture, the dataset's shapes, the
anchor seed and the basis (kind and numbers). `load_subspace_model` rebuilds theta = anchor + P c
from that alone: the anchor from the model zoo under the anchor seed, P from its seed. On the
same device and library version the rebuilt weights equal the trained ones exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .bases.base import basis_from_state
from .errors import LowdimError
from .io import save_tensors
from .models import build_model
from .subspace_model import SubspaceModel

FORMAT = "lowdim-subspace-1"


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
    """Write `model` (a trained SubspaceModel) in the compressed format, atomically.

    `anchor_seed` is the torch seed the anchor was built under by `lowdim.build_model`; pass
    None to store the anchor tensor itself (D numbers) instead.
    """
    state = model.basis.state_dict()
    tensors = {"coords": model.coords.detach()}
    tensors.update({f"basis.{k}": v for k, v in state["tensors"].items()})
    tensors.update({f"buffer.{k}": v for k, v in model.module.named_buffers()})
    if anchor_seed is None:
        tensors["anchor"] = model.anchor
    meta = {
        "format": FORMAT,
        "arch": arch,
        "dataset": dataset,
        "hidden": json.dumps(hidden),
        "input_shape": json.dumps(list(input_shape)),
        "num_classes": str(num_classes),
        "anchor_seed": json.dumps(anchor_seed),
        "basis_kind": state["kind"],
        "basis_numbers": json.dumps(state["numbers"]),
        "test_acc": json.dumps(test_acc),
    }
    save_tensors(path, tensors, metadata=meta)


def read_meta(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    except (OSError, SafetensorError) as e:
        raise LowdimError(f"cannot read {path}: {e}") from None
    if meta.get("format") != FORMAT:
        raise LowdimError(f"{path} is not a lowdim compressed model (format {meta.get('format')})")
    return meta, tensors


def load_subspace_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Rebuild the network from a compressed file: (plain module with theta, metadata)."""
    meta, tensors = read_meta(path)
    hidden = json.loads(meta["hidden"])
    options = {"hidden": tuple(hidden)} if hidden else {}
    anchor_seed = json.loads(meta["anchor_seed"])
    torch.manual_seed(anchor_seed if anchor_seed is not None else 0)
    module = build_model(
        meta["arch"], tuple(json.loads(meta["input_shape"])), int(meta["num_classes"]), **options
    )
    basis = basis_from_state(
        {
            "kind": meta["basis_kind"],
            "numbers": json.loads(meta["basis_numbers"]),
            "tensors": {
                k[len("basis.") :]: v for k, v in tensors.items() if k.startswith("basis.")
            },
        }
    )
    buffers = {k[len("buffer.") :]: v for k, v in tensors.items() if k.startswith("buffer.")}
    module.load_state_dict({**module.state_dict(), **buffers})
    module = module.to(device)
    sub = SubspaceModel(module, basis.to(device), anchor=tensors.get("anchor"))
    with torch.no_grad():
        sub.coords.copy_(tensors["coords"])
    return sub.export(), meta

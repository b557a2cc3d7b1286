"""A trained subspace model stored as (architecture, basis seed, anchor seed, c).

The file is safetensors: the tensors `coords` (d numbers) and `buffer.<name>` (BatchNorm
statistics, if any), plus `basis.<name>` and `anchor` only when the basis or the anchor cannot
be regenerated from a seed; the metadata names the architecture, the dataset's shapes, the
anchor seed, the basis (kind and numbers) and `weights_sha256`, a digest of the network it
encodes (every parameter and buffer of theta = anchor + P c). `load_subspace_model` rebuilds
theta from the seeds alone and refuses the file unless the rebuilt network has that digest: a
changed seed, a damaged number or another device's generator stream cannot pass for the trained
model. On the same device and library version the rebuilt weights equal the trained ones
exactly; files of format 1 (no digest) still load, with a warning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

from .bases.base import basis_from_state
from .errors import LowdimError
from .io import read_tensors, save_tensors, tensors_digest
from .models import build_model
from .subspace_model import SubspaceModel

FORMAT = "lowdim-subspace-2"
UNPINNED_FORMAT = "lowdim-subspace-1"  # before the weights digest


def weights_digest(module: nn.Module) -> str:
    """The digest of every parameter and buffer of `module` (so it pins frozen parameters and
    BatchNorm statistics too)."""
    return tensors_digest(module.state_dict(), "sha256")


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
        "weights_sha256": weights_digest(model.export()),
    }
    save_tensors(path, tensors, metadata=meta)


def read_meta(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The metadata (JSON fields decoded and type-checked) and tensors of a compressed file."""
    tensors, meta = read_tensors(path)
    if meta.get("format") not in (FORMAT, UNPINNED_FORMAT):
        raise LowdimError(f"{path} is not a lowdim compressed model (format {meta.get('format')})")
    out: dict = {"format": meta["format"]}
    fields = {
        "arch": (str, False),
        "dataset": (str, False),
        "basis_kind": (str, False),
        "hidden": ((list, type(None)), True),
        "input_shape": (list, True),
        "num_classes": (int, True),
        "anchor_seed": ((int, type(None)), True),
        "basis_numbers": (dict, True),
        "test_acc": ((int, float, type(None)), True),
    }
    if meta["format"] == FORMAT:
        fields["weights_sha256"] = (str, False)
    for key, (kind, is_json) in fields.items():
        if key not in meta:
            raise LowdimError(f"{path}: its metadata lacks {key!r}; the file is damaged")
        try:
            value = json.loads(meta[key]) if is_json else meta[key]
        except ValueError:
            raise LowdimError(f"{path}: metadata {key!r} is not JSON ({meta[key]!r:.40})") from None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise LowdimError(f"{path}: metadata {key!r} has a wrong type ({value!r:.40})")
        out[key] = value
    shapes_ok = all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in out["input_shape"]
    )
    if not shapes_ok or out["num_classes"] < 1:
        raise LowdimError(f"{path}: metadata input_shape / num_classes are not positive integers")
    if "coords" not in tensors or tensors["coords"].dim() != 1:
        raise LowdimError(f"{path} holds no coordinate vector 'coords'; the file is damaged")
    return out, tensors


def load_subspace_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Rebuild the network from a compressed file: (plain module with theta, metadata).

    Raises `LowdimError` when the file is damaged, or when the rebuilt network does not have
    the digest stored at saving (a changed seed or number, or a basis regenerated on another
    device or library version: save those with their tensors)."""
    meta, tensors = read_meta(path)
    hidden = meta["hidden"]
    options = {"hidden": tuple(hidden)} if hidden else {}
    anchor_seed = meta["anchor_seed"]
    try:
        # the anchor is built under its seed without disturbing the caller's random stream
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(anchor_seed if anchor_seed is not None else 0)
            module = build_model(
                meta["arch"], tuple(meta["input_shape"]), meta["num_classes"], **options
            )
        basis = basis_from_state(
            {
                "kind": meta["basis_kind"],
                "numbers": meta["basis_numbers"],
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
        rebuilt = sub.export()
    except LowdimError as e:
        raise LowdimError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, OverflowError) as e:
        why = " ".join(str(e).split())[:300]  # torch's messages span lines
        raise LowdimError(
            f"{path} does not rebuild a network ({type(e).__name__}: {why})"
        ) from None
    if meta["format"] == UNPINNED_FORMAT:
        print(
            f"warning: {path} predates weight digests; nothing checks that it rebuilds the "
            "trained network",
            file=sys.stderr,
        )
    elif weights_digest(rebuilt) != meta["weights_sha256"]:
        raise LowdimError(
            f"{path} does not rebuild the network it was saved from (its weights digest "
            "differs): the file was changed or damaged, or its seeds regenerate differently on "
            "this device or lowdim version"
        )
    return rebuilt, meta

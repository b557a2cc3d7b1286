"""Saving and loading a trained `SubspaceModel`, PEFT-style: a few numbers instead of D.

One safetensors file holds, under prefixed names,

    coords            c, the d trained coordinates
    basis.<name>      the basis's tensors, only where it keeps them (`store_tensors`); a seeded
                      basis is otherwise stored as its seed and sizes alone
    buffer.<name>     the module's buffers (BatchNorm statistics, ...): training changes them
    direct.<name>     the parameters trained directly beside c (`SubspaceModel(direct=...)`)
    scales            SAID's per-layer scales, where the model has them
    anchor, frozen.<name>   theta_0 and the frozen parameters, only with `store_anchor`

and in its metadata (each value JSON) the format, `layout_sha256` (a digest of the layout of
theta: its names and shapes, listed in full in subspace_config.json), the basis's kind and
numbers, `anchor_sha256` (a digest of the anchor and the frozen parameters) and
`weights_sha256` (a digest of every parameter and buffer of the reconstructed network).
`save_subspace(directory, ...)` also writes that metadata as `subspace_config.json`, for reading.

Without `store_anchor`, the anchor is not stored: `load_subspace(module, path)` takes it from
the module the user rebuilt (under the same seed, or from the same pretrained weights) and
refuses a module whose anchor digest differs, instead of silently training-free garbage. The
zoo's compressed models (`lowdim compress`, `evaluate`) are the same files plus the zoo's names
(arch, dataset, shapes, the anchor's seed; see `lowdim.compress_zoo`), so
`load_subspace_model(path)` rebuilds the module itself. A pretrained base model is referenced
the same way: not stored, pinned by the anchor digest, its name in `extra`. Loading never
touches the caller's random state. Files of format 3 (the whole layout in the file) and 2 (no
layout or anchor digest) still load; format 1 (no weights digest either) loads with a warning.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from .bases.base import basis_from_state, no_saved_form
from .errors import LowdimError
from .io import atomic_write_json, read_tensors, save_tensors, tensors_digest
from .params import matches, trainable_parameters
from .subspace_model import SubspaceModel

FORMAT = "lowdim-subspace-4"
# 3: the whole layout in the file's metadata; 2: no layout or anchor digest; 1: no weights digest
OLDER_FORMATS = ("lowdim-subspace-3", "lowdim-subspace-2", "lowdim-subspace-1")
FILE = "subspace.safetensors"
CONFIG_FILE = "subspace_config.json"
# metadata key -> accepted JSON types; the zoo's keys are optional
REQUIRED = {
    "basis_kind": (str,),
    "basis_numbers": (dict,),
    "anchor_seed": (int, type(None)),
}
ZOO = {
    "arch": (str,),
    "dataset": (str,),
    "hidden": (list, type(None)),
    "input_shape": (list,),
    "num_classes": (int,),
    "test_acc": (int, float, type(None)),
}
DIGESTS = {"anchor_sha256": (str,), "weights_sha256": (str,)}
# The file pins the layout by its digest (a BERT's 105 names and shapes would be 7 kB of the
# file); subspace_config.json beside it lists the layout itself.
NEWER = {"layout_sha256": (str,), **DIGESTS}
OPTIONAL = {"direct": (list,), "layer_scales": (str, type(None))}  # absent: () and None
TEXT = {
    "arch",
    "dataset",
    "basis_kind",
    "anchor_sha256",
    "weights_sha256",
    "layout_sha256",
}  # stored as is, not JSON


def weights_digest(module: nn.Module) -> str:
    """sha256 of every parameter and buffer of `module` (frozen ones and statistics too)."""
    return tensors_digest(module.state_dict(), "sha256")


def _frozen(module: nn.Module, theta: set[str], direct) -> dict[str, torch.Tensor]:
    """The module's parameters outside theta and not trained directly (frozen before
    wrapping): what the anchor digest pins beside theta_0."""
    trained = set(_direct(module, direct))
    return {
        n: p.detach() for n, p in module.named_parameters() if n not in theta and n not in trained
    }


def _direct(module: nn.Module, patterns) -> dict[str, nn.Parameter]:
    """The parameters of `module` trained directly beside the subspace."""
    return {n: p for n, p in module.named_parameters() if p.requires_grad and matches(n, patterns)}


def layout_digest(layout: list) -> str:
    """sha256 of theta's layout ([name, shape] per parameter) as compact JSON."""
    return hashlib.sha256(json.dumps(layout, separators=(",", ":")).encode()).hexdigest()


def anchor_digest(anchor: torch.Tensor, frozen: dict[str, torch.Tensor]) -> str:
    """sha256 of what the subspace is attached to: theta_0 and the frozen parameters."""
    return tensors_digest(
        {"anchor": anchor, **{f"frozen.{k}": v for k, v in frozen.items()}}, "sha256"
    )


def save_subspace(
    path: str | Path,
    model: SubspaceModel,
    *,
    store_anchor: bool = False,
    anchor_seed: int | None = None,
    extra: dict | None = None,
) -> None:
    """Write `model` atomically: to `path` if it ends in .safetensors, else into the directory
    `path` (created) as subspace.safetensors and subspace_config.json.

    store_anchor (default False): also store theta_0 and the frozen parameters (D numbers), for
    an anchor nobody can rebuild; anchor_seed (default None): the seed the module was built
    under, recorded so a reader knows how to rebuild it; extra: more JSON metadata (the zoo's
    arch, dataset, shapes).
    """
    state = model.basis.state_dict()
    if not state["kind"]:  # refused before a file is written that no loader could read
        raise no_saved_form(f"the model's basis (a {type(model.basis).__name__})")
    module = model.module
    frozen = _frozen(model.module, {s.name for s in model.specs}, model.direct)
    tensors = {"coords": model.coords.detach()}
    tensors.update({f"basis.{k}": v for k, v in state["tensors"].items()})
    persistent = module.state_dict()  # buffers that load_state_dict takes (not rebuilt ones)
    tensors.update({f"buffer.{k}": v for k, v in module.named_buffers() if k in persistent})
    tensors.update({f"direct.{k}": v.detach() for k, v in _direct(module, model.direct).items()})
    if model.scales is not None:
        tensors["scales"] = model.scales.detach()
    if store_anchor:
        tensors["anchor"] = model.anchor
        tensors.update({f"frozen.{k}": v for k, v in frozen.items()})
    layout = [[s.name, list(s.shape)] for s in model.specs]
    meta = {
        **(extra or {}),
        "layout_sha256": layout_digest(layout),
        "basis_kind": state["kind"],
        "basis_numbers": state["numbers"],
        "anchor_seed": anchor_seed,
        "direct": list(model.direct),
        "layer_scales": model.layer_scales,
        "anchor_sha256": anchor_digest(model.anchor, frozen),
        "weights_sha256": weights_digest(model.export()),
    }
    path = Path(path)
    encoded = {k: v if k in TEXT else json.dumps(v) for k, v in meta.items()}
    if path.suffix == ".safetensors":
        save_tensors(path, tensors, metadata={"format": FORMAT, **encoded})
        return
    path.mkdir(parents=True, exist_ok=True)
    # the file the loader reads first; the readable copy of its metadata after it
    save_tensors(path / FILE, tensors, metadata={"format": FORMAT, **encoded})
    atomic_write_json(path / CONFIG_FILE, {"format": FORMAT, **meta, "layout": layout})


def read_subspace(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The metadata (decoded, type-checked) and tensors of a saved subspace model (a file, or
    a directory holding subspace.safetensors)."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE
    tensors, raw = read_tensors(path)
    fmt = raw.get("format")
    if fmt != FORMAT and fmt not in OLDER_FORMATS:
        raise LowdimError(f"{path} is not a lowdim subspace model (format {fmt!r})")
    wanted = dict(REQUIRED)
    if fmt == FORMAT:
        wanted |= NEWER
    elif fmt == "lowdim-subspace-3":
        wanted |= {"layout": (list,), **DIGESTS}
    elif fmt == "lowdim-subspace-2":
        wanted["weights_sha256"] = (str,)
    if fmt not in (FORMAT, "lowdim-subspace-3") or "arch" in raw:
        wanted |= ZOO
    meta = {"format": fmt, "direct": [], "layer_scales": None}
    wanted |= {k: v for k, v in OPTIONAL.items() if k in raw}
    for key, kinds in wanted.items():
        if key not in raw:
            raise LowdimError(f"{path}: its metadata lacks {key!r}; the file is damaged")
        try:
            value = raw[key] if key in TEXT else json.loads(raw[key])
        except ValueError:
            raise LowdimError(f"{path}: metadata {key!r} is not JSON ({raw[key]!r:.40})") from None
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise LowdimError(f"{path}: metadata {key!r} has a wrong type ({value!r:.40})")
        meta[key] = value
    if "input_shape" in meta:
        shape_ok = all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in meta["input_shape"]
        )
        if not shape_ok or meta["num_classes"] < 1:
            raise LowdimError(
                f"{path}: metadata input_shape / num_classes are not positive integers"
            )
    if "coords" not in tensors or tensors["coords"].dim() != 1:
        raise LowdimError(f"{path} holds no coordinate vector 'coords'; the file is damaged")
    return meta, tensors


def _part(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_subspace(
    module: nn.Module, path: str | Path, *, device: str | torch.device | None = None
) -> SubspaceModel:
    """The saved model on `module` (a freshly built copy of the saved network, whose buffers
    and, with a stored anchor, parameters are overwritten), optionally moved to `device`.

    Refuses (LowdimError) a file made for another layout, a module whose anchor or frozen
    parameters differ from the saved ones when those were not stored, and a result whose
    weights digest differs from the saved one.
    """
    meta, tensors = read_subspace(path)
    direct = tuple(meta["direct"])
    named = trainable_parameters(module, exclude=direct)
    layout = [[n, list(p.shape)] for n, p in named]
    if meta.get("layout", layout) != layout or meta.get("layout_sha256") not in (
        None,
        layout_digest(layout),
    ):
        raise LowdimError(
            f"{path} was saved from another architecture (its parameter layout differs)"
        )
    # What the subspace is attached to, checked before the module is touched: the stored
    # anchor and frozen parameters where the file has them, else the module's own.
    theta = {n for n, _ in named}
    frozen = _frozen(module, theta, direct) | _part(tensors, "frozen.")
    anchor = tensors.get("anchor")
    if anchor is None:
        anchor = torch.cat([p.detach().reshape(-1) for _, p in named])
    if "anchor_sha256" in meta and anchor_digest(anchor, frozen) != meta["anchor_sha256"]:
        raise LowdimError(
            f"{path}: the module's parameters are not the anchor the model was trained from (the "
            "anchor digest differs); build it as it was built then (same seed or pretrained "
            "weights), or save with store_anchor=True"
        )
    try:
        with torch.random.fork_rng(devices=[]):  # no basis kind may disturb the caller's stream
            basis = basis_from_state(
                {
                    "kind": meta["basis_kind"],
                    "numbers": meta["basis_numbers"],
                    "tensors": _part(tensors, "basis."),
                }
            )
        with torch.no_grad():
            params = dict(module.named_parameters())
            for name, value in (_part(tensors, "frozen.") | _part(tensors, "direct.")).items():
                params[name].copy_(value)
        module.load_state_dict({**module.state_dict(), **_part(tensors, "buffer.")})
        if device is not None:
            module = module.to(device)
        sub = SubspaceModel(
            module,
            basis.to(device) if device is not None else basis,
            anchor=tensors.get("anchor"),
            direct=direct,
            layer_scales=meta["layer_scales"],
        )
        with torch.no_grad():
            sub.coords.copy_(tensors["coords"])
            if sub.scales is not None:
                sub.scales.copy_(tensors["scales"])
    except LowdimError as e:
        raise LowdimError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, OverflowError) as e:
        why = " ".join(str(e).split())[:300]  # torch's messages span lines
        raise LowdimError(
            f"{path} does not rebuild a network ({type(e).__name__}: {why})"
        ) from None
    if meta["format"] == "lowdim-subspace-1":
        warnings.warn(
            f"{path} predates weight digests; nothing checks that it rebuilds the trained network",
            stacklevel=2,
        )
    elif weights_digest(sub.export()) != meta["weights_sha256"]:
        raise LowdimError(
            f"{path} does not rebuild the network it was saved from (its weights digest "
            "differs): the file was changed or damaged, or its products differ in the last bits "
            "on this device, lowdim version or build (save the basis with store_tensors=True)"
        )
    return sub

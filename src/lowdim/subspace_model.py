"""Reparametrisation: a module whose only trainable parameter is the d-vector c.

    theta = anchor + P c

`SubspaceModel(module, basis)` calls the wrapped module through `torch.func.functional_call`
with theta split back into its named parameters. Any torch optimiser, scheduler or trainer then
trains c directly, and under DistributedDataParallel only d numbers are all-reduced. The wrapped
module's own parameters are frozen (they hold the anchor's values and are not trained);
its buffers (BatchNorm running statistics) stay ordinary buffers, updated in place.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .bases.base import Basis, expand_differentiable
from .bases.random import per_compartment_basis, random_basis
from .errors import LowdimError
from .params import ParamSpec, layout_of, param_specs, trainable_parameters


class SubspaceModel(nn.Module):
    """Train `module` through d coordinates: theta = anchor + P c, c starting at 0.

    With `layer_scales` (SAID, Aghajanyan et al. 2020): theta = anchor + lambda (.) P c, one
    learned scale lambda_i per layer, repeated over the layer's slice of theta, starting at 1.

    Args:
        module: any `nn.Module`; its parameters with `requires_grad` (in `named_parameters()`
            order) form the flat vector theta, of length D, except those matching `direct`.
        basis: P, with `basis.num_params == D`, on the module's device and dtype.
        anchor: theta at c = 0 (default: the module's current parameters, theta_0).
        direct: glob patterns of parameter names (default none) that stay out of theta and
            train directly beside c, as a classifier head often does; parameters with
            `requires_grad` False stay frozen (see `lowdim.params.freeze`).
        layer_scales: None (default), "param" (a scale per parameter tensor) or "layer" (per
            module holding parameters): SAID's learned scales.

    Attributes:
        coords: the trainable parameter c, shape (d,).
        scales: lambda, shape (number of layers,), or None.
        anchor: a buffer, shape (D,).
        specs: where each named parameter sits in theta.
    """

    def __init__(
        self,
        module: nn.Module,
        basis: Basis,
        anchor: Tensor | None = None,
        *,
        direct: Sequence[str] = (),
        layer_scales: str | None = None,
    ) -> None:
        super().__init__()
        self.direct = tuple(direct)
        named = trainable_parameters(module, exclude=self.direct)
        self.specs = param_specs(named)
        num_params = sum(s.numel for s in self.specs)
        if basis.num_params != num_params:
            raise LowdimError(
                f"basis: it acts on {basis.num_params} parameters but the model has {num_params}; "
                "was it made for another architecture?"
            )
        self.module = module
        flat = torch.cat([p.detach().reshape(-1) for _, p in named])
        if anchor is not None and anchor.shape != flat.shape:
            raise LowdimError(
                f"anchor: shape {tuple(anchor.shape)}, the model needs ({num_params},)"
            )
        self.register_buffer("anchor", flat.clone() if anchor is None else anchor.detach().clone())
        for _, p in named:
            p.requires_grad_(False)
        self.basis = basis
        # DistributedDataParallel broadcasts buffers before every forward; the anchor is D
        # numbers that never change, so it is left out and a step exchanges only c's gradient.
        self._ddp_params_and_buffers_to_ignore = ["anchor"]
        self.coords = nn.Parameter(torch.zeros(basis.dim, dtype=flat.dtype, device=flat.device))
        self.layer_scales = layer_scales
        self.scales: nn.Parameter | None = None
        self._scale_of: list[int] = []  # the scale of each parameter of theta
        if layer_scales is not None:
            self._scale_of = scale_groups(self.specs, layer_scales)
            count = self._scale_of[-1] + 1
            self.scales = nn.Parameter(torch.ones(count, dtype=flat.dtype, device=flat.device))
        self._pieces: list[Tensor] | None = None

    @classmethod
    def random(
        cls,
        module: nn.Module,
        kind: str = "fastfood",
        dim: int | list[int] = 100,
        seed: int = 0,
        *,
        compartments: str | None = None,
        split: str = "size",
        chunk_size: int | None = None,
        store_tensors: bool = False,
        direct: Sequence[str] = (),
        layer_scales: str | None = None,
    ) -> SubspaceModel:
        """`module` reparametrised through a random basis made for it (D read from the module).

        kind: "dense", "orthogonal", "sparse" or "fastfood" (default; O(D) memory); dim: d
        (default 100), or with `compartments` one d per compartment; seed: the basis seed
        (default 0). compartments: None (default: one global basis), or the rule of
        `lowdim.bases.compartments_of` ("all", "layer", "param", or "chunk" of `chunk_size`
        parameters): one independent basis per compartment, d split over them by `split`
        ("size", default, "equal" or "each"). The basis is
        built on the module's device and dtype; `store_tensors` (default False) makes `save`
        write its tensors too, not only its seed (generator streams differ between devices and
        library versions). direct, layer_scales: as for the constructor; with layer_scales,
        `dim` counts the scales too (SAID's d: dim - layers basis coordinates and one scale per
        layer), so SAID and a plain basis compare at equal d.
        """
        named = trainable_parameters(module, exclude=direct)
        first = named[0][1]
        num_params = sum(p.numel() for _, p in named)
        options = {"device": first.device, "store_tensors": store_tensors}
        if layer_scales is not None:  # SAID counts its scales in d
            scales = scale_groups(param_specs(named), layer_scales)[-1] + 1
            if not isinstance(dim, int) or dim <= scales:
                raise LowdimError(
                    f"dim: {dim!r} must exceed the {scales} layer scales, which it counts"
                )
            dim -= scales
        if compartments is None:
            if not isinstance(dim, int):
                raise LowdimError(f"dim: one number without compartments, got {dim!r}")
            basis = random_basis(kind, num_params, dim, seed, **options)
        else:
            basis = per_compartment_basis(
                kind,
                layout_of(param_specs(named)),  # theta's parameters: not the direct ones
                dim,
                seed,
                by=compartments,
                split=split,
                chunk_size=chunk_size,
                **options,
            )
        # the kinds draw float32; a float64 model gets the same directions in float64
        basis = basis if first.dtype == torch.float32 else basis.to(dtype=first.dtype)
        return cls(module, basis, direct=direct, layer_scales=layer_scales)

    def save(self, directory: str | Path, **metadata) -> None:
        """Write this model PEFT-style into `directory` (see `lowdim.compress.save_subspace`):
        a JSON config and one safetensors file with c, the basis (seeds, or tensors where it
        keeps them), the buffers and a digest of the reconstructed weights. `metadata`: the
        options of `save_subspace` (store_anchor, anchor_seed, extra)."""
        from .compress import save_subspace

        save_subspace(directory, self, **metadata)

    @classmethod
    def load(
        cls, module: nn.Module, directory: str | Path, *, device: str | torch.device | None = None
    ) -> SubspaceModel:
        """Restore a saved model onto `module`, a freshly built copy of the network it was
        saved from (see `lowdim.compress.load_subspace`); the global random state is left
        alone."""
        from .compress import load_subspace

        return load_subspace(module, directory, device=device)

    @property
    def dim(self) -> int:
        return self.basis.dim

    @property
    def num_params(self) -> int:
        return self.anchor.numel()

    @property
    def trainable_numbers(self) -> int:
        """What training changes: d, the scales and the directly trained parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def pieces(self) -> list[Tensor]:
        """theta in the parameters' slices: anchor_k + (P c)_k, or with SAID's scales
        anchor_k + lambda_k (P c)_k (differentiable in c and lambda), taken apart by one split:
        a slice per parameter would fill a D-sized zero gradient each in the backward pass (103
        of them for a BERT), where the split's backward concatenates once."""
        sizes = [s.numel for s in self.specs]
        step = expand_differentiable(self.basis, self.coords)
        if self.scales is None:
            return list((self.anchor + step).split(sizes))
        steps, anchors = step.split(sizes), self.anchor.split(sizes)
        return [
            torch.addcmul(a, step, self.scales[k])
            for a, step, k in zip(anchors, steps, self._scale_of, strict=True)
        ]

    def theta(self) -> Tensor:
        """anchor + P c, or anchor + lambda (.) P c, as one vector of length D."""
        return torch.cat(self.pieces())

    def forward(self, *args, **kwargs):
        pieces = self.pieces()
        self._pieces = pieces  # kept for `l2_penalty`, so the penalty costs no second product
        params = {s.name: piece.view(s.shape) for s, piece in zip(self.specs, pieces, strict=True)}
        return functional_call(self.module, params, args, kwargs, strict=False)

    def l2_penalty(self) -> Tensor:
        """||theta||^2 at the theta of the last forward pass (L2 on the full weights)."""
        if self._pieces is None:
            raise RuntimeError("l2_penalty needs a forward pass first")
        return sum(piece.square().sum() for piece in self._pieces)

    def _apply(self, fn, recurse=True):
        # the basis is no module: move it with the anchor (device and dtype)
        super()._apply(fn, recurse)
        if self.basis is not None:
            self.basis = self.basis.to(self.anchor.device, self.anchor.dtype)
        return self

    @torch.no_grad()
    def export(self) -> nn.Module:
        """A plain copy of the wrapped module with theta written into its parameters (all
        trainable again): the trained network, with no trace of the subspace."""
        plain = copy.deepcopy(self.module)
        theta = self.theta()
        named = dict(plain.named_parameters())
        for s in self.specs:
            named[s.name].copy_(theta[s.offset : s.offset + s.numel].view(s.shape))
            named[s.name].requires_grad_(True)
        return plain


def scale_groups(specs: list[ParamSpec], rule: str) -> list[int]:
    """For each parameter of theta, in order, the index of its SAID scale: one per parameter
    tensor ("param"), or one per module holding parameters ("layer": names alike up to their
    last dot)."""
    if rule not in ("param", "layer"):
        raise LowdimError(f"layer_scales: {rule!r} is unknown; choose param or layer")
    groups, owner = [], None
    for s in specs:
        name = s.name if rule == "param" else s.name.rpartition(".")[0]
        groups.append(groups[-1] + (name != owner) if groups else 0)
        owner = name
    return groups

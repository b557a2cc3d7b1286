import math
import random

import pytest
import torch
from torch import nn

from lowdim import FlatParams
from lowdim.bases import Compartment, compartments_of, load_basis, split_dim
from lowdim.bases.blocks import BlockBasis
from lowdim.bases.random import per_compartment_basis
from lowdim.errors import BadArgument, LowdimError
from lowdim.seeding import derive_seed


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def mlp_layout() -> list[dict]:
    return FlatParams(mlp()).layout()


class Tagger(nn.Module):
    """A model outside lowdim's zoo: embedding, GRU, a frozen projection, a tied head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.rnn = nn.GRU(4, 5, batch_first=True)
        self.frozen = nn.Linear(5, 5)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(5, 4)
        self.out = nn.Linear(4, 11, bias=False)
        self.out.weight = self.emb.weight  # tied: one parameter, counted once
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.out(self.head(self.frozen(self.rnn(self.emb(x))[0]))) * self.scale


def spans(parts):
    return [(c.name, c.offset, c.length) for c in parts]


def test_compartments_by_layer_param_chunk_and_all():
    layout = mlp_layout()
    assert spans(compartments_of(layout)) == [("0", 0, 144), ("2", 144, 51)]
    assert spans(compartments_of(layout, "param")) == [
        ("0.weight", 0, 128),
        ("0.bias", 128, 16),
        ("2.weight", 144, 48),
        ("2.bias", 192, 3),
    ]
    assert spans(compartments_of(layout, "chunk", chunk_size=100)) == [
        ("chunk0", 0, 100),
        ("chunk1", 100, 95),
    ]
    assert spans(compartments_of(layout, "all")) == [("all", 0, 195)]
    top = [
        {"name": "weight", "shape": [2, 3], "offset": 0},
        {"name": "bias", "shape": [2], "offset": 6},
    ]
    assert spans(compartments_of(top)) == [("(top)", 0, 8)]
    # the same from the module and from its FlatParams, with dims split alike
    for by in ("layer", "param", "chunk", "all"):
        want = compartments_of(layout, by, 20, chunk_size=50)
        assert compartments_of(mlp(), by, 20, chunk_size=50) == want
        assert compartments_of(FlatParams(mlp()), by, 20, chunk_size=50) == want


@pytest.mark.parametrize("by", ["layer", "param", "chunk", "all"])
def test_compartments_of_a_module_outside_the_zoo_tile_its_trainable_parameters(by):
    model = Tagger()
    pointers = [p.data_ptr() for p in model.parameters()]
    parts = compartments_of(model, by, dim=12, split="equal", chunk_size=40)
    # no FlatParams was built: the module's parameters were not re-homed
    assert [p.data_ptr() for p in model.parameters()] == pointers
    flat = FlatParams(model)
    assert sum(c.length for c in parts) == flat.numel == 1 + 44 + 3 * (4 * 5 + 5 * 5 + 10) + 24
    assert all(c.offset == sum(p.length for p in parts[:i]) for i, c in enumerate(parts))
    assert sum(c.dim for c in parts) == 12 and all(1 <= c.dim <= c.length for c in parts)
    assert "frozen.weight" not in flat.names  # frozen parameters are in no compartment
    if by == "layer":
        assert [c.name for c in parts] == ["(top)", "emb", "rnn", "head"]
    if by == "param":
        assert [(c.name, c.offset, c.length) for c in parts] == [
            (s.name, s.offset, s.numel) for s in flat.specs
        ]
    # a block basis over them acts on exactly the flat vector
    basis = per_compartment_basis("dense", model, [c.dim for c in parts], by=by, chunk_size=40)
    assert basis.num_params == flat.numel and basis.dim == 12


def test_compartment_type():
    c = Compartment("a", 3, 10, 4)
    assert Compartment(**c.as_dict()) == c
    with pytest.raises(BadArgument, match="^dim 11 for compartment a must be between 1"):
        Compartment("a", 3, 10, 11)
    with pytest.raises(BadArgument, match="^compartments need offset >= 0 and length >= 1"):
        Compartment("a", 0, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(by="module"), "^by must be one of all, layer, param, chunk, got 'module'"),
        (dict(by="chunk"), "^chunk_size must be a positive number of parameters, got None"),
        (dict(by="chunk", chunk_size=0), "^chunk_size must be a positive number"),
        (dict(dim=[1, 2, 3]), "^dim gives 3 dims for 2 compartments .by layer."),
        (dict(dim=[4, 52]), "^dim 52 for compartment 2 must be between 1 and its length 51"),
        (dict(dim=1), "^dim 1 cannot be split over 2 compartments"),
        (dict(dim=5, split="even"), "^split must be one of size, equal, each, got 'even'"),
    ],
)
def test_compartment_errors(kwargs, message):
    with pytest.raises(BadArgument, match=message):
        compartments_of(mlp_layout(), **kwargs)


def test_a_layout_with_a_gap_is_refused():
    gap = [{"name": "a", "shape": [2], "offset": 0}, {"name": "b", "shape": [2], "offset": 3}]
    with pytest.raises(LowdimError, match="b starts at 3, not 2"):
        compartments_of(gap)


def test_split_dim_properties():
    rng = random.Random(0)
    for _ in range(300):
        sizes = [rng.choice([1, 2, 3, 10, 100, 5000]) for _ in range(rng.randint(1, 8))]
        total = rng.randint(len(sizes), sum(sizes))
        for split in ("size", "equal"):
            dims = split_dim(total, sizes, split)
            assert sum(dims) == total
            assert all(1 <= d <= s for d, s in zip(dims, sizes, strict=True))
        dims = split_dim(total, sizes)
        quotas = [total * s / sum(sizes) for s in sizes]
        # largest remainder: within one of each quota, unless a quota under 1 had to be lifted
        # to 1 (then the others only give up coordinates)
        if min(quotas) >= 1:
            assert all(abs(d - q) < 1 for d, q in zip(dims, quotas, strict=True))
        assert all(d <= max(1, math.ceil(q)) for d, q in zip(dims, quotas, strict=True))
        assert split_dim(total, sizes, "each") == [min(total, s) for s in sizes]
    assert split_dim(10, [300, 100, 100]) == [6, 2, 2]
    assert split_dim(7, [1, 100, 100], "equal") == [1, 3, 3]
    assert split_dim(4, [1, 1000, 1000, 1000]) == [1, 1, 1, 1]
    assert split_dim(50, [20, 100], "each") == [20, 50]


def test_split_dim_errors():
    with pytest.raises(BadArgument, match="^dim 2 cannot be split over 3 compartments"):
        split_dim(2, [5, 5, 5])
    with pytest.raises(BadArgument, match="between 3 .one each. and 15"):
        split_dim(16, [5, 5, 5])
    with pytest.raises(BadArgument, match="^split must be one of size, equal, each"):
        split_dim(5, [5, 5], "proportional")


def test_per_compartment_basis_seeds_and_round_trip(tmp_path):
    layout = mlp_layout()
    basis = per_compartment_basis("dense", layout, 20, seed=3)
    assert isinstance(basis, BlockBasis)
    assert [(o, n, b.dim) for o, n, b in basis.blocks] == [(0, 144, 15), (144, 51, 5)]
    assert [b.seed for _, _, b in basis.blocks] == [derive_seed(3, 0), derive_seed(3, 1)]
    basis.save(tmp_path / "b.safetensors", layout=layout)
    loaded = load_basis(tmp_path / "b.safetensors", layout=layout)
    c = torch.randn(20)
    assert torch.equal(loaded.expand(c), basis.expand(c))
    listed = per_compartment_basis("fastfood", layout, [4, 51], by="layer")
    assert listed.dim == 55
    # from the module itself, no FlatParams needed: the same basis
    again = per_compartment_basis("dense", mlp(), 20, seed=3)
    assert torch.equal(again.expand(c), basis.expand(c))

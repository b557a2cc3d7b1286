import math
import random

import pytest
import torch

from lowdim import FlatParams
from lowdim.bases import load_basis
from lowdim.bases.blocks import BlockBasis
from lowdim.bases.random import compartments, per_compartment_basis, split_dim
from lowdim.errors import LowdimError
from lowdim.seeding import derive_seed


def mlp_layout() -> list[dict]:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    return FlatParams(model).layout()


def test_compartments_by_layer_param_and_chunk():
    layout = mlp_layout()
    assert compartments(layout) == [("0", 0, 144), ("2", 144, 51)]
    assert compartments(layout, "param") == [
        ("0.weight", 0, 128),
        ("0.bias", 128, 16),
        ("2.weight", 144, 48),
        ("2.bias", 192, 3),
    ]
    assert compartments(layout, "chunk", chunk=100) == [("chunk0", 0, 100), ("chunk1", 100, 95)]
    top = [
        {"name": "weight", "shape": [2, 3], "offset": 0},
        {"name": "bias", "shape": [2], "offset": 6},
    ]
    assert compartments(top) == [("(top)", 0, 8)]


@pytest.mark.parametrize(
    ("rule", "chunk", "message"),
    [
        ("module", None, "unknown compartment rule 'module'; choose one of layer, param, chunk"),
        ("chunk", None, "--chunk None must be a positive number"),
        ("chunk", 0, "--chunk 0 must be a positive number"),
    ],
)
def test_compartment_errors(rule, chunk, message):
    with pytest.raises(LowdimError, match=message):
        compartments(mlp_layout(), rule, chunk)
    gap = [{"name": "a", "shape": [2], "offset": 0}, {"name": "b", "shape": [2], "offset": 3}]
    with pytest.raises(LowdimError, match="b starts at 3, not 2"):
        compartments(gap)


def test_split_dim_properties():
    rng = random.Random(0)
    for _ in range(300):
        sizes = [rng.choice([1, 2, 3, 10, 100, 5000]) for _ in range(rng.randint(1, 8))]
        total = rng.randint(len(sizes), sum(sizes))
        for rule in ("proportional", "equal"):
            dims = split_dim(total, sizes, rule)
            assert sum(dims) == total
            assert all(1 <= d <= s for d, s in zip(dims, sizes, strict=True))
        dims = split_dim(total, sizes)
        quotas = [total * s / sum(sizes) for s in sizes]
        # largest remainder: within one of each quota, unless a quota under 1 had to be lifted
        # to 1 (then the others only give up coordinates)
        if min(quotas) >= 1:
            assert all(abs(d - q) < 1 for d, q in zip(dims, quotas, strict=True))
        assert all(d <= max(1, math.ceil(q)) for d, q in zip(dims, quotas, strict=True))
    assert split_dim(10, [300, 100, 100]) == [6, 2, 2]
    assert split_dim(7, [1, 100, 100], "equal") == [1, 3, 3]
    assert split_dim(4, [1, 1000, 1000, 1000]) == [1, 1, 1, 1]


def test_split_dim_errors():
    with pytest.raises(LowdimError, match="--dim 2 cannot be split over 3 compartments"):
        split_dim(2, [5, 5, 5])
    with pytest.raises(LowdimError, match="between 3 .one each. and 15"):
        split_dim(16, [5, 5, 5])
    with pytest.raises(LowdimError, match="unknown split rule 'even'"):
        split_dim(5, [5, 5], "even")


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
    listed = per_compartment_basis("fastfood", layout, [4, 51], rule="layer")
    assert listed.dim == 55


def test_per_compartment_dims_errors():
    layout = mlp_layout()
    with pytest.raises(LowdimError, match="3 dims given for 2 compartments"):
        per_compartment_basis("sparse", layout, [1, 2, 3])
    with pytest.raises(LowdimError, match="--dim 52 for compartment 2 must be between 1 and 51"):
        per_compartment_basis("sparse", layout, [4, 52])
    with pytest.raises(LowdimError, match="--dim 1 cannot be split over 2"):
        per_compartment_basis("sparse", layout, 1)

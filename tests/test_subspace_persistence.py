"""SubspaceModel.random / save / load on a user's own module: D read from the module, frozen
parameters and buffers, the anchor pinned by a digest, the caller's random state untouched."""

import json

import pytest
import torch
from torch import nn

from lowdim import SubspaceModel
from lowdim.compress import read_subspace
from lowdim.errors import LowdimError
from lowdim.io import load_tensors, save_tensors


class FrozenAndBuffer(nn.Module):
    """Not from lowdim's zoo: a frozen input projection, a running-mean buffer, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 12)
        self.embed.requires_grad_(False)
        self.head = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 3))
        self.register_buffer("running", torch.zeros(12))

    def forward(self, x):
        h = self.embed(x)
        if self.training:
            with torch.no_grad():
                self.running.mul_(0.9).add_(h.mean(0), alpha=0.1)
        return self.head(h - self.running)


def build(seed: int) -> FrozenAndBuffer:
    torch.manual_seed(seed)
    return FrozenAndBuffer()


def trained(kind="fastfood", seed=0, **options) -> SubspaceModel:
    model = SubspaceModel.random(build(seed), kind, 20, seed=3, **options)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


X = torch.randn(9, 6, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("kind", ["dense", "orthogonal", "sparse", "fastfood"])
def test_reloads_onto_a_fresh_module_exactly_without_touching_the_random_state(tmp_path, kind):
    model = trained(kind)
    assert model.num_params == 12 * 16 + 16 + 16 * 3 + 3  # the frozen embedding is not in theta
    assert model.module.running.abs().sum() > 0  # training moved the buffer
    model.save(tmp_path / "saved")
    fresh = build(0)
    state = torch.get_rng_state()
    loaded = SubspaceModel.load(fresh, tmp_path / "saved").eval()
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(loaded(X), model(X))
    assert torch.equal(loaded.module.running, model.module.running)
    config = json.loads((tmp_path / "saved/subspace_config.json").read_text())
    assert config["layout"][0] == ["head.0.weight", [16, 12]]
    assert config["basis_numbers"]["seed"] == 3


def test_a_module_built_differently_is_refused_unless_the_anchor_was_stored(tmp_path):
    model = trained()
    model.save(tmp_path / "seeds")
    with pytest.raises(LowdimError, match="anchor digest differs"):
        SubspaceModel.load(build(1), tmp_path / "seeds")
    model.save(tmp_path / "stored", store_anchor=True)
    loaded = SubspaceModel.load(build(1), tmp_path / "stored").eval()
    assert torch.equal(loaded(X), model(X))  # the frozen embedding came from the file
    assert torch.equal(loaded.module.embed.weight, model.module.embed.weight)


def test_a_file_for_another_layout_or_with_changed_numbers_is_refused(tmp_path):
    model = trained()
    model.save(tmp_path / "saved")
    other = nn.Sequential(nn.Linear(6, 3))
    with pytest.raises(LowdimError, match="another architecture"):
        SubspaceModel.load(other, tmp_path / "saved")
    path = tmp_path / "saved/subspace.safetensors"
    meta, tensors = read_subspace(path)
    raw = load_tensors(path)
    raw["coords"] = raw["coords"] + 1e-3
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    save_tensors(path, raw, metadata=metadata)
    with pytest.raises(LowdimError, match="weights digest"):
        SubspaceModel.load(build(0), tmp_path / "saved")


def test_per_layer_bases_and_stored_tensors_need_only_the_module(tmp_path):
    model = trained("dense", compartments="layer", store_tensors=True)
    assert model.dim == 20 and len(model.basis.blocks) == 2  # one basis per layer of theta
    model.save(tmp_path / "m.safetensors")
    _, tensors = read_subspace(tmp_path / "m.safetensors")
    assert any(k.startswith("basis.") for k in tensors)  # the tensors, not only the seed
    loaded = SubspaceModel.load(build(0), tmp_path / "m.safetensors").eval()
    assert torch.equal(loaded(X), model(X))


def test_a_float64_module_gets_a_float64_basis():
    model = SubspaceModel.random(build(0).double(), "fastfood", 8)
    assert model.coords.dtype == torch.float64
    assert model(X.double()).dtype == torch.float64


def test_a_refused_module_is_left_as_it_was(tmp_path):
    trained().save(tmp_path / "seeds")
    other = build(1)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(LowdimError, match="anchor digest differs"):
        SubspaceModel.load(other, tmp_path / "seeds")
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    assert all(p.requires_grad for p in other.head.parameters())


def test_a_head_trains_directly_beside_the_subspace_and_reloads(tmp_path):
    before = build(0).head[2].weight.detach().clone()
    model = trained(direct=["head.2.*"])
    assert model.num_params == 12 * 16 + 16  # head.2 is out of theta ...
    assert model.trainable_numbers == 20 + 16 * 3 + 3  # ... and trains beside c
    assert not torch.equal(model.module.head[2].weight, before)
    model.save(tmp_path / "saved")
    fresh = build(0)
    loaded = SubspaceModel.load(fresh, tmp_path / "saved").eval()
    assert torch.equal(loaded(X), model(X))
    assert loaded.module.head[2].weight.requires_grad  # still trained directly
    with pytest.raises(LowdimError, match="leaves no parameter in theta"):
        SubspaceModel.random(build(0), "dense", 4, direct=["head.*"])
    per_layer = SubspaceModel.random(
        build(0), "dense", 6, compartments="layer", direct=["head.2.*"]
    )
    assert per_layer.basis.num_params == 12 * 16 + 16 and len(per_layer.basis.blocks) == 1


@pytest.mark.parametrize(("rule", "groups"), [("param", 4), ("layer", 2)])
def test_said_scales_one_per_layer_counted_in_d_and_saved(tmp_path, rule, groups):
    model = trained("fastfood", layer_scales=rule)
    assert model.scales.numel() == groups and model.dim == 20 - groups
    assert model.trainable_numbers == 20  # SAID's d counts its scales
    assert not torch.equal(model.scales.detach(), torch.ones(groups))  # they trained
    # theta = anchor + lambda (.) P c, lambda repeated over each layer's slice of theta
    sizes = [12 * 16, 16, 16 * 3, 3] if rule == "param" else [12 * 16 + 16, 16 * 3 + 3]
    step = model.basis.expand(model.coords.detach())
    expected = model.anchor + step * model.scales.detach().repeat_interleave(torch.tensor(sizes))
    assert torch.allclose(model.theta().detach(), expected, rtol=0, atol=1e-6)
    model.save(tmp_path / "saved")
    loaded = SubspaceModel.load(build(0), tmp_path / "saved").eval()
    assert torch.equal(loaded(X), model(X)) and torch.equal(loaded.scales, model.scales)


def test_freeze_keeps_matching_parameters_out_of_theta():
    from lowdim.params import freeze

    module = build(0)
    assert freeze(module, "head.0.*") == 2
    assert SubspaceModel.random(module, "dense", 4).num_params == 16 * 3 + 3
    with pytest.raises(LowdimError, match="no parameter name matches"):
        freeze(module, "decoder.*")


def test_a_file_of_the_previous_format_with_its_whole_layout_still_loads(tmp_path):
    from safetensors import safe_open

    model = trained()
    model.save(tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        metadata = f.metadata()
    assert "layout" not in metadata  # a digest pins it: a BERT's layout would be 7 kB
    layout = [[s.name, list(s.shape)] for s in model.specs]
    metadata.pop("layout_sha256")
    metadata |= {"format": "lowdim-subspace-3", "layout": json.dumps(layout)}
    save_tensors(tmp_path / "v3.safetensors", load_tensors(tmp_path / "m.safetensors"), metadata)
    loaded = SubspaceModel.load(build(0), tmp_path / "v3.safetensors").eval()
    assert torch.equal(loaded(X), model(X))
    metadata["layout"] = json.dumps(layout[1:])
    save_tensors(tmp_path / "v3.safetensors", load_tensors(tmp_path / "m.safetensors"), metadata)
    with pytest.raises(LowdimError, match="another architecture"):
        SubspaceModel.load(build(0), tmp_path / "v3.safetensors")

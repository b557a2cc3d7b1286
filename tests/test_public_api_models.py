"""The public API on four networks outside lowdim's zoo, each through every method: DLDR and
TWA from a trajectory recorded in the user's own loop, a random subspace of every kind with
save and load, and RBD. Token data throughout; no zoo model, no lowdim dataset."""

import pytest
import torch
from own_models import assert_moved_within
from torch import nn

import lowdim

VOCAB, LENGTH, CLASSES = 12, 10, 3


class GRUClassifier(nn.Module):
    """A recurrent net with an embedding: classifies a token sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        self.gru = nn.GRU(8, 8, batch_first=True)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, tokens):
        return self.head(self.gru(self.embed(tokens))[0][:, -1])


class TiedLM(nn.Module):
    """A language model whose output layer is its embedding (one parameter, in theta once)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, VOCAB, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(torch.tanh(self.mix(self.embed(tokens))))


class EncoderClassifier(nn.Module):
    """A transformer encoder over the tokens, mean-pooled."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, tokens):
        return self.head(self.body(self.embed(tokens)).mean(1))


class FrozenEmbedding(nn.Module):
    """A frozen (pretrained-like) embedding, a buffer, a trained head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        self.embed.requires_grad_(False)
        self.register_buffer("scale", torch.full((8,), 0.5))
        self.head = nn.Linear(8, CLASSES)

    def forward(self, tokens):
        return self.head(self.embed(tokens).mean(1) * self.scale)


MODELS = {
    "gru": GRUClassifier,
    "tied_lm": TiedLM,
    "encoder": EncoderClassifier,
    "frozen": FrozenEmbedding,
}


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[name]()


def data(name: str):
    """Token sequences: next tokens for the language model, else a class per sequence."""
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, VOCAB, (96, LENGTH + 1), generator=g)
    if name == "tied_lm":
        x, y = tokens[:, :-1], tokens[:, 1:]
    else:
        x, y = tokens[:, :-1], tokens[:, 0] % CLASSES
    return lowdim.Split(x[:64], y[:64]), lowdim.Split(x[64:], y[64:])


def frozen_state(model: nn.Module) -> dict:
    """Everything outside theta: frozen parameters and buffers."""
    frozen = {k: p.detach().clone() for k, p in model.named_parameters() if not p.requires_grad}
    return frozen | {k: b.clone() for k, b in model.named_buffers()}


def assert_frozen_unchanged(model: nn.Module, before: dict) -> None:
    """The frozen parameters and buffers `before` held are still there, unchanged (a
    `SubspaceModel` freezes the module's own parameters too, so only these are compared)."""
    now = dict(model.named_parameters()) | dict(model.named_buffers())
    for key, value in before.items():
        assert torch.equal(now[key], value), key


@pytest.fixture(scope="module", params=list(MODELS))
def recorded(request, tmp_path_factory):
    """(name, trajectory) of 4 epochs of the user's own Adam loop, a snapshot per epoch."""
    name = request.param
    model, (train, _) = build(name), data(name)
    flat = lowdim.FlatParams(model)
    folder = tmp_path_factory.mktemp(name) / "trajectory"
    recorder = lowdim.TrajectoryRecorder(folder, flat.layout())
    recorder.append(flat.data, epoch=0, step=0)
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(1, 5):
        for x, y in train.batches(16, shuffle=True, seed=0, epoch=epoch):
            adam.zero_grad()
            nn.functional.cross_entropy(model(x).flatten(0, -2), y.flatten()).backward()
            adam.step()
        recorder.append(flat.data, epoch=epoch, step=0)
    return name, lowdim.Trajectory(folder)


@pytest.mark.parametrize("method", ["dldr", "twa"])
def test_dldr_and_twa_from_the_users_own_trajectory(recorded, method):
    name, trajectory = recorded
    model, (train, test) = build(name), data(name)
    before = frozen_state(model)
    flat = lowdim.FlatParams(model)
    if method == "dldr":
        basis = lowdim.trajectory_pca(trajectory, n_components=3)
        flat.set(basis.anchor)
        optimizer = lowdim.PBFGS(flat, basis, module=model)
    else:
        basis = lowdim.trajectory_span(trajectory, start=1)
        flat.set(basis.anchor)
        optimizer = lowdim.PSGD(flat, basis, lr=0.05)
    start = flat.data.clone()
    result = lowdim.fit(model, optimizer, train, test, epochs=1, batch_size=16, progress=False)
    assert torch.isfinite(torch.tensor(result.test_loss))
    assert_moved_within(flat, basis, start)
    assert_frozen_unchanged(model, before)


@pytest.mark.parametrize("kind", ["dense", "orthogonal", "sparse", "fastfood"])
def test_a_random_subspace_of_every_kind_trains_saves_and_loads(recorded, kind, tmp_path):
    name, _ = recorded
    (train, test), module = data(name), build(name)
    before = frozen_state(module)
    model = lowdim.SubspaceModel.random(module, kind, 6, seed=1)
    adam = torch.optim.Adam(model.parameters(), lr=0.05)
    lowdim.fit(model, adam, train, test, epochs=1, batch_size=16, progress=False)
    assert model.coords.detach().abs().sum() > 0
    model.save(tmp_path / "saved")
    restored = lowdim.SubspaceModel.load(build(name), tmp_path / "saved")
    model.eval(), restored.eval()
    assert torch.equal(restored(test.x), model(test.x))
    assert_frozen_unchanged(model.module, before)


def test_random_bases_descent(recorded):
    name, _ = recorded
    model, (train, test) = build(name), data(name)
    before = frozen_state(model)
    flat = lowdim.FlatParams(model)
    start = flat.data.clone()
    rbd = lowdim.RBD(flat, lr=0.5, dim=4, seed=0)
    result = lowdim.fit(model, rbd, train, test, epochs=1, batch_size=16, progress=False)
    assert torch.isfinite(torch.tensor(result.test_loss))
    assert (flat.data - start).norm() > 0
    assert_frozen_unchanged(model, before)

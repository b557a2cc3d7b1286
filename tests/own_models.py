"""A user's own network and data for the job tests (an Embedding + GRU classifier over token
sequences: no zoo arch, no named dataset), and the check that a subspace method moved theta
only within its span."""

import torch
from torch import nn

from lowdim.data import Data, Split


class GRUClassifier(nn.Module):
    def __init__(self, vocab: int = 12, width: int = 16, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens):
        _, h = self.gru(self.embed(tokens))
        return self.head(h[-1])


def token_data(n: int = 600, n_train: int = 500) -> Data:
    """n sequences of 10 tokens, the first n_train for training; the label says whether token 3
    occurs more often than token 5."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 12, (n, 10), generator=g)
    y = ((x == 3).sum(1) > (x == 5).sum(1)).long()
    train, test = Split(x[:n_train], y[:n_train]), Split(x[n_train:], y[n_train:])
    return Data("my-tokens", train, test, 2, (10,), 0.0, 0.0, None)


def assert_moved_within(flat, basis, start: torch.Tensor) -> None:
    """theta moved, and only along the basis's orthonormal columns: delta = P P^T delta."""
    delta = (flat.data - start).double()
    assert delta.norm() > 0
    residual = delta - basis.expand(basis.project(delta.float())).double()
    assert residual.norm() <= 1e-4 * delta.norm()

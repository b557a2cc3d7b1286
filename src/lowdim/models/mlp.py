"""Fully connected classifiers: `mlp` (widths chosen by option) and the fixed `fc`."""

from __future__ import annotations

import math
import operator

from torch import Tensor, nn

from lowdim.errors import LowdimError

from .registry import register_model


class MLP(nn.Module):
    """Flatten, then Linear + ReLU for each width in `hidden`, then Linear to `num_classes`.

    With `hidden=()` this is multinomial logistic regression. Weights keep PyTorch's default
    Linear init (Kaiming-uniform weights, uniform biases), drawn from the global generator.
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def parse_widths(arch: str, hidden: object) -> tuple[int, ...]:
    """Hidden widths from a tuple/list of ints, a single int, or a comma string like "200,200".

    An empty tuple or string means no hidden layer. Anything else raises a LowdimError.
    """
    error = LowdimError(
        f"bad hidden widths {hidden!r} for {arch}; give positive integers separated by commas, "
        "e.g. 200,200"
    )
    if isinstance(hidden, str):
        parts = [p.strip() for p in hidden.split(",")] if hidden.strip() else []
        if not all(p.isdigit() for p in parts):
            raise error
        widths = [int(p) for p in parts]
    elif isinstance(hidden, bool):
        raise error
    elif isinstance(hidden, int):
        widths = [hidden]
    else:
        try:
            # operator.index accepts numpy ints but refuses floats such as 200.0 or 1.5.
            widths = [operator.index(h) for h in hidden if not isinstance(h, bool)]
            if len(widths) != len(hidden):
                raise TypeError
        except TypeError:
            raise error from None
    if any(w < 1 for w in widths):
        raise error
    return tuple(widths)


@register_model("mlp")
def build_mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    hidden: tuple[int, ...] | list[int] | str | int = (200, 200),
) -> nn.Module:
    """Multilayer perceptron: flatten -> [Linear(w) -> ReLU for w in hidden] -> Linear(classes).

    Option `hidden` (default (200, 200), also "200,200"): the hidden widths. On MNIST (1x28x28)
    the default is 784-200-200-10 with 199,210 parameters; on sklearn digits (1x8x8)
    64-200-200-10. Any input shape works: it is flattened.
    """
    widths = parse_widths("mlp", hidden)
    return MLP(math.prod(input_shape), widths, num_classes)


@register_model("fc")
def build_fc(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The fully connected net of the random-bases paper: flatten -> Linear(128) -> ReLU -> Linear.

    No options. On MNIST (1x28x28) this is 784-128-10 with 101,770 parameters.
    """
    return MLP(math.prod(input_shape), (128,), num_classes)

"""Tests for lowdim.models: parameter counts, shapes, determinism, errors, gradients, eval mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lowdim.errors import LowdimError
from lowdim.models import available_archs, build_model, model_options, register_model
from lowdim.models import registry as registry_module
from lowdim.models.resnet_cifar import ZeroPadShortcut

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)
IMAGENET_SMALL = (3, 64, 64)

EXPECTED_ARCHS = {
    *("mlp", "fc", "lenet", "cnn"),
    *("resnet20", "resnet32", "resnet44", "resnet56", "resnet110"),
    *("vgg11", "vgg13", "vgg16", "vgg19"),
    *("resnet18", "resnet34", "resnet50"),
}

# A small input each arch accepts; every registered arch must appear here.
SMALL_INPUT = {
    "mlp": DIGITS,
    "fc": DIGITS,
    "lenet": MNIST,
    "cnn": MNIST,
    **{f"resnet{d}": CIFAR for d in (20, 32, 44, 56, 110)},
    **{f"vgg{d}": CIFAR for d in (11, 13, 16, 19)},
    **{f"resnet{d}": IMAGENET_SMALL for d in (18, 34, 50)},
}

# (arch, input shape, classes, options, parameter count)
PARAM_COUNTS = [
    ("mlp", MNIST, 10, {}, 199_210),
    ("mlp", DIGITS, 10, {}, 55_210),  # 64-200-200-10
    ("fc", MNIST, 10, {}, 101_770),
    ("lenet", MNIST, 10, {}, 44_426),
    ("lenet", CIFAR, 10, {}, 62_006),
    ("cnn", MNIST, 10, {}, 93_322),
    ("cnn", CIFAR, 10, {}, 122_570),
    ("resnet20", CIFAR, 10, {}, 269_722),
    ("resnet20", CIFAR, 10, {"shortcut": "B"}, 272_474),
    ("resnet32", CIFAR, 10, {}, 464_154),
    ("resnet44", CIFAR, 10, {}, 658_586),
    ("resnet56", CIFAR, 10, {}, 853_018),
    ("resnet110", CIFAR, 10, {}, 1_727_962),
    ("vgg11", CIFAR, 10, {}, 9_231_114),
    ("vgg16", CIFAR, 10, {}, 14_728_266),
    ("resnet18", (3, 224, 224), 1000, {}, 11_689_512),
    ("resnet50", (3, 224, 224), 1000, {}, 25_557_032),
]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_one_line(err: pytest.ExceptionInfo[LowdimError]) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


def test_available_archs_sorted_and_complete() -> None:
    archs = available_archs()
    assert archs == sorted(archs)
    assert set(archs) == EXPECTED_ARCHS
    assert set(SMALL_INPUT) == set(archs)


@pytest.mark.parametrize(("arch", "shape", "classes", "options", "expected"), PARAM_COUNTS)
def test_parameter_counts(arch, shape, classes, options, expected) -> None:
    assert n_params(build_model(arch, shape, classes, **options)) == expected


def test_option_a_shortcut_has_no_parameters() -> None:
    a = build_model("resnet20", CIFAR, 10)
    b = build_model("resnet20", CIFAR, 10, shortcut="b")
    # The only difference is B's two 1x1 conv + BN projections: 16*32+2*32 and 32*64+2*64.
    assert n_params(b) - n_params(a) == (16 * 32 + 64) + (32 * 64 + 128)
    shortcuts = [m for m in a.modules() if isinstance(m, ZeroPadShortcut)]
    assert len(shortcuts) == 2
    assert all(n_params(m) == 0 and not list(m.buffers()) for m in shortcuts)


def test_zero_pad_shortcut_subsamples_and_pads() -> None:
    x = torch.randn(2, 16, 7, 7)
    y = ZeroPadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert not y[:, :8].any() and not y[:, 24:].any()


@pytest.mark.parametrize("arch", sorted(SMALL_INPUT))
def test_output_shape(arch: str) -> None:
    shape = SMALL_INPUT[arch]
    model = build_model(arch, shape, 7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("arch", "shape", "classes"),
    [
        ("lenet", CIFAR, 100),
        ("mlp", DIGITS, 10),
        ("cnn", (3, 18, 18), 5),
        ("resnet20", DIGITS, 10),
        ("resnet20", (3, 9, 13), 4),  # odd sizes: option A subsampling must match the conv
        ("resnet20", (5, 32, 32), 10),
        ("vgg11", (3, 48, 40), 10),  # 2x2 and 1x1 maps go through the adaptive pool
        ("resnet18", (1, 32, 32), 3),
    ],
)
def test_other_shapes_and_class_counts(arch, shape, classes) -> None:
    model = build_model(arch, shape, classes).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, classes)


@pytest.mark.parametrize("arch", sorted(SMALL_INPUT))
def test_same_seed_same_weights(arch: str) -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(arch, SMALL_INPUT[arch], 10).state_dict()

    first, second = weights(0), weights(0)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_different_seed_different_weights() -> None:
    torch.manual_seed(0)
    a = build_model("lenet", MNIST, 10).state_dict()
    torch.manual_seed(1)
    b = build_model("lenet", MNIST, 10).state_dict()
    assert not torch.equal(a["features.0.weight"], b["features.0.weight"])


def test_unknown_arch() -> None:
    with pytest.raises(LowdimError) as err:
        build_model("foo", MNIST, 10)
    message = assert_one_line(err)
    assert "'foo'" in message and "cnn, fc, lenet, mlp, resnet110" in message


def test_arch_name_is_case_insensitive() -> None:
    assert n_params(build_model("ResNet20", CIFAR, 10)) == 269_722


@pytest.mark.parametrize(
    ("arch", "options", "must_contain"),
    [
        ("mlp", {"width": 3}, ["'width'", "hidden"]),
        ("lenet", {"hidden": (10,)}, ["'hidden'", "no options"]),
        ("resnet20", {"depth": 32}, ["'depth'", "shortcut"]),
    ],
)
def test_unknown_option(arch, options, must_contain) -> None:
    with pytest.raises(LowdimError) as err:
        build_model(arch, SMALL_INPUT[arch], 10, **options)
    message = assert_one_line(err)
    assert all(s in message for s in must_contain)


@pytest.mark.parametrize("hidden", ["a,b", "200,,200", (0,), (200, 1.5), 1.5, True, -3])
def test_bad_hidden_widths(hidden) -> None:
    with pytest.raises(LowdimError) as err:
        build_model("mlp", MNIST, 10, hidden=hidden)
    assert "200,200" in assert_one_line(err)


def test_bad_shortcut() -> None:
    with pytest.raises(LowdimError) as err:
        build_model("resnet20", CIFAR, 10, shortcut="C")
    assert "'C'" in assert_one_line(err)


@pytest.mark.parametrize(
    ("hidden", "expected"),
    [
        ("200,200", 199_210),
        (" 200, 200 ", 199_210),
        ([200, 200], 199_210),
        ((np.int64(200), 200), 199_210),
        (128, 101_770),
        ("", 7_850),  # no hidden layer: logistic regression
        ((), 7_850),
    ],
)
def test_hidden_forms(hidden, expected) -> None:
    assert n_params(build_model("mlp", MNIST, 10, hidden=hidden)) == expected


def test_model_options() -> None:
    assert model_options("mlp") == {"hidden": (200, 200)}
    assert model_options("resnet56") == {"shortcut": "A"}
    assert model_options("vgg16") == {}


@pytest.mark.parametrize(
    ("arch", "shape", "need"),
    [
        ("lenet", DIGITS, "16x16"),
        ("lenet", (1, 28, 15), "16x16"),
        ("cnn", DIGITS, "18x18"),
        ("cnn", (1, 17, 17), "18x18"),
        ("vgg11", MNIST, "32x32"),
    ],
)
def test_input_too_small(arch, shape, need) -> None:
    with pytest.raises(LowdimError) as err:
        build_model(arch, shape, 10)
    message = assert_one_line(err)
    assert arch in message and need in message and f"{shape[1]}x{shape[2]}" in message


def test_smallest_accepted_sizes_work() -> None:
    for arch, side in [("lenet", 16), ("cnn", 18), ("vgg11", 32)]:
        model = build_model(arch, (1, side, side), 10).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 1, side, side)).shape == (1, 10)


@pytest.mark.parametrize(
    ("shape", "classes"),
    [((0, 28, 28), 10), ((1, 28, 28.0), 10), ((True, 28, 28), 10), ("abc", 10), (MNIST, 0)],
)
def test_bad_shape_or_classes(shape, classes) -> None:
    with pytest.raises(LowdimError) as err:
        build_model("mlp", shape, classes)
    assert_one_line(err)


def test_conv_arch_needs_image_shape() -> None:
    with pytest.raises(LowdimError) as err:
        build_model("lenet", (784,), 10)
    assert "(784,)" in assert_one_line(err)
    # Flat features are fine for the fully connected nets.
    assert n_params(build_model("mlp", (784,), 10)) == 199_210


def test_numpy_shape_accepted() -> None:
    shape = tuple(np.array([1, 28, 28]))
    assert n_params(build_model("lenet", shape, np.int64(10))) == 44_426


@pytest.mark.parametrize("arch", ["mlp", "fc", "lenet", "cnn", "resnet20", "vgg11"])
def test_backward_gives_finite_gradients(arch: str) -> None:
    torch.manual_seed(0)
    shape = SMALL_INPUT[arch]
    model = build_model(arch, shape, 10).train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, *shape)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("arch", ["mlp", "lenet", "cnn", "resnet20", "vgg11", "resnet18"])
def test_eval_outputs_are_batch_independent(arch: str) -> None:
    torch.manual_seed(0)
    shape = SMALL_INPUT[arch]
    model = build_model(arch, shape, 10)
    with torch.no_grad():
        # A few train-mode passes move BN running stats away from their (0, 1) start.
        for _ in range(3):
            model(torch.randn(8, *shape) * 2 + 1)
        model.eval()
        x = torch.randn(5, *shape)
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_train_mode_bn_is_batch_dependent() -> None:
    # Guards the eval test above: in train mode the same example gives a different output.
    torch.manual_seed(0)
    model = build_model("resnet20", CIFAR, 10).train()
    x = torch.randn(4, *CIFAR)
    with torch.no_grad():
        assert not torch.allclose(model(x)[:1], model(x[:2])[:1])


def test_register_model(monkeypatch: pytest.MonkeyPatch) -> None:
    # A private copy of the table, so the test's registration does not leak into others.
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    @register_model("tiny")
    def build_tiny(input_shape, num_classes, *, bias: bool = True) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], num_classes, bias=bias))

    assert "tiny" in available_archs()
    assert n_params(build_model("tiny", (1, 1, 4), 3, bias=False)) == 12
    with pytest.raises(LowdimError):
        build_model("tiny", (1, 1, 4), 3, weight=1)
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny")(build_tiny)

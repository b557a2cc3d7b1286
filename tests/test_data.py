"""lowdim.data: digits, in-memory batching, augmentation, label noise, load_dataset errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowdim.data import (
    DATASETS,
    RandomCropFlip,
    Split,
    corrupt_labels,
    load_dataset,
)
from lowdim.errors import LowdimError
from lowdim.seeding import generator


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _toy_split(n: int = 10, augment=None) -> Split:
    x = torch.arange(n * 4, dtype=torch.float32).view(n, 1, 2, 2)
    return Split(x, torch.arange(n), augment)


def _collect(split, batch_size, **kw):
    return [(x.clone(), y.clone()) for x, y in split.batches(batch_size, **kw)]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )


# --- digits -------------------------------------------------------------------------------------


def test_datasets_tuple():
    assert DATASETS == ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder")


def test_digits_shapes_and_normalisation(digits):
    assert (len(digits.train), len(digits.test)) == (1437, 360)
    assert digits.train.x.shape == (1437, 1, 8, 8) and digits.train.x.dtype == torch.float32
    assert digits.test.y.dtype == torch.int64 and digits.test.y.shape == (360,)
    assert digits.num_classes == 10 and digits.input_shape == (1, 8, 8)
    assert abs(digits.train.x.mean().item()) < 1e-5
    assert digits.train.x.std().item() == pytest.approx(1.0, abs=1e-4)
    assert set(digits.train.y.tolist()) == set(range(10))
    assert digits.corrupt == 0.0 and digits.effective_noise_rate == 0.0
    assert digits.clean_train_labels is None
    assert digits.train.augment is None


def test_digits_split_is_fixed_and_independent_of_seed(digits):
    other = load_dataset("digits", seed=123)
    assert torch.equal(digits.train.x, other.train.x)
    assert torch.equal(digits.test.y, other.test.y)


def test_digits_fast_reader_matches_scikit_learn():
    from sklearn.datasets import load_digits

    from lowdim.data.digits import _read_digits

    bunch = load_digits()
    images, labels = _read_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)


# --- Split.batches ------------------------------------------------------------------------------


def test_batches_unshuffled_cover_in_order():
    split = _toy_split(10)
    got = _collect(split, 4)
    assert [len(y) for _, y in got] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in got]), torch.arange(10))
    assert split.num_batches(4) == 3 and split.num_batches(4, drop_last=True) == 2
    assert [len(y) for _, y in _collect(split, 4, drop_last=True)] == [4, 4]


def test_batches_shuffle_follows_the_documented_order():
    split = _toy_split(10)
    got = torch.cat([y for _, y in _collect(split, 3, shuffle=True, seed=5, epoch=2)])
    assert torch.equal(got, torch.randperm(10, generator=generator("order", 5, 2)))
    assert torch.equal(torch.sort(got).values, torch.arange(10))
    # x travels with y.
    for x, y in split.batches(3, shuffle=True, seed=5, epoch=2):
        assert torch.equal(x[:, 0, 0, 0], y.float() * 4)


def test_batches_deterministic_and_vary_with_seed_and_epoch():
    split = _toy_split(50)
    a = _collect(split, 7, shuffle=True, seed=1, epoch=3)
    assert _same(a, _collect(split, 7, shuffle=True, seed=1, epoch=3))
    assert not _same(a, _collect(split, 7, shuffle=True, seed=1, epoch=4))
    assert not _same(a, _collect(split, 7, shuffle=True, seed=2, epoch=3))


@pytest.mark.parametrize("drop_last", [False, True])
def test_start_batch_resumes_mid_epoch(drop_last):
    split = _toy_split(23, augment=RandomCropFlip(padding=1))
    kw = dict(shuffle=True, seed=9, epoch=1, drop_last=drop_last)
    full = _collect(split, 5, **kw)
    assert len(full) == split.num_batches(5, drop_last)
    for start in range(len(full) + 1):
        assert _same(full[start:], _collect(split, 5, start_batch=start, **kw))


def test_bad_batch_arguments():
    split = _toy_split(10)
    with pytest.raises(LowdimError, match="batch size 0"):
        next(split.batches(0))
    with pytest.raises(LowdimError, match="start_batch 4"):
        next(split.batches(4, start_batch=4))


def test_to_returns_a_copy_on_the_device():
    split = _toy_split(4, augment=RandomCropFlip())
    moved = split.to("cpu")
    assert moved is not split and moved.augment is split.augment and len(moved) == 4
    assert split.device.type == "cpu"


def test_batches_move_to_device():
    split = _toy_split(4)
    (x, y), *_ = split.batches(4, device="cpu")
    assert x.device.type == "cpu" and y.device.type == "cpu"


# --- augmentation -------------------------------------------------------------------------------


def test_augmentation_only_on_shuffled_passes_by_default():
    calls = []

    def spy(x, g):
        calls.append(len(x))
        return x + 1

    split = _toy_split(6, augment=spy)
    assert _same(_collect(split, 6), [(split.x, split.y)])
    assert not calls
    (x, _), *_ = _collect(split, 6, augment=True)
    assert torch.equal(x, split.x + 1) and calls == [6]
    _collect(split, 4, shuffle=True)
    assert calls == [6, 4, 2]
    _collect(split, 4, shuffle=True, augment=False)
    assert calls == [6, 4, 2]


def test_augmentation_is_deterministic_per_seed_and_epoch():
    split = _toy_split(40, augment=RandomCropFlip(padding=1))
    a = _collect(split, 8, shuffle=True, seed=3, epoch=0)
    assert _same(a, _collect(split, 8, shuffle=True, seed=3, epoch=0))
    b = _collect(split, 8, shuffle=True, seed=3, epoch=1)
    assert not _same(a, b)


def test_random_crop_flip_is_a_padded_crop_or_its_mirror():
    x = torch.randn(64, 3, 6, 6)
    fill = [-1.0, -2.0, -3.0]
    out = RandomCropFlip(padding=2, fill=fill)(x, generator("t"))
    assert out.shape == x.shape
    padded = torch.tensor(fill).view(1, 3, 1, 1).expand(64, 3, 10, 10).clone()
    padded[:, :, 2:8, 2:8] = x
    flips = 0
    for i in range(64):
        crops = [padded[i, :, r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
        plain = any(torch.equal(out[i], c) for c in crops)
        mirrored = any(torch.equal(out[i], c.flip(2)) for c in crops)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 10 < flips < 54  # about half are flipped
    same = RandomCropFlip(padding=2, fill=fill)(x, generator("t"))
    assert torch.equal(out, same)


# --- label noise --------------------------------------------------------------------------------


def test_corrupt_selects_exact_count_and_is_pure():
    labels = torch.zeros(1000, dtype=torch.int64)
    noisy = corrupt_labels(labels, 10, 0.3, seed=4, salt="x")
    assert torch.equal(noisy, corrupt_labels(labels, 10, 0.3, seed=4, salt="x"))
    assert not torch.equal(noisy, corrupt_labels(labels, 10, 0.3, seed=5, salt="x"))
    assert not torch.equal(noisy, corrupt_labels(labels, 10, 0.3, seed=4, salt="y"))
    assert torch.equal(labels, torch.zeros(1000, dtype=torch.int64))  # input untouched
    # With K = 1 every redraw keeps the label; with many classes almost every one changes, so
    # count the chosen positions through a label that no redraw can produce.
    marked = torch.full((1000,), 10_000)
    chosen = corrupt_labels(marked, 10, 0.3, seed=4, salt="x") != 10_000
    assert chosen.sum().item() == round(0.3 * 1000)
    # The positions do not depend on the labels: what changed is among the chosen positions.
    assert not ((noisy != 0) & ~chosen).any()
    assert (noisy != 0).sum() > 0.8 * chosen.sum()


def test_corrupt_draws_uniformly_over_all_classes():
    n, k = 20_000, 100
    labels = torch.randint(0, k, (n,), generator=generator("labels"))
    noisy = corrupt_labels(labels, k, 0.5, seed=0)
    changed = noisy != labels
    assert set(noisy[changed].tolist()) == set(range(k))  # classes >= 10 appear too
    rate = changed.float().mean().item()
    assert rate == pytest.approx(0.5 * (1 - 1 / k), abs=0.01)
    counts = torch.bincount(noisy[changed], minlength=k).float()
    assert counts.min() > 0.5 * counts.mean() and counts.max() < 1.5 * counts.mean()


def test_corrupt_noise_sets_are_nested_and_edge_fractions():
    labels = torch.arange(200) % 10
    assert torch.equal(corrupt_labels(labels, 10, 0.0, 1), labels)
    full = corrupt_labels(labels, 10, 1.0, 1)
    small = corrupt_labels(labels, 10, 0.25, 1)
    differs = small != labels
    assert torch.equal(small[differs], full[differs])


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), "abc"])
def test_corrupt_bad_fraction(bad):
    with pytest.raises(LowdimError, match="^fraction "):
        corrupt_labels(torch.zeros(5, dtype=torch.int64), 10, bad, 0)
    with pytest.raises(LowdimError, match="^corrupt "):
        load_dataset("digits", corrupt=bad)


def test_corrupt_message_names_value_and_range():
    with pytest.raises(LowdimError) as e:
        load_dataset("digits", corrupt=1.5)
    assert str(e.value) == "corrupt 1.5 is outside [0, 1]"
    assert e.value.as_flag() == "--corrupt 1.5 is outside [0, 1]"


def test_load_dataset_corrupts_train_only_and_reproducibly(digits):
    a = load_dataset("digits", corrupt=0.4, seed=7)
    b = load_dataset("digits", corrupt=0.4, seed=7)
    assert torch.equal(a.train.y, b.train.y)
    assert torch.equal(a.clean_train_labels, digits.train.y)
    assert torch.equal(a.test.y, digits.test.y)
    assert a.corrupt == 0.4
    assert a.effective_noise_rate == pytest.approx((a.train.y != digits.train.y).float().mean())
    assert 0.3 < a.effective_noise_rate < 0.42
    expected = corrupt_labels(digits.train.y, 10, 0.4, 7, salt="digits")
    assert torch.equal(a.train.y, expected)
    assert torch.equal(a.train.x, digits.train.x)


# --- load_dataset errors ------------------------------------------------------------------------


def test_unknown_dataset_message():
    with pytest.raises(LowdimError) as e:
        load_dataset("foo")
    msg = str(e.value)
    assert "'foo'" in msg and "digits, mnist, fashion-mnist" in msg and "\n" not in msg


def test_unknown_option_message():
    with pytest.raises(LowdimError, match="unknown option 'image_size' for dataset 'mnist'"):
        load_dataset("mnist", image_size=3)


def test_name_aliases(digits):
    assert load_dataset("DIGITS").name == "digits"


@pytest.mark.cuda
def test_cuda_batches_match_cpu():
    split = _toy_split(30, augment=RandomCropFlip(padding=1))
    kw = dict(shuffle=True, seed=1, epoch=2)
    cpu = _collect(split, 8, **kw)
    on_gpu = _collect(split.to("cuda"), 8, **kw)
    moved = _collect(split, 8, device="cuda", **kw)
    for got in (on_gpu, moved):
        assert all(x.is_cuda and y.is_cuda for x, y in got)
        assert _same(cpu, [(x.cpu(), y.cpu()) for x, y in got])

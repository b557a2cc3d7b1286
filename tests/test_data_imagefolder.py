"""lowdim.data: the imagefolder dataset (PIL + StreamSplit) on a tiny tree of PNGs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lowdim.data import StreamSplit, load_dataset
from lowdim.errors import LowdimError

PIL = pytest.importorskip("PIL.Image")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def write_tree(root: Path) -> None:
    """train: cat/ and dog/ with 3 images each; val: one of each. Sizes vary on purpose."""
    rng = np.random.default_rng(0)
    sizes = [(40, 30), (24, 60), (33, 33)]
    for split, count in (("train", 3), ("val", 1)):
        for cls in ("dog", "cat"):  # written unsorted: indices must follow sorted names
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                w, h = sizes[i]
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                PIL.fromarray(pixels).save(folder / f"img{i}.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    # A solid-colour validation image: its centre crop must be that colour everywhere.
    PIL.new("RGB", (50, 40), (255, 0, 128)).save(root / "val" / "cat" / "solid.png")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    write_tree(tmp_path)
    return tmp_path


def load(tree: Path, **kw):
    return load_dataset("imagefolder", data_dir=tree, image_size=32, num_workers=0, **kw)


def collect(split, **kw):
    return [(x.clone(), y.clone()) for x, y in split.batches(4, **kw)]


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(p, r) and torch.equal(q, s) for (p, q), (r, s) in zip(a, b, strict=True)
    )


def test_shapes_classes_and_labels(tree):
    data = load(tree)
    assert isinstance(data.train, StreamSplit) and isinstance(data.test, StreamSplit)
    assert (len(data.train), len(data.test)) == (6, 3)
    assert data.num_classes == 2 and data.input_shape == (3, 32, 32)
    assert data.train.y.tolist() == [0, 0, 0, 1, 1, 1]  # cat = 0, dog = 1
    assert data.test.y.tolist() == [0, 0, 1]
    x, y = next(data.test.batches(8))
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert data.train.to("cpu") is data.train
    assert data.train.num_batches(4) == 2 and data.train.num_batches(4, drop_last=True) == 1


def test_eval_transform_centre_crop(tree):
    test = load(tree).test
    x, _ = next(test.batches(3))
    colour = (torch.tensor([255.0, 0.0, 128.0]).view(1, 3, 1, 1) / 255 - MEAN) / STD
    assert torch.allclose(x[1:2], colour.expand(1, 3, 32, 32), atol=1e-5)  # solid.png


def test_train_batches_are_reproducible_and_augmented(tree):
    train = load(tree).train
    kw = dict(shuffle=True, seed=3, epoch=2)
    a = collect(train, **kw)
    assert same(a, collect(train, **kw))
    assert not same(a, collect(train, shuffle=True, seed=3, epoch=3))
    assert not same(a, collect(train, augment=False, **kw))
    # Mid-epoch resume gives the rest of the epoch unchanged.
    assert same(a[1:], collect(train, start_batch=1, **kw))
    assert sorted(torch.cat([y for _, y in a]).tolist()) == [0, 0, 0, 1, 1, 1]
    # Unshuffled passes are unaugmented: the evaluation transform.
    assert same(collect(train), collect(train))


def test_worker_count_does_not_change_batches(tree):
    kw = dict(shuffle=True, seed=1, epoch=0)
    one = collect(load(tree).train, **kw)
    two = collect(
        load_dataset("imagefolder", data_dir=tree, image_size=32, num_workers=2).train, **kw
    )
    assert same(one, two)


def test_label_noise_on_a_stream_split(tree):
    data = load(tree, corrupt=1.0, seed=5)
    assert data.clean_train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    ys = torch.cat([y for _, y in data.train.batches(6)])
    assert torch.equal(ys, data.train.y)
    assert data.effective_noise_rate == pytest.approx(
        (data.train.y != data.clean_train_labels).float().mean()
    )


def test_corrupt_image_is_a_one_line_error(tree):
    (tree / "val" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    for workers in (0, 1):
        test = load_dataset("imagefolder", data_dir=tree, image_size=32, num_workers=workers).test
        with pytest.raises(LowdimError) as e:
            list(test.batches(2))
        assert str(e.value).startswith("cannot read image ") and "broken.png" in str(e.value)
        assert "\n" not in str(e.value)


def test_folder_errors(tmp_path):
    with pytest.raises(LowdimError, match="needs data_dir pointing"):
        load_dataset("imagefolder")
    with pytest.raises(LowdimError, match="needs train/<class>/ and val/<class>/"):
        load_dataset("imagefolder", data_dir=tmp_path)
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(LowdimError, match="no images in"):
        load_dataset("imagefolder", data_dir=tmp_path)
    with pytest.raises(LowdimError, match="image_size 0"):
        load_dataset("imagefolder", data_dir=tmp_path, image_size=0)


def test_pillow_missing(tree, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(LowdimError, match=r"pip install 'lowdim\[imagefolder\]'"):
        load(tree)

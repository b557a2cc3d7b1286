"""ImageNet-style folders of image files (root/train/<class>/*, root/val/<class>/*), read with
PIL (the optional `pillow` dependency) and streamed; the transforms are written with PIL + torch."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lowdim.data.stream import StreamSplit
from lowdim.errors import LowdimError, arg
from lowdim.seeding import generator

EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SCALE = (0.08, 1.0)  # random-resized-crop area range, as a fraction of the image
_RATIO = (3 / 4, 4 / 3)  # random-resized-crop aspect-ratio range


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise LowdimError(
            "the imagefolder dataset needs Pillow; pip install 'lowdim[imagefolder]'"
        ) from None
    return Image


def _list_images(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            Path(dirpath, f)
            for f in sorted(filenames)
            if not f.startswith(".") and Path(f).suffix.lower() in EXTENSIONS
        ]
    return found


def scan(folder: Path, classes: list[str] | None = None) -> tuple[list[str], list[Path], Tensor]:
    """(class names, image paths, labels) of a folder with one subfolder per class.

    Class indices follow the sorted subfolder names, or the given `classes` (e.g. the training
    ones, so that validation labels agree); a subfolder outside `classes` is a `LowdimError`.
    """
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        classes = names
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise LowdimError(f"{folder} has classes {unknown[:5]} that the training folder lacks")
    index = {c: i for i, c in enumerate(classes)}
    paths: list[Path] = []
    labels: list[int] = []
    for name in names:
        files = _list_images(folder / name)
        paths += files
        labels += [index[name]] * len(files)
    if not paths:
        exts = ", ".join(sorted(EXTENSIONS))
        raise LowdimError(f"no images in {folder}/<class>/ (looked for {exts})")
    return classes, paths, torch.tensor(labels, dtype=torch.int64)


class ImageSource:
    """Loads image `index` of `paths` as a normalised float32 (3, size, size) tensor.

    With a seed it applies the training transform (random-resized crop to `size`, area in
    [0.08, 1] of the image and aspect ratio in [3/4, 4/3], then a horizontal flip with p = 1/2);
    without, the evaluation one (shorter side resized to round(size * 256 / 224), centre crop).
    """

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths = paths
        self.size = size
        self._mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int, seed: int | None) -> Tensor:
        image_mod = _pil()
        path = self.paths[index]
        try:
            with image_mod.open(path) as im:
                im = im.convert("RGB")
        except (OSError, ValueError, SyntaxError, image_mod.DecompressionBombError) as e:
            raise LowdimError(f"cannot read image {path}: {' '.join(str(e).split())}") from None
        s = self.size
        if seed is None:
            box, flip = self._centre_box(im.width, im.height), False
        else:
            g = generator("imagefolder", seed)
            box = self._random_box(im.width, im.height, g)
            flip = bool(torch.rand((), generator=g) < 0.5)
        # Crop and resize in one resampling step; PIL antialiases when shrinking.
        # Image.Resampling appeared in Pillow 9.1; older releases keep the constants on Image.
        bilinear = getattr(image_mod, "Resampling", image_mod).BILINEAR
        im = im.resize((s, s), bilinear, box=box)
        x = torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
        if flip:
            x = x.flip(2)
        return x.sub_(self._mean).div_(self._std)

    def _centre_box(self, w: int, h: int) -> tuple[float, float, float, float]:
        # Resizing the shorter side to `resized` and cropping `size` pixels in the middle is
        # the same as cropping size/scale original pixels around the centre and resizing them.
        resized = round(self.size * 256 / 224)
        side = self.size * min(w, h) / resized
        left, top = (w - side) / 2, (h - side) / 2
        return left, top, left + side, top + side

    def _random_box(self, w: int, h: int, g: torch.Generator) -> tuple[int, int, int, int]:
        area = w * h
        log_lo, log_hi = math.log(_RATIO[0]), math.log(_RATIO[1])
        for _ in range(10):
            u = torch.rand(2, generator=g).tolist()
            target = area * (_SCALE[0] + (_SCALE[1] - _SCALE[0]) * u[0])
            ratio = math.exp(log_lo + (log_hi - log_lo) * u[1])
            cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (), generator=g))
                left = int(torch.randint(0, w - cw + 1, (), generator=g))
                return left, top, left + cw, top + ch
        # Ten misses (a very elongated image): the largest centred crop with an allowed ratio.
        if w / h < _RATIO[0]:
            cw, ch = w, round(w / _RATIO[0])
        elif w / h > _RATIO[1]:
            cw, ch = round(h * _RATIO[1]), h
        else:
            cw, ch = w, h
        left, top = (w - cw) // 2, (h - ch) // 2
        return left, top, left + cw, top + ch


def load_imagefolder(
    data_dir: str | os.PathLike | None,
    image_size: int = 224,
    num_workers: int | None = None,
    augment: bool = True,
) -> tuple[StreamSplit, StreamSplit, list[str]]:
    """(train, test, class names) of the tree at `data_dir` (required), as stream splits.

    The test images come from `val/` (or `test/` if there is no `val/`). `image_size` (default
    224) is the side of the square crops. `num_workers` (default None: min(8, CPU count))
    DataLoader workers read the images. `augment` (default True) enables the training
    transform on shuffled passes over the train split.
    """
    _pil()  # fail early, before scanning a large tree, if Pillow is missing
    if data_dir is None:
        raise LowdimError(
            f"the imagefolder dataset needs {arg('data_dir')} pointing at a folder with train/ "
            "and val/"
        )
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise LowdimError(f"image_size {image_size!r} must be a positive integer")
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise LowdimError(f"num_workers {num_workers!r} must be a non-negative integer")
    root = Path(data_dir).expanduser()
    train_dir = root / "train"
    test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise LowdimError(
            f"{root} needs train/<class>/ and val/<class>/ folders of images for imagefolder"
        )
    classes, train_paths, train_y = scan(train_dir)
    _, test_paths, test_y = scan(test_dir, classes)
    train = StreamSplit(
        ImageSource(train_paths, image_size), train_y, augment=augment, num_workers=num_workers
    )
    test = StreamSplit(ImageSource(test_paths, image_size), test_y, num_workers=num_workers)
    return train, test, classes

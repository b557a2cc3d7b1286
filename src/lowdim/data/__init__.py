"""Datasets as in-memory or streamed splits with seeded, resumable batch order and label noise.

`load_dataset(name, ...)` returns a `Data` whose `train` and `test` splits yield batches that
are a pure function of (seed, epoch). See `DATASETS` for the names.
"""

from lowdim.data.augment import RandomCropFlip
from lowdim.data.idx import read_idx
from lowdim.data.load import DATASETS, Data, load_dataset
from lowdim.data.noise import corrupt_labels
from lowdim.data.split import Split
from lowdim.data.stream import StreamSplit

__all__ = [
    "DATASETS",
    "Data",
    "RandomCropFlip",
    "Split",
    "StreamSplit",
    "corrupt_labels",
    "load_dataset",
    "read_idx",
]

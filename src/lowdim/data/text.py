"""Text classification tasks: WordNet's noun supersenses, or your own labelled texts.

A task is texts with integer labels, split into train and test (`TextTask`); turning them into
tokens is the model's business (`lowdim.hf.text_split`). `load_text_task` reads either

- "wordnet-supersenses": a seeded subsample of WordNet 3.0's noun glosses (see `wordnet.py`);
- a folder holding train.tsv and test.tsv, one example per line, `label<TAB>text`. The classes
  are the training file's labels in sorted order; every line is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import BadArgument, LowdimError

TASKS = ("wordnet-supersenses",)


@dataclass
class TextTask:
    """Texts with integer labels, split into train and test; `labels[i]` names class i."""

    name: str
    train_texts: list[str]
    train_labels: torch.Tensor
    test_texts: list[str]
    test_labels: torch.Tensor
    labels: tuple[str, ...]


def _read_tsv(path: Path) -> tuple[list[str], list[str]]:
    """(texts, label names) of a `label<TAB>text` file; LowdimError naming the file and line for
    a line without a tab, an empty label or an empty text."""
    if not path.is_file():
        raise BadArgument(
            "task", f"{path}: no such file (a task folder holds train.tsv and test.tsv)"
        )
    texts, names = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            label, tab, text = line.rstrip("\n").partition("\t")
            if not tab or not label.strip() or not text.strip():
                raise LowdimError(f"{path}, line {number}: not a 'label<TAB>text' line")
            names.append(label.strip())
            texts.append(text.strip())
    if not texts:
        raise LowdimError(f"{path} holds no examples")
    return texts, names


def read_tsv_task(folder: str | os.PathLike) -> TextTask:
    """The task in `folder`/train.tsv and `folder`/test.tsv (`label<TAB>text` lines). The classes
    are the training labels, sorted; a test label the training file lacks is an error, as is a
    single class."""
    folder = Path(folder)
    train_texts, train_names = _read_tsv(folder / "train.tsv")
    test_texts, test_names = _read_tsv(folder / "test.tsv")
    labels = tuple(sorted(set(train_names)))
    if len(labels) < 2:
        raise LowdimError(f"{folder / 'train.tsv'} has one class ({labels[0]!r}); a task needs two")
    index = {name: i for i, name in enumerate(labels)}
    unseen = sorted(set(test_names) - set(labels))
    if unseen:
        raise LowdimError(f"{folder / 'test.tsv'} has label {unseen[0]!r}, absent from train.tsv")
    return TextTask(
        folder.name,
        train_texts,
        torch.tensor([index[n] for n in train_names]),
        test_texts,
        torch.tensor([index[n] for n in test_names]),
        labels,
    )


def load_text_task(task: str, *, train: int = 2000, test: int = 1000, seed: int = 0) -> TextTask:
    """The task `task`: "wordnet-supersenses" subsampled to `train` and `test` glosses (defaults
    2,000 and 1,000) by `seed`, or a folder of train.tsv and test.tsv, read whole."""
    if task in TASKS:
        from .wordnet import wordnet_supersenses

        return wordnet_supersenses(train=train, test=test, seed=seed)
    if Path(task).is_dir():
        return read_tsv_task(task)
    raise BadArgument(
        "task",
        f"{task!r} is neither a known task ({', '.join(TASKS)}) nor a folder holding "
        "train.tsv and test.tsv",
    )

"""A text classification task from WordNet 3.0: the supersense of a noun from its gloss.

Each noun synset in WordNet's `data.noun` carries its lexicographer file, one of 26 noun
supersenses (noun.animal, noun.artifact, noun.food, ...), and its gloss after a `|`. The task
is to read the gloss ("a domesticated carnivorous mammal ...") and name the supersense
(noun.animal). 82,115 synsets; the classes are unbalanced (noun.artifact 11,587, noun.motive
42). Debian's `wordnet-base` package installs the file at /usr/share/wordnet/data.noun.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import BadArgument, LowdimError
from ..seeding import generator
from .text import TextTask

DEFAULT_PATH = Path("/usr/share/wordnet/data.noun")
# WordNet's lexicographer files 03..28: the noun supersenses, in file-number order.
SUPERSENSES = (
    "Tops", "act", "animal", "artifact", "attribute", "body", "cognition", "communication",
    "event", "feeling", "food", "group", "location", "motive", "object", "person",
    "phenomenon", "plant", "possession", "process", "quantity", "relation", "shape", "state",
    "substance", "time",
)  # fmt: skip
FIRST_NOUN_FILE = 3


def read_glosses(path: str | os.PathLike = DEFAULT_PATH) -> tuple[list[str], list[int]]:
    """(gloss, supersense index) of every synset in a WordNet `data.noun` file, in file order;
    LowdimError naming the file and line for a missing file or a line that is not a synset."""
    path = Path(path)
    if not path.is_file():
        raise BadArgument(
            "path", f"{path}: no such file (install the Debian package wordnet-base, or give "
            "the data.noun of a WordNet 3.0)"
        )  # fmt: skip
    texts, labels = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if line.startswith("  "):  # the license header
                continue
            fields, _, gloss = line.partition(" | ")
            parts = fields.split(" ", 3)
            if len(parts) < 3 or not parts[1].isdigit() or not gloss.strip():
                raise LowdimError(f"{path}, line {number}: not a WordNet synset line")
            index = int(parts[1]) - FIRST_NOUN_FILE
            if not 0 <= index < len(SUPERSENSES):
                raise LowdimError(f"{path}, line {number}: lexicographer file {parts[1]} is "
                                  "not a noun supersense (03..28)")  # fmt: skip
            texts.append(gloss.strip())
            labels.append(index)
    if not texts:
        raise LowdimError(f"{path} holds no synsets")
    return texts, labels


def wordnet_supersenses(
    path: str | os.PathLike = DEFAULT_PATH, *, train: int = 16_000, test: int = 4_000, seed: int = 0
) -> TextTask:
    """The supersense task on a seeded subsample: a permutation of all synsets drawn from
    generator("wordnet", seed); its first `test` (default 4,000) are the test set, the next
    `train` (default 16,000, sized for 2 CPU cores) the training set."""
    texts, labels = read_glosses(path)
    for name, value in (("train", train), ("test", test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadArgument(name, f"must be a positive number of glosses, got {value!r}")
    if train + test > len(texts):
        raise BadArgument("train", f"{train} + test {test} exceed the {len(texts)} synsets")
    order = torch.randperm(len(texts), generator=generator("wordnet", seed)).tolist()
    y = torch.tensor(labels)
    held, used = order[:test], order[test : test + train]
    return TextTask(
        "wordnet-supersenses",
        [texts[i] for i in used],
        y[used],
        [texts[i] for i in held],
        y[held],
        tuple(f"noun.{s}" for s in SUPERSENSES),
    )

"""The WordNet supersense reader on small files written here (the real data.noun is read by
the `realdata` fine-tuning test)."""

import pytest

from lowdim.data.wordnet import SUPERSENSES, read_glosses, wordnet_supersenses
from lowdim.errors import LowdimError

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
LINES = [
    "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived to exist  \n",
    "01318894 05 n 01 animal 0 002 @ 00004475 n 0000 | a living organism that feeds  \n",
    "07555863 13 n 01 food 0 001 @ 00021265 n 0000 | any solid substance used as a source  \n",
]


def write(tmp_path, lines):
    path = tmp_path / "data.noun"
    path.write_text(HEADER + "".join(lines))
    return path


def test_glosses_and_their_supersenses(tmp_path):
    texts, labels = read_glosses(write(tmp_path, LINES))
    assert texts[1] == "a living organism that feeds"
    assert [SUPERSENSES[i] for i in labels] == ["Tops", "animal", "food"]


def test_the_seeded_split_is_disjoint_and_reproducible(tmp_path):
    path = write(tmp_path, LINES * 10)
    task = wordnet_supersenses(path, train=20, test=6, seed=1)
    again = wordnet_supersenses(path, train=20, test=6, seed=1)
    assert task.train_texts == again.train_texts and len(task.test_texts) == 6
    assert task.labels[2] == "noun.animal"
    with pytest.raises(LowdimError, match="exceed the 30 synsets"):
        wordnet_supersenses(path, train=30, test=6)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not a synset | gloss\n", "line 2: not a WordNet synset line"),
        ("00001740 44 n 01 x 0 000 | gloss\n", "lexicographer file 44 is not a noun"),
    ],
)
def test_a_damaged_file_names_its_line(tmp_path, line, problem):
    with pytest.raises(LowdimError, match=problem):
        read_glosses(write(tmp_path, [line]))
    with pytest.raises(LowdimError, match="no such file"):
        read_glosses(tmp_path / "missing")

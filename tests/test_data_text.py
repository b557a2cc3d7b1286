"""Text tasks from a folder of train.tsv and test.tsv: classes, and one-line errors for what a
hand-made file gets wrong."""

import pytest

from lowdim.data.text import load_text_task, read_tsv_task
from lowdim.errors import LowdimError


def task_folder(tmp_path, train: str, test: str = "b\tthird text\n"):
    (tmp_path / "train.tsv").write_text(train)
    (tmp_path / "test.tsv").write_text(test)
    return tmp_path


def test_classes_are_the_training_labels_sorted(tmp_path):
    task = read_tsv_task(task_folder(tmp_path, "b\tone text\n\na\t two\twith a tab \n"))
    assert task.labels == ("a", "b") and task.train_labels.tolist() == [1, 0]
    assert task.train_texts == ["one text", "two\twith a tab"]  # the first tab splits
    assert task.test_labels.tolist() == [1] and task.name == tmp_path.name


@pytest.mark.parametrize(
    ("train", "test", "problem"),
    [
        ("a\tx\nb x\n", "b\ty\n", "train.tsv, line 2: not a 'label<TAB>text' line"),
        ("a\tx\n\t y\n", "a\ty\n", "train.tsv, line 2: not a 'label<TAB>text' line"),
        ("a\tx\na\ty\n", "a\ty\n", "has one class ('a'); a task needs two"),
        ("a\tx\nb\ty\n", "c\tz\n", "test.tsv has label 'c', absent from train.tsv"),
        ("\n\n", "a\tz\n", "train.tsv holds no examples"),
    ],
)
def test_a_bad_file_is_named_with_its_problem(tmp_path, train, test, problem):
    with pytest.raises(LowdimError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        read_tsv_task(task_folder(tmp_path, train, test))


def test_an_unknown_task_names_the_valid_ones(tmp_path):
    with pytest.raises(LowdimError, match="neither a known task .wordnet-supersenses."):
        load_text_task("sst2")
    with pytest.raises(LowdimError, match="test.tsv: no such file"):
        (tmp_path / "train.tsv").write_text("a\tx\n")
        load_text_task(str(tmp_path))

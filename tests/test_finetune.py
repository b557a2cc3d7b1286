"""`lowdim finetune` and `lowdim intrinsic-dim --model` on a tiny BERT saved as a Hugging Face
model folder (with its WordPiece tokenizer, written here: no download) and a task folder of
train.tsv and test.tsv: every method, the files each leaves, a SAID model reloaded from its
seeds onto a fresh copy of the base, one-line errors, and two processes against one."""

import json
import random
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_distributed_commands import worker
from transformers import BertConfig, BertModel, BertTokenizerFast

import lowdim
from lowdim.cli import main
from lowdim.io import load_tensors
from lowdim.jobs.finetune import METHODS, FinetuneConfig, pretrained_model, task_data

WORDS = [f"w{i}" for i in range(30)]
CLASSES = ("high", "low", "mid")


def write_model(folder: Path, vocab_size: int | None = None) -> Path:
    """A 2-layer BERT body (no head, as a pretrained checkpoint is) with its tokenizer; without
    dropout, so that runs on one and two processes see the same function."""
    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size or len(vocab), hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=32, max_position_embeddings=16,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)
    return folder


def write_task(folder: Path, train: int = 160, test: int = 64) -> Path:
    """Six random words a line; the class is the first word's number mod 3."""
    folder.mkdir(parents=True)
    rng = random.Random(0)
    for name, n in (("train", train), ("test", test)):
        lines = []
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(6)]
            lines.append(f"{CLASSES[int(words[0][1:]) % 3]}\t{' '.join(words)}")
        (folder / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("finetune")
    return write_model(root / "tiny-bert"), write_task(root / "first-word")


def finetune_args(tiny, folder, *extra: str) -> list[str]:
    model, task = tiny
    return ["finetune", "--quiet", "--model", str(model), "--task", str(task), "--max-length",
            "12", "--batch-size", "16", "--epochs", "4", "--save-dir", str(folder),
            *extra]  # fmt: skip


EXTRA = {"said": ["--dim", "60"], "did": ["--dim", "20"], "dldr": ["--dim", "8"],
         "twa": ["--dim", "8", "--finish-lr", "0.05"], "rbd": ["--dim", "8"],
         "full": ["--lr", "1e-3"]}  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
def test_every_method_fine_tunes_and_reports_what_it_stores(tiny, tmp_path, method):
    folder = tmp_path / method
    assert main(finetune_args(tiny, folder, "--method", method, *EXTRA.get(method, []))) == 0
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["method"] == method and summary["split"] == "test"
    assert summary["dataset"] == "first-word (160 train, 12 tokens)"
    assert summary["arch"] == str(tiny[0])  # the base model's folder, not a class name
    theta = summary["num_params"]
    trained = {"full": theta, "head": 3 * 16 + 3, "said": 60 + 51, "did": 20 + 51}
    assert summary["trained_numbers"] == trained.get(method, 8)
    if method in ("said", "did"):  # the seeds, d numbers and the head: the file's size
        point = folder / "point" / "subspace.safetensors"
        assert summary["stored_bytes"] == point.stat().st_size < 4 * theta
    else:
        changed = summary["trained_numbers" if method == "head" else "num_params"]
        assert summary["stored_bytes"] == 4 * changed  # float32 weights
    assert 0 <= summary["test_acc"] <= 1 and summary["step_seconds"] > 0
    if method == "twa":  # its P-SGD rate, not the fine-tuning stage's
        assert json.loads((folder / "sgd" / "twa" / "summary.json").read_text())["lr"] == 0.05


def test_head_only_leaves_every_pretrained_weight_as_it_was(tiny, tmp_path):
    assert main(finetune_args(tiny, tmp_path / "head", "--method", "head")) == 0
    trained = load_tensors(tmp_path / "head" / "sgd" / "model.safetensors")
    base = pretrained_model(FinetuneConfig(model=str(tiny[0])), len(CLASSES)).state_dict()
    assert all(torch.equal(trained[k], base[k]) for k in base if k.startswith("bert."))
    assert not torch.equal(trained["classifier.weight"], base["classifier.weight"])


def test_said_reloads_from_its_seeds_onto_a_fresh_base_with_the_same_accuracy(tiny, tmp_path):
    folder = tmp_path / "said"
    args = finetune_args(tiny, folder, "--method", "said", "--dim", "60", "--head", "subspace")
    assert main(args) == 0
    summary = json.loads((folder / "summary.json").read_text())
    cfg = FinetuneConfig(model=str(tiny[0]), task=str(tiny[1]), max_length=12)
    _, data = task_data(cfg.model, cfg.task, max_length=12)
    restored = lowdim.SubspaceModel.load(pretrained_model(cfg, 3), folder / "point")
    assert summary["trained_numbers"] == 60  # SAID as published: the head is in theta too
    assert lowdim.evaluate(restored, data.test)[1] == summary["test_acc"]


def test_validation_reports_on_held_out_training_texts(tiny, tmp_path):
    folder = tmp_path / "val"
    assert main(finetune_args(tiny, folder, "--method", "did", "--validation", "40")) == 0
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["split"] == "validation"
    assert summary["dataset"] == "first-word (120 train, 40 validation, 12 tokens)"


def test_a_finished_run_is_refused_without_resume_and_returned_with_it(tiny, tmp_path, capsys):
    args = finetune_args(tiny, tmp_path / "run", "--method", "head")
    assert main(args) == 0
    first = (tmp_path / "run" / "summary.json").read_text()
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert (tmp_path / "run" / "summary.json").read_text() == first


def test_bad_input_is_one_line_and_writes_nothing(tiny, tmp_path, capsys):
    model, task = tiny
    mismatched = write_model(tmp_path / "small-vocab", vocab_size=20)
    damaged = write_task(tmp_path / "damaged")
    (damaged / "test.tsv").write_text("high\tw1 w2\nno tab here\n")
    capsys.readouterr()  # what writing the model folder printed
    cases = {
        "missing": (["--model", str(tmp_path / "nowhere")], "nowhere: no such folder"),
        "tokenizer": (["--model", str(mismatched)], "tokenizer and model do not match"),
        "task": (["--task", "glue"], "neither a known task (wordnet-supersenses) nor a folder"),
        "line": (["--task", str(damaged)], "test.tsv, line 2: not a 'label<TAB>text' line"),
        "said": (["--method", "said", "--dim", "30"], "--dim 30 must exceed SAID's 39 layer"),
        "dldr": (["--method", "dldr", "--dim", "40"], "--dim 40 needs 41 snapshots, more than"),
    }  # fmt: skip
    for name, (extra, message) in cases.items():
        folder = tmp_path / name
        assert main([*finetune_args(tiny, folder), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not folder.exists()


def test_intrinsic_dim_of_fine_tuning_from_the_command_line(tiny, tmp_path):
    model, task = tiny
    folder = tmp_path / "sweep"
    args = ["intrinsic-dim", "--quiet", "--model", str(model), "--task", str(task),
            "--max-length", "12", "--dims", "60,120", "--layer-scales", "param", "--direct",
            "classifier.*", "--epochs", "3", "--batch-size", "16", "--lr", "0.05", "--l2", "0",
            "--baseline-lr", "1e-3", "--save-dir", str(folder)]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["arch"] == str(model) and [r["dim"] for r in summary["rows"]] == [60, 120]
    assert (folder / "intrinsic_dim.png").stat().st_size > 0
    assert main([*args, "--resume"]) == 0  # finished: read back, not retrained


@pytest.mark.parametrize("method", ["full", "did"])
def test_two_processes_equal_one_on_the_global_batch(tiny, tmp_path, free_port, method):
    base = ["finetune", "--quiet", "--model", str(tiny[0]), "--task", str(tiny[1]),
            "--method", method, "--max-length", "12", "--epochs", "2", "--lr", "0.01",
            "--dim", "20"]  # fmt: skip
    assert main([*base, "--batch-size", "32", "--save-dir", str(tmp_path / "one")]) == 0
    argv = [*base, "--batch-size", "16", "--save-dir", str(tmp_path / "two")]
    mp.spawn(worker, args=(free_port, argv, str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"code{r}").read_text() for r in (0, 1)] == ["0", "0"]
    one, two = (json.loads((tmp_path / k / "summary.json").read_text()) for k in ("one", "two"))
    # sums over the same examples in another order: equal up to float rounding
    assert one["test_loss"] == pytest.approx(two["test_loss"], rel=1e-4)
    assert abs(one["test_acc"] - two["test_acc"]) <= 1 / 64

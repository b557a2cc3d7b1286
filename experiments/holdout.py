"""The validation protocol that dldr.py and twa.py share (not a script of its own).

Every run trains on 90% of the Fashion-MNIST training images; the other 10% (6,000 images,
`lowdim.jobs.common.holdout_split(train, 0.1, seed)`, so a different split per seed) is handed
to the jobs as the `test` split of a `lowdim.data.Data`, so the accuracy a run reports as its
"test_acc" is a VALIDATION accuracy. Every choice (a learning rate, a window) is made on it.
The real test split is read only by `test_accuracy`, once per chosen configuration, after
the choices. Each process trains on one thread, so that wall times do not depend on what else
the machine runs on its other core.

Runs go to runs/experiments/validated/; finished runs are reused, so a killed script resumes.
"""

from __future__ import annotations

import functools
import json
import statistics
from pathlib import Path

import torch

from lowdim.bases import load_basis
from lowdim.data import Data, load_dataset
from lowdim.errors import LowdimError
from lowdim.jobs import SGDConfig, SubspaceConfig, train_in_subspace, train_sgd
from lowdim.jobs.common import holdout_split, load_weights
from lowdim.models import build_model
from lowdim.params import FlatParams
from lowdim.train import evaluate

RUNS = Path("runs/experiments/validated")
DATASET = "fashion-mnist"
VALIDATION_FRACTION = 0.1
SEEDS = (0, 1, 2)
THREADS = 1
# The SGD of every row: lr 0.05, momentum 0.9, weight decay 1e-4, batch 128.
SGD = dict(lr=0.05, momentum=0.9, weight_decay=1e-4, batch_size=128)
FULL_EPOCHS, FULL_MILESTONES = 20, [10, 15]


# What every validated table's results record of the protocol they share.
PROTOCOL = {
    "train": "90% of the 60,000 training images (holdout_split(train, 0.1, seed))",
    "validation": "the other 10% (6,000); every choice is made on it",
    "test": "the 10,000 test images, evaluated once per row after the choices",
    "seeds": list(SEEDS),
    "threads": THREADS,
    "sgd": {**SGD, "full_epochs": FULL_EPOCHS, "full_milestones": FULL_MILESTONES},
}


def use_one_thread() -> None:
    torch.set_num_threads(THREADS)


@functools.cache
def _dataset() -> Data:
    return load_dataset(DATASET)


@functools.cache
def tuning_data(seed: int) -> Data:
    """Fashion-MNIST with `train` = the 90% every run trains on and `test` = the 10% held out
    for validation (split drawn from `seed`). Its name is not a dataset lowdim can reload, so
    a later stage cannot silently fall back to the full training set."""
    full = _dataset()
    train, validation = holdout_split(full.train, VALIDATION_FRACTION, seed)
    return Data(
        name=f"{DATASET}-train90-split{seed}",
        train=train,
        test=validation,
        num_classes=full.num_classes,
        input_shape=full.input_shape,
        corrupt=0.0,
        effective_noise_rate=0.0,
        clean_train_labels=None,
    )


def sgd(name: str, arch: str, seed: int, **options) -> tuple[Path, dict]:
    """(folder, summary) of a train-sgd run on the seed's 90%; its test_acc is validation."""
    folder = RUNS / f"{name}-s{seed}"
    cfg = SGDConfig(dataset=DATASET, arch=arch, seed=seed, **SGD, **options)
    summary = train_sgd(cfg, folder, resume=True, progress=False, data=tuning_data(seed))
    return folder, summary


def full_sgd(arch: str, seed: int) -> tuple[Path, dict]:
    """The baseline: 20 epochs, lr x0.1 at epochs 10 and 15 (shared by DLDR and TWA)."""
    return sgd(f"fmnist-{arch}-full", arch, seed, epochs=FULL_EPOCHS, lr_milestones=FULL_MILESTONES)


def subspace(sgd_dir: Path, name: str, seed: int, **options) -> tuple[Path, dict | None]:
    """(folder, summary) of a subspace run in `sgd_dir/name`, batches drawn from `seed`; the
    summary is None where the run diverged (recorded in `sgd_dir/name.diverged`, so that a
    resumed script does not train it again): a candidate that validation cannot choose."""
    folder, failed = sgd_dir / name, sgd_dir / f"{name}.diverged"
    if failed.exists():
        return folder, None
    cfg = SubspaceConfig(seed=seed, **options)
    try:
        summary = train_in_subspace(
            sgd_dir, cfg, resume=True, progress=False, name=name, data=tuning_data(seed)
        )
    except LowdimError as e:
        if "diverged" not in str(e):
            raise
        failed.write_text(f"{e}\n")
        return folder, None
    return folder, summary


def _fresh_model(arch: str) -> torch.nn.Module:
    data = _dataset()
    return build_model(arch, data.input_shape, data.num_classes)


def test_accuracy(run: Path, arch: str) -> float:
    """Accuracy on the real test split of the final weights of `run` (its model.safetensors).
    Call it only for a configuration already chosen on validation."""
    model = _fresh_model(arch)
    load_weights(model, run)
    return evaluate(model, _dataset().test)[1]


def average_test_accuracy(twa_run: Path, arch: str) -> float:
    """SWA's test accuracy: the plain average of the TWA run's window, which is the anchor of
    its basis (LeNet and the MLP have no BatchNorm, so nothing is recomputed)."""
    model = _fresh_model(arch)
    flat = FlatParams(model)
    flat.set(load_basis(twa_run / "basis.safetensors").anchor.to(flat.data.dtype))
    return evaluate(model, _dataset().test)[1]


def first_epochs_seconds(run: Path, epochs: int) -> float:
    """Seconds the first `epochs` epochs of `run` took, from its metrics.jsonl. The full SGD
    run's first epochs are the same computation as a shorter run's at constant lr (same seed,
    data and batches; only the snapshot count differs), so timing the shorter part inside the
    full run cancels the machine's drift between the two runs."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return sum(r["epoch_seconds"] for r in records if r["epoch"] <= epochs)


def best(candidates: dict, acc: str = "test_acc", loss: str = "test_loss"):
    """The key of the candidate summary with the highest validation accuracy (which the runs
    report as test_acc), ties broken by the lower validation loss; diverged runs (None) are
    never chosen."""
    finished = {k: v for k, v in candidates.items() if v is not None}
    return max(finished, key=lambda k: (finished[k][acc], -finished[k][loss]))


def validation_acc(summary: dict | None, key: str = "test_acc") -> float | None:
    """A candidate's validation accuracy for the record; None where it diverged."""
    return None if summary is None else summary[key]


def seconds(summary: dict | None) -> float:
    """A candidate's wall time (0 where it diverged: the time it took before is not kept)."""
    return 0.0 if summary is None else summary["wall_seconds"]


def spread(values: list[float], digits: int = 4) -> dict:
    """Mean and sample standard deviation (n - 1) of per-seed values, with the values."""
    return {
        "mean": round(statistics.mean(values), digits),
        "std": round(statistics.stdev(values), digits) if len(values) > 1 else 0.0,
        "per_seed": [round(v, digits) for v in values],
    }

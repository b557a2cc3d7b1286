"""One epoch of `train-sgd` against a minimal hand-written torch loop, side by side in one run.

Both train the MNIST MLP (784-200-200-10) for one epoch on the same in-memory MNIST-shaped tensors
(60,000 train, 10,000 test, batch 128, SGD lr 0.05 momentum 0.9) and then evaluate on the test
set. lowdim's epoch includes everything `train-sgd` does per epoch: the flat-parameter views, the
running metrics, two trajectory snapshots (initial and end of epoch), metrics.jsonl and a
checkpoint. The ratio is lowdim time / minimal-loop time; runs alternate to share any drift.

    python benchmarks/bench_train_loop.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from common import write_result

from lowdim.data import Data, Split
from lowdim.jobs import SGDConfig, train_sgd
from lowdim.models import build_model

N_TRAIN, N_TEST, BATCH, LR = 60_000, 10_000, 128, 0.05


def mnist_shaped() -> Data:
    g = torch.Generator().manual_seed(0)
    train = Split(
        torch.randn(N_TRAIN, 1, 28, 28, generator=g), torch.randint(0, 10, (N_TRAIN,), generator=g)
    )
    test = Split(
        torch.randn(N_TEST, 1, 28, 28, generator=g), torch.randint(0, 10, (N_TEST,), generator=g)
    )
    return Data(
        name="mnist-shaped",
        train=train,
        test=test,
        num_classes=10,
        input_shape=(1, 28, 28),
        corrupt=0.0,
        effective_noise_rate=0.0,
        clean_train_labels=None,
    )


def minimal_epoch(data: Data) -> float:
    """The loop a user would write by hand: shuffle, slice, step; then one test pass."""
    torch.manual_seed(0)
    model = build_model("mlp", (1, 28, 28), 10)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
    x, y = data.train.x, data.train.y
    start = time.perf_counter()
    perm = torch.randperm(N_TRAIN)
    for i in range(0, N_TRAIN, BATCH):
        idx = perm[i : i + BATCH]
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        correct = sum(
            (model(xb).argmax(1) == yb).sum().item()
            for xb, yb in zip(data.test.x.split(1000), data.test.y.split(1000), strict=True)
        )
    assert correct >= 0
    return time.perf_counter() - start


def lowdim_epoch(data: Data) -> float:
    cfg = SGDConfig(
        dataset="mnist-shaped", arch="mlp", epochs=1, lr=LR, batch_size=BATCH, device="cpu"
    )
    with tempfile.TemporaryDirectory() as d:
        return train_sgd(cfg, f"{d}/run", progress=False, data=data)["wall_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    data = mnist_shaped()
    minimal_epoch(data), lowdim_epoch(data)  # warm-up
    plain, ours = [], []
    for _ in range(args.repeats):
        plain.append(minimal_epoch(data))
        ours.append(lowdim_epoch(data))
    row = {
        "model": "mlp 784-200-200-10",
        "data": "60k x 784, batch 128",
        "minimal_loop_s": statistics.median(plain),
        "lowdim_train_sgd_s": statistics.median(ours),
    }
    row["ratio"] = row["lowdim_train_sgd_s"] / row["minimal_loop_s"]
    path = write_result("train_loop", [row], notes=f"median of {args.repeats} alternating runs")
    print(
        f"minimal loop {row['minimal_loop_s']:.3f}s  "
        f"lowdim train-sgd {row['lowdim_train_sgd_s']:.3f}s"
        f"  ratio {row['ratio']:.3f}  -> {path}"
    )


if __name__ == "__main__":
    main()

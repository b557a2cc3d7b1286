"""Intrinsic dimension on real data: the experiments behind the README's intrinsic tables.

    python experiments/intrinsic.py [--only NAME ...] [--mnist-dir DIR]

  projections   digits MLP at d = 160 (lr 0.1, 5 epochs, 2 seeds): dense, orthogonal, sparse and
                Fastfood, global and per layer: accuracy, seconds per run, bytes held by P
  mnist-fc      MNIST FC 784-200-200-10, Fastfood, d in 600..1500, 20 epochs (paper: 100),
                Adam 1e-3 for both the baseline and the subspace: d_int90 (paper: 750)
  mnist-lenet   MNIST LeNet, Fastfood, d in 200..450, 20 epochs: d_int90 (paper: 290)

Runs go to runs/experiments/, numbers to experiments/results/intrinsic.json; finished points
are reused, so a killed script resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lowdim.bases import random_basis
from lowdim.bases.random import per_compartment_basis
from lowdim.io import atomic_write_json
from lowdim.jobs.intrinsic import IntrinsicConfig, measure_intrinsic_dim
from lowdim.models import build_model
from lowdim.params import FlatParams

RUNS = Path("runs/experiments")


def projections() -> list[dict]:
    rows = []
    layout = FlatParams(build_model("mlp", (1, 8, 8), 10)).layout()
    num_params = layout[-1]["offset"] + int(torch.tensor(layout[-1]["shape"]).prod())
    for kind in ("dense", "orthogonal", "sparse", "fastfood"):
        for per_layer in (False, True):
            cfg = IntrinsicConfig(
                dataset="digits",
                arch="mlp",
                projection=kind,
                per_layer=per_layer,
                dims=[160],
                epochs=5,
                seeds=2,
                lr=0.1,
            )
            name = f"id-digits-{kind}{'-layers' if per_layer else ''}"
            s = measure_intrinsic_dim(cfg, RUNS / name, resume=True, progress=False)
            basis = (
                per_compartment_basis(kind, layout, 160)
                if per_layer
                else random_basis(kind, num_params, 160)
            )
            rows.append(
                {
                    "projection": kind,
                    "per_layer": per_layer,
                    "d": 160,
                    "mean_test_acc": round(s["mean_acc"]["160"], 4),
                    "baseline_acc": round(s["baseline_acc"], 4),
                    "seconds_per_run": round(sum(r["wall_seconds"] for r in s["rows"]) / 2, 2),
                    "basis_bytes": basis.bytes_held(),
                }
            )
            print(rows[-1], flush=True)
    return rows


def mnist_d_int90(arch: str, dims: list[int], mnist_dir: str) -> dict:
    """d_int90 of `arch` on MNIST, Fastfood, 20 epochs, one seed, on the grid `dims`."""
    cfg = IntrinsicConfig(
        dataset="mnist",
        arch=arch,
        data_dir=mnist_dir,
        projection="fastfood",
        dims=dims,
        epochs=20,
        seeds=1,
    )
    name = {"mlp": "id-mnist-fc-fastfood", "lenet": "id-mnist-lenet-fastfood"}[arch]
    s = measure_intrinsic_dim(cfg, RUNS / name, resume=True, progress=False)
    keys = ("baseline_acc", "threshold", "mean_acc", "d_int90", "protocol")
    return {k: s[k] for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--mnist-dir", default="data/mnist")
    args = parser.parse_args()
    out = Path("experiments/results/intrinsic.json")
    results = json.loads(out.read_text()) if out.exists() else {}
    todo = args.only or ["projections", "mnist-fc", "mnist-lenet"]
    if "projections" in todo:
        results["projections"] = projections()
    if "mnist-fc" in todo:
        results["mnist-fc"] = mnist_d_int90("mlp", [600, 750, 1000, 1500], args.mnist_dir)
    if "mnist-lenet" in todo:
        results["mnist-lenet"] = mnist_d_int90("lenet", [200, 290, 450], args.mnist_dir)
    atomic_write_json(out, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""DLDR's costs, each measured side by side in one run (ratios, not absolute times):

1. PCA of t = 81 snapshots of D = 270,000 (a ResNet-20-sized trajectory): lowdim's Gram-matrix
   PCA against scikit-learn's PCA (what the reference code calls) and a full float64 SVD;
   time ratios, and the largest relative error of the 40 singular values against the SVD.
2. One P-SGD step (d = 40) against one plain SGD step on the same batch, and against the floor:
   the plain step plus the two bare matrix-vector products with P. MLP 784-200-200-10 on
   MNIST shapes and ResNet-20 on CIFAR shapes, batch 128.
3. One P-BFGS epoch (d = 40, batch 1024) against one SGD epoch (batch 128), MLP, 60k
   MNIST-shaped examples, both through `lowdim.fit`.

    python benchmarks/bench_dldr.py [--repeats 15] [--skip-resnet]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import write_result

from lowdim.bases import DenseBasis, pca_of_rows
from lowdim.data import Split
from lowdim.models import build_model
from lowdim.optim import PBFGS, PSGD
from lowdim.params import FlatParams
from lowdim.train import fit


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, calls interleaved so drift hits all alike."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def bench_pca(repeats: int) -> dict:
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(0)
    t, dim, k = 81, 270_000, 40
    # trajectory-like: a common start, a drift that slows down, and noise
    steps = torch.randn(t, dim, generator=g) * torch.linspace(1, 0.1, t)[:, None]
    rows = (torch.randn(dim, generator=g) + 0.01 * steps.cumsum(0)).numpy()
    x64 = torch.from_numpy(rows).double()
    x64 -= x64.mean(0)
    result = {}
    times = interleaved(
        {
            "lowdim": lambda: result.__setitem__("ours", pca_of_rows(rows, k)),
            "sklearn": lambda: result.__setitem__("sk", PCA(k).fit(rows)),
        },
        repeats,
    )
    # the float64 SVD is the accuracy reference; slow, so timed once
    svd = lambda: result.__setitem__("svd", torch.linalg.svd(x64, full_matrices=False))  # noqa: E731
    times["svd64"] = timed(svd)
    s = result["svd"][1][:k]
    ours_err = ((result["ours"].singular_values - s).abs() / s).max().item()
    sk_err = ((torch.from_numpy(result["sk"].singular_values_).double() - s).abs() / s).max().item()
    return {
        "shape": f"{t} x {dim}, {k} components",
        "lowdim_s": times["lowdim"],
        "sklearn_s": times["sklearn"],
        "svd64_s": times["svd64"],
        "sklearn_over_lowdim": times["sklearn"] / times["lowdim"],
        "svd64_over_lowdim": times["svd64"] / times["lowdim"],
        "lowdim_max_rel_err": ours_err,
        "sklearn_max_rel_err": sk_err,
        "lowdim_orthogonality_error": result["ours"].orthogonality_error(),
    }


def random_basis(num_params: int, dim: int) -> DenseBasis:
    q, _ = torch.linalg.qr(torch.randn(num_params, dim))
    return DenseBasis(q.t().contiguous())


def bench_step(arch: str, shape: tuple, repeats: int, dim: int = 40) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, *shape, generator=g)
    y = torch.randint(0, 10, (128,), generator=g)

    def setup():
        torch.manual_seed(0)
        model = build_model(arch, shape, 10)
        return model, FlatParams(model)

    plain_model, _ = setup()
    plain_opt = torch.optim.SGD(plain_model.parameters(), lr=0.01, momentum=0.9)
    sub_model, flat = setup()
    basis = random_basis(flat.numel, dim)
    sub_opt = PSGD(flat, basis, lr=0.01, momentum=0.9)
    floor_model, floor_flat = setup()
    floor_opt = torch.optim.SGD(floor_model.parameters(), lr=0.01, momentum=0.9)
    bare_c = torch.zeros(dim)

    def plain():
        plain_opt.zero_grad(set_to_none=False)
        F.cross_entropy(plain_model(x), y).backward()
        plain_opt.step()

    def psgd():
        sub_opt.zero_grad()
        F.cross_entropy(sub_model(x), y).backward()
        sub_opt.step()

    def floor():  # the plain step plus the two products P-SGD cannot avoid, done bare
        floor_opt.zero_grad(set_to_none=False)
        F.cross_entropy(floor_model(x), y).backward()
        floor_opt.step()
        c = torch.mv(basis.rows, floor_flat.grad)
        bare_c.copy_(c)
        torch.mv(basis.rows.t(), bare_c)

    times = interleaved({"plain": plain, "psgd": psgd, "floor": floor}, repeats)
    return {
        "model": arch,
        "D": flat.numel,
        "d": dim,
        "batch": 128,
        "plain_ms": 1e3 * times["plain"],
        "psgd_ms": 1e3 * times["psgd"],
        "floor_ms": 1e3 * times["floor"],
        "psgd_over_plain": times["psgd"] / times["plain"],
        "psgd_over_floor": times["psgd"] / times["floor"],
    }


def bench_pbfgs_epoch() -> dict:
    g = torch.Generator().manual_seed(0)
    n = 60_000
    x = torch.randn(n, 1, 28, 28, generator=g)
    teacher = torch.randn(784, 10, generator=g)
    y = (x.flatten(1) @ teacher).argmax(1)  # learnable labels, so the line search does real work
    train, test = Split(x, y), Split(x[:2000], y[:2000])

    def epoch(kind: str) -> tuple[float, dict]:
        torch.manual_seed(0)
        model = build_model("mlp", (1, 28, 28), 10)
        flat = FlatParams(model)
        if kind == "sgd":
            opt, batch = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), 128
        else:
            opt, batch = PBFGS(flat, random_basis(flat.numel, 40)), 1024
        start = time.perf_counter()
        fit(model, opt, train, test, epochs=1, batch_size=batch, progress=False)
        seconds = time.perf_counter() - start
        return seconds, (opt.counters() if kind == "pbfgs" else {})

    epoch("sgd")
    sgd_s, _ = epoch("sgd")
    pbfgs_s, counters = epoch("pbfgs")
    return {
        "model": "mlp 784-200-200-10",
        "examples": n,
        "sgd_batch": 128,
        "pbfgs_batch": 1024,
        "sgd_epoch_s": sgd_s,
        "pbfgs_epoch_s": pbfgs_s,
        "pbfgs_over_sgd": pbfgs_s / sgd_s,
        "pbfgs_trials_per_step": counters["trials"] / max(1, counters["steps"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--skip-resnet", action="store_true")
    args = parser.parse_args()
    rows = [{"bench": "pca", **bench_pca(max(5, args.repeats // 2))}]
    print(rows[-1], flush=True)
    rows.append({"bench": "psgd_step", **bench_step("mlp", (1, 28, 28), 5 * args.repeats)})
    print(rows[-1], flush=True)
    if not args.skip_resnet:
        rows.append({"bench": "psgd_step", **bench_step("resnet20", (3, 32, 32), args.repeats)})
        print(rows[-1], flush=True)
    rows.append({"bench": "pbfgs_epoch", **bench_pbfgs_epoch()})
    print(rows[-1], flush=True)
    path = write_result("dldr", rows, notes=f"medians of interleaved runs, repeats={args.repeats}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()

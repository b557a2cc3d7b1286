"""SubspaceModel against plain training, side by side in one run.

For each net (MLP 784-200-200-10 and LeNet on MNIST shapes, batch 128) and each basis (dense,
sparse, Fastfood) at d in {100, 1000, 10000}: the time of one training step of
`SubspaceModel(net, basis)` with Adam on c, against one plain Adam step of the same net on the
same batch, and the bytes the basis holds. For dense bases, also the floor: the plain step plus
the two bare matrix-vector products with a d x D matrix (the dense step cannot beat memory
bandwidth). Dense bases above 2 GB are skipped (d = 10,000 on the MLP would hold 8 GB).

    python benchmarks/bench_subspace.py [--repeats 20]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import median_ms, write_result

from lowdim.bases import hadamard, random_basis
from lowdim.models import build_model
from lowdim.subspace_model import SubspaceModel

DENSE_LIMIT_BYTES = 2 << 30


def step_fn(model, x, y):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def without_native(step):
    """`step` with the compiled Walsh-Hadamard transform switched off (torch's matrix
    products instead), for a side-by-side row."""

    def run():
        native, hadamard.native = hadamard.native, None
        try:
            step()
        finally:
            hadamard.native = native

    return run


def bench(arch: str, kind: str, dim: int, repeats: int) -> dict | None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 1, 28, 28, generator=g), torch.randint(0, 10, (128,), generator=g)
    torch.manual_seed(0)
    plain = build_model(arch, (1, 28, 28), 10)
    num_params = sum(p.numel() for p in plain.parameters())
    if kind == "dense" and 4 * dim * num_params > DENSE_LIMIT_BYTES:
        return None
    basis = random_basis(kind, num_params, dim, seed=0)
    torch.manual_seed(0)
    sub = SubspaceModel(build_model(arch, (1, 28, 28), 10), basis)
    fns = {"plain": step_fn(plain, x, y), "subspace": step_fn(sub, x, y)}
    if kind == "dense":
        rows, grad, c = basis.rows, torch.randn(num_params), torch.randn(dim)
        plain_step = fns["plain"]

        def floor():
            plain_step()
            torch.mv(rows, grad)
            torch.mv(rows.t(), c)

        fns["floor"] = floor
    if kind == "fastfood" and hadamard.native is not None:
        fns["blocked"] = without_native(fns["subspace"])
    ms = median_ms(fns, repeats)
    row = {
        "model": arch,
        "D": num_params,
        "basis": kind,
        "d": dim,
        "plain_ms": ms["plain"],
        "subspace_ms": ms["subspace"],
        "subspace_over_plain": ms["subspace"] / ms["plain"],
        "basis_bytes": basis.bytes_held(),
    }
    if "blocked" in ms:  # the same step with the transform as matrix products
        row["blocked_transform_over_plain"] = ms["blocked"] / ms["plain"]
    if "floor" in ms:
        row["floor_ms"] = ms["floor"]
        row["subspace_over_floor"] = ms["subspace"] / ms["floor"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for arch in ("mlp", "lenet"):
        for kind in ("dense", "sparse", "fastfood"):
            for dim in (100, 1000, 10_000):
                row = bench(arch, kind, dim, args.repeats)
                if row is not None:
                    rows.append(row)
                    print(
                        {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()},
                        flush=True,
                    )
    print(f"-> {write_result('subspace', rows, notes=f'medians of {args.repeats} steps')}")


if __name__ == "__main__":
    main()

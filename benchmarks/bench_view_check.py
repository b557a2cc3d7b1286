"""What the subspace optimisers' flat-view check costs: one P-SGD step with it against the same
step with it switched off, side by side in one run.

Every step checks that the model's parameters and gradients are still the views `FlatParams`
made (`check_views`: pointer comparisons, one per parameter tensor), so that a
`model.zero_grad()` or `model.double()` cannot make the step silently move nothing. The model
is the MNIST MLP (784-200-200-10, D = 199,210), a batch of 128 MNIST-shaped inputs, P-SGD in
d = 40 orthonormal directions; rounds interleave the two steps so drift hits both alike.

    python benchmarks/bench_view_check.py [--repeats 300]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import median_ms, write_result

from lowdim import PSGD, DenseBasis, FlatParams
from lowdim.models import build_model


def psgd_step(check: bool):
    torch.manual_seed(0)
    model = build_model("mlp", (1, 28, 28), 10)
    flat = FlatParams(model)
    q, _ = torch.linalg.qr(torch.randn(flat.numel, 40))
    opt = PSGD(flat, DenseBasis(q.T.contiguous()), lr=0.1, momentum=0.9)
    if not check:
        opt.check_views = lambda: None
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))

    def closure():
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return (lambda: opt.step(closure)), opt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    checked, opt = psgd_step(True)
    unchecked, _ = psgd_step(False)
    ms = median_ms(
        {"checked": checked, "unchecked": unchecked, "check": opt.check_views}, args.repeats
    )
    row = {
        "model": "mlp 784-200-200-10",
        "d": 40,
        "step_ms": ms["checked"],
        "step_without_check_ms": ms["unchecked"],
        "check_ms": ms["check"],
        "check_share": ms["check"] / ms["checked"],
    }
    path = write_result("view_check", [row], notes=f"medians, repeats={args.repeats}")
    print(
        f"P-SGD step {ms['checked']:.3f} ms, without the check {ms['unchecked']:.3f} ms, "
        f"check alone {ms['check'] * 1e3:.1f} us = {100 * row['check_share']:.2f}% of a step "
        f"-> {path}"
    )


if __name__ == "__main__":
    main()

"""`make gpu-suite`: the checks that need a GPU, in one run within a time budget.

    python benchmarks/gpu_suite.py [--budget S] [--out DIR] [--runs DIR] [--mnist DIR] [--smoke]

It runs from the source tree (`make gpu-suite` sets PYTHONPATH=src) with what a GPU machine
without a network has: torch, numpy, safetensors, tqdm, and pytest carried in
build/gpu-carry/site with MNIST in build/gpu-carry/mnist (`make gpu-carry` prepares both, 26 MB).
It installs nothing. Three parts, in this order, within `--budget` seconds (default 480):

  1. tests          `pytest -m cuda` on the test files that hold CUDA tests (a subprocess)
  2. benchmarks     ratios measured side by side, each timing closed by a device synchronise:
                    P-SGD and P-BFGS training steps against SGD's on ResNet-20 CIFAR shapes
                    (batch 128, d = 40), and P-SGD's under bf16 autocast against float32's; a
                    Fastfood step (P^T g, then theta += P c) at ResNet-18's D = 11.7M,
                    d = 1000, against an SGD update of the same vector;
                    RBD training steps with Gaussian and structured directions against SGD's
                    on the paper's FC net (batch 32, d = 250); PCA of 81 x 11.7M against two
                    reads of the matrix (what its two passes must read)
  3. reproductions  four trainings as concurrent processes, each epoch recorded, stopped at
                    the paper's 100 epochs or when the budget would not fit another epoch:
                    MNIST LeNet in a Fastfood subspace of d = 290 and its direct baseline
                    (Adam 1e-3, beta2 0.99, L2 1e-4, batch 128; paper: d = 290 reaches 90% of
                    the baseline), and random bases descent with Gaussian directions on
                    FC-MNIST and CNN-MNIST (d = 250, batch 32, the paper's rates 1.0 and
                    0.0625, images shifted by up to 2 pixels; paper: 93.89 and 97.17)

It writes OUT/gpu-suite.json and OUT/gpu-suite.md (default OUT: benchmarks/results), atomically
after each part, so a run stopped by its caller's limit keeps what it measured, and at the end
the trainings' curves, OUT/gpu-suite-curves.png, where matplotlib is. The trainings' folders
and the test report go to RUNS (--runs, default runs/gpu-suite; the suite's folders there are
removed first, so every suite run starts afresh). `--smoke` runs the same code at tiny sizes on
the CPU, with a small MNIST-shaped set written to RUNS; it is a test in `make test`
(tests/test_gpu_suite.py), so the suite cannot rot between GPU sessions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from common import machine, median_ms
from torch import nn

from lowdim.bases import RANDOM_KINDS, pca_of_rows, random_basis
from lowdim.data import load_dataset
from lowdim.errors import LowdimError
from lowdim.io import atomic_write, atomic_write_json, atomic_write_text
from lowdim.jobs.common import model_for
from lowdim.jobs.intrinsic import IntrinsicConfig
from lowdim.jobs.intrinsic_points import point_model, point_module, sgd_config
from lowdim.jobs.random_bases import shifted
from lowdim.models import build_model
from lowdim.optim import PBFGS, PSGD
from lowdim.optim.rbd import RBD
from lowdim.params import FlatParams
from lowdim.train import build_optimizer, fit
from lowdim.train.precision import Precision

ROOT = Path(__file__).resolve().parents[1]
assert "fastfood" in RANDOM_KINDS


@dataclass(frozen=True)
class Sizes:
    """What the suite measures at: the real sizes, or the smoke test's tiny ones."""

    resnet_batch: int = 128
    big_params: int = 11_689_512  # ResNet-18's D
    fastfood_dim: int = 1000
    pca_rows: int = 81
    pca_dim: int = 40
    rbd_dim: int = 250  # the paper's
    repeats: int = 20
    pca_repeats: int = 3
    epochs: int = 100  # the papers'


SMOKE = Sizes(
    resnet_batch=4,
    big_params=70_001,
    fastfood_dim=50,
    pca_rows=9,
    pca_dim=4,
    rbd_dim=20,
    repeats=2,
    pca_repeats=1,
    epochs=2,
)


# -- 1. tests -------------------------------------------------------------------------------
def cuda_tests(runs: Path, timeout: float) -> dict:
    """`pytest -m cuda` on the test files that hold CUDA tests; its counts from the JUnit XML."""
    files = sorted(
        str(f) for f in (ROOT / "tests").glob("test_*.py") if "mark.cuda" in f.read_text()
    )
    report = runs / "cuda-tests.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [*command, f"--junitxml={report}", *files],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"status": f"stopped after {timeout:.0f} s", "files": len(files)}
    result = {"files": len(files), "seconds": round(time.perf_counter() - started, 1)}
    if not report.exists():
        return {**result, "status": "no report", "output": (done.stdout + done.stderr)[-2000:]}
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = [
        f"{case.get('classname')}.{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    status = "green" if done.returncode in (0, 5) and not failed else "red"
    return {**result, **counts, "status": status, "failed": failed}


# -- 2. benchmarks ---------------------------------------------------------------------------
def classification_step(model, optimizer, x, y, autocast=None):
    """One training step as `fit` takes it: a closure (forward, backward) handed to step; the
    forward under `torch.autocast` in dtype `autocast` if given."""
    precision = Precision(x.device.type, autocast)

    def closure(backward=True):
        if backward:
            optimizer.zero_grad(set_to_none=False)
        with torch.set_grad_enabled(backward), precision.forward():
            loss = nn.functional.cross_entropy(model(x), y)
        if backward:
            loss.backward()
        return loss.detach()

    return lambda: optimizer.step(closure)


def resnet_steps(device, sizes: Sizes, sync) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sizes.resnet_batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (sizes.resnet_batch,), generator=g).to(device)
    steps = {}
    for name in ("sgd", "psgd", "pbfgs", "psgd-bf16"):
        torch.manual_seed(0)
        model = build_model("resnet20", (3, 32, 32), 10).to(device)
        flat = FlatParams(model)
        basis = random_basis("orthogonal", flat.numel, 40, seed=1, device=device)
        opt = {
            "sgd": lambda m=model: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9),
            "psgd": lambda f=flat, b=basis: PSGD(f, b, lr=0.01),
            "pbfgs": lambda f=flat, b=basis, m=model: PBFGS(f, b, lr=0.01, module=m),
            "psgd-bf16": lambda f=flat, b=basis: PSGD(f, b, lr=0.01),
        }[name]()
        autocast = torch.bfloat16 if name.endswith("bf16") else None
        steps[name] = classification_step(model, opt, x, y, autocast)
    ms = median_ms(steps, sizes.repeats, sync)
    shape = f"ResNet-20 (D = 269,722), batch {sizes.resnet_batch}, d = 40"
    rows = [
        row(
            "resnet20-step",
            f"{name} training step / SGD's, {shape}",
            ms[name],
            ms[name] / ms["sgd"],
        )
        for name in ("psgd", "pbfgs")
    ]
    what = f"psgd training step in bf16 autocast / in float32, {shape}"
    return [*rows, row("resnet20-step", what, ms["psgd-bf16"], ms["psgd-bf16"] / ms["psgd"])]


def fastfood_step(device, sizes: Sizes, sync) -> dict:
    n, d = sizes.big_params, sizes.fastfood_dim
    basis = random_basis("fastfood", n, d, seed=1, device=device)
    theta = torch.zeros(n, device=device)
    grad = torch.randn(n, device=device)

    def subspace():
        basis.expand_add_(theta, basis.project(grad), alpha=-1e-3)

    ms = median_ms(
        {"fastfood": subspace, "sgd": lambda: theta.add_(grad, alpha=-1e-3)}, sizes.repeats, sync
    )
    what = f"Fastfood step (P^T g, theta += P c) / an SGD update, D = {n:,}, d = {d}"
    return row("fastfood-step", what, ms["fastfood"], ms["fastfood"] / ms["sgd"])


def rbd_steps(device, sizes: Sizes, sync) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (32,), generator=g).to(device)
    steps = {}
    for name in ("sgd", "gaussian", "hadamard"):
        torch.manual_seed(0)
        model = build_model("fc", (1, 28, 28), 10).to(device)
        flat = FlatParams(model)
        if name == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
        else:
            opt = RBD(flat, sizes.rbd_dim, 1.0, seed=0, distribution=name)
        steps[name] = classification_step(model, opt, x, y)
    ms = median_ms(steps, sizes.repeats, sync)
    return [
        row(
            "rbd-step",
            f"RBD training step, {name} directions / SGD's, FC 784-128-10 (D = 101,770), "
            f"batch 32, d = {sizes.rbd_dim}",
            ms[name],
            ms[name] / ms["sgd"],
        )
        for name in ("gaussian", "hadamard")
    ]


def pca(device, sizes: Sizes, sync) -> dict:
    t, n = sizes.pca_rows, sizes.big_params
    g = torch.Generator(device=device).manual_seed(0)
    w = torch.randn(t, n, generator=g, device=device).cumsum(0)

    def reads():  # what PCA's two passes over the matrix must read, at the least
        w.sum(0)
        w.sum(0)

    ms = median_ms(
        {"pca": lambda: pca_of_rows(w, sizes.pca_dim), "floor": reads}, sizes.pca_repeats, sync
    )
    what = f"PCA of {t} x {n:,} ({sizes.pca_dim} components) / two reads of the matrix"
    return row("pca", what, ms["pca"], ms["pca"] / ms["floor"])


def row(name: str, what: str, ms: float, ratio: float) -> dict:
    return {"name": name, "what": what, "ms": round(ms, 3), "ratio": round(ratio, 3)}


def benchmarks(device, sizes: Sizes, deadline: float) -> list[dict]:
    """Every row, or those the part's deadline leaves time for (the rest marked skipped)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    rows = []
    for name, make in (
        ("resnet20-step", lambda: resnet_steps(device, sizes, sync)),
        ("fastfood-step", lambda: [fastfood_step(device, sizes, sync)]),
        ("rbd-step", lambda: rbd_steps(device, sizes, sync)),
        ("pca", lambda: [pca(device, sizes, sync)]),
    ):
        if time.time() > deadline:
            rows.append({"name": name, "skipped": "the part's time budget was spent"})
            continue
        rows.extend(make())
        print(rows[-1], flush=True)
    return rows


# -- 3. reproductions ------------------------------------------------------------------------
# name: (what, the paper's number)
TASKS = {
    "intrinsic-lenet-baseline": ("MNIST LeNet trained directly (the d_int90 baseline)", None),
    "intrinsic-lenet-290": ("MNIST LeNet, Fastfood subspace, d = 290", "90% of the baseline"),
    "rbd-fc-mnist": ("RBD, Gaussian directions, FC-MNIST, d = {rbd_dim}", 0.9389),
    "rbd-cnn-mnist": ("RBD, Gaussian directions, CNN-MNIST, d = {rbd_dim}", 0.9717),
}
RBD_RATES = {"rbd-fc-mnist": ("fc", 1.0), "rbd-cnn-mnist": ("cnn", 0.0625)}


def training(name: str, mnist: str, device: torch.device, rbd_dim: int):
    """(model, optimizer, train split, test split, batch size, fit options) of task `name`,
    built from the library as the jobs build them."""
    cfg = IntrinsicConfig(dataset="mnist", arch="lenet", data_dir=mnist, lr=1e-3)
    if name.startswith("intrinsic"):
        data = load_dataset("mnist", data_dir=mnist, verify_checksums=False)
        train, test = data.train.to(device), data.test.to(device)
        if name.endswith("baseline"):
            sgd = sgd_config(cfg, 0)
            model = model_for(sgd, data, device)
            opt = build_optimizer(
                "adam",
                model.parameters(),
                lr=sgd.lr,
                betas=(0.9, sgd.beta2),
                weight_decay=sgd.weight_decay,
            )
            return model, opt, train, test, cfg.batch_size, {}
        sub = point_model(cfg, point_module(cfg, data, 0, device), 290, 0).to(device)
        opt = build_optimizer("adam", sub.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2))
        options = {"regularizer": lambda: 0.5 * cfg.l2 * sub.l2_penalty()}
        return sub, opt, train, test, cfg.batch_size, options
    arch, lr = RBD_RATES[name]
    data = load_dataset("mnist", data_dir=mnist, verify_checksums=False)
    torch.manual_seed(0)
    model = build_model(arch, (1, 28, 28), 10).to(device)
    opt = RBD(FlatParams(model), rbd_dim, lr, seed=0, distribution="gaussian")
    train = shifted(data.train, 2).to(device)
    return model, opt, train, data.test.to(device), 32, {}


def run_task(name: str, runs: Path, mnist: str, device, sizes: Sizes, deadline: float) -> None:
    """Task `name` epoch by epoch in runs/name (fit resumes each time, exactly), until
    `sizes.epochs`, or until the deadline would not fit another epoch as long as the last."""
    model, opt, train, test, batch, options = training(name, mnist, device, sizes.rbd_dim)
    folder = runs / name
    last = 0.0
    for epoch in range(1, sizes.epochs + 1):
        if time.time() + 1.2 * last > deadline:
            break
        started = time.time()
        fit(
            model,
            opt,
            train,
            test,
            epochs=epoch,
            batch_size=batch,
            device=device,
            run_dir=folder,
            resume=True,
            progress=False,
            **options,
        )
        last = time.time() - started


def curve(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        {
            "epoch": r["epoch"],
            "test_acc": round(r["test_acc"], 4),
            "seconds": round(r["epoch_seconds"], 2),
        }
        for r in records
    ]


def reproductions(runs: Path, mnist: str, device, smoke: bool, deadline: float) -> dict:
    """The four trainings as concurrent processes, then their per-epoch records."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if device.type == "cpu" else dict(os.environ)
    children = {
        name: subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--task",
                name,
                "--runs",
                str(runs),
                "--mnist",
                mnist,
                "--device",
                str(device),
                *(["--smoke"] if smoke else []),
                "--deadline",
                str(deadline),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in TASKS
    }
    results = {}
    for name, child in children.items():
        try:  # the child stops itself before the deadline; a grace period, then a kill
            _, err = child.communicate(timeout=max(1.0, deadline - time.time()) + 30)
        except subprocess.TimeoutExpired:
            child.kill()
            _, err = child.communicate()
        what, paper = TASKS[name]
        results[name] = {
            "what": what.format(rbd_dim=(SMOKE if smoke else Sizes()).rbd_dim),
            "paper": paper,
            "returncode": child.returncode,
            "epochs": curve(runs / name),
        }
        if child.returncode:
            results[name]["stderr"] = err[-2000:]
    base, point = (
        results[k]["epochs"] for k in ("intrinsic-lenet-baseline", "intrinsic-lenet-290")
    )
    common = min(len(base), len(point))
    if common:  # at equal epochs, and each at its last
        results["intrinsic-lenet-290"]["of_baseline"] = round(
            point[common - 1]["test_acc"] / base[common - 1]["test_acc"], 4
        )
    return results


# -- the report ------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    head = report["machine"]
    lines = [
        f"GPU suite, {report['date']}, on {head['device']} (torch {head['torch']}); "
        f"{report['elapsed_seconds']:.0f} s of a {report['budget_seconds']:.0f} s budget"
        + (" (smoke: tiny sizes on the CPU, not results)" if report["smoke"] else ""),
        "",
    ]
    tests = report.get("tests")
    if tests:
        shown = {k: tests.get(k) for k in ("passed", "failures", "errors", "skipped")}
        files = tests.get("files")
        lines += [f"CUDA tests (`pytest -m cuda`, {files} files): {tests['status']}, {shown}", ""]
    if report.get("benchmarks"):
        lines += ["| benchmark | ms | ratio |", "| --- | --- | --- |"]
        for r in report["benchmarks"]:
            if "skipped" in r:
                lines.append(f"| {r['name']} | skipped | {r['skipped']} |")
            else:
                lines.append(f"| {r['what']} | {r['ms']} | {r['ratio']}x |")
        lines.append("")
    if report.get("reproductions"):
        lines += [
            "| reproduction | epochs | test accuracy | paper | seconds per epoch |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in report["reproductions"].values():
            epochs = r["epochs"]
            acc = f"{epochs[-1]['test_acc']:.4f}" if epochs else "none"
            if "of_baseline" in r:
                acc += f" ({r['of_baseline']:.1%} of the baseline at equal epochs)"
            paper = (
                r["paper"]
                if isinstance(r["paper"], str) or r["paper"] is None
                else f"{r['paper']:.4f}"
            )
            per_epoch = f"{np.median([e['seconds'] for e in epochs]):.1f}" if epochs else "-"
            lines.append(f"| {r['what']} | {len(epochs)} | {acc} | {paper or '-'} | {per_epoch} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, out: Path) -> bool:
    """OUT/gpu-suite-curves.png: each training's test accuracy per epoch, with the paper's
    number as a dotted line; False where matplotlib is missing (a bare GPU machine: plot the
    JSON later, with this function)."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in report["reproductions"].values():
        epochs = r["epochs"]
        line = ax.plot(
            [e["epoch"] for e in epochs], [e["test_acc"] for e in epochs], label=r["what"]
        )
        if isinstance(r["paper"], float):
            ax.axhline(r["paper"], linestyle=":", color=line[0].get_color())
    ax.set(xlabel="epoch", ylabel="test accuracy", title=f"on {report['machine']['device']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(out / "gpu-suite-curves.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return True


def write(report: dict, out: Path, started: float) -> None:
    report["elapsed_seconds"] = round(time.time() - started, 1)
    atomic_write_json(out / "gpu-suite.json", report)
    atomic_write_text(out / "gpu-suite.md", markdown(report))


def tiny_mnist(folder: Path) -> str:
    """A small MNIST-shaped IDX set (raw, uint8) for the smoke run: 128 train, 64 test."""
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    for part, n in (("train", 128), ("t10k", 64)):
        labels = g.integers(0, 10, n).astype(np.uint8)
        images = (g.integers(0, 60, (n, 28, 28)) + 20 * labels[:, None, None]).astype(np.uint8)
        for kind, arr in (("images", images), ("labels", labels)):
            header = bytes([0, 0, 8, arr.ndim]) + b"".join(
                int(s).to_bytes(4, "big") for s in arr.shape
            )
            (folder / f"{part}-{kind}-idx{arr.ndim}-ubyte").write_bytes(header + arr.tobytes())
    return str(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all three parts")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "gpu-suite"))
    parser.add_argument("--mnist", default=str(ROOT / "build" / "gpu-carry" / "mnist"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--task", choices=list(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--device", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out, runs = Path(args.out), Path(args.runs)
    if args.task:  # a child of part 3
        device = torch.device(args.device)
        sizes = SMOKE if args.smoke else Sizes()
        run_task(args.task, runs, args.mnist, device, sizes, args.deadline)
        return 0
    started = time.time()
    if not (args.smoke or torch.cuda.is_available()):
        print("gpu_suite: no CUDA device here; run it on a GPU, or with --smoke", file=sys.stderr)
        return 2
    if not args.smoke:  # the data is checked before anything is written
        try:
            load_dataset("mnist", data_dir=args.mnist, verify_checksums=False)
        except LowdimError as e:
            print(f"gpu_suite: {e} (make gpu-carry gathers it)", file=sys.stderr)
            return 2
    for name in (*TASKS, "tiny-mnist"):  # the suite's own folders, from an earlier run
        shutil.rmtree(runs / name, ignore_errors=True)
    runs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        device, sizes, mnist = torch.device("cpu"), SMOKE, tiny_mnist(runs / "tiny-mnist")
    else:
        device, sizes, mnist = torch.device("cuda"), Sizes(), args.mnist
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "smoke": args.smoke,
        "budget_seconds": args.budget,
        "sizes": sizes.__dict__,
    }
    end = started + args.budget
    parts = (  # each part, and the time by which it must be done
        ("tests", lambda: cuda_tests(runs, timeout=0.25 * args.budget)),
        ("benchmarks", lambda: benchmarks(device, sizes, deadline=started + 0.45 * args.budget)),
        ("reproductions", lambda: reproductions(runs, mnist, device, args.smoke, end - 20)),
    )
    report["part_seconds"] = {}
    for name, run in parts:
        began = time.time()
        report[name] = run()
        report["part_seconds"][name] = round(time.time() - began, 1)
        write(report, out, started)
    plot(report, out)
    print(markdown(report))
    failed = report["tests"].get("status") == "red" or any(
        r["returncode"] for r in report["reproductions"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

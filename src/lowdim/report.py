"""A side-by-side view of a train-sgd run and the subspace runs made from it."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import LowdimError
from .io import atomic_write
from .rundir import SUMMARY


def collect_runs(save_dir: str | Path) -> list[tuple[Path, dict]]:
    """(folder, summary) of the run in `save_dir` and of each finished run in its subfolders."""
    save_dir = Path(save_dir)
    if not (save_dir / SUMMARY).exists():
        raise LowdimError(f"--save-dir {save_dir} holds no finished run (no {SUMMARY})")
    runs = [(save_dir, json.loads((save_dir / SUMMARY).read_text()))]
    for sub in sorted(p for p in save_dir.iterdir() if (p / SUMMARY).exists()):
        runs.append((sub, json.loads((sub / SUMMARY).read_text())))
    return runs


def format_table(runs: list[tuple[Path, dict]]) -> str:
    """A plain-text table: method, test accuracy, wall time, trainable dimension."""
    header = f"{'run':<10} {'method':<7} {'test_acc':>8} {'seconds':>8} {'dim':>9} {'epochs':>6}"
    lines = [header, "-" * len(header)]
    for path, s in runs:
        name = path.name if path != runs[0][0] else "(sgd)"
        lines.append(
            f"{name:<10} {s['method']:<7} {s['test_acc']:>8.4f} "
            f"{s['wall_seconds']:>8.2f} {s['subspace_dim']:>9} {s['epochs']:>6}"
        )
    return "\n".join(lines)


def plot_comparison(runs: list[tuple[Path, dict]], path: str | Path) -> None:
    """Left: the explained-variance spectrum of the first subspace run's basis. Right: test
    accuracy per epoch of every run, subspace runs drawn after the SGD epochs they started from
    (they start from the window's first snapshot, but only after SGD produced the window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .bases import load_basis

    fig, (ax_s, ax_a) = plt.subplots(1, 2, figsize=(10, 3.6))
    sgd_epochs = runs[0][1]["epochs"]
    basis_file = next(
        (p / "basis.safetensors" for p, _ in runs[1:] if (p / "basis.safetensors").exists()), None
    )
    if basis_file is not None:
        ratios = load_basis(basis_file).explained_variance_ratio.tolist()
        ax_s.bar(range(1, len(ratios) + 1), ratios, color="tab:blue")
        ax_s.set(
            yscale="log",
            xlabel="principal component",
            ylabel="explained variance ratio",
            title="spectrum of the trajectory",
        )
    for i, (p, s) in enumerate(runs):
        records = [json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines()]
        offset = 0 if i == 0 else sgd_epochs
        label = f"{s['method']} (d={s['subspace_dim']})"
        ax_a.plot(
            [offset + r["epoch"] for r in records],
            [r["test_acc"] for r in records],
            marker=".",
            label=label,
        )
    ax_a.set(
        xlabel="epoch (subspace runs after the SGD epochs)",
        ylabel="test accuracy",
        title="test accuracy",
    )
    ax_a.grid(alpha=0.3)
    ax_a.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)

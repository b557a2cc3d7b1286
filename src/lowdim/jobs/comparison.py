"""A side-by-side view of a train-sgd run and the subspace runs made from it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import BadArgument
from ..io import atomic_write
from ..train.metrics import read_records
from .rundir import SUMMARY, check_summary, read_json_object


def collect_runs(save_dir: str | Path) -> list[tuple[Path, dict]]:
    """(folder, summary) of the run in `save_dir` and of each finished run in its subfolders."""
    save_dir = Path(save_dir)
    if not (save_dir / SUMMARY).exists():
        raise BadArgument("save_dir", f"{save_dir} holds no finished run (no {SUMMARY})")
    folders = [save_dir, *sorted(p for p in save_dir.iterdir() if (p / SUMMARY).exists())]
    return [(p, _read_summary(p / SUMMARY)) for p in folders]


# What the table and the figure read from each summary.
TABLE_KEYS = {
    "method": str,
    "test_acc": float,
    "wall_seconds": float,
    "subspace_dim": int,
    "epochs": int,
}


def _read_summary(path: Path) -> dict:
    return check_summary(read_json_object(path, "run's summary"), path, TABLE_KEYS)


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

    from ..bases import load_basis

    fig, (ax_s, ax_a) = plt.subplots(1, 2, figsize=(10, 3.6))
    sgd_epochs = runs[0][1]["epochs"]
    # the first PCA basis among the subspace runs (a TWA span has no spectrum)
    files = [p / "basis.safetensors" for p, _ in runs[1:] if (p / "basis.safetensors").exists()]
    bases = (load_basis(f) for f in files)
    pca = next((b for b in bases if hasattr(b, "explained_variance_ratio")), None)
    if pca is not None:
        ratios = pca.explained_variance_ratio.tolist()
        ax_s.bar(range(1, len(ratios) + 1), ratios, color="tab:blue")
        ax_s.set(
            yscale="log",
            xlabel="principal component",
            ylabel="explained variance ratio",
            title="spectrum of the trajectory",
        )
    for i, (p, s) in enumerate(runs):
        records = [json.loads(r) for r in read_records(p / "metrics.jsonl", sys.maxsize)]
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

"""Figures written next to a run's results (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_write


def plot_curves(history: list[dict], path: str | Path, *, title: str = "") -> None:
    """Loss (left) and accuracy (right) per epoch, train and test, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, style in (("train", "--"), ("test", "-")):
        ax_loss.plot(epochs, [r[f"{key}_loss"] for r in history], style, label=key)
        ax_acc.plot(epochs, [r[f"{key}_acc"] for r in history], style, label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def plot_spectrum(ratios, path: str | Path, *, title: str = "") -> None:
    """Explained-variance ratio of each principal direction (bars, log scale) and its
    cumulative sum (line), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = [float(r) for r in ratios]
    k = range(1, len(ratios) + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.bar(k, ratios, color="tab:blue", alpha=0.7, label="per component")
    ax.set(xlabel="principal component", ylabel="explained variance ratio", yscale="log")
    cum = ax.twinx()
    total, running = 0.0, []
    for r in ratios:
        total += r
        running.append(total)
    cum.plot(k, running, color="tab:red", marker=".", label="cumulative")
    cum.set(ylabel="cumulative", ylim=(0, 1.02))
    fig.legend(loc="center right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def plot_intrinsic(summary: dict, path: str | Path) -> None:
    """Test accuracy against d (log axis): each (d, seed) point, the mean per d, the baseline
    and the 90% line, with d_int90 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    rows = summary["rows"]
    ax.scatter(
        [r["dim"] for r in rows], [r["test_acc"] for r in rows], s=12, alpha=0.5, label="one seed"
    )
    dims = sorted(int(d) for d in summary["mean_acc"])
    ax.plot(dims, [summary["mean_acc"][str(d)] for d in dims], marker="o", label="mean")
    ax.axhline(summary["baseline_acc"], color="k", lw=1, label="direct training")
    ax.axhline(summary["threshold"], color="tab:red", ls="--", lw=1, label="90% of direct")
    if summary["d_int90"]:
        ax.axvline(summary["d_int90"], color="tab:red", lw=1, alpha=0.5)
        ax.set_title(
            f"d_int90 = {summary['d_int90']} ({summary['arch']} on {summary['dataset']}, "
            f"{summary['protocol']['projection']})"
        )
    ax.set(xscale="log", xlabel="subspace dimension d", ylabel="test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)

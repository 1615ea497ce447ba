"""Matplotlib figures of the reports, returned as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DPI = 150


def png_bytes(fig: Figure) -> bytes:
    """Render and close a figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def curves(trained_on: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """History columns and their legend labels; the training loss and accuracy are of the
    items the loss scored (`trained_on`: windows or cells)."""
    return {
        "loss": (("Train Loss", f"train ({trained_on})"), ("Validation Loss", "validation (windows)")),
        "score": (
            ("Train Accuracy", f"train accuracy ({trained_on})"),
            ("Validation Window Accuracy", "validation accuracy (windows)"),
            ("Validation Accuracy", "validation accuracy (cells)"),
            ("Validation Macro F1", "validation macro-F1 (cells)"),
        ),
    }


LINE_STYLES = ("-", "--", ":", "-.")


def curves_png(history: pd.DataFrame, trained_on: str = "windows") -> bytes:
    """Loss, and accuracy / macro-F1, per epoch; an ensemble's networks in line styles."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    lines = curves(trained_on)
    members = list(history.groupby("Member")) if "Member" in history else [(1, history)]
    for i, (_, rows) in enumerate(members):
        style = LINE_STYLES[i % len(LINE_STYLES)]
        for ax, kind in ((loss_ax, "loss"), (acc_ax, "score")):
            for colour, (column, label) in enumerate(lines[kind]):
                ax.plot(rows["Epoch"], rows[column], marker="o", markersize=3, color=f"C{colour}",
                        linestyle=style, label=label if i == 0 else None)  # fmt: skip
    note = f" ({len(members)} networks: solid, dashed, dotted, ...)" if len(members) > 1 else ""
    loss_ax.set(title="Loss" + note, xlabel="epoch", ylabel="cross-entropy")
    acc_ax.set(title="Accuracy and macro-F1", xlabel="epoch", ylabel="score", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return png_bytes(fig)


def confusion_png(counts: np.ndarray, classes: Sequence[str], title: str) -> bytes:
    """Row-normalised confusion matrix (true rows, predicted columns) with class names."""
    n = len(classes)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    side = min(max(4.5, 0.45 * n + 2.5), 16)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels=classes, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(n), labels=[f"{c} (n={int(r)})" for c, r in zip(classes, rows[:, 0])], fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if n <= 30:
        for (i, j), value in np.ndenumerate(share):
            if counts[i, j]:
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.6 else "black")  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    return png_bytes(fig)


def score_png(scores: np.ndarray, correct: np.ndarray, title: str) -> bytes:
    """Score histograms of correct vs wrong cells, and accuracy per score bin (calibration)."""
    fig, (hist_ax, cal_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    bins = np.linspace(0, 1, 21)
    hist_ax.hist(scores[correct], bins=bins, alpha=0.7, label=f"correct (n={int(correct.sum())})")
    hist_ax.hist(scores[~correct], bins=bins, alpha=0.7, label=f"wrong (n={int((~correct).sum())})")
    hist_ax.set(title=title, xlabel="prediction_score", ylabel="cells")
    hist_ax.legend(fontsize=8)
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(scores, edges) - 1, 0, 9)
    cells = np.bincount(which, minlength=10)
    filled = cells > 0
    accuracy = np.bincount(which, weights=correct, minlength=10)[filled] / cells[filled]
    centres = (edges[:-1] + edges[1:])[filled] / 2
    cal_ax.plot([0, 1], [0, 1], ls="--", color="grey", label="calibrated")
    cal_ax.plot(centres, accuracy, marker="o", label="observed")
    cal_ax.set(title="Accuracy per score bin", xlabel="prediction_score", ylabel="accuracy", xlim=(0, 1))
    cal_ax.set_ylim(0, 1.02)
    cal_ax.legend(fontsize=8)
    for ax in (hist_ax, cal_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return png_bytes(fig)


def class_counts_png(predicted: pd.Series, title: str) -> bytes:
    """Cells per predicted class, as horizontal bars."""
    counts = predicted.astype(str).value_counts().sort_values()
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * counts.size + 1)))
    ax.barh(counts.index, counts.to_numpy())
    ax.set(title=title, xlabel="cells")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return png_bytes(fig)


def _categorical(
    ax: plt.Axes, coords: np.ndarray, labels: pd.Series, palette: dict[str, tuple], title: str, size: float
) -> None:
    names = labels.astype(str)
    for name in sorted(names.unique()):
        keep = (names == name).to_numpy()
        ax.scatter(*coords[keep].T, s=size, color=palette[name], label=name, linewidths=0)
    ax.legend(fontsize=6, markerscale=3, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    ax.set_title(title)


def umap_png(coords: np.ndarray, predictions: pd.DataFrame, truth: str | None) -> bytes:
    """UMAP of the predicted cells coloured by predicted class, by score and, if known, by truth."""
    panels = 3 if truth else 2
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 4.8))
    size = float(np.clip(3e4 / max(int(np.isfinite(coords).all(axis=1).sum()), 1), 0.5, 12))  # drawn cells
    classes = pd.concat([predictions[c].astype(str) for c in ("PredictedFeature", truth) if c]).unique()
    cmap = plt.get_cmap("tab20")
    palette = {name: cmap(k % 20) for k, name in enumerate(sorted(classes))}  # same colour in each panel
    _categorical(axes[0], coords, predictions["PredictedFeature"], palette, "PredictedFeature", size)
    points = axes[1].scatter(*coords.T, s=size, c=predictions["prediction_score"], cmap="viridis",
                             vmin=0, vmax=1, linewidths=0)  # fmt: skip
    fig.colorbar(points, ax=axes[1], fraction=0.046, pad=0.04)
    axes[1].set_title("prediction_score")
    if truth:
        _categorical(axes[2], coords, predictions[truth], palette, f"{truth} (input)", size)
    for ax in axes:
        ax.set(xticks=[], yticks=[], xlabel="UMAP1", ylabel="UMAP2")
    fig.tight_layout()
    return png_bytes(fig)

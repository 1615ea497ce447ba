"""The training summary PDF: settings, best epoch, and per-epoch curves."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from reportlab.lib import colors  # noqa: E402
from reportlab.lib.pagesizes import A4  # noqa: E402
from reportlab.lib.styles import getSampleStyleSheet  # noqa: E402
from reportlab.lib.units import cm  # noqa: E402
from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle  # noqa: E402

from .io import atomic_path  # noqa: E402


def curves_png(history: pd.DataFrame) -> bytes:
    """Loss and accuracy per epoch as a PNG."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=150)
    loss_ax.plot(history["Epoch"], history["Train Loss"], marker="o", label="train")
    loss_ax.plot(history["Epoch"], history["Validation Loss"], marker="o", label="validation (windows)")
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    for column, label in (
        ("Train Accuracy", "train (windows)"),
        ("Validation Window Accuracy", "validation (windows)"),
        ("Validation Accuracy", "validation (cells)"),
        ("Validation Macro F1", "validation macro-F1 (cells)"),
    ):
        acc_ax.plot(history["Epoch"], history[column], marker="o", label=label)
    acc_ax.set(title="Accuracy and macro-F1", xlabel="epoch", ylabel="score", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _table(rows: list[list[str]], widths: list[float], header: bool = True) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1 if header else 0)
    style = [
        ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
    if header:
        style += [
            ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey),
            ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
        ]
    table.setStyle(TableStyle(style))
    return table


def flatten(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """`section.key` / value pairs of a nested config."""
    pairs = []
    for key, value in settings.items():
        if isinstance(value, Mapping):
            pairs += flatten(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", str(value)))
    return pairs


def write_train_summary(
    history: pd.DataFrame, settings: Mapping[str, Any], facts: Mapping[str, str], target: str | Path
) -> None:
    """Write `train_summary.pdf`: run facts, best epoch, curves, epoch table, settings."""
    styles = getSampleStyleSheet()
    best = history.loc[history["Validation Accuracy"].idxmax()]
    story: list[Any] = [
        Paragraph("scgenai-flow training summary", styles["Title"]),
        _table([[k, v] for k, v in facts.items()], [5 * cm, 11 * cm], header=False),
        Spacer(1, 0.4 * cm),
        Paragraph(
            f"Best epoch {int(best['Epoch'])}: "
            f"validation accuracy (cells) {best['Validation Accuracy']:.3f}, "
            f"validation accuracy (windows) {best['Validation Window Accuracy']:.3f}, "
            f"train loss {best['Train Loss']:.3f}.",
            styles["Normal"],
        ),
        Spacer(1, 0.3 * cm),
        Image(io.BytesIO(curves_png(history)), width=17 * cm, height=6.8 * cm),
        Paragraph("Per-epoch results", styles["Heading2"]),
    ]
    small = styles["BodyText"].clone("header", fontSize=8, leading=9, fontName="Helvetica-Bold")
    header = [Paragraph(str(column), small) for column in history.columns]  # long names wrap
    rows = [
        [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        for row in history.itertuples(index=False)
    ]
    story.append(_table([header, *rows], [16 * cm / len(header)] * len(header)))
    heading = Paragraph("Settings", styles["Heading2"])
    heading.keepWithNext = True
    story += [heading, _table([["key", "value"], *map(list, flatten(settings))], [6 * cm, 10 * cm])]
    with atomic_path(target) as tmp:
        SimpleDocTemplate(str(tmp), pagesize=A4, title="scgenai-flow training summary").build(story)


def summary_from_files(history_csv: str, model_dir: str, target: str) -> None:
    """Training summary PDF from the epoch history and the best model dir."""
    import json

    import yaml

    history = pd.read_csv(history_csv)
    settings = yaml.safe_load((Path(model_dir) / "train_setting.yaml").read_text())
    spec = json.loads((Path(model_dir) / "config.json").read_text())
    facts = {
        "training data": str(settings["data"]["train"] or "embedded pbmc68k_reduced (train split)"),
        "target feature": settings["data"]["target_feature"],
        "classes": str(spec["num_classes"]),
        "model": f"{spec['backbone']} ({spec['size']}), vocabulary {spec['vocab_size']} tokens",
        "context": f"{settings['context']['method']}, {spec['max_length']} tokens per window",
        "epochs": str(len(history)),
        "training time": f"{history['Seconds'].sum():.0f} s",
    }
    write_train_summary(history, settings, facts, target)

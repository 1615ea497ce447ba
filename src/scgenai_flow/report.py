"""The training summary PDF and the report figures and tables beside it."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import (
    CondPageBreak,
    Image,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)
from reportlab.platypus.flowables import Flowable

from . import figures
from .config import schema_default
from .decide import Decision, fit_decision
from .io import atomic_path, write_csv
from .metrics import (
    Evaluation,
    best_row,
    evaluate_predictions,
    expected_calibration_error,
)
from .modeldir import CONFIG_FILE, has_linear_member, read_selection, read_settings
from .models import read_calibration
from .train.settings import THROUGHPUT_COLUMNS

STYLES = getSampleStyleSheet()
CELL = STYLES["BodyText"].clone("cell", fontSize=8, leading=9.5)
HEAD = CELL.clone("head", fontName="Helvetica-Bold")
WIDTH = 17 * cm


# Benchmarks of stages that do not lead to the model (the report's own, prediction, fine-tuning).
NOT_UPSTREAM = {"report", "predict", "prediction_report", "finetune"}


def stage_times(bench_dir: str | Path) -> pd.DataFrame:
    """Wall time and peak memory of the stages that made the model, from `benchmark:` files."""
    rows = []
    for tsv in sorted(Path(bench_dir).rglob("*.tsv")):
        stage = tsv.relative_to(bench_dir).with_suffix("").as_posix()
        if NOT_UPSTREAM & set(stage.split("/")):
            continue
        first = pd.read_csv(tsv, sep="\t").iloc[0]
        rows.append({"stage": stage, "seconds": float(first["s"]), "peak MiB": first.get("max_rss")})
    return pd.DataFrame(rows, columns=["stage", "seconds", "peak MiB"])


def _table(rows: list[list[Any]], widths: list[float], header: bool = True) -> Table:
    """A grid table; cells are wrapped paragraphs so long names never overflow."""
    cells = [
        [Paragraph(_text(v), HEAD if header and i == 0 else CELL) for v in row] for i, row in enumerate(rows)
    ]
    table = Table(cells, colWidths=widths, repeatRows=1 if header else 0)
    style = [("GRID", (0, 0), (-1, -1), 0.25, colors.grey), ("VALIGN", (0, 0), (-1, -1), "TOP")]
    if header:
        style.append(("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey))
    table.setStyle(TableStyle(style))
    return table


def _text(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "" if np.isnan(value) else f"{value:.4g}"
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _frame_table(frame: pd.DataFrame, first: float = 5 * cm) -> Table:
    """A DataFrame (index as first column) as a table spanning the page width."""
    rest = (WIDTH - first) / max(len(frame.columns), 1)
    rows = [[frame.index.name or "", *frame.columns]]
    rows += [[index, *values] for index, values in zip(frame.index, frame.to_numpy().tolist())]
    return _table(rows, [first] + [rest] * len(frame.columns))


def _image(png: bytes, width: float = WIDTH) -> Image:
    """A PNG scaled to `width`, keeping its aspect ratio."""
    image = Image(io.BytesIO(png))
    scale = min(width / image.imageWidth, 22 * cm / image.imageHeight)
    image.drawWidth, image.drawHeight = image.imageWidth * scale, image.imageHeight * scale
    return image


def _section(title: str, *body: Flowable) -> list[Flowable]:
    return [CondPageBreak(5 * cm), Paragraph(title, STYLES["Heading2"]), *body, Spacer(1, 0.3 * cm)]


def flatten(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """`section.key` / value pairs of a nested config."""
    pairs = []
    for key, value in settings.items():
        if isinstance(value, Mapping):
            pairs += flatten(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", str(value)))
    return pairs


@dataclass(frozen=True)
class SummaryFigures:
    """The report's figures as PNG bytes (also written beside the PDF)."""

    curves: bytes
    confusion: bytes
    scores: bytes


def summary_figures(history: pd.DataFrame, evaluation: Evaluation, trained_on: str) -> SummaryFigures:
    return SummaryFigures(
        curves=figures.curves_png(history, trained_on),
        confusion=figures.confusion_png(
            evaluation.counts, evaluation.classes, "Validation, best model (row-normalised)"
        ),
        scores=figures.score_png(evaluation.scores, evaluation.correct, "Validation prediction_score"),
    )


def write_train_summary(
    history: pd.DataFrame,
    settings: Mapping[str, Any],
    facts: list[tuple[str, str]],
    evaluation: Evaluation,
    stages: pd.DataFrame,
    pictures: SummaryFigures,
    target: str | Path,
    held: str,
) -> None:
    """Write `train_summary.pdf`: run essentials, curves, per-class results, epochs, settings;
    `held` says which epochs best_model holds."""
    story: list[Flowable] = [
        Paragraph("scgenai-flow training summary", STYLES["Title"]),
        _table([list(f) for f in facts], [4.5 * cm, WIDTH - 4.5 * cm], header=False),
        *_section(
            "Wall time per stage",
            _table([["stage", "seconds", "peak MiB"], *stages.to_numpy().tolist()], [9 * cm, 4 * cm, 4 * cm]),
        ),
        PageBreak(),
        Paragraph("Training curves", STYLES["Heading2"]),
        _image(pictures.curves),
        *_section(
            f"Validation per class (best model, {held})",
            _frame_table(evaluation.table),
        ),
        KeepTogether(_section("Confusion matrix", _image(pictures.confusion, 15 * cm))),
        KeepTogether(_section("Is the score a confidence?", _image(pictures.scores))),
        *_section("Per-epoch results", _frame_table(history.set_index("Epoch"), 1.4 * cm)),
        *_section("Settings", _table([["key", "value"], *map(list, flatten(settings))], [6 * cm, 11 * cm])),
    ]
    with atomic_path(target) as tmp:
        SimpleDocTemplate(str(tmp), pagesize=A4, title="scgenai-flow training summary").build(story)


def first_page_rows(
    settings: Mapping[str, Any], spec: Mapping[str, Any], info: Mapping[str, Any], loop: str
) -> list[tuple[str, str]]:
    """The first page's essentials as (name, value) rows."""
    data = settings["finetune"] if loop == "finetune" else settings["data"]
    given = settings["finetune"]["model"] if loop == "finetune" else None
    classes = ", ".join(f"{name} ({n})" for name, n in info["class_counts"].items())
    rows = [
        ("training data", str(data["train"] or "embedded pbmc68k_reduced (train split)")),
        ("validation data", str(data["val"] or "stratified hold-out of the training data")),
        ("cells", f"{info['train_cells']} train, {info['val_cells']} validation"),
        (
            "genes kept",
            f"{info['genes']}" + (f" (+{info['adt_features']} ADT)" if info["adt_features"] else ""),
        ),
        ("target feature", str(settings["data"]["target_feature"])),
        (f"classes ({len(info['class_counts'])}, train cells)", classes),
        ("model", f"{spec['backbone']} ({spec['size']}), {info['parameters']:,} parameters" + networks(spec)),
        ("vocabulary", f"{spec['vocab_size']} tokens"),
        (
            "context",
            f"{settings['context']['method']}, {spec['max_length']} tokens per window, "
            f"{info['train_windows'] / max(info['train_cells'], 1):.1f} windows per train cell",
        ),
    ]
    if loop == "finetune":
        rows.append(("pretrained model", str(given or "this run's best_model")))
    train = settings[loop]
    rows.append(
        (
            "training",
            f"{train['num_epochs']} epochs{' per network' if network_count(spec) > 1 else ''},"
            f" batch {train['batch_size']}, learning rate "
            f"{train['learning_rate']}, weight decay {train['weight_decay']}, seed {settings['seed']}"
            + early_stopping(settings),
        )
    )
    rows.append(("device", f"{info['device']} ({info['device_name']}), {info['threads']} threads, "
                 f"host {info['host']}, torch {info['torch']}"))  # fmt: skip
    return rows


def network_count(spec: Mapping[str, Any]) -> int:
    """Networks in the model (`config.json` members; older model dirs: one)."""
    return int(spec.get("members", 1))


def networks(spec: Mapping[str, Any]) -> str:
    """The model line's note on an ensemble."""
    members = network_count(spec)
    return f" in {members} networks (ensemble: mean log-probability)" if members > 1 else ""


def early_stopping(settings: Mapping[str, Any]) -> str:
    """The training row's note on early stopping (`train.patience`), if it was on."""
    patience = settings.get("train", {}).get("patience")
    return (
        f"; early stopping after {patience} epochs without a better {select_by(settings)}" if patience else ""
    )


def select_by(settings: Mapping[str, Any]) -> str:
    """The metric that picked best_model (model dirs from before the choice: accuracy)."""
    return str(settings.get("train", {}).get("select_by", "accuracy"))


def best_selection(history: pd.DataFrame, metric: str, model_dir: str | Path) -> dict[str, Any]:
    """The epochs best_model holds and its validation metrics: its selection.json, or for
    model dirs from before that file, its epoch's history row."""
    selection = read_selection(model_dir)
    if selection is not None:
        return selection
    best = best_row(history, metric)
    return {"epochs": [int(best["Epoch"])], "validation": best.to_dict()}


def best_epochs(selection: Mapping[str, Any]) -> str:
    """Which epochs best_model holds: 'epoch 7', 'mean of epochs 7, 9, 6' when it averages, or
    for an ensemble 'mean of 3 networks (epochs 7, 9, 6 | 8, 5, 9 | 4, 6, 5)'."""
    if "members" in selection:
        held = " | ".join(", ".join(map(str, m["epochs"])) for m in selection["members"])
        return f"mean of {len(selection['members'])} networks (epochs {held})"
    epochs = list(selection["epochs"])
    return f"epoch {epochs[0]}" if len(epochs) == 1 else "mean of epochs " + ", ".join(map(str, epochs))


def epochs_trained(history: pd.DataFrame) -> str:
    """'20 epochs', or for an ensemble '3 networks x 10 epochs' ('... 27 epochs in all' when
    early stopping made them differ)."""
    per_network = history.groupby("Member").size() if "Member" in history else pd.Series([len(history)])
    if len(per_network) == 1:
        return f"{len(history)} epochs"
    if per_network.nunique() == 1:
        return f"{len(per_network)} networks x {per_network.iloc[0]} epochs"
    return f"{len(per_network)} networks, {len(history)} epochs in all"


def best_epoch_row(history: pd.DataFrame, metric: str, selection: Mapping[str, Any]) -> tuple[str, str]:
    """The first page's line on best_model and its validation metrics."""
    best = selection["validation"]
    temperature = f", networks' temperature {best['Temperature']:.2f}" if "Temperature" in best else ""
    return (
        f"best model (by {metric.replace('_', '-')})",
        f"{best_epochs(selection)}, from {epochs_trained(history)}: validation accuracy "
        f"{best['Validation Accuracy']:.3f} (cells), {best['Validation Window Accuracy']:.3f} (windows),"
        f" macro-F1 {best['Validation Macro F1']:.3f}, loss {best['Validation Loss']:.3f}{temperature}",
    )


def decision_row(evaluation: Evaluation, decision: Decision) -> tuple[str, str]:
    """The first page's line on the validation cells as predict decides them (the per-class
    table's numbers): how the networks, the linear member and the logit adjustment were mixed,
    what the validation cells say of the networks, and how well `prediction_score` is calibrated."""
    table = evaluation.table
    scores = f"accuracy {table.loc['accuracy', 'f1']:.3f}, macro-F1 {table.loc['macro avg', 'f1']:.3f}"
    calibration = (
        f"prediction_score mean {evaluation.scores.mean():.3f},"
        f" ECE {expected_calibration_error(evaluation.scores, evaluation.correct):.3f}"
    )
    note = f"; {decision.networks_note()}" if decision.networks_note() else ""
    return "validation cells as predicted", f"{scores} ({decision.describe()}{note}); {calibration}"


@dataclass(frozen=True)
class ReportOutputs:
    """Where the report rule writes."""

    pdf: str
    metrics: str
    curves: str
    confusion: str
    scores: str


def training_speed(history: pd.DataFrame) -> str:
    """The training passes' median speed over the epochs (per process; the table has each epoch's)."""
    median = history[list(THROUGHPUT_COLUMNS)].median()
    return (
        f"{median['Windows/s']:,.0f} windows/s, {median['Tokens/s']:,.0f} tokens/s, padding"
        f" {median['Padding']:.1%} of the batches' positions, MFU {median['MFU']:.2%} (median of epochs)"
    )


def summary_from_files(
    history_csv: str,
    model_dir: str,
    validation_csv: str,
    run_info: str,
    bench_dir: str,
    loop: str,
    outputs: ReportOutputs,
    logit_adjustment: float | str = schema_default("predict.logit_adjustment"),
    linear_weight: float | str = schema_default("predict.linear_weight"),
) -> None:
    """The summary PDF and its figures/tables from the training rule's outputs (the validation
    cells as the validate rule predicted them, decided with `logit_adjustment` and `linear_weight`)."""
    history = pd.read_csv(history_csv)
    settings = read_settings(model_dir)
    spec = json.loads((Path(model_dir) / CONFIG_FILE).read_text())
    info = yaml.safe_load(Path(run_info).read_text())
    predictions = pd.read_csv(validation_csv, index_col=0)
    evaluation = evaluate_predictions(predictions, settings["data"]["target_feature"])
    stages = stage_times(bench_dir)
    trained_on = "cells" if settings["train"].get("loss") == "cell" else "windows"
    pictures = summary_figures(history, evaluation, trained_on)
    metric = select_by(settings)
    selection = best_selection(history, metric, model_dir)
    facts = [*first_page_rows(settings, spec, info, loop), best_epoch_row(history, metric, selection)]
    has_linear = has_linear_member(model_dir)
    decision = fit_decision(read_calibration(model_dir), has_linear, linear_weight, logit_adjustment)
    facts.append(decision_row(evaluation, decision))
    facts.append(("training time", f"{history['Seconds'].sum():.0f} s ({epochs_trained(history)})"))
    if set(THROUGHPUT_COLUMNS) <= set(history):  # histories of older versions have no throughput
        facts.append(("training speed", training_speed(history)))
    held = best_epochs(selection)
    write_train_summary(history, settings, facts, evaluation, stages, pictures, outputs.pdf, held)
    write_csv(evaluation.table, outputs.metrics, index=True)
    for name in ("curves", "confusion", "scores"):
        with atomic_path(getattr(outputs, name)) as tmp:
            tmp.write_bytes(getattr(pictures, name))

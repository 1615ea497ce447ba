"""Score predictions against the truth and write the tables (CSV + Markdown)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scgenai_flow.metrics import balanced_accuracy, expected_calibration_error, macro_f1, per_class_table

COLUMNS = ("accuracy", "macro_f1", "balanced_accuracy", "ece", "train_s", "predict_s")
# Our workflow's own columns: epochs trained, the best epoch, the validation cells' macro-F1 and ECE.
VALIDATION_COLUMNS = ("val_macro_f1", "val_ece")
OURS_ONLY = ("epochs", "best_epoch", *VALIDATION_COLUMNS, "linear_weight", "logit_adjustment")
BOOTSTRAPS = 1000


def score(method: str, true: np.ndarray, result: dict) -> tuple[dict, pd.Series]:
    """One row of the metrics table, and the F1 of every class seen in truth or prediction."""
    true = np.asarray(true, dtype=str)
    predicted = np.asarray(result["predicted"], dtype=str)
    classes = np.unique(np.concatenate((true, predicted)))
    t, p = np.searchsorted(classes, true), np.searchsorted(classes, predicted)
    row = {
        "method": method,
        "accuracy": float((t == p).mean()),
        "macro_f1": macro_f1(t, p, classes.size),
        "balanced_accuracy": balanced_accuracy(t, p, classes.size),
        "ece": expected_calibration_error(np.clip(result["score"], 0, 1), t == p),
        "train_s": result["train_s"],
        "predict_s": result["predict_s"],
        **{k: result[k] for k in OURS_ONLY if k in result},
    }
    table = per_class_table(t, p, classes)
    f1 = table.loc[[str(c) for c in classes if c in table.index], "f1"].rename(method)
    return row, f1


def markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub table; floats rounded, missing values blank."""

    def cell(value: object) -> str:
        if value is pd.NA or value is None:
            return ""
        if isinstance(value, float | np.floating):
            return "" if np.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    header = [frame.index.name or "", *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += [
        "| " + " | ".join([str(i), *map(cell, row)]) + " |" for i, row in zip(frame.index, frame.to_numpy())
    ]
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict], f1: list[pd.Series], support: pd.Series, out: Path) -> pd.DataFrame:
    """metrics.{csv,md} (one row per method) and per_class_f1.{csv,md} (classes x methods)."""
    metrics = pd.DataFrame(rows).set_index("method")
    metrics = metrics.astype({c: "Int64" for c in ("epochs", "best_epoch") if c in metrics})
    per_class = pd.concat([support.rename("test_cells"), *f1], axis=1)
    per_class.index.name = "class"
    metrics.to_csv(out / "metrics.csv")
    per_class.to_csv(out / "per_class_f1.csv")
    (out / "metrics.md").write_text(markdown(metrics))
    (out / "per_class_f1.md").write_text(markdown(per_class.astype({"test_cells": "Int64"}).astype(object)))
    return metrics


def paired_bootstrap(true: np.ndarray, results: dict[str, dict], seed: int = 0) -> pd.DataFrame:
    """Each of our methods minus each baseline (logreg, celltypist; `best`: the one with the
    higher test macro-F1) and minus its own linear member alone: macro-F1 and ECE differences
    with 95% intervals over bootstrap resamples of the test cells (paired: the same cells)."""
    true = np.asarray(true, dtype=str)
    predicted = {m: np.asarray(r["predicted"], dtype=str) for m, r in results.items()}
    classes = np.unique(np.concatenate([true, *predicted.values()]))
    coded = {m: np.searchsorted(classes, p) for m, p in predicted.items()}
    t = np.searchsorted(classes, true)
    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, true.size, true.size) for _ in range(BOOTSTRAPS)]

    def f1(method: str, rows: np.ndarray) -> float:
        return macro_f1(t[rows], coded[method][rows], classes.size)

    def ece(method: str, rows: np.ndarray) -> float:
        score = np.clip(results[method]["score"][rows], 0, 1)
        return expected_calibration_error(score, coded[method][rows] == t[rows])

    everything = np.arange(true.size)
    baselines = [m for m in ("logreg", "celltypist") if m in results]
    best = max(baselines, key=lambda m: f1(m, everything)) if baselines else None
    rows = []
    for method in (m for m in results if m.startswith("ours:") and not m.endswith(":linear")):
        for other in [*baselines, *([f"{method}:linear"] if f"{method}:linear" in results else [])]:
            row = {"method": method, "versus": other, "best_baseline": other == best}
            for metric, score in (("macro_f1", f1), ("ece", ece)):
                diffs = np.array([score(method, r) - score(other, r) for r in samples])
                low, high = np.percentile(diffs, [2.5, 97.5])
                difference = score(method, everything) - score(other, everything)
                row.update({metric: difference, f"{metric}_low": low, f"{metric}_high": high})
            rows.append(row)
    return pd.DataFrame(rows)

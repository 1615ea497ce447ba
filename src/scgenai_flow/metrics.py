"""Classification metrics on integer labels, without a scikit-learn dependency."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = [
    "Evaluation",
    "macro_f1",
    "balanced_accuracy",
    "expected_calibration_error",
    "per_class_table",
    "evaluate_predictions",
    "selection_key",
    "best_row",
]


def confusion(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts: rows are true classes, columns predicted classes."""
    return np.bincount(true * n_classes + predicted, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def macro_f1(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes that occur in `true` or `predicted` (sklearn's convention)."""
    counts = confusion(true, predicted, n_classes)
    hits = np.diag(counts).astype(float)
    support, claimed = counts.sum(axis=1), counts.sum(axis=0)
    present = (support + claimed) > 0
    f1 = np.divide(2 * hits, support + claimed, out=np.zeros(n_classes), where=present)
    return float(f1[present].mean()) if present.any() else 0.0


def balanced_accuracy(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """Mean recall over the classes that occur in `true` (sklearn's convention)."""
    counts = confusion(true, predicted, n_classes)
    support = counts.sum(axis=1)
    present = support > 0
    return float((np.diag(counts)[present] / support[present]).mean()) if present.any() else 0.0


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: |accuracy - mean confidence| in equal-width confidence bins over (0, 1],
    weighted by the share of predictions in each bin."""
    confidence = np.asarray(confidence, dtype=float)
    if confidence.size == 0:
        return 0.0
    if confidence.min() < 0 or confidence.max() > 1:
        raise ValueError("confidence must lie in [0, 1]")
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    gap = np.bincount(bins, weights=np.asarray(correct, dtype=float) - confidence, minlength=n_bins)
    return float(np.abs(gap).sum() / confidence.size)


def per_class_table(true: np.ndarray, predicted: np.ndarray, classes: np.ndarray) -> pd.DataFrame:
    """Precision, recall, F1 and support per class, then macro/weighted averages and accuracy
    (the rows of scikit-learn's classification report); `true`/`predicted` index `classes`."""
    counts = confusion(true, predicted, len(classes))
    hits = np.diag(counts).astype(float)
    support, claimed = counts.sum(axis=1), counts.sum(axis=0)
    precision = np.divide(hits, claimed, out=np.zeros(len(classes)), where=claimed > 0)
    recall = np.divide(hits, support, out=np.zeros(len(classes)), where=support > 0)
    f1 = np.divide(2 * hits, support + claimed, out=np.zeros(len(classes)), where=(support + claimed) > 0)
    table = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support, "predicted": claimed},
        index=pd.Index([str(c) for c in classes], name="class"),
    )
    table = table[(table["support"] + table["predicted"]) > 0]
    n = max(int(support.sum()), 1)
    weights = table["support"] / n
    metrics = ["precision", "recall", "f1"]
    summary = pd.DataFrame(
        [
            [*table[metrics].mean(), n, int(claimed.sum())],
            [*(table[metrics].mul(weights, axis=0).sum()), n, int(claimed.sum())],
            [np.nan, np.nan, hits.sum() / n, n, int(claimed.sum())],
        ],
        columns=table.columns,
        index=pd.Index(["macro avg", "weighted avg", "accuracy"], name="class"),
    )
    return pd.concat([table, summary]).astype({"support": int, "predicted": int})


@dataclass(frozen=True)
class Evaluation:
    """Cell-level predictions of labelled cells, against the truth."""

    table: pd.DataFrame  # per_class_table
    counts: np.ndarray  # confusion counts, classes in `classes` order
    classes: list[str]
    scores: np.ndarray
    correct: np.ndarray


def evaluate_predictions(predictions: pd.DataFrame, truth: str) -> Evaluation:
    """Compare `PredictedFeature` with the `truth` column, over the classes seen in either."""
    true = predictions[truth].astype(str).to_numpy()
    predicted = predictions["PredictedFeature"].astype(str).to_numpy()
    classes = np.unique(np.concatenate((true, predicted)))
    true_index, predicted_index = np.searchsorted(classes, true), np.searchsorted(classes, predicted)
    return Evaluation(
        table=per_class_table(true_index, predicted_index, classes),
        counts=confusion(true_index, predicted_index, classes.size),
        classes=classes.tolist(),
        scores=predictions["prediction_score"].to_numpy(dtype=float),
        correct=true == predicted,
    )


def selection_key(metrics: dict[str, float], select_by: str) -> tuple[float, ...]:
    """What makes an epoch the best: the chosen validation metric, then accuracy or macro-F1,
    then the lower loss."""
    accuracy, f1 = metrics["Validation Accuracy"], metrics["Validation Macro F1"]
    first = (f1, accuracy) if select_by == "macro_f1" else (accuracy, f1)
    return (*first, -metrics["Validation Loss"])


def best_row(history: pd.DataFrame, select_by: str) -> pd.Series:
    """The history row of the best epoch (the first of equals, as `fit` keeps it)."""
    keys = [selection_key(row, select_by) for row in history.to_dict("records")]
    return history.iloc[max(range(len(keys)), key=lambda i: (keys[i], -i))]

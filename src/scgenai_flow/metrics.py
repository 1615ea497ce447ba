"""Classification metrics on integer labels, without a scikit-learn dependency."""

from __future__ import annotations

import numpy as np


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

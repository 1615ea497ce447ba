"""Validation scores of best_model's networks that no selection saw. Its epochs are picked on the
validation cells, so the networks' own scores there are optimistic, and a decision fitted on them
leans on the networks too much. Here the cells are split in two folds, and each fold's scores are
those of the epochs that the other fold ranks best: prediction's decision is fitted on these."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from ..metrics import macro_f1, selection_key

FOLDS = 2


def folds_of(labels: np.ndarray, seed: int) -> np.ndarray:
    """A fold (0 or 1) per cell, stratified by class: each class's cells alternate between the
    folds in a seeded order, the first fold drawn per class."""
    rng = np.random.default_rng(seed)
    folds = np.empty(labels.size, dtype=np.int64)
    for label in np.unique(labels):
        cells = np.flatnonzero(labels == label)
        folds[cells[rng.permutation(cells.size)]] = (np.arange(cells.size) + rng.integers(FOLDS)) % FOLDS
    return folds


def epoch_key(scores: np.ndarray, labels: np.ndarray, n_classes: int, select_by: str) -> tuple[float, ...]:
    """What ranks an epoch by these cells, as training ranks it (the cells' log-loss for the loss)."""
    predicted = scores.argmax(axis=1)
    log_probs = scores - logsumexp(scores, axis=1, keepdims=True)
    metrics = {
        "Validation Accuracy": float((predicted == labels).mean()),
        "Validation Macro F1": macro_f1(labels, predicted, n_classes),
        "Validation Loss": float(-log_probs[np.arange(labels.size), labels].mean()),
    }
    return selection_key(metrics, select_by)


def out_of_selection(
    epoch_scores: np.ndarray, labels: np.ndarray, select_by: str, keep: int, seed: int
) -> np.ndarray | None:
    """Cells x classes from one network's (epochs, cells, classes) validation log-scores: each
    fold gets the mean scores of the `keep` epochs the other fold ranks best (equal keys: the
    earlier epoch, as training keeps them). None when a fold would be empty."""
    folds = folds_of(labels, seed)
    if np.bincount(folds, minlength=FOLDS).min() == 0:
        return None
    n_classes = epoch_scores.shape[2]
    scores = np.empty(epoch_scores.shape[1:], dtype=np.float64)
    for fold in range(FOLDS):
        other, own = folds != fold, folds == fold
        keys = [epoch_key(epoch[other], labels[other], n_classes, select_by) for epoch in epoch_scores]
        best = sorted(range(len(keys)), key=lambda e: (keys[e], -e), reverse=True)[:keep]
        scores[own] = epoch_scores[best][:, own].mean(axis=0)
    return scores

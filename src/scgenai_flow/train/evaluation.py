"""The validation metrics of a network after an epoch, per cell."""

from __future__ import annotations

import numpy as np
import torch

from ..decide import fit_temperature
from ..distributed import ONE_PROCESS, Ranks
from ..metrics import macro_f1
from ..models import CellClassifier
from ..predict import AGGREGATION, cell_log_scores, window_probabilities
from .data import LabelledWindows


def evaluate(
    model: CellClassifier,
    data: LabelledWindows,
    batch_size: int,
    device: torch.device,
    ranks: Ranks = ONE_PROCESS,
    aggregation: str = AGGREGATION,
) -> dict[str, float]:
    """Window loss and accuracy, cell accuracy and macro-F1 with the `aggregation` rule, and the
    temperature that calibrates the cells' scores."""
    return scored_cells(model, data, batch_size, device, ranks, aggregation)[0]


def scored_cells(
    model: CellClassifier,
    data: LabelledWindows,
    batch_size: int,
    device: torch.device,
    ranks: Ranks = ONE_PROCESS,
    aggregation: str = AGGREGATION,
) -> tuple[dict[str, float], np.ndarray]:
    """`evaluate`'s metrics and the cells' class log-scores they came from."""
    part = ranks.part(np.arange(len(data.windows)))
    probs = window_probabilities(model, data.windows.subset(part), batch_size, device)
    probs = ranks.gather_rows(probs, len(data.windows))
    labels = data.window_labels
    picked = probs[np.arange(labels.size), labels]
    log_scores, _ = cell_log_scores(probs, data.windows.cell_index, data.n_cells, aggregation)
    cells = log_scores.argmax(axis=1)
    metrics = {
        "Validation Accuracy": float((cells == data.cell_labels).mean()),
        "Validation Window Accuracy": float((probs.argmax(1) == labels).mean()),
        "Validation Loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
        "Validation Macro F1": macro_f1(data.cell_labels, cells, probs.shape[1]),
        "Temperature": fit_temperature(log_scores, data.cell_labels),
    }
    return metrics, log_scores

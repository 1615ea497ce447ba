"""Score windows and decide each cell from them (best window or mean log-probability), with
calibrated scores, in time linear in windows."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .config import schema_default
from .contexts import Windows
from .decide import REFERENCE_WEIGHT, Decision, fit_decision, joint_scores, prior_offsets, softmax_rows
from .io import InputError
from .models import CellClassifier
from .runtime import autocast

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = [
    "PREDICTION_COLUMNS",
    "AGGREGATIONS",
    "UNASSIGNED",
    "CellPredictions",
    "predict_from_files",
    "predict_cells",
    "batch_tensors",
    "window_probabilities",
    "cell_log_scores",
    "decision_scores",
    "first_windows",
    "prediction_table",
]

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("context_id", "PredictedFeature", "prediction_score")

# the schema's, the only home of config defaults (`predict.aggregation`)
AGGREGATION = schema_default("predict.aggregation")


def batch_indices(n: int, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index blocks of `batch_size` over `n` items, shuffled when `rng` is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def batch_tensors(
    windows: Windows, idx: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids trimmed to the longest window of the batch, and the real lengths."""
    lengths = windows.lengths[idx]
    ids = windows.tokens[idx, : int(lengths.max())].astype(np.int64)
    return torch.from_numpy(ids).to(device), torch.from_numpy(lengths.astype(np.int64)).to(device)


@torch.no_grad()
def window_probabilities(
    model: CellClassifier, windows: Windows, batch_size: int, device: torch.device
) -> np.ndarray:
    """Softmax class probabilities of every window, in window order."""
    model.eval()
    probs = np.empty((len(windows), model.spec.num_classes), dtype=np.float32)
    for idx in batch_indices(len(windows), batch_size):
        with autocast(device):
            logits = model(*batch_tensors(windows, idx, device))
        probs[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return probs


@dataclass(frozen=True)
class CellPredictions:
    """Per cell: the deciding window, the predicted class index and its score."""

    window: np.ndarray
    label: np.ndarray
    score: np.ndarray


def first_windows(cell_index: np.ndarray, n_cells: int) -> np.ndarray:
    """Index of each cell's first window (windows are grouped by cell)."""
    first = np.searchsorted(cell_index, np.arange(n_cells))
    counts = np.diff(np.append(first, cell_index.size))
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} cells have no window")
    return first


AGGREGATIONS = ("max", "mean")


def cell_log_scores(
    probs: np.ndarray, cell_index: np.ndarray, n_cells: int, aggregation: str = AGGREGATION
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per cell, a row of class log-scores. `max` (the original rule): the log-probabilities of
    the cell's highest-scoring window, also returned; `mean`: the mean log-probability over the
    cell's windows (window None: `decision_scores` picks the one supporting the final class)."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"predict.aggregation '{aggregation}': expected 'max' or 'mean'")
    first = first_windows(cell_index, n_cells)
    log_probs = np.log(np.clip(probs, 1e-12, None))
    if aggregation == "max":
        window = _argmax_per_cell(probs.max(axis=1), cell_index, first)
        return log_probs[window], window
    counts = np.diff(np.append(first, cell_index.size))[:, None]
    return np.add.reduceat(log_probs, first, axis=0) / counts, None


def supporting_windows(
    probs: np.ndarray, cell_index: np.ndarray, first: np.ndarray, label: np.ndarray
) -> np.ndarray:
    """Per cell, its window with the highest probability of the cell's class `label`."""
    support = probs[np.arange(cell_index.size), label[cell_index]]
    return _argmax_per_cell(support, cell_index, first)


def decision_scores(
    probs: np.ndarray,
    cell_index: np.ndarray,
    n_cells: int,
    aggregation: str = AGGREGATION,
    *,
    linear: np.ndarray | None = None,
    offsets: np.ndarray | None = None,
    network_temperature: float = 1.0,
    linear_weight: float = REFERENCE_WEIGHT,
) -> tuple[np.ndarray, np.ndarray]:
    """The class log-scores that decide each cell (the windows' `cell_log_scores` joined with
    the linear member and the class offsets: `joint_scores`), and the window that supports its
    class best."""
    log_scores, window = cell_log_scores(probs, cell_index, n_cells, aggregation)
    log_scores = joint_scores(
        log_scores / network_temperature, linear=linear, offsets=offsets, linear_weight=linear_weight
    )
    if window is None:  # mean: the window that supports the class decided
        first = first_windows(cell_index, n_cells)
        window = supporting_windows(probs, cell_index, first, log_scores.argmax(axis=1))
    return log_scores, window


def predict_cells(
    probs: np.ndarray,
    cell_index: np.ndarray,
    n_cells: int,
    aggregation: str = AGGREGATION,
    temperature: float = 1.0,
    *,
    linear: np.ndarray | None = None,
    offsets: np.ndarray | None = None,
    network_temperature: float = 1.0,
    linear_weight: float = REFERENCE_WEIGHT,
) -> CellPredictions:
    """Each cell's class (the top of its `decision_scores`), the deciding window, and the
    class's probability after temperature scaling."""
    log_scores, window = decision_scores(
        probs,
        cell_index,
        n_cells,
        aggregation,
        linear=linear,
        offsets=offsets,
        network_temperature=network_temperature,
        linear_weight=linear_weight,
    )
    label = log_scores.argmax(axis=1)
    score = softmax_rows(log_scores, temperature)[np.arange(n_cells), label]
    return CellPredictions(window=window, label=label, score=score)


def _argmax_per_cell(values: np.ndarray, cell_index: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Per cell, the index of its first window with the largest value."""
    best = np.maximum.reduceat(values, first)
    is_best = values == best[cell_index]
    return np.minimum.reduceat(np.where(is_best, np.arange(values.size), values.size), first)


UNASSIGNED = "Unassigned"


def check_unassigned(classes: np.ndarray, unassigned_below: float | None, model_dir: str) -> None:
    """A model with a class named `Unassigned` cannot also call low scores `Unassigned`."""
    if unassigned_below is not None and UNASSIGNED in set(np.asarray(classes, dtype=str)):
        raise InputError(
            f"{model_dir}: the model has a class named {UNASSIGNED!r}, so predict.unassigned_below"
            f" ({unassigned_below}) would mix it with low-scoring cells; expected"
            " predict.unassigned_below: null for this model"
        )


def prediction_table(
    obs: pd.DataFrame,
    windows: Windows,
    cells: CellPredictions,
    classes: np.ndarray,
    unassigned_below: float | None = None,
) -> pd.DataFrame:
    """The input `obs` (all columns, input order) plus the three prediction columns; a cell
    whose score is below `unassigned_below` is predicted `Unassigned`."""
    table = obs.copy()
    for column in PREDICTION_COLUMNS:
        if column in table.columns:
            table = table.rename(columns={column: f"input_{column}"})
    check_unassigned(classes, unassigned_below, "the model")
    table["context_id"] = windows.context_ids()[cells.window]
    predicted = np.asarray(classes).astype(object)[cells.label]
    if unassigned_below is not None:
        predicted[cells.score < unassigned_below] = UNASSIGNED
    table["PredictedFeature"] = predicted
    table["prediction_score"] = cells.score
    return table


def predict_from_files(
    windows_npz: str,
    cells_h5ad: str,
    model_dir: str,
    batch_size: int,
    gpus: int,
    threads: int,
    target: str,
    aggregation: str = AGGREGATION,
    calibrate: bool = schema_default("predict.calibrate"),
    unassigned_below: float | None = schema_default("predict.unassigned_below"),
    logit_adjustment: float | str = schema_default("predict.logit_adjustment"),
    linear_weight: float | str = schema_default("predict.linear_weight"),
) -> pd.DataFrame:
    """Predict every cell of a preprocessed file from its saved windows (and the model's linear
    member, if it has one); write the CSV. The member's weight, the logit adjustment (which
    shifts decisions towards rare training classes) and the score temperature are fitted on the
    model's validation cells where `auto` (`fit_decision`); scores are temperature-scaled when
    `calibrate`; cells scoring below `unassigned_below` are called `Unassigned`."""
    from .contexts import load_windows
    from .io import read_obs, write_csv
    from .linear import LinearMember, member_features, read_expression
    from .modeldir import CALIBRATION_FILE, format_version
    from .models import load_model, read_calibration
    from .runtime import select_device
    from .vocab import Vocabulary

    format_version(model_dir)  # refuses a model dir of a newer format
    device = select_device(gpus, threads)
    model = load_model(model_dir, device)
    vocab = Vocabulary.load(model_dir)
    check_unassigned(vocab.classes, unassigned_below, model_dir)
    windows, labels = load_windows(windows_npz, mapped=True)
    if model.spec.vocab_size != vocab.size or int(windows.tokens.max(initial=0)) >= vocab.size:
        raise InputError(f"{windows_npz}: windows were built with another vocabulary than {model_dir}")
    if windows.tokens.shape[1] > model.spec.max_length:
        raise InputError(
            f"{windows_npz}: windows of {windows.tokens.shape[1]} tokens"
            f" exceed the model's {model.spec.max_length}"
        )
    obs = read_obs(cells_h5ad)
    calibration = read_calibration(model_dir)
    if logit_adjustment not in (0, "auto") and calibration.class_cells is None:
        raise InputError(
            f"{model_dir}/{CALIBRATION_FILE} has no 'class_cells' (training cells per class), which"
            " predict.logit_adjustment needs: retrain with this version, or set predict.logit_adjustment: 0"
        )
    member = LinearMember.load(model_dir, vocab)
    linear = None
    if member:
        expression = read_expression(cells_h5ad, vocab, len(obs)) if member.expression else None
        linear = member.log_probs(member_features(windows, len(obs), vocab, expression))
    decision = logged_decision(fit_decision(calibration, member is not None, linear_weight, logit_adjustment))
    offsets = prior_offsets(calibration.class_cells, decision.logit_adjustment)
    probs = window_probabilities(model, windows, batch_size, device)  # the long step, after the checks
    cells = predict_cells(
        probs,
        windows.cell_index,
        len(obs),
        aggregation,
        decision.temperature if calibrate else 1.0,
        linear=linear,
        offsets=offsets,
        network_temperature=calibration.network_temperature,
        linear_weight=decision.linear_weight,
    )
    table = prediction_table(obs, windows, cells, vocab.classes, unassigned_below)
    known = labels >= 0
    if known.any():
        log.info(
            "accuracy on %d labelled cells: %.4f", known.sum(), (cells.label[known] == labels[known]).mean()
        )
    table.index.name = table.index.name or "cell_id"
    write_csv(table, target, index=True)
    return table


def logged_decision(decision: Decision) -> Decision:
    """`decision`, after logging it and what it says about the networks."""
    log.info("decision: %s", decision.describe())
    if decision.networks_note():
        log.info("%s", decision.networks_note())
    return decision

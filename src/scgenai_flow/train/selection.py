"""Which network is kept as best_model: the mean weights of the best epochs, and when to stop."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pandas as pd
import torch

from ..checkpoint import TrainState, averaged_weights, cpu_weights
from ..distributed import Ranks
from ..metrics import best_row
from ..models import CellClassifier
from .data import LabelledWindows
from .evaluation import evaluate
from .settings import METRIC_COLUMNS, TrainSettings


@dataclass
class BestModel:
    """The model kept as best_model: the mean weights of the best epochs (by `select_by`)."""

    model: CellClassifier
    epochs: list[int]  # best first
    metrics: dict[str, float]  # its validation metrics, temperature included


def kept_model(
    model: CellClassifier,
    state: TrainState,
    val: LabelledWindows,
    settings: TrainSettings,
    device: torch.device,
    ranks: Ranks,
) -> BestModel:
    """best_model from the ranked epochs: the model itself when one epoch is kept (its metrics
    from the history), else a copy holding their mean weights, evaluated on `val`."""
    epochs = [r.epoch for r in state.best]
    if len(epochs) == 1:  # the epoch just trained
        return BestModel(model, epochs, {k: state.rows[-1][k] for k in METRIC_COLUMNS})
    best = averaged_copy(model, state)
    metrics = evaluate(best, val, settings.eval_batch_size, device, ranks, settings.aggregation)
    return BestModel(best, epochs, metrics)


def averaged_copy(model: CellClassifier, state: TrainState) -> CellClassifier:
    """A copy of `model` holding the mean weights of the ranked epochs."""
    best = copy.deepcopy(model)
    best.load_state_dict(averaged_weights(state.best))
    return best


def cpu_copy(model: CellClassifier) -> CellClassifier:
    """A copy of `model` on the CPU (the original, maybe on a GPU, trains on)."""
    with torch.random.fork_rng(devices=[]):  # building draws weights: leave training's draws alone
        copied = CellClassifier(model.spec)
    copied.load_state_dict(cpu_weights(model.state_dict()))
    return copied.eval()


def on_cpu(best: BestModel) -> BestModel:
    """`best` with its network copied to the CPU (training goes on with the original)."""
    return BestModel(cpu_copy(best.model), best.epochs, best.metrics)


def stops_early(rows: list[dict], settings: TrainSettings) -> bool:
    """Whether the best epoch so far lies `patience` epochs behind the last one."""
    if not settings.patience or not rows:
        return False
    best = int(best_row(pd.DataFrame(rows), settings.select_by)["Epoch"])
    return int(rows[-1]["Epoch"]) - best >= settings.patience

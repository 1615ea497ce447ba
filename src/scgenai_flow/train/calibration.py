"""What a model dir learns from its validation cells beside the networks: the linear member
(fitted on the training cells, calibrated on the validation cells) and the validation
scores on which prediction fits how it decides."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
import scipy.sparse as sp
import torch

from ..decide import fit_temperature, joint_scores
from ..linear import LinearMember, fit_linear, member_features
from ..metrics import macro_f1
from ..models import Calibration, Classifier, kept_rows
from ..predict import cell_log_scores, window_probabilities
from ..vocab import Vocabulary
from .crossfit import out_of_selection
from .data import LabelledWindows
from .ensemble import MemberRun
from .settings import TrainSettings

log = logging.getLogger(__name__)


def linear_member(
    vocab: Vocabulary,
    train: LabelledWindows,
    val: LabelledWindows,
    train_expression: sp.csr_matrix | None = None,
    val_expression: sp.csr_matrix | None = None,
    device: torch.device | None = None,
) -> tuple[LinearMember, np.ndarray]:
    """The linear member fitted (on `device`) on the training cells' `member_features` (their
    expression values when given, and gene presence) and calibrated on the validation cells (its
    logits divided by their temperature), and their log-probabilities."""
    started = time.perf_counter()
    features = member_features(train.windows, train.n_cells, vocab, train_expression)
    member, fit = fit_linear(features, train.cell_labels, vocab.classes.size, device=device)
    log.info("linear member fit: %s", fit.describe())
    member = replace(member, expression=train_expression is not None)
    val_features = member_features(val.windows, val.n_cells, vocab, val_expression)
    temperature = fit_temperature(member.log_probs(val_features), val.cell_labels)
    member = member.calibrated(temperature)
    val_log_probs = member.log_probs(val_features)
    label = val_log_probs.argmax(axis=1)
    log.info(
        "linear member (%d features, %.1f s): validation accuracy %.4f, macro-F1 %.4f, temperature %.3f",
        features.shape[1], time.perf_counter() - started, (label == val.cell_labels).mean(),
        macro_f1(val.cell_labels, label, vocab.classes.size), temperature,
    )  # fmt: skip
    return member, val_log_probs


def validation_calibration(
    model: Classifier,
    val: LabelledWindows,
    linear: np.ndarray | None,
    network_temperature: float,
    settings: TrainSettings,
    device: torch.device,
    unselected: np.ndarray | None = None,
) -> Calibration:
    """The validation cells' class log-scores (the networks', divided by their own temperature,
    and the linear member's when there is one) and labels, on which prediction fits how it
    decides (`fit_decision`), and the score temperature of the reference decision without offsets.
    `unselected`: best_model's networks' out-of-selection scores of the kept cells, used instead
    of their own (and their temperature fitted on them)."""
    labels = val.cell_labels
    if unselected is None:
        probs = window_probabilities(model.to(device), val.windows, settings.eval_batch_size, device)
        model.to("cpu")
        log_scores, _ = cell_log_scores(probs, val.windows.cell_index, val.n_cells, settings.aggregation)
    else:
        rows = kept_rows(val.n_cells)
        log_scores, labels = unselected, labels[rows]
        linear = None if linear is None else linear[rows]
        network_temperature = fit_temperature(log_scores, labels)
    network = log_scores / network_temperature
    temperature = fit_temperature(joint_scores(network, linear=linear), labels)
    return Calibration(
        temperature, network_temperature, val_labels=labels, val_network=network, val_linear=linear
    )


def unselected_scores(
    runs: list[MemberRun], val: LabelledWindows, settings: TrainSettings
) -> np.ndarray | None:
    """best_model's networks' validation log-scores of the kept cells that no selection saw
    (`crossfit`): the mean over its networks, as the ensemble means them. None when a network's
    epoch scores are missing (a checkpoint of an older version) or too few cells to split."""
    labels = val.cell_labels[kept_rows(val.n_cells)]
    scores = [
        out_of_selection(run.val_scores, labels, settings.select_by, settings.average_best, run.seed)
        if run.val_scores is not None
        else None
        for run in runs
    ]
    if any(s is None for s in scores):
        log.warning("best_model's decision is fitted on its networks' own validation scores (optimistic)")
        return None
    unselected = np.mean(scores, axis=0)
    classes = runs[0].val_scores.shape[2]
    own = np.mean([run.val_scores[[e - 1 for e in run.best.epochs]].mean(axis=0) for run in runs], axis=0)
    log.info(
        "best_model's validation macro-F1 scored out of selection (epochs ranked on the other half of"
        " the cells): %.4f; with the epochs chosen on all of them: %.4f (what selection adds)",
        macro_f1(labels, unselected.argmax(axis=1), classes), macro_f1(labels, own.argmax(axis=1), classes),
    )  # fmt: skip
    return unselected

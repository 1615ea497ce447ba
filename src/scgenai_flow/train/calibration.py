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
from ..models import Calibration, Classifier
from ..predict import cell_log_scores, window_probabilities
from ..vocab import Vocabulary
from .data import LabelledWindows
from .settings import TrainSettings

log = logging.getLogger(__name__)


def linear_member(
    vocab: Vocabulary,
    train: LabelledWindows,
    val: LabelledWindows,
    train_expression: sp.csr_matrix | None = None,
    val_expression: sp.csr_matrix | None = None,
) -> tuple[LinearMember, np.ndarray]:
    """The linear member fitted on the training cells' `member_features` (their expression values
    when given, and gene presence) and calibrated on the validation cells (its logits divided by
    their temperature), and their log-probabilities."""
    started = time.perf_counter()
    features = member_features(train.windows, train.n_cells, vocab, train_expression)
    member = fit_linear(features, train.cell_labels, vocab.classes.size)
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
) -> Calibration:
    """The validation cells' class log-scores (the networks', divided by their own temperature,
    and the linear member's when there is one) and labels, on which prediction fits how it
    decides (`fit_decision`), and the score temperature of the reference decision without offsets."""
    probs = window_probabilities(model.to(device), val.windows, settings.eval_batch_size, device)
    model.to("cpu")
    log_scores, _ = cell_log_scores(probs, val.windows.cell_index, val.n_cells, settings.aggregation)
    network = log_scores / network_temperature
    temperature = fit_temperature(joint_scores(network, linear=linear), val.cell_labels)
    return Calibration(
        temperature, network_temperature, val_labels=val.cell_labels, val_network=network, val_linear=linear
    )

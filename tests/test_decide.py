"""`fit_decision`: the linear member's weight and the logit adjustment are chosen by the validation
cells' macro-F1 only where it is evidence, never on noise; the choice and its note are what the
validation cells say (generated scores whose truth is known)."""

from __future__ import annotations

import numpy as np
import pytest

from scgenai_flow.decide import (
    CANDIDATE_STRENGTHS,
    CANDIDATE_WEIGHTS,
    fit_decision,
    fit_temperature,
    joint_scores,
    prior_offsets,
    resampled_macro_f1,
)
from scgenai_flow.metrics import macro_f1
from scgenai_flow.models import Calibration

CLASSES = 5


def scores(labels: np.ndarray, signal: float, rng: np.random.Generator) -> np.ndarray:
    """Class log-probabilities of a source that sees the truth with strength `signal`."""
    logits = rng.normal(size=(labels.size, CLASSES))
    logits[np.arange(labels.size), labels] += signal
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def calibration(cells: int, network: float, linear: float, seed: int = 0, prior=None) -> Calibration:
    """Validation cells of balanced classes scored by networks and a linear member of the given
    strengths; `prior`: training cells per class, added to both as a training prior would be."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, cells)
    class_cells = np.full(CLASSES, 100) if prior is None else np.asarray(prior)
    shift = np.log(class_cells / class_cells.sum())
    return Calibration(
        class_cells=class_cells,
        val_labels=labels,
        val_network=scores(labels, network, rng) + shift,
        val_linear=scores(labels, linear, rng) + shift,
    )


def val_macro_f1(calib: Calibration, weight: float, strength: float) -> float:
    """The validation cells' macro-F1 decided with a (weight, strength)."""
    mixed = joint_scores(
        calib.val_network,
        linear=calib.val_linear,
        offsets=prior_offsets(calib.class_cells, strength),
        linear_weight=weight,
    )
    return macro_f1(calib.val_labels, mixed.argmax(axis=1), CLASSES)


def test_a_linear_member_that_knows_more_takes_over_and_the_log_says_so() -> None:
    calib = calibration(4000, network=0.3, linear=3.0)
    decision = fit_decision(calib, True)
    assert decision.linear_weight == 1.0 and decision.networks_gain == 0.0
    assert "add nothing" in decision.networks_note() and "linear model suffices" in decision.networks_note()
    assert decision.val_cells == 4000


def test_networks_that_know_more_take_over() -> None:
    decision = fit_decision(calibration(4000, network=3.0, linear=0.3), True)
    assert decision.linear_weight <= 0.25
    assert decision.networks_gain > 0.95 and "beat the linear member alone in" in decision.networks_note()


def test_never_worse_on_validation_than_the_linear_member_alone_beyond_noise() -> None:
    for seed, (network, linear) in enumerate([(1.0, 2.0), (2.0, 2.0), (0.5, 1.5), (2.5, 1.0)]):
        calib = calibration(3000, network, linear, seed)
        decision = fit_decision(calib, True)
        chosen = val_macro_f1(calib, decision.linear_weight, decision.logit_adjustment)
        alone = max(val_macro_f1(calib, 1.0, s) for s in CANDIDATE_STRENGTHS)
        best = max(val_macro_f1(calib, w, s) for w in CANDIDATE_WEIGHTS for s in CANDIDATE_STRENGTHS)
        assert chosen >= alone - 0.01 and chosen == pytest.approx(best, abs=0.01)


def test_resampled_macro_f1_is_the_metric_on_each_resample() -> None:
    rng = np.random.default_rng(0)
    labels, predicted = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    predicted[:30] = labels[:30]
    counts = rng.multinomial(50, np.full(50, 1 / 50), 20).astype(np.float32)
    found = resampled_macro_f1(counts, labels, predicted, 6)
    for row, value in zip(counts.astype(int), found):
        drawn = np.repeat(np.arange(50), row)
        assert value == pytest.approx(macro_f1(labels[drawn], predicted[drawn], 6), abs=1e-6)


def test_a_hundred_cells_of_two_alike_sources_keep_the_reference() -> None:
    kept, notes = 0, []
    for seed in range(20):  # networks and member that know the same, each with a little own noise
        calib = calibration(100, network=1.5, linear=1.5, seed=seed)
        rng = np.random.default_rng(100 + seed)
        common, noise = calib.val_linear, rng.normal(0, 0.3, (2, 100, CLASSES))
        calib = Calibration(
            **{**calib.__dict__, "val_network": common + noise[0], "val_linear": common + noise[1]}
        )
        decision = fit_decision(calib, True)
        kept += (decision.linear_weight, decision.logit_adjustment) == (0.5, 1.0)
        notes.append(decision.networks_note())
    assert kept >= 18  # noise moves the decision about as often as the 95% rule allows
    assert sum("within noise" in note or "add nothing" in note for note in notes) >= 15


def test_a_training_prior_is_undone_by_the_logit_adjustment() -> None:
    calib = calibration(4000, network=2.0, linear=2.0, prior=[400, 200, 50, 20, 10])
    assert fit_decision(calib, True).logit_adjustment == 1.0
    flat = calibration(4000, network=2.0, linear=2.0, prior=[400, 200, 50, 20, 10])
    flat = Calibration(  # the same cells without the prior in their scores: no adjustment helps
        class_cells=flat.class_cells,
        val_labels=flat.val_labels,
        val_network=calibration(4000, 2.0, 2.0).val_network,
        val_linear=calibration(4000, 2.0, 2.0).val_linear,
    )
    assert fit_decision(flat, True).logit_adjustment == 0.0


def test_set_values_are_kept_and_only_the_temperature_is_fitted() -> None:
    calib = calibration(2000, network=0.3, linear=3.0)
    decision = fit_decision(calib, True, 0.25, 0.5)
    assert (decision.linear_weight, decision.logit_adjustment) == (0.25, 0.5)
    mixed = joint_scores(
        calib.val_network,
        linear=calib.val_linear,
        offsets=prior_offsets(calib.class_cells, 0.5),
        linear_weight=0.25,
    )
    assert decision.temperature == fit_temperature(mixed, calib.val_labels)
    assert fit_decision(calib, True, "auto", 0.0).logit_adjustment == 0.0  # one set, one fitted
    assert fit_decision(calib, True, 0.5, "auto").linear_weight == 0.5


def test_without_a_member_or_validation_cells() -> None:
    calib = calibration(2000, network=2.0, linear=2.0)
    alone = fit_decision(Calibration(**{**calib.__dict__, "val_linear": None}), False)
    assert alone.linear_weight == 0.0 and alone.networks_gain is None and alone.networks_note() is None
    stored = fit_decision(Calibration(temperature=0.7, class_cells=calib.class_cells), True, "auto", 0.0)
    assert (stored.linear_weight, stored.logit_adjustment, stored.temperature, stored.val_cells) == (
        0.5,
        0.0,
        0.7,
        0,
    )
    assert "as stored" in stored.describe()
    no_counts = fit_decision(Calibration(**{**calib.__dict__, "class_cells": None}), True)
    assert no_counts.logit_adjustment == 0.0  # a model dir without training cells per class


def test_the_same_cells_give_the_same_decision() -> None:
    assert fit_decision(calibration(500, 1.0, 1.2), True) == fit_decision(calibration(500, 1.0, 1.2), True)

"""Balanced accuracy and expected calibration error: hand-computed cases and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from scgenai_flow.metrics import balanced_accuracy, expected_calibration_error


def test_balanced_accuracy_is_mean_recall_of_true_classes() -> None:
    true = np.array([0, 0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 0, 1, 1, 0, 3])  # class 3 is only predicted: no recall term
    assert balanced_accuracy(true, predicted, 4) == pytest.approx((3 / 4 + 1 / 2 + 0) / 3)
    assert balanced_accuracy(np.array([], int), np.array([], int), 3) == 0.0


def test_balanced_accuracy_matches_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    true = rng.integers(0, 6, 500)
    predicted = np.where(rng.random(500) < 0.6, true, rng.integers(0, 6, 500))
    expected = metrics.balanced_accuracy_score(true, predicted)
    assert balanced_accuracy(true, predicted, 7) == pytest.approx(expected)


def test_ece_hand_computed() -> None:
    # bin (0.8, 0.9]: 2 predictions at 0.85, 1 right -> gap 0.35; bin (0.2, 0.3]: 2 at 0.25, 1 right -> 0.25
    confidence = np.array([0.85, 0.85, 0.25, 0.25])
    correct = np.array([True, False, True, False])
    expected = 0.5 * 0.35 + 0.5 * 0.25
    assert expected_calibration_error(confidence, correct, n_bins=10) == pytest.approx(expected)
    assert expected_calibration_error(np.ones(4), np.zeros(4, bool)) == pytest.approx(1.0)
    assert expected_calibration_error(np.array([0.0, 1.0]), np.array([False, True])) == 0.0
    assert expected_calibration_error(np.array([]), np.array([], bool)) == 0.0


def test_ece_matches_a_loop_over_bins_and_is_low_when_calibrated() -> None:
    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.1, 1.0, 20_000)
    calibrated = rng.random(confidence.size) < confidence
    edges = np.linspace(0, 1, 16)
    loop = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            loop += inside.mean() * abs(calibrated[inside].mean() - confidence[inside].mean())
    assert expected_calibration_error(confidence, calibrated) == pytest.approx(loop)
    assert expected_calibration_error(confidence, calibrated) < 0.02
    overconfident = rng.random(confidence.size) < confidence - 0.1
    assert expected_calibration_error(confidence, overconfident) == pytest.approx(0.1, abs=0.02)


def test_ece_refuses_scores_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([1.2]), np.array([True]))

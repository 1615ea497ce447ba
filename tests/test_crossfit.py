"""best_model's epochs are chosen on the validation cells; the scores its decision is fitted on
come from epochs that the other half of the cells chose, so they carry no selection optimism."""

from __future__ import annotations

import numpy as np

from scgenai_flow.metrics import macro_f1
from scgenai_flow.train.crossfit import folds_of, out_of_selection


def test_folds_are_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(5), [1, 2, 7, 10, 31])
    folds = folds_of(labels, seed=3)
    np.testing.assert_array_equal(folds, folds_of(labels, seed=3))
    assert not np.array_equal(folds, folds_of(labels, seed=4))
    for label in range(1, 5):  # every class of two cells or more is in both folds, evenly
        counts = np.bincount(folds[labels == label], minlength=2)
        assert abs(counts[0] - counts[1]) <= 1


def test_a_clearly_best_epoch_is_chosen_by_both_folds() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    epochs = rng.normal(size=(6, 60, 3))
    epochs[4, np.arange(60), labels] += 5  # epoch 5 knows every cell
    np.testing.assert_array_equal(out_of_selection(epochs, labels, "macro_f1", 1, seed=0), epochs[4])
    two = out_of_selection(epochs, labels, "macro_f1", 2, seed=0)
    assert (two.argmax(axis=1) == labels).mean() > 0.9  # the best epoch and a noisy one, averaged
    assert out_of_selection(epochs[:, :1], labels[:1], "macro_f1", 1, seed=0) is None  # one cell: no folds


def test_out_of_selection_scores_carry_no_selection_optimism() -> None:
    """Epochs of noise: the best of 20 by all cells looks better than chance on them; the
    out-of-selection scores do not."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), [30, 10, 4, 2])
    own, unselected = [], []
    for _ in range(30):
        epochs = rng.normal(size=(20, labels.size, 4))
        f1 = [macro_f1(labels, e.argmax(axis=1), 4) for e in epochs]
        own.append(max(f1))
        crossfit = out_of_selection(epochs, labels, "macro_f1", 1, seed=int(rng.integers(1000)))
        unselected.append(macro_f1(labels, crossfit.argmax(axis=1), 4))
    chance = np.mean([macro_f1(labels, rng.integers(4, size=labels.size), 4) for _ in range(300)])
    assert np.mean(own) > chance + 0.1  # selection's optimism
    assert abs(np.mean(unselected) - chance) < 0.05

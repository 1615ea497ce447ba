"""Training objective options (schedule, class weights, gene dropout, best-epoch choice) and
score calibration (temperature, Unassigned)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from scgenai_flow.checkpoint import TrainState, averaged_weights, remember_best
from scgenai_flow.contexts import Windows
from scgenai_flow.contexts.sliding import redealt_windows, sliding_windows
from scgenai_flow.decide import fit_temperature, prior_offsets, softmax_rows
from scgenai_flow.io import InputError
from scgenai_flow.metrics import best_row, expected_calibration_error, selection_key
from scgenai_flow.modeldir import CALIBRATION_FILE
from scgenai_flow.models import (
    Calibration,
    CellClassifier,
    ModelSpec,
    read_calibration,
)
from scgenai_flow.predict import UNASSIGNED, cell_log_scores, decision_scores, predict_cells, prediction_table
from scgenai_flow.train import TrainSettings, class_weights, drop_gene_pairs, lr_factor, write_model_dir
from scgenai_flow.vocab import build_vocabulary


def test_gene_dropout_keeps_whole_pairs_in_order() -> None:
    pad = 99
    ids = torch.tensor([[1, 11, 2, 12, 3, 13, 4, 14], [5, 15, 6, 16, pad, pad, pad, pad]])
    lengths = torch.tensor([8, 4])
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        out, out_lengths = drop_gene_pairs(ids, lengths, 0.5, rng)
        for row, n in zip(out.tolist(), out_lengths.tolist()):
            assert n >= 2 and n % 2 == 0
            genes, bins = row[0:n:2], row[1:n:2]
            assert bins == [g + 10 for g in genes]  # each gene keeps its own bin
            assert genes == sorted(genes) and pad not in genes  # order kept, padding never enters
            seen.add(tuple(genes))
    assert (1, 2, 3, 4) in seen and (5, 6) in seen and (3,) in seen  # all, none and some dropped
    kept = [drop_gene_pairs(ids, lengths, 0.3, np.random.default_rng(s))[1][0].item() for s in range(2000)]
    assert np.mean(kept) / 8 == pytest.approx(0.7, abs=0.03)
    a = drop_gene_pairs(ids, lengths, 0.3, np.random.default_rng(7))
    b = drop_gene_pairs(ids, lengths, 0.3, np.random.default_rng(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # seeded


def test_resampled_windows_deal_each_cells_own_pairs_anew() -> None:
    pad, unk = 99, 3
    cell_pairs = [
        [(10 + g, 50 + g) for g in range(7)],
        [(20, 60), (21, 61)],
        [(30 + g, 70) for g in range(5)],
    ]
    tokens = np.array([t for pairs in cell_pairs for pair in pairs for t in pair] + [unk])
    offsets = np.cumsum([0] + [2 * len(p) for p in cell_pairs] + [1])
    windows = sliding_windows(tokens, offsets, 6, 4, pad)  # 3 pairs a window, overlapping by one
    assert np.bincount(windows.cell_index).tolist() == [3, 1, 2, 1]
    seen = set()
    for seed in range(100):
        out = redealt_windows(windows, np.random.default_rng(seed))
        assert np.array_equal(out.lengths, windows.lengths)
        assert np.array_equal(out.cell_index, windows.cell_index)
        for row, n, cell in zip(out.tokens, out.lengths, out.cell_index):
            if cell == 3:  # a lone <unk> token stays as it is
                assert row[0] == unk and set(row[1:]) == {pad}
                continue
            pairs = [tuple(p) for p in row[:n].reshape(-1, 2).tolist()]
            assert set(pairs) <= set(cell_pairs[cell]) and len(set(pairs)) == len(pairs)
            assert pairs == sorted(pairs) and set(row[n:]) <= {pad}
            seen.add((int(cell), pairs[0]))
    assert {first for cell, first in seen if cell == 0} >= {(10, 50), (11, 51), (12, 52), (13, 53), (14, 54)}
    a = redealt_windows(windows, np.random.default_rng(7))
    assert np.array_equal(a.tokens, redealt_windows(windows, np.random.default_rng(7)).tokens)  # seeded


def test_warmup_cosine_rises_then_decays_to_zero() -> None:
    settings = TrainSettings(lr_schedule="warmup_cosine", warmup_fraction=0.1)
    factors = [lr_factor(step, 100, settings) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    assert factors[-1] < 0.01
    assert {lr_factor(step, 100, TrainSettings()) for step in range(100)} == {1.0}


def test_class_weights_balance_rare_classes_and_keep_the_loss_scale() -> None:
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    assert class_weights(labels, 4, "none") is None
    for kind, power in (("balanced", 1.0), ("sqrt", 0.5)):
        weights = class_weights(labels, 4, kind).numpy()
        assert weights[labels].mean() == pytest.approx(1.0, rel=1e-5)
        assert weights[2] / weights[0] == pytest.approx((80 / 5) ** power, rel=1e-5)
        assert weights[3] == 0  # a class without training windows
    totals = np.bincount(labels, weights=class_weights(labels, 3, "balanced").numpy()[labels])
    np.testing.assert_allclose(totals, totals[0], rtol=1e-5)  # every class weighs the same in all


def test_best_epoch_follows_the_chosen_metric() -> None:
    history = pd.DataFrame(
        {
            "Validation Accuracy": [0.80, 0.85, 0.85, 0.70],
            "Validation Macro F1": [0.60, 0.50, 0.55, 0.70],
            "Validation Loss": [0.5, 0.4, 0.3, 0.6],
        }
    )
    rows = history.to_dict("records")
    assert best_row(history, "accuracy").name == 2  # tie on accuracy: the higher macro-F1
    assert best_row(history, "macro_f1").name == 3
    assert selection_key(rows[0], "macro_f1") == (0.60, 0.80, -0.5)


def test_the_best_epochs_are_ranked_and_averaged() -> None:
    model = torch.nn.Linear(2, 1)
    model.register_buffer("steps", torch.tensor([0]))
    state = TrainState()
    keys = [(0.5, 0.7), (0.6, 0.7), (0.5, 0.7), (0.4, 0.9), (0.6, 0.7)]
    made = []
    for epoch, key in enumerate(keys, 1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
            model.steps.fill_(epoch)
        made.append(remember_best(state, model, key, epoch, keep=3))
    assert made == [True, True, True, False, True]  # epoch 4 ranks last; epoch 5 ties epoch 2
    assert [r.epoch for r in state.best] == [2, 5, 1]  # equal keys: the earlier epoch first
    averaged = averaged_weights(state.best)
    torch.testing.assert_close(averaged["weight"], torch.full((1, 2), 8 / 3))
    assert averaged["steps"].tolist() == [2]  # integer buffers come from the best epoch


def test_a_fitted_temperature_calibrates_over_confident_scores() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4000, 5))
    truth = softmax_rows(logits, 2.5)  # the labels follow the logits at temperature 2.5
    labels = np.array([rng.choice(5, p=p) for p in truth])
    log_scores = np.log(softmax_rows(logits))  # what an over-confident model reports
    temperature = fit_temperature(log_scores, labels)
    assert temperature == pytest.approx(2.5, rel=0.1)
    cells = np.arange(labels.size)
    before = predict_cells(np.exp(log_scores), cells, cells.size)
    after = predict_cells(np.exp(log_scores), cells, cells.size, temperature=temperature)
    np.testing.assert_array_equal(before.label, after.label)  # the temperature only moves scores
    correct = before.label == labels
    before_ece = expected_calibration_error(before.score, correct)
    assert expected_calibration_error(after.score, correct) < 0.3 * before_ece
    assert fit_temperature(log_scores, np.full(labels.size, -1)) == 1.0  # nothing labelled


def test_mean_log_scores_per_cell() -> None:
    probs = np.array([[0.6, 0.4], [0.1, 0.9], [0.7, 0.3]], dtype=np.float32)
    scores, window = cell_log_scores(probs, np.array([0, 0, 1]), 2, "mean")
    np.testing.assert_allclose(scores[0], np.log(probs[:2]).mean(axis=0), rtol=1e-6)
    assert window is None  # decided with the final class
    _, window = decision_scores(probs, np.array([0, 0, 1]), 2, "mean")
    np.testing.assert_array_equal(window, [1, 2])


def test_logit_adjustment_lets_rare_classes_win_borderline_cells() -> None:
    assert prior_offsets(np.array([90, 10]), 0.0) is None  # off: the original decisions
    np.testing.assert_allclose(prior_offsets(np.array([90, 10]), 0.5), -0.5 * np.log([0.9, 0.1]))
    # cell 0: one clear window; cell 1: a borderline cell whose two windows lean to the common class
    probs = np.array([[0.95, 0.05], [0.7, 0.3], [0.55, 0.45]], dtype=np.float32)
    cell_index = np.array([0, 1, 1])
    for aggregation in ("max", "mean"):
        plain = predict_cells(probs, cell_index, 2, aggregation)
        assert plain.label.tolist() == [0, 0] and plain.window.tolist() == [0, 1]
        shifted = predict_cells(
            probs, cell_index, 2, aggregation, offsets=prior_offsets(np.array([90, 10]), 1)
        )
        assert shifted.label.tolist() == [0, 1]  # the clear cell keeps its class
        # max: the highest-scoring window still decides; mean: the one that supports class 1 best
        assert shifted.window.tolist() == [0, 1 if aggregation == "max" else 2]
    even = predict_cells(probs, cell_index, 2, "mean", offsets=prior_offsets(np.array([50, 50]), 1))
    np.testing.assert_array_equal(even.label, [0, 0])  # balanced training classes: nothing moves
    np.testing.assert_allclose(even.score, predict_cells(probs, cell_index, 2, "mean").score, rtol=1e-6)


def test_low_scores_become_unassigned() -> None:
    windows = Windows(
        tokens=np.zeros((3, 4), dtype=np.int32),
        lengths=np.full(3, 4),
        cell_index=np.arange(3),
        context_index=np.zeros(3, dtype=np.int32),
        context_names=np.array(["window_0"]),
    )
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8]], dtype=np.float32)
    cells = predict_cells(probs, np.arange(3), 3)
    obs = pd.DataFrame(index=["a", "b", "c"])
    table = prediction_table(obs, windows, cells, np.array(["T", "B"]), unassigned_below=0.6)
    assert list(table["PredictedFeature"]) == ["T", UNASSIGNED, "B"]
    default = prediction_table(obs, windows, cells, np.array(["T", "B"]))
    assert list(default["PredictedFeature"]) == ["T", "T", "B"]
    with pytest.raises(InputError, match="has a class named 'Unassigned'"):
        prediction_table(obs, windows, cells, np.array(["T", UNASSIGNED]), unassigned_below=0.6)
    mixed = prediction_table(obs, windows, cells, np.array(["T", UNASSIGNED]))  # off: a class like any
    assert list(mixed["PredictedFeature"]) == ["T", "T", UNASSIGNED]


def test_model_dirs_carry_their_temperature(tmp_path) -> None:
    vocab = build_vocabulary(np.array(["g1", "g2"]), 3, pd.Series(["x", "y"]), "test")
    vocab.save(tmp_path / "vocab")
    model = CellClassifier(ModelSpec("llama", "tiny", vocab.size, vocab.pad_id, 8, 2))
    write_model_dir(tmp_path / "m", model, tmp_path / "vocab", {}, Calibration(1.7, 0.8, np.array([4, 9])))
    calibration = read_calibration(tmp_path / "m")
    assert (calibration.temperature, calibration.network_temperature) == pytest.approx((1.7, 0.8))
    np.testing.assert_array_equal(calibration.class_cells, [4, 9])
    path = tmp_path / "m" / CALIBRATION_FILE
    path.write_text(json.dumps({"temperature": 1.7, "class_cells": [4]}))
    with pytest.raises(InputError, match=r"calibration.json: class_cells \[4.0\]; expected 2 counts >= 0"):
        read_calibration(tmp_path / "m")
    path.write_text(json.dumps({"temperature": 1.7}))  # model dirs from before the linear member
    assert read_calibration(tmp_path / "m") == Calibration(1.7, 1.0, None)
    path.unlink()
    assert read_calibration(tmp_path / "m") == Calibration()  # model dirs from before calibration
    for bad in ({"temperature": -1}, {"temperature": 1, "network_temperature": 0}, [1.7]):
        path.write_text(json.dumps(bad))
        with pytest.raises(InputError, match="calibration.json: .*expected JSON with positive 'temperature'"):
            read_calibration(tmp_path / "m")
    with pytest.raises(InputError, match="model.pooling 'max' is unknown"):
        ModelSpec("llama", "tiny", vocab.size, vocab.pad_id, 8, 2, pooling="max")
    with pytest.raises(InputError, match="model.pair_input 'sum' is unknown"):
        ModelSpec("llama", "tiny", vocab.size, vocab.pad_id, 8, 2, pair_input="sum")

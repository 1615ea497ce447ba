"""Prediction decides and scores cells as fitted on the validation cells: training keeps their
networks' and linear member's log-scores and labels in calibration.json, and prediction fits the
member's weight, the logit adjustment and the score temperature on them (real PBMCs)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml
from conftest import four_type_cells, preprocessed_h5ad

from scgenai_flow.config import with_defaults
from scgenai_flow.contexts import Windows, load_windows, save_windows
from scgenai_flow.decide import cell_losses, fit_decision, fit_temperature, joint_scores, prior_offsets
from scgenai_flow.io import InputError
from scgenai_flow.linear import LinearMember, member_features, read_expression
from scgenai_flow.modeldir import CALIBRATION_FILE
from scgenai_flow.models import KEPT_CELLS, Calibration, load_model, read_calibration
from scgenai_flow.predict import cell_log_scores, predict_cells, predict_from_files, window_probabilities
from scgenai_flow.train import LabelledWindows, TrainOutputs, train_from_files
from scgenai_flow.vocab import Vocabulary

CPU = torch.device("cpu")
# the effective defaults: config/config.yaml (possibly empty) completed from the schema
CONFIG = with_defaults(yaml.safe_load((Path(__file__).parents[1] / "config/config.yaml").read_text()) or {})
CONFIG["seed"] = 11
CONFIG["train"].update(num_epochs=2, batch_size=16, learning_rate=2e-3, average_best=2, ensemble=1)
# Training cells kept per class (of 20): imbalanced, so that the logit adjustment matters.
TRAIN_CELLS = (20, 10, 4, 20)


def kept_cells(binned: sp.csr_matrix, windows: Windows, labels: np.ndarray, values: sp.csr_matrix):
    """The first TRAIN_CELLS[c] cells of each class c, with their windows renumbered."""
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:n] for c, n in enumerate(TRAIN_CELLS)]))
    rows = np.flatnonzero(np.isin(windows.cell_index, keep))
    kept = windows.subset(rows)
    kept = Windows(
        kept.tokens,
        kept.lengths,
        np.searchsorted(keep, kept.cell_index),
        kept.context_index,
        kept.context_names,
    )
    return binned[keep], kept, labels[keep], values[keep]


@pytest.fixture(scope="module")
def trained(pbmc, tmp_path_factory) -> Path:
    """A model trained with the defaults (one network of 2 epochs, the linear member) on
    imbalanced real PBMCs of four types, its validation windows and preprocessed files."""
    root = tmp_path_factory.mktemp("calibration")
    vocab, parts = four_type_cells(pbmc, {"train": slice(0, 20), "val": slice(20, 31)})
    parts["train"] = kept_cells(*parts["train"])
    for part, (binned, windows, labels, values) in parts.items():
        save_windows(root / f"{part}.npz", windows, labels)
        preprocessed_h5ad(root / f"{part}.h5ad", vocab, binned, values)
    vocab.save(root / "vocab")
    outputs = TrainOutputs(*(str(root / n) for n in ("best", "last", "history.csv")))
    files = [str(root / f) for f in ("train.npz", "val.npz", "vocab")]
    expression = (str(root / "train.h5ad"), str(root / "val.h5ad"))
    train_from_files(*files, CONFIG, outputs, threads=torch.get_num_threads(), expression=expression)
    return root


def predict_val(
    root: Path, target: str, logit_adjustment: float | str, weight: float | str, calibrate: bool = True
):
    """The validation cells' prediction table with the best model."""
    files = [str(root / f) for f in ("val.npz", "val.h5ad", "best")]
    return predict_from_files(
        *files, 16, 0, 1, str(root / target), "mean", calibrate, None, logit_adjustment, weight
    )


def validation_inputs(root: Path) -> tuple[LabelledWindows, np.ndarray, np.ndarray]:
    """The validation cells, the best model's window probabilities and its linear member's
    log-probabilities of them."""
    vocab = Vocabulary.load(root / "vocab")
    val = LabelledWindows(*load_windows(root / "val.npz"))
    member = LinearMember.load(root / "best", vocab)
    values = read_expression(root / "val.h5ad", vocab, val.n_cells)
    linear = member.log_probs(member_features(val.windows, val.n_cells, vocab, values))
    return val, window_probabilities(load_model(root / "best"), val.windows, 16, CPU), linear


def test_training_keeps_the_validation_cells_scores(trained) -> None:
    calibration = read_calibration(trained / "best")
    val, probs, linear = validation_inputs(trained)
    # best_model's epochs were chosen on these cells: it keeps out-of-selection scores of its
    # networks (train/crossfit.py), their temperature fitted on them
    unselected = calibration.val_network * calibration.network_temperature
    network, _ = cell_log_scores(probs, val.windows.cell_index, val.n_cells, "mean")
    assert not np.allclose(unselected, network, atol=1e-3)
    assert fit_temperature(unselected, val.cell_labels) == pytest.approx(
        calibration.network_temperature, rel=1e-3
    )
    # last_model's epoch was not chosen: it keeps its networks' own scores
    last = read_calibration(trained / "last")
    probs = window_probabilities(load_model(trained / "last"), val.windows, 16, CPU)
    own, _ = cell_log_scores(probs, val.windows.cell_index, val.n_cells, "mean")
    np.testing.assert_allclose(last.val_network, own / last.network_temperature, atol=1e-4)
    np.testing.assert_allclose(calibration.val_linear, linear, atol=1e-4)
    np.testing.assert_array_equal(calibration.val_labels, val.cell_labels)
    np.testing.assert_array_equal(calibration.class_cells, TRAIN_CELLS)
    reference = joint_scores(calibration.val_network, linear=calibration.val_linear)
    assert calibration.temperature == pytest.approx(fit_temperature(reference, val.cell_labels), rel=1e-5)
    assert read_calibration(trained / "last").val_network.shape == (val.n_cells, len(TRAIN_CELLS))
    # best_model records how predict's `auto` decides (fitted on the unrounded scores: alike)
    recorded = json.loads((trained / "best" / "selection.json").read_text())["decision"]
    decision = fit_decision(calibration, True)
    assert recorded == pytest.approx({**asdict(decision), "temperature": recorded["temperature"]})
    assert recorded["temperature"] == pytest.approx(decision.temperature, rel=1e-4)


@pytest.mark.parametrize("logit_adjustment, weight", [("auto", "auto"), (0.0, 1.0), (2.0, 0.0), (1.0, 0.25)])
def test_prediction_decides_as_fitted_on_the_validation_cells(trained, logit_adjustment, weight) -> None:
    calibration = read_calibration(trained / "best")
    val, probs, linear = validation_inputs(trained)
    table = predict_val(trained, f"{logit_adjustment}_{weight}.csv", logit_adjustment, weight)
    decision = fit_decision(calibration, True, weight, logit_adjustment)
    if weight != "auto":  # a set value is used as it is
        assert (decision.linear_weight, decision.logit_adjustment) == (weight, logit_adjustment)
    offsets = prior_offsets(calibration.class_cells, decision.logit_adjustment)
    mixed = joint_scores(
        calibration.val_network,
        linear=calibration.val_linear,
        offsets=offsets,
        linear_weight=decision.linear_weight,
    )
    assert decision.temperature == fit_temperature(mixed, val.cell_labels)  # fitted with the offsets used
    expected = predict_cells(
        *(probs, val.windows.cell_index, val.n_cells, "mean", decision.temperature),
        linear=linear,
        offsets=offsets,
        network_temperature=calibration.network_temperature,
        linear_weight=decision.linear_weight,
    )
    np.testing.assert_array_equal(
        table["PredictedFeature"], Vocabulary.load(trained / "vocab").classes[expected.label]
    )
    np.testing.assert_allclose(table["prediction_score"], expected.score, rtol=1e-4)
    # calibrated on the validation cells: their log-loss no worse than the raw scores' (up to the
    # 1-D search's tolerance, where the member alone is already calibrated: temperature ~1)
    assert cell_losses(mixed, val.cell_labels, decision.temperature).mean() <= (
        cell_losses(mixed, val.cell_labels).mean() + 1e-6
    )
    raw = predict_val(trained, "raw.csv", logit_adjustment, weight, calibrate=False)
    np.testing.assert_array_equal(raw["PredictedFeature"], table["PredictedFeature"])  # scores only
    np.testing.assert_allclose(
        raw["prediction_score"],
        predict_cells(
            *(probs, val.windows.cell_index, val.n_cells, "mean", 1.0),
            linear=linear,
            offsets=offsets,
            network_temperature=calibration.network_temperature,
            linear_weight=decision.linear_weight,
        ).score,
        rtol=1e-4,
    )
    again = predict_val(trained, "again.csv", logit_adjustment, weight)  # deterministic
    np.testing.assert_array_equal(again["prediction_score"], table["prediction_score"])


def test_the_stored_scores_decide_and_older_dirs_keep_their_temperature(trained) -> None:
    path = trained / "best" / CALIBRATION_FILE
    saved = json.loads(path.read_text())
    try:
        sharper = {**saved, **{k: (3 * np.asarray(saved[k])).tolist() for k in ("val_network", "val_linear")}}
        path.write_text(json.dumps(sharper))  # the same cells, scores 3x as far apart
        decision = fit_decision(read_calibration(trained / "best"), True, 0.5, 0.0)
        assert decision.temperature == pytest.approx(3 * saved["temperature"], rel=0.01)
        first = predict_val(trained, "a.csv", 0.0, 0.5)
        older = {k: v for k, v in saved.items() if not k.startswith("val_")}
        for kept in ({}, {"val_scores": saved["val_network"]}):  # none, or an earlier format's
            path.write_text(json.dumps({**older, **kept}))
            calibration = read_calibration(trained / "best")  # a model dir written before
            assert calibration.val_network is None and calibration.val_labels is None
            decision = fit_decision(calibration, True)
            assert (decision.linear_weight, decision.logit_adjustment, decision.val_cells) == (0.5, 1.0, 0)
            assert decision.temperature == saved["temperature"]
        second = predict_val(trained, "b.csv", 0.0, 0.5)
        assert not np.allclose(first["prediction_score"], second["prediction_score"])
        assert (first["PredictedFeature"] == second["PredictedFeature"]).all()  # scores only
        n = len(saved["val_labels"])
        for bad, message in (
            ({"val_network": [[0.0, 1.0]]}, r"val_network \(1, 2\), val_labels"),
            ({"val_labels": [9] * n}, r"val_labels \[9\]"),
            ({"val_labels": saved["val_labels"][1:]}, rf"val_network \({n}, 4\), val_labels \({n - 1},\)"),
            ({"val_linear": "x"}, "val_linear: could not convert"),
            ({"val_network": [[float("nan")] * 4] * n}, r"val_network"),
        ):
            path.write_text(json.dumps({**saved, **bad}))
            with pytest.raises(
                InputError, match=rf"calibration.json: {message}.*expected a class id \(0 to 3\)"
            ):
                read_calibration(trained / "best")
    finally:
        path.write_text(json.dumps(saved))
    assert read_calibration(trained / "best") == Calibration(
        saved["temperature"],
        saved["network_temperature"],
        np.array(saved["class_cells"]),
        np.array(saved["val_labels"]),
        np.array(saved["val_network"]),
        np.array(saved["val_linear"]),
    )


def test_calibration_json_keeps_at_most_its_share_of_validation_cells() -> None:
    n = KEPT_CELLS + 2_500
    scores = np.log(np.full((n, 3), 1 / 3)) + np.arange(n)[:, None] * [0, 1e-6, 0]
    saved = json.loads(Calibration(val_labels=np.arange(n) % 3, val_network=scores).to_json())
    assert len(saved["val_network"]) == len(saved["val_labels"]) == KEPT_CELLS
    assert "val_linear" not in saved  # a model without a linear member
    assert saved["val_labels"][:2] == [0, 1] and saved["val_labels"][-1] == (n - 1) % 3  # ends kept
    small = Calibration(val_labels=np.zeros(5), val_network=scores[:5], val_linear=2 * scores[:5])
    saved = json.loads(small.to_json())
    assert saved["val_network"] == np.round(scores[:5], 5).tolist()  # every cell of a small set
    assert saved["val_linear"] == np.round(2 * scores[:5], 5).tolist()

"""`prediction_score` is calibrated on the score prediction decides with: training keeps the
validation cells' decided log-scores and labels in calibration.json, and prediction fits its
temperature on them plus the offsets of the logit adjustment it uses (real PBMCs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml
from conftest import four_type_cells, preprocessed_h5ad

from scgenai_flow.config import with_defaults
from scgenai_flow.contexts import Windows, load_windows, save_windows
from scgenai_flow.io import InputError
from scgenai_flow.linear import LinearMember, member_features, read_expression
from scgenai_flow.metrics import expected_calibration_error
from scgenai_flow.models import CALIBRATION_FILE, KEPT_CELLS, Calibration, load_model, read_calibration
from scgenai_flow.predict import (
    decision_scores,
    fit_temperature,
    joint_scores,
    predict_cells,
    predict_from_files,
    prior_offsets,
    score_temperature,
    window_probabilities,
)
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


def predict_val(root: Path, model: str, target: str, logit_adjustment: float, calibrate: bool = True):
    """The validation cells' prediction table with the model dir `model`."""
    files = [str(root / f) for f in ("val.npz", "val.h5ad", model)]
    return predict_from_files(*files, 16, 0, 1, str(root / target), "mean", calibrate, None, logit_adjustment)


def validation_inputs(root: Path) -> tuple[LabelledWindows, np.ndarray, np.ndarray]:
    """The validation cells, the best model's window probabilities and its linear member's
    log-probabilities of them."""
    vocab = Vocabulary.load(root / "vocab")
    val = LabelledWindows(*load_windows(root / "val.npz"))
    member = LinearMember.load(root / "best", vocab)
    values = read_expression(root / "val.h5ad", vocab, val.n_cells)
    linear = member.log_probs(member_features(val.windows, val.n_cells, vocab, values))
    return val, window_probabilities(load_model(root / "best"), val.windows, 16, CPU), linear


def test_training_keeps_the_validation_cells_decided_scores(trained) -> None:
    calibration = read_calibration(trained / "best")
    val, probs, linear = validation_inputs(trained)
    scores, _ = decision_scores(
        *(probs, val.windows.cell_index, val.n_cells, "mean"),
        linear=linear,
        network_temperature=calibration.network_temperature,
    )
    np.testing.assert_allclose(calibration.val_scores, scores, atol=1e-4)
    np.testing.assert_array_equal(calibration.val_labels, val.cell_labels)
    np.testing.assert_array_equal(calibration.class_cells, TRAIN_CELLS)
    assert calibration.temperature == fit_temperature(calibration.val_scores, val.cell_labels)
    assert read_calibration(trained / "last").val_scores.shape == (val.n_cells, len(TRAIN_CELLS))


def test_the_temperature_fits_the_scores_with_the_offsets_used(trained) -> None:
    calibration = read_calibration(trained / "best")
    val, probs, linear = validation_inputs(trained)
    fitted = {}
    for strength in (0.0, 1.0, 2.0):
        table = predict_val(trained, "best", f"s{strength}.csv", strength)
        offsets = prior_offsets(calibration.class_cells, strength)
        fitted[strength] = score_temperature(calibration, offsets)
        decided = joint_scores(calibration.val_scores, offsets=offsets)
        assert fitted[strength] == fit_temperature(decided, val.cell_labels)
        # the scores are those of the decided cells at that temperature
        expected = predict_cells(
            *(probs, val.windows.cell_index, val.n_cells, "mean", fitted[strength]),
            linear=linear,
            offsets=offsets,
            network_temperature=calibration.network_temperature,
        )
        np.testing.assert_allclose(table["prediction_score"], expected.score, rtol=1e-4)
        # calibrated on the validation cells: no worse there than the raw scores
        correct = expected.label == val.cell_labels
        raw = predict_val(trained, "best", f"r{strength}.csv", strength, calibrate=False)
        assert expected_calibration_error(expected.score, correct) <= expected_calibration_error(
            raw["prediction_score"].to_numpy(), correct
        )
    assert fitted[0.0] == calibration.temperature  # without offsets: the temperature training fitted
    # here the offsets, which favour the rare classes, lower the common classes' scores: colder
    assert fitted[2.0] < fitted[1.0] < fitted[0.0]
    again = predict_val(trained, "best", "again.csv", 1.0)  # deterministic
    np.testing.assert_array_equal(
        again["prediction_score"], predict_val(trained, "best", "s1.0.csv", 1.0)["prediction_score"]
    )


def test_the_stored_scores_decide_the_temperature_and_older_dirs_keep_theirs(trained, tmp_path) -> None:
    path = trained / "best" / CALIBRATION_FILE
    saved = json.loads(path.read_text())
    try:
        sharper = {**saved, "val_scores": (3 * np.asarray(saved["val_scores"])).tolist()}
        path.write_text(json.dumps(sharper))  # the same cells, scores 3x as far apart
        calibration = read_calibration(trained / "best")
        assert score_temperature(calibration) == pytest.approx(3 * saved["temperature"], rel=0.05)
        first = predict_val(trained, "best", "a.csv", 1.0)
        path.write_text(json.dumps({k: v for k, v in saved.items() if not k.startswith("val_")}))
        older = read_calibration(trained / "best")  # a model dir written before the scores were kept
        assert older.val_scores is None and older.val_labels is None
        offsets = prior_offsets(older.class_cells, 1.0)
        assert score_temperature(older, offsets) == saved["temperature"]
        second = predict_val(trained, "best", "b.csv", 1.0)
        assert not np.allclose(first["prediction_score"], second["prediction_score"])
        assert (first["PredictedFeature"] == second["PredictedFeature"]).all()  # scores only
        for bad, message in (
            ({"val_scores": [[0.0, 1.0]], "val_labels": [0]}, r"val_scores \(1, 2\)"),
            (
                {"val_scores": saved["val_scores"], "val_labels": [9] * len(saved["val_labels"])},
                r"val_scores \(\d+, 4\), val_labels",
            ),
            ({"val_labels": saved["val_labels"][1:]}, r"val_scores \((\d+), 4\), val_labels \((?!\1,)"),
            ({"val_scores": "x", "val_labels": [0]}, "val_scores: could not convert"),
        ):
            path.write_text(json.dumps({**saved, **bad}))
            with pytest.raises(
                InputError,
                match=rf"calibration.json: {message}.*expected validation log-scores .* class id \(0 to 3\)",
            ):
                read_calibration(trained / "best")
    finally:
        path.write_text(json.dumps(saved))
    assert read_calibration(trained / "best") == Calibration(
        saved["temperature"],
        saved["network_temperature"],
        np.array(saved["class_cells"]),
        np.array(saved["val_scores"]),
        np.array(saved["val_labels"]),
    )


def test_calibration_json_keeps_at_most_its_share_of_validation_cells() -> None:
    n = KEPT_CELLS + 2_500
    scores = np.log(np.full((n, 3), 1 / 3)) + np.arange(n)[:, None] * [0, 1e-6, 0]
    saved = json.loads(Calibration(val_scores=scores, val_labels=np.arange(n) % 3).to_json())
    assert len(saved["val_scores"]) == len(saved["val_labels"]) == KEPT_CELLS
    assert saved["val_labels"][:2] == [0, 1] and saved["val_labels"][-1] == (n - 1) % 3  # ends kept
    small = json.loads(Calibration(val_scores=scores[:5], val_labels=np.zeros(5)).to_json())
    assert small["val_scores"] == np.round(scores[:5], 5).tolist()  # every cell of a small set

"""The linear member (`model.linear_member`): gene presence read from real cells' windows, a
logistic regression fitted to its optimum, kept in the model dir and averaged with the networks."""

from __future__ import annotations

from dataclasses import replace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from conftest import FOUR_TYPES, four_type_cells, preprocessed_h5ad

from scgenai_flow import linear
from scgenai_flow.contexts import save_windows
from scgenai_flow.decide import prior_offsets, softmax_rows
from scgenai_flow.io import InputError, write_h5ad
from scgenai_flow.linear import (
    LinearMember,
    fit_linear,
    member_features,
    presence,
    read_expression,
)
from scgenai_flow.modeldir import LINEAR_FILE
from scgenai_flow.models import Calibration, CellClassifier, ModelSpec
from scgenai_flow.predict import predict_cells, predict_from_files, window_probabilities
from scgenai_flow.train import write_model_dir

CLASSES = FOUR_TYPES


@pytest.fixture(scope="module")
def cells(pbmc):
    """Real PBMCs of four types: 20 training and 10 held-out cells each, binned, with windows
    of 64 tokens (several per cell), the vocabulary and the labels."""
    return four_type_cells(pbmc, {"train": slice(0, 20), "test": slice(20, 30)})


def test_presence_is_which_genes_each_cell_expresses(cells, monkeypatch) -> None:
    vocab, parts = cells
    binned, windows, labels, _ = parts["train"]
    assert np.bincount(windows.cell_index).min() > 1  # the genes of a cell spread over windows
    matrix = presence(windows, labels.size, vocab)
    expected = (binned != 0).astype(np.float32)
    assert matrix.shape == expected.shape and (matrix != expected).nnz == 0
    monkeypatch.setattr(linear, "WINDOWS_PER_CHUNK", 7)  # chunks that split cells
    assert (presence(windows, labels.size, vocab) != expected).nnz == 0


def exact_objective(x: sp.csr_matrix, y: np.ndarray, n_classes: int) -> float:
    """The optimum per cell of mean cross-entropy + |W|^2 / (2 n), found by scipy's L-BFGS-B in
    float64 to a tight tolerance (the solver the member had before)."""
    from scipy.optimize import minimize

    x, onehot, n_features = x.astype(np.float64), np.eye(n_classes)[y], x.shape[1]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights, bias = theta[:-n_classes].reshape(n_features, n_classes), theta[-n_classes:]
        logits = np.asarray(x @ weights) + bias
        log_probs = (
            logits
            - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
            - logits.max(1, keepdims=True)
        )
        residual = np.exp(log_probs) - onehot
        loss = -(onehot * log_probs).sum() + 0.5 * (weights**2).sum()
        return loss / y.size, np.concatenate([(x.T @ residual + weights).ravel(), residual.sum(0)]) / y.size

    start = np.zeros(n_features * n_classes + n_classes)
    found = minimize(
        objective, start, jac=True, method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-15}
    )
    return float(found.fun)


def test_the_fit_reaches_the_regularised_optimum_and_tells_cell_types_apart(cells, monkeypatch) -> None:
    vocab, parts = cells
    x = {p: presence(w, y.size, vocab) for p, (_, w, y, _) in parts.items()}
    y = parts["train"][2]
    member, fit = fit_linear(x["train"], y, len(CLASSES))
    optimum = exact_objective(x["train"], y, len(CLASSES))
    assert optimum <= fit.objective <= optimum * 1.05 + 1e-4  # float32 L-BFGS, stopped by its rule
    assert fit.stopped and fit.iterations <= linear.MAX_ITERATIONS and fit.passes >= fit.iterations
    held_out = member.log_probs(x["test"]).argmax(axis=1)
    assert (held_out == parts["test"][2]).mean() >= 0.85  # 0.925 on these cells
    logits = np.asarray(x["test"] @ member.weights) + member.bias
    sharper = member.calibrated(0.5).log_probs(x["test"])  # logits / temperature
    np.testing.assert_allclose(np.exp(sharper), softmax_rows(logits, 0.5), rtol=1e-4, atol=1e-6)
    again, _ = fit_linear(x["train"], y, len(CLASSES))
    np.testing.assert_array_equal(again.weights, member.weights)  # reproducible on the CPU
    unlabelled = np.concatenate([y, np.full(5, -1)])  # cells without a label do not count
    padded, _ = fit_linear(sp.vstack([x["train"], x["test"][:5]]).tocsr(), unlabelled, len(CLASSES))
    np.testing.assert_allclose(padded.weights, member.weights, atol=1e-5)
    monkeypatch.setattr(linear, "MAX_ITERATIONS", 3)  # each stopping rule names itself
    assert fit_linear(x["train"], y, len(CLASSES))[1].stopped == "reached 3 iterations"
    monkeypatch.setattr(linear, "MAX_ITERATIONS", 100)
    monkeypatch.setattr(linear, "GRADIENT_TOLERANCE", 1.0)
    assert fit_linear(x["train"], y, len(CLASSES))[1].stopped.startswith("converged (largest gradient")


def test_the_member_reads_expression_values_beside_presence(cells, tmp_path) -> None:
    vocab, parts = cells
    binned, windows, y, values = parts["train"]
    features = member_features(windows, y.size, vocab, values)
    n_genes = vocab.genes.size
    assert features.shape == (y.size, n_genes + vocab.n_features)
    assert (features[:, :n_genes] != values).nnz == 0
    assert (features[:, n_genes:] != presence(windows, y.size, vocab)).nnz == 0
    path = preprocessed_h5ad(tmp_path / "p.h5ad", vocab, binned, values)
    assert (read_expression(path, vocab, y.size) != values).nnz == 0
    with pytest.raises(InputError, match=rf"p.h5ad: {y.size} cells x {n_genes} genes; expected the 81 cells"):
        read_expression(path, vocab, 81)
    _, test_windows, test_y, test_values = parts["test"]
    member, _ = fit_linear(features, y, len(CLASSES))
    held_out = member.log_probs(member_features(test_windows, test_y.size, vocab, test_values)).argmax(1)
    assert (held_out == test_y).mean() >= 0.85


def test_model_dirs_keep_the_member_and_predictions_average_it(cells, tmp_path) -> None:
    vocab, parts = cells
    _, windows, y, _ = parts["train"]
    member, _ = fit_linear(presence(windows, y.size, vocab), y, len(CLASSES))
    vocab.save(tmp_path / "vocab")
    network = CellClassifier(ModelSpec("llama", "tiny", vocab.size, vocab.pad_id, 64, len(CLASSES)))
    write_model_dir(tmp_path / "m", network, tmp_path / "vocab", {}, linear=member)
    loaded = LinearMember.load(tmp_path / "m", vocab)
    np.testing.assert_array_equal(loaded.weights, member.weights)
    assert not loaded.expression  # a presence-only member (as older versions kept)
    np.savez(tmp_path / "m" / LINEAR_FILE, weights=member.weights, bias=member.bias, expression=True)
    expected = rf"{LINEAR_FILE}: weights .*; expected \({vocab.n_features + vocab.genes.size}, 4\)"
    with pytest.raises(InputError, match=expected):  # an expression member needs a row per gene more
        LinearMember.load(tmp_path / "m", vocab)
    assert LinearMember.load(tmp_path / "vocab", vocab) is None  # none kept
    # a cell's scores: the mean of its windows' and the member's log-probabilities
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]], dtype=np.float32)
    member_log_probs = np.log(np.array([[0.1, 0.8, 0.05, 0.05], [0.1, 0.1, 0.1, 0.7]]))
    both = predict_cells(probs, np.array([0, 0, 1]), 2, "mean", linear=member_log_probs)
    networks = np.log(probs[:2]).mean(axis=0)
    expected = softmax_rows(((networks + member_log_probs[0]) / 2)[None])[0]
    assert both.label.tolist() == [1, 3] and both.score[0] == pytest.approx(expected[1], rel=1e-5)
    assert both.window.tolist() == [1, 2]  # the window that supports class 1 best
    assert pd.Series(predict_cells(probs, np.array([0, 0, 1]), 2, "mean").label).tolist() == [0, 3]


def test_predicting_from_files_joins_the_networks_the_member_and_the_offsets(cells, tmp_path) -> None:
    vocab, parts = cells
    _, windows, y, values = parts["train"]
    member, _ = fit_linear(member_features(windows, y.size, vocab, values), y, len(CLASSES))
    member = replace(member, expression=True).calibrated(0.5)
    vocab.save(tmp_path / "vocab")
    torch.manual_seed(0)
    network = CellClassifier(ModelSpec("llama", "tiny", vocab.size, vocab.pad_id, 64, len(CLASSES)))
    class_cells = np.array([40, 5, 20, 10])
    calibration = Calibration(1.3, 2.0, class_cells)
    write_model_dir(tmp_path / "m", network, tmp_path / "vocab", {}, calibration, linear=member)
    test_binned, test_windows, test_y, test_values = parts["test"]
    save_windows(tmp_path / "test.npz", test_windows, test_y)
    preprocessed_h5ad(tmp_path / "t.h5ad", vocab, test_binned, test_values)
    files = [str(tmp_path / f) for f in ("test.npz", "t.h5ad", "m")]
    table = predict_from_files(*files, 16, 0, 1, str(tmp_path / "p.csv"), "mean", True, None, 1.0)
    # the same as deciding by hand: networks / 2.0 averaged with the member, offsets, temperature 1.3
    probs = window_probabilities(network, test_windows, 16, torch.device("cpu"))
    linear_log_probs = member.log_probs(member_features(test_windows, test_y.size, vocab, test_values))
    offsets = prior_offsets(class_cells, 1.0)
    expected = predict_cells(
        probs,
        test_windows.cell_index,
        test_y.size,
        "mean",
        1.3,
        linear=linear_log_probs,
        offsets=offsets,
        network_temperature=2.0,
    )
    assert list(table["PredictedFeature"]) == list(vocab.classes[expected.label])
    np.testing.assert_allclose(table["prediction_score"], expected.score, rtol=1e-5)
    plain = predict_cells(
        probs, test_windows.cell_index, test_y.size, "mean", 1.3, linear=linear_log_probs, offsets=offsets
    )
    assert not np.allclose(plain.score, expected.score)  # the networks' temperature takes part
    (tmp_path / "m/calibration.json").write_text('{"temperature": 1.3}')  # a model dir of an older version
    with pytest.raises(
        InputError, match=r"calibration.json has no 'class_cells'.* predict.logit_adjustment: 0"
    ):
        predict_from_files(*files, 16, 0, 1, str(tmp_path / "q.csv"), "mean", True, None, 1.0)
    assert not (tmp_path / "q.csv").exists()
    # the member reads the values the preprocess rule keeps: a file without them is refused
    write_h5ad(ad.AnnData(X=test_binned, var=pd.DataFrame(index=vocab.genes)), tmp_path / "t.h5ad")
    with pytest.raises(InputError, match=r"t.h5ad: no layer 'expression'; expected a file written by"):
        predict_from_files(*files, 16, 0, 1, str(tmp_path / "q.csv"), "mean", True, None, 0.0)
    assert not (tmp_path / "q.csv").exists()

"""The linear member (`model.linear_member`): gene presence read from real cells' windows, a
logistic regression fitted to its optimum, kept in the model dir and averaged with the networks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import FOUR_TYPES, four_type_cells

from scgenai_flow import linear
from scgenai_flow.io import InputError
from scgenai_flow.linear import LINEAR_FILE, LinearMember, fit_linear, presence
from scgenai_flow.models import CellClassifier, ModelSpec
from scgenai_flow.predict import predict_cells, softmax_rows
from scgenai_flow.train import write_model_dir

CLASSES = FOUR_TYPES


@pytest.fixture(scope="module")
def cells(pbmc):
    """Real PBMCs of four types: 20 training and 10 held-out cells each, binned, with windows
    of 64 tokens (several per cell), the vocabulary and the labels."""
    return four_type_cells(pbmc, {"train": slice(0, 20), "test": slice(20, 30)})


def test_presence_is_which_genes_each_cell_expresses(cells, monkeypatch) -> None:
    vocab, parts = cells
    binned, windows, labels = parts["train"]
    assert np.bincount(windows.cell_index).min() > 1  # the genes of a cell spread over windows
    matrix = presence(windows, labels.size, vocab)
    expected = (binned != 0).astype(np.float32)
    assert matrix.shape == expected.shape and (matrix != expected).nnz == 0
    monkeypatch.setattr(linear, "WINDOWS_PER_CHUNK", 7)  # chunks that split cells
    assert (presence(windows, labels.size, vocab) != expected).nnz == 0


def test_the_fit_is_the_regularised_optimum_and_tells_cell_types_apart(cells) -> None:
    vocab, parts = cells
    x = {p: presence(w, y.size, vocab) for p, (_, w, y) in parts.items()}
    y = parts["train"][2]
    member = fit_linear(x["train"], y, len(CLASSES))
    # the gradient of summed cross-entropy + |W|^2 / 2 vanishes at the fit (a convex problem)
    residual = softmax_rows(np.asarray(x["train"] @ member.weights) + member.bias) - np.eye(len(CLASSES))[y]
    assert np.abs(x["train"].T @ residual + member.weights).max() < 1e-3
    assert np.abs(residual.sum(axis=0)).max() < 1e-3
    held_out = member.log_probs(x["test"]).argmax(axis=1)
    assert (held_out == parts["test"][2]).mean() >= 0.85  # 0.925 on these cells
    again = fit_linear(x["train"], y, len(CLASSES))
    np.testing.assert_array_equal(again.weights, member.weights)
    unlabelled = np.concatenate([y, np.full(5, -1)])  # cells without a label do not count
    padded = fit_linear(sp.vstack([x["train"], x["test"][:5]]).tocsr(), unlabelled, len(CLASSES))
    np.testing.assert_allclose(padded.weights, member.weights, atol=1e-5)


def test_model_dirs_keep_the_member_and_predictions_average_it(cells, tmp_path) -> None:
    vocab, parts = cells
    _, windows, y = parts["train"]
    member = fit_linear(presence(windows, y.size, vocab), y, len(CLASSES))
    vocab.save(tmp_path / "vocab")
    network = CellClassifier(ModelSpec("llama", "tiny", vocab.size, vocab.pad_id, 64, len(CLASSES)))
    write_model_dir(tmp_path / "m", network, tmp_path / "vocab", {}, linear=member)
    loaded = LinearMember.load(tmp_path / "m", vocab.n_features, len(CLASSES))
    np.testing.assert_array_equal(loaded.weights, member.weights)
    with pytest.raises(
        InputError, match=rf"{LINEAR_FILE}: weights .*; expected \({vocab.n_features + 1}, 4\)"
    ):
        LinearMember.load(tmp_path / "m", vocab.n_features + 1, len(CLASSES))
    assert LinearMember.load(tmp_path / "vocab", vocab.n_features, len(CLASSES)) is None  # none kept
    # a cell's scores: the mean of its windows' and the member's log-probabilities
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]], dtype=np.float32)
    member_log_probs = np.log(np.array([[0.1, 0.8, 0.05, 0.05], [0.1, 0.1, 0.1, 0.7]]))
    both = predict_cells(probs, np.array([0, 0, 1]), 2, "mean", linear=member_log_probs)
    networks = np.log(probs[:2]).mean(axis=0)
    expected = softmax_rows(((networks + member_log_probs[0]) / 2)[None])[0]
    assert both.label.tolist() == [1, 3] and both.score[0] == pytest.approx(expected[1], rel=1e-5)
    assert both.window.tolist() == [1, 2]  # the window that supports class 1 best
    assert pd.Series(predict_cells(probs, np.array([0, 0, 1]), 2, "mean").label).tolist() == [0, 3]

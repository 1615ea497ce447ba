"""Report building blocks: per-class metrics, stage times, prediction outputs with and without labels."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import counts_adata

from scgenai_flow.annotate import PredictionOutputs, report_predictions
from scgenai_flow.decide import Decision
from scgenai_flow.io import InputError, write_h5ad
from scgenai_flow.metrics import evaluate_predictions, per_class_table
from scgenai_flow.report import decision_row, stage_times


def test_per_class_table_matches_hand_counts() -> None:
    true = np.array([0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0, 2])
    table = per_class_table(true, predicted, np.array(["a", "b", "c", "never seen"]))
    assert list(table.index) == ["a", "b", "c", "macro avg", "weighted avg", "accuracy"]
    assert table.loc["b", "precision"] == pytest.approx(2 / 3) and table.loc["b", "recall"] == 1
    assert table.loc["c", "f1"] == pytest.approx(0.8) and table.loc["c", "support"] == 3
    assert table.loc["macro avg", "f1"] == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert table.loc["weighted avg", "recall"] == pytest.approx(5 / 7)  # = accuracy
    assert table.loc["accuracy", "f1"] == pytest.approx(5 / 7)


def test_evaluation_covers_classes_seen_only_in_predictions() -> None:
    frame = pd.DataFrame(
        {"truth": ["x", "x", "y"], "PredictedFeature": ["x", "z", "y"], "prediction_score": [0.9, 0.4, 0.8]}
    )
    evaluation = evaluate_predictions(frame, "truth")
    assert evaluation.classes == ["x", "y", "z"]
    assert evaluation.counts.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    assert evaluation.correct.tolist() == [True, False, True]


def test_the_decision_line_tells_how_cells_were_decided_and_how_calibrated_the_scores_are() -> None:
    frame = pd.DataFrame(
        {"truth": ["x", "x", "y", "y"], "PredictedFeature": ["x", "y", "y", "y"], "prediction_score": 0.9}
    )
    evaluation = evaluate_predictions(frame, "truth")
    name, text = decision_row(evaluation, Decision(0.5, 1.0, 0.8, 90, 0.6))
    # 3 of 4 right at a score of 0.9: ECE |0.75 - 0.9|
    assert name == "validation cells as predicted"
    assert text == (
        "accuracy 0.750, macro-F1 0.733 (linear member weight 0.5, logit adjustment 1, score temperature"
        " 0.800 (fitted on 90 validation cells); the networks beat the linear member alone in only 60% of"
        " resamples of the validation cells: their gain is within noise);"
        " prediction_score mean 0.900, ECE 0.150"
    )
    _, text = decision_row(evaluation, Decision(1.0, 0.0, 0.5, 90, 0.0))
    assert "the networks add nothing on the validation cells" in text
    _, text = decision_row(evaluation, Decision(0.0, 0.0, 1.0, 0))  # no member, no validation cells kept
    assert "(linear member weight 0, logit adjustment 0, score temperature 1.000 (as stored));" in text


def test_stage_times_lists_only_the_stages_that_made_the_model(tmp_path: Path) -> None:
    header = "s\th:m:s\tmax_rss\tmax_vms\n"
    for stage in ("train", "contexts/train", "contexts/predict", "model/report", "finetune/train"):
        (tmp_path / stage).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{stage}.tsv").write_text(header + "12.5\t0:00:12\t300.1\t400\n")
    times = stage_times(tmp_path)
    assert list(times["stage"]) == ["contexts/train", "train"]
    assert times["seconds"].tolist() == [12.5, 12.5]


def outputs(tmp_path: Path) -> PredictionOutputs:
    return PredictionOutputs(*(str(tmp_path / n) for n in ("p.h5ad", "umap.png", "metrics.csv", "conf.png")))


def test_unlabelled_predictions_get_counts_per_class_and_a_umap(tmp_path: Path) -> None:
    cells = counts_adata(n_cells=60, n_genes=40)
    del cells.obs["celltype"]
    write_h5ad(cells, tmp_path / "in.h5ad")
    table = cells.obs.assign(
        context_id="window_0",
        PredictedFeature=np.array(["A", "B"])[np.arange(60) % 2],
        prediction_score=np.linspace(0.2, 0.9, 60),
    )
    table.to_csv(tmp_path / "pred.csv")
    report_predictions(
        str(tmp_path / "pred.csv"), str(tmp_path / "in.h5ad"), False, "celltype", 0, outputs(tmp_path)
    )
    metrics = pd.read_csv(tmp_path / "metrics.csv", index_col=0)
    assert metrics["predicted"].to_dict() == {"A": 30, "B": 30}
    result = ad.read_h5ad(tmp_path / "p.h5ad")
    assert result.obsm["X_umap"].shape == (60, 2)
    assert (tmp_path / "conf.png").read_bytes().startswith(b"\x89PNG")


def test_many_cells_get_a_umap_of_a_seeded_sample_and_all_keep_their_predictions(
    tmp_path, monkeypatch
) -> None:
    from scgenai_flow import annotate

    monkeypatch.setattr(annotate, "MAX_CELLS_FOR_UMAP", 40)
    cells = counts_adata(n_cells=60, n_genes=40)
    write_h5ad(cells, tmp_path / "in.h5ad")
    table = cells.obs.assign(
        context_id="window_0", PredictedFeature=cells.obs["celltype"], prediction_score=0.5
    )
    table.to_csv(tmp_path / "pred.csv")
    report_predictions(
        str(tmp_path / "pred.csv"), str(tmp_path / "in.h5ad"), False, "celltype", 0, outputs(tmp_path)
    )
    result = ad.read_h5ad(tmp_path / "p.h5ad")
    drawn = np.isfinite(result.obsm["X_umap"]).all(axis=1)
    assert (
        result.n_obs == 60
        and drawn.sum() == 40
        and (result.obs["PredictedFeature"] == cells.obs["celltype"]).all()
    )
    np.testing.assert_array_equal(np.flatnonzero(drawn), annotate.umap_sample(60, 0, 40))  # seeded
    assert annotate.umap_sample(60, 1, 40).tolist() != annotate.umap_sample(60, 0, 40).tolist()


def test_a_umap_of_thousands_of_cells_uses_the_approximate_neighbours(tmp_path: Path) -> None:
    """scanpy switches to pynndescent at 4,096 cells; its graph must be one scanpy can read."""
    from scgenai_flow.annotate import umap_coordinates

    cells = counts_adata(n_cells=4200, n_genes=30)
    coords = umap_coordinates(cells, 0)
    assert coords.shape == (4200, 2) and np.isfinite(coords).all()


def test_predictions_of_other_cells_are_refused(tmp_path: Path) -> None:
    cells = counts_adata(n_cells=20, n_genes=10)
    write_h5ad(cells, tmp_path / "in.h5ad")
    table = cells.obs.iloc[::-1].assign(context_id="w", PredictedFeature="A", prediction_score=0.5)
    table.to_csv(tmp_path / "pred.csv")
    with pytest.raises(InputError, match="in.h5ad: its cells differ"):
        report_predictions(
            str(tmp_path / "pred.csv"), str(tmp_path / "in.h5ad"), False, "celltype", 0, outputs(tmp_path)
        )
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "p.h5ad").exists()

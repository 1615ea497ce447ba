"""Predictions back on the input cells: an h5ad for scanpy, a UMAP, and metrics when labelled."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from . import figures
from .data import load_source
from .io import InputError, atomic_path, write_csv, write_h5ad
from .metrics import evaluate_predictions
from .predict import PREDICTION_COLUMNS
from .preprocess import RAW_COUNT_THRESHOLD

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = [
    "MAX_CELLS_FOR_UMAP", "PredictionOutputs", "prediction_metrics", "report_predictions",
    "umap_coordinates", "umap_sample", "with_predictions",
]  # fmt: skip

log = logging.getLogger(__name__)
MIN_CELLS_FOR_UMAP = 10
# Above this many cells the UMAP is drawn on a seeded sample of them (its time and memory grow
# faster than the cells'); the other cells keep their predictions, with NaN coordinates.
MAX_CELLS_FOR_UMAP = 50_000


def umap_sample(n_cells: int, seed: int, limit: int | None = None) -> np.ndarray:
    """The cells (sorted rows) the UMAP is drawn on: all, or a seeded sample of `limit`."""
    limit = MAX_CELLS_FOR_UMAP if limit is None else limit
    if n_cells <= limit:
        return np.arange(n_cells)
    return np.sort(np.random.default_rng(seed).choice(n_cells, limit, replace=False))


def umap_coordinates(adata: ad.AnnData, seed: int) -> np.ndarray | None:
    """A 2-D UMAP with scanpy's standard recipe (normalise counts, HVGs, PCA, kNN), or None
    when there are too few cells; above MAX_CELLS_FOR_UMAP cells, of a seeded sample (NaN
    coordinates for the others)."""
    import scanpy as sc

    if adata.n_obs < MIN_CELLS_FOR_UMAP:
        log.warning("%d cells: too few for a UMAP, skipped", adata.n_obs)
        return None
    rows = umap_sample(adata.n_obs, seed)
    if rows.size < adata.n_obs:
        log.info("UMAP of a seeded sample of %d of the %d cells (all are predicted)", rows.size, adata.n_obs)
    matrix = adata.X[rows] if rows.size < adata.n_obs else adata.X
    work = ad.AnnData(X=matrix.astype(np.float32), var=pd.DataFrame(index=adata.var_names))
    if work.X.max() > RAW_COUNT_THRESHOLD:
        sc.pp.normalize_total(work, target_sum=1e4)
        sc.pp.log1p(work)
    if work.n_vars > 3000:
        sc.pp.highly_variable_genes(work, n_top_genes=2000, subset=True)
    n_comps = min(50, work.n_obs - 1, work.n_vars - 1)
    sc.pp.pca(work, n_comps=n_comps, random_state=seed)
    sc.pp.neighbors(work, n_neighbors=min(15, work.n_obs - 1), random_state=seed)
    sc.tl.umap(work, random_state=seed)
    coords = np.full((adata.n_obs, 2), np.nan, dtype=np.float32)
    coords[rows] = work.obsm["X_umap"]
    return coords


def with_predictions(adata: ad.AnnData, predictions: pd.DataFrame, source: str) -> ad.AnnData:
    """`adata` with the prediction columns added to `obs` (cells matched by name and order)."""
    names = adata.obs_names.astype(str)
    if len(predictions) != adata.n_obs or not np.array_equal(predictions.index.astype(str), names):
        raise InputError(f"{source}: its cells differ from the predictions' cells (name or order)")
    out = adata.copy()
    for column in PREDICTION_COLUMNS:
        out.obs[column] = predictions[column].to_numpy()
    out.obs["PredictedFeature"] = out.obs["PredictedFeature"].astype("category")
    return out


@dataclass(frozen=True)
class PredictionOutputs:
    """Where the prediction report rule writes."""

    h5ad: str
    umap: str
    metrics: str
    confusion: str


def prediction_metrics(predictions: pd.DataFrame, truth: str | None) -> tuple[pd.DataFrame, bytes]:
    """Per-class table and confusion figure with labels; counts per predicted class without."""
    if truth is None:
        table = predictions.groupby("PredictedFeature", observed=True)["prediction_score"].agg(
            predicted="size", mean_score="mean"
        )
        table.index.name = "class"
        return table, figures.class_counts_png(
            predictions["PredictedFeature"], "Predicted cells per class (the input has no labels)"
        )
    evaluation = evaluate_predictions(predictions, truth)
    macro_f1 = evaluation.table.loc["macro avg", "f1"]
    title = f"Prediction vs {truth}: accuracy {evaluation.correct.mean():.3f}, macro-F1 {macro_f1:.3f}"
    return evaluation.table, figures.confusion_png(evaluation.counts, evaluation.classes, title)


def report_predictions(
    predictions_csv: str,
    source: str,
    use_raw: bool,
    target_feature: str,
    seed: int,
    outputs: PredictionOutputs,
) -> None:
    """Write predictions.h5ad (with X_umap), the UMAP figure, and the metrics table/figure."""
    predictions = pd.read_csv(predictions_csv, index_col=0)
    adata = with_predictions(load_source(source, use_raw), predictions, source)
    truth = target_feature if target_feature in predictions.columns else None
    coords = umap_coordinates(adata, seed)
    if coords is not None:
        adata.obsm["X_umap"] = coords
        picture = figures.umap_png(coords, predictions, truth)
    else:
        picture = figures.class_counts_png(predictions["PredictedFeature"], "Too few cells for a UMAP")
    table, confusion_picture = prediction_metrics(predictions, truth)
    if truth is not None:
        log.info("prediction vs %s: %s", truth, table.loc[["accuracy", "macro avg"], "f1"].round(4).to_dict())
    write_h5ad(adata, outputs.h5ad)
    for target, content in ((outputs.umap, picture), (outputs.confusion, confusion_picture)):
        with atomic_path(target) as tmp:
            tmp.write_bytes(content)
    write_csv(table, outputs.metrics, index=True)

"""Gene filter, normalisation rule, binning and alignment against slow references."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from conftest import counts_adata, random_counts

from scgenai_flow.io import InputError, write_h5ad
from scgenai_flow.preprocess import (
    EXPRESSION_LAYER,
    PreprocessSettings,
    align_columns,
    bin_rows,
    column_map,
    normalise_rows,
    preprocess_file,
    recorded_binning,
    scan_matrix,
    select_genes,
)
from scgenai_flow.vocab import Vocabulary, vocabulary_from_preprocessed


def reference_bins(matrix: sp.csr_matrix, num_bins: int) -> list[np.ndarray]:
    """The SPEC's formula, one cell at a time with numpy's own linspace and digitize."""
    out = []
    for row in range(matrix.shape[0]):
        values = matrix.data[matrix.indptr[row] : matrix.indptr[row + 1]]
        if values.size == 0:
            out.append(values.astype(np.uint8))
            continue
        edges = np.linspace(1, values.max(), num_bins + 1)
        out.append(np.clip(np.digitize(values, edges), 1, num_bins + 1).astype(np.uint8))
    return out


@pytest.mark.parametrize("num_bins", [1, 3, 10, 50])
@pytest.mark.parametrize("scale", [0.9, 1.0, 7.0, 300.0])
def test_binning_equals_spec_formula(num_bins: int, scale: float) -> None:
    rng = np.random.default_rng(num_bins)
    matrix = sp.random(300, 80, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    matrix.data = (matrix.data * scale).astype(np.float32)
    # values on the edges and on the cell maximum, where float rounding bites
    matrix.data[::7] = np.round(matrix.data[::7], 1)
    matrix.data[::11] = 1.0
    binned = bin_rows(matrix, num_bins)
    assert binned.dtype == np.uint8
    for row, expected in enumerate(reference_bins(matrix, num_bins)):
        got = binned.data[binned.indptr[row] : binned.indptr[row + 1]]
        np.testing.assert_array_equal(got, expected, err_msg=f"cell {row}")


def test_binning_on_real_log_data(pbmc: ad.AnnData) -> None:
    matrix = sp.csr_matrix(pbmc.X)
    binned = bin_rows(matrix, 10)
    expected = np.concatenate(reference_bins(matrix, 10))
    np.testing.assert_array_equal(binned.data, expected)
    assert binned.data.min() == 1 and binned.data.max() == 11


def reference_quantile_bins(values: np.ndarray, num_bins: int) -> np.ndarray:
    """One cell: rank (ties share the lowest, scipy's 'min') cut into num_bins equal-count bins."""
    from scipy.stats import rankdata

    rank = rankdata(values, method="min") - 1
    return (np.floor(rank * num_bins / values.size) + 1).astype(np.uint8)


@pytest.mark.parametrize("num_bins", [1, 4, 10])
def test_quantile_binning_equals_per_cell_ranks(num_bins: int) -> None:
    rng = np.random.default_rng(num_bins)
    matrix = sp.random(200, 60, density=0.25, format="csr", random_state=rng, dtype=np.float32)
    matrix.data[::5] = np.round(matrix.data[::5], 1)  # ties
    matrix = sp.vstack([matrix, sp.csr_matrix((1, 60), dtype=np.float32)]).tocsr()  # an empty cell
    binned = bin_rows(matrix, num_bins, "cell_quantile")
    assert binned.dtype == np.uint8 and binned.nnz == matrix.nnz
    for row in range(matrix.shape[0]):
        values = matrix.data[matrix.indptr[row] : matrix.indptr[row + 1]]
        got = binned.data[binned.indptr[row] : binned.indptr[row + 1]]
        expected = reference_quantile_bins(values, num_bins) if values.size else values.astype(np.uint8)
        np.testing.assert_array_equal(got, expected, err_msg=f"cell {row}")


def test_quantile_binning_is_scale_free_and_fills_the_bins(pbmc: ad.AnnData) -> None:
    matrix = sp.csr_matrix(pbmc.X, dtype=np.float32)
    binned = bin_rows(matrix, 10, "cell_quantile")
    small = matrix.copy()
    small.data = small.data / 100  # values below 1: the original bins put them all in one bin
    assert (bin_rows(small, 10, "cell_quantile") != binned).nnz == 0
    assert np.unique(bin_rows(small, 10).data).size <= 2
    assert binned.data.min() == 1 and binned.data.max() == 10
    # within a cell, a higher value never gets a lower bin
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.data, rows))
    same_cell = rows[order][1:] == rows[order][:-1]
    assert (np.diff(binned.data[order].astype(int))[same_cell] >= 0).all()
    # without ties every bin of a cell holds a tenth of its values (to one value)
    distinct = sp.random(50, 400, density=0.5, format="csr", random_state=0, dtype=np.float64)
    counts = np.stack(
        [np.bincount(row.data, minlength=11)[1:] for row in bin_rows(distinct, 10, "cell_quantile")]
    )
    expected = np.diff(distinct.indptr)[:, None] / 10
    assert np.abs(counts - expected).max() <= 1


@pytest.mark.parametrize("num_bins", [1, 4, 10])
def test_unit_range_bins_keep_absolute_levels(num_bins: int) -> None:
    krumsiek = sc.datasets.krumsiek11()  # simulated levels in [0, 1] with noise around 0 and 1
    matrix = sp.csr_matrix(krumsiek.X, dtype=np.float32)
    binned = bin_rows(matrix, num_bins, "unit_range")
    assert binned.dtype == np.uint8 and binned.nnz == matrix.nnz
    edges = np.linspace(0, 1, num_bins + 1)
    for row in range(0, matrix.shape[0], 7):
        values = matrix.data[matrix.indptr[row] : matrix.indptr[row + 1]]
        got = binned.data[binned.indptr[row] : binned.indptr[row + 1]]
        expected = [1 + sum(v >= e for e in edges[1:-1]) for v in values]  # the bin's edges
        np.testing.assert_array_equal(got, expected, err_msg=f"cell {row}")
    # the same level gets the same bin in every cell; noise below 0 and above 1 the end bins
    assert binned.data[matrix.data < 0].max() == 1
    assert binned.data[matrix.data > 1].min() == num_bins
    if num_bins == 10:
        assert set(np.unique(binned.data)) == set(range(1, 11))
        quantile = bin_rows(matrix, 10, "cell_quantile")
        near_zero = np.abs(matrix.data) < 0.01  # noise: one bin here, spread by rank in cell_quantile
        assert np.unique(binned.data[near_zero]).tolist() == [1]
        assert np.unique(quantile.data[near_zero]).size > 5


def test_binning_is_recorded_and_followed_by_aligned_files(tmp_path, pbmc_h5ad) -> None:
    settings = PreprocessSettings(binning="cell_quantile")
    train = preprocess_file(pbmc_h5ad, settings)
    assert train.uns["preprocess"]["binning"] == "cell_quantile"
    write_h5ad(train, tmp_path / "train.h5ad")
    vocab = vocabulary_from_preprocessed(tmp_path / "train.h5ad", "bulk_labels")
    vocab.save(tmp_path / "vocab")
    loaded = Vocabulary.load(tmp_path / "vocab")
    assert loaded.binning == "cell_quantile"
    (tmp_path / "vocab" / "binning.json").unlink()  # a directory of the original: cell_range
    assert Vocabulary.load(tmp_path / "vocab").binning == "cell_range"
    (tmp_path / "vocab" / "binning.json").write_text('{"binning": "log"}')
    expected = "binning 'log'; expected one of cell_range, cell_quantile, unit_range"
    with pytest.raises(InputError, match=expected):
        Vocabulary.load(tmp_path / "vocab")
    with pytest.raises(InputError, match="preprocess.binning: 'log'; expected auto, cell_range"):
        preprocess_file(pbmc_h5ad, PreprocessSettings(binning="log"))


def test_auto_binning_keeps_the_original_unless_cells_peak_at_or_below_one(tmp_path, pbmc) -> None:
    small = pbmc.copy()
    small.X = sp.csr_matrix(pbmc.X, dtype=np.float32) / 100  # every cell's maximum below 1
    write_h5ad(pbmc, tmp_path / "log.h5ad")
    write_h5ad(small, tmp_path / "small.h5ad")
    write_h5ad(counts_adata(60, 40, seed=2), tmp_path / "counts.h5ad")
    krumsiek = sc.datasets.krumsiek11()  # levels spread over [0, 1]: absolute bins
    levels = sp.csr_matrix(np.clip(krumsiek.X, 0, None))  # its noise dips below 0
    write_h5ad(ad.AnnData(levels, obs=krumsiek.obs[["cell_type"]], var=krumsiek.var), tmp_path / "unit.h5ad")
    for name, expected in (
        ("log", "cell_range"),
        ("small", "cell_quantile"),
        ("counts", "cell_range"),
        ("unit", "unit_range"),
    ):
        auto = preprocess_file(tmp_path / f"{name}.h5ad", PreprocessSettings(binning="auto", min_cells=1))
        same = preprocess_file(tmp_path / f"{name}.h5ad", PreprocessSettings(binning=expected, min_cells=1))
        assert auto.uns["preprocess"]["binning"] == expected, name
        assert (auto.X != same.X).nnz == 0, name
    assert recorded_binning(tmp_path / "log.h5ad") == "cell_range"  # not preprocessed: the original


def test_gene_filter_keeps_genes_in_enough_cells() -> None:
    genes = np.array([f"G{i}" for i in range(6)])
    expressed = np.array([0, 49, 50, 51, 700, 3])
    kept = select_genes(genes, expressed, min_cells=50, seed=1)
    assert sorted(kept) == ["G2", "G3", "G4"]
    np.testing.assert_array_equal(kept, select_genes(genes, expressed, 50, seed=1))
    with pytest.raises(InputError, match="min_cells=800"):
        select_genes(genes, expressed, 800, seed=1)


def test_gene_order_is_a_seeded_shuffle(pbmc_h5ad) -> None:
    settings = PreprocessSettings(min_cells=0)
    first = preprocess_file(pbmc_h5ad, settings).var_names
    again = preprocess_file(pbmc_h5ad, settings).var_names
    other = preprocess_file(pbmc_h5ad, PreprocessSettings(min_cells=0, seed=7)).var_names
    assert list(first) == list(again)
    assert list(first) != list(other) and sorted(first) == sorted(other)


def test_top_genes_keeps_the_most_variable_genes_and_aligned_files_follow(tmp_path, pbmc_h5ad, pbmc) -> None:
    settings = PreprocessSettings(min_cells=5, top_genes=100, chunk_cells=97)  # chunks split the cells
    kept = preprocess_file(pbmc_h5ad, settings)
    values = sp.csr_matrix(pbmc.X)
    candidates = np.asarray((values > 0).sum(axis=0)).ravel() >= 5
    variance = np.where(candidates, values.toarray().var(axis=0), -np.inf)  # log values: kept as they are
    expected = set(pbmc.var_names[np.argsort(-variance, kind="stable")[:100]])
    assert kept.n_vars == 100 and set(kept.var_names) == expected
    assert kept.uns["preprocess"]["top_genes"] == 100
    every = preprocess_file(pbmc_h5ad, PreprocessSettings(min_cells=5))
    assert "top_genes" not in every.uns["preprocess"] and every.n_vars == candidates.sum() > 100
    aligned = preprocess_file(pbmc_h5ad, settings, trained_genes=np.asarray(kept.var_names))
    assert list(aligned.var_names) == list(kept.var_names)  # val and predict take the model's genes
    wider = preprocess_file(pbmc_h5ad, PreprocessSettings(min_cells=5, top_genes=10_000))
    assert set(wider.var_names) == set(every.var_names)  # more than there are: every gene


def test_raw_counts_are_normalised_like_scanpy(tmp_path) -> None:
    adata = counts_adata(50, 30)
    path = tmp_path / "counts.h5ad"
    write_h5ad(adata, path)
    assert scan_matrix(path).raw_counts
    ours = normalise_rows(adata.X.tocsr(), raw_counts=True)
    reference = adata.copy()
    sc.pp.normalize_total(reference, target_sum=1e4)
    sc.pp.log1p(reference)
    np.testing.assert_allclose(ours.toarray(), reference.X.toarray(), rtol=1e-5)


def test_log_data_is_not_renormalised(pbmc_h5ad, pbmc) -> None:
    scan = scan_matrix(pbmc_h5ad)
    assert not scan.raw_counts and scan.max_value == pytest.approx(pbmc.X.max())
    matrix = sp.csr_matrix(pbmc.X)
    assert normalise_rows(matrix, raw_counts=False) is matrix


def test_scaled_data_with_negative_values_is_refused(tmp_path, pbmc) -> None:
    scaled = ad.AnnData(X=np.asarray(pbmc.X.toarray()) - 1.0, obs=pbmc.obs, var=pbmc.var)
    write_h5ad(scaled, tmp_path / "scaled.h5ad")
    with pytest.raises(InputError, match="scaled.h5ad: X holds negative values"):
        preprocess_file(tmp_path / "scaled.h5ad", PreprocessSettings())


def test_alignment_zero_fills_missing_and_drops_unknown_genes() -> None:
    trained = np.array(["C", "A", "D", "B"])
    source = np.array(["A", "B", "X", "C"])  # D missing, X unknown
    matrix = sp.csr_matrix(np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 5.0, 6.0, 0.0]], dtype=np.float32))
    aligned = align_columns(matrix, column_map(source, trained), trained.size)
    np.testing.assert_array_equal(aligned.toarray(), [[4.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 5.0]])
    assert aligned.has_sorted_indices


def test_aligned_file_matches_training_columns(tmp_path, pbmc_h5ad, pbmc) -> None:
    train = preprocess_file(pbmc_h5ad, PreprocessSettings())
    kept = pbmc.var_names[::2]  # half the trained genes missing, plus one unknown gene
    matrix = sp.hstack([pbmc[:, kept].X, sp.csr_matrix(np.ones((pbmc.n_obs, 1), dtype=np.float32))])
    query = ad.AnnData(
        X=sp.csr_matrix(matrix), obs=pbmc.obs.copy(), var=pd.DataFrame(index=[*kept, "NOT_A_GENE"])
    )
    write_h5ad(query, tmp_path / "query.h5ad")
    aligned = preprocess_file(tmp_path / "query.h5ad", PreprocessSettings(), train.var_names.to_numpy())
    assert list(aligned.var_names) == list(train.var_names)
    present = np.isin(train.var_names, kept)
    assert aligned.X[:, ~present].nnz == 0
    assert aligned.X[:, present].nnz > 0
    genes = train.var_names[present]  # log-normalised values pass through, in the trained order
    kept_values = aligned.layers[EXPRESSION_LAYER][:, present].toarray()
    np.testing.assert_array_equal(kept_values, pbmc[:, genes].X.toarray())
    assert list(aligned.obs.columns) == list(pbmc.obs.columns)


def test_chunked_preprocessing_equals_whole(tmp_path) -> None:
    adata = counts_adata(97, 45, seed=3)
    adata.X[5] = 0  # an empty cell
    adata.X = sp.csr_matrix(adata.X)
    write_h5ad(adata, tmp_path / "c.h5ad")
    whole = preprocess_file(tmp_path / "c.h5ad", PreprocessSettings(min_cells=5))
    chunked = preprocess_file(tmp_path / "c.h5ad", PreprocessSettings(min_cells=5, chunk_cells=8))
    assert (whole.X != chunked.X).nnz == 0 and list(whole.var_names) == list(chunked.var_names)
    assert whole.X[5].nnz == 0
    # the normalised values the bins came from are kept, for the linear member
    values = whole.layers[EXPRESSION_LAYER]
    assert (values != chunked.layers[EXPRESSION_LAYER]).nnz == 0
    assert values.dtype == np.float32 and ((values != 0) != (whole.X != 0)).nnz == 0
    reference = adata.copy()
    sc.pp.normalize_total(reference, target_sum=1e4)
    sc.pp.log1p(reference)
    np.testing.assert_allclose(values.toarray(), reference[:, whole.var_names].X.toarray(), rtol=1e-5)


def test_dense_and_sparse_inputs_agree(tmp_path) -> None:
    adata = counts_adata(40, 20, seed=5)
    write_h5ad(adata, tmp_path / "sparse.h5ad")
    dense = adata.copy()
    dense.X = adata.X.toarray()
    write_h5ad(dense, tmp_path / "dense.h5ad")
    a = preprocess_file(tmp_path / "sparse.h5ad", PreprocessSettings(min_cells=2))
    b = preprocess_file(tmp_path / "dense.h5ad", PreprocessSettings(min_cells=2))
    assert (a.X != b.X).nnz == 0


def test_random_counts_helper_is_raw() -> None:
    assert random_counts(10, 10, 0.5, 0).max() > 20

"""Multi-omics (RNA + ADT): barcode matching, ADT vocabulary and emphasis in every context."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scgenai_flow.contexts import ContextSettings, build_windows
from scgenai_flow.data import PROTEINS, synthetic_adt
from scgenai_flow.io import InputError, write_h5ad
from scgenai_flow.preprocess import PreprocessSettings, bin_rows, preprocess_adt
from scgenai_flow.vocab import Vocabulary, build_vocabulary


@pytest.fixture(scope="module")
def rna_adt(pbmc):
    """Binned RNA and ADT (5 bins) of 120 real cells, and the joint vocabulary."""
    cells = pbmc[:120]
    proteins = synthetic_adt(cells.obs, "bulk_labels", seed=3)
    vocab = build_vocabulary(
        np.asarray(cells.var_names), 10, cells.obs["bulk_labels"], "pbmc", adt_features=np.array(PROTEINS)
    )
    rna = bin_rows(sp.csr_matrix(cells.X), 10)
    adt = bin_rows(sp.csr_matrix(np.log1p(proteins.X.toarray())), 5)
    binned = sp.hstack([rna, adt], format="csr")
    binned.sort_indices()  # as preprocessing leaves them: vocabulary order
    return binned, vocab


def test_generated_adt_follows_the_labels(pbmc) -> None:
    proteins = synthetic_adt(pbmc.obs, "bulk_labels", seed=0)
    assert proteins.shape == (pbmc.n_obs, len(PROTEINS)) and proteins.X.max() > 20
    assert 0.05 < (proteins.X.toarray() == 0).mean() < 0.5  # dropouts, not empty
    means = pd.DataFrame(np.log1p(proteins.X.toarray())).groupby(pbmc.obs["bulk_labels"].to_numpy()).mean()
    assert (means.max() / means.min()).max() > 2  # some protein separates the classes


def test_adt_tokens_are_their_own_vocabulary_entries(tmp_path, rna_adt) -> None:
    _, vocab = rna_adt
    tokens = vocab.tokens()
    assert tokens[vocab.adt_offset : vocab.adt_bin_offset] == [f"ADT_{p}" for p in PROTEINS]
    assert tokens[vocab.adt_bin_offset : vocab.pad_id] == [f"<adtbin{b}>" for b in range(1, 7)]
    vocab.save(tmp_path / "v")
    loaded = Vocabulary.load(tmp_path / "v")
    assert list(loaded.adt_features) == list(PROTEINS) and loaded.adt_num_bins == 5
    assert loaded.pad_id == vocab.pad_id


@pytest.mark.parametrize("method", ["random", "genomic"])
@pytest.mark.parametrize("depth", [1, 3])
def test_each_adt_feature_appears_depth_times_per_cell(rna_adt, method: str, depth: int) -> None:
    binned, vocab = rna_adt
    windows = build_windows(binned, vocab, ContextSettings(method=method, max_length=64, depth=depth, seed=9))
    for cell in range(0, 120, 13):
        rows = np.flatnonzero(windows.cell_index == cell)
        features = np.concatenate([windows.tokens[r, : windows.lengths[r] : 2] for r in rows]).astype(int)
        bins = np.concatenate([windows.tokens[r, 1 : windows.lengths[r] : 2] for r in rows]).astype(int)
        row = binned[cell]
        adt_columns = row.indices[row.indices >= vocab.genes.size]
        for column, b in zip(adt_columns, row.data[row.indices >= vocab.genes.size]):
            token = vocab.adt_offset + column - vocab.genes.size
            if method == "random":
                # sliding windows overlap by half, so a pair is seen once or twice per copy
                assert (features == token).sum() >= depth
            else:
                assert (features == token).sum() == depth
            assert set(bins[features == token]) == {vocab.adt_bin_offset - 1 + int(b)}


def test_emphasis_keeps_rna_order_and_is_seeded(rna_adt) -> None:
    from scgenai_flow.contexts.multiomics import emphasised_tokens

    binned, vocab = rna_adt
    a, offsets = emphasised_tokens(binned[:5], vocab, 2, seed=1, first_cell=0)
    b, _ = emphasised_tokens(binned[:5], vocab, 2, seed=1, first_cell=0)
    c, _ = emphasised_tokens(binned[:5], vocab, 2, seed=2, first_cell=0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    plain, plain_offsets = vocab.tokenize(binned[:5])
    for cell in range(5):
        mine = a[offsets[cell] : offsets[cell + 1]]
        rna = mine[0::2][mine[0::2] < vocab.adt_offset]
        ref = plain[plain_offsets[cell] : plain_offsets[cell + 1]]
        np.testing.assert_array_equal(rna, ref[0::2][ref[0::2] < vocab.adt_offset])


def test_adt_rows_follow_the_rna_barcodes(tmp_path, pbmc) -> None:
    proteins = synthetic_adt(pbmc.obs, "bulk_labels", seed=0)
    shuffled = proteins[np.random.default_rng(0).permutation(pbmc.n_obs)].copy()
    write_h5ad(shuffled, tmp_path / "adt.h5ad")
    settings = PreprocessSettings(num_bins=5, min_cells=0)
    aligned = preprocess_adt(tmp_path / "adt.h5ad", pbmc.obs_names, settings)
    assert list(aligned.obs_names) == list(pbmc.obs_names)
    direct = proteins.copy()
    write_h5ad(direct, tmp_path / "direct.h5ad")
    expected = preprocess_adt(tmp_path / "direct.h5ad", pbmc.obs_names, settings)
    assert (aligned.X != expected.X).nnz == 0 and aligned.X.data.max() == 6


def test_adt_follows_the_rna_binning_but_not_unit_range_edges(tmp_path, pbmc) -> None:
    proteins = synthetic_adt(pbmc.obs, "bulk_labels", seed=0)  # counts: far above 1
    write_h5ad(proteins, tmp_path / "adt.h5ad")
    binned = {}
    for binning in ("cell_range", "cell_quantile", "unit_range"):
        settings = PreprocessSettings(num_bins=5, binning=binning, min_cells=0)
        binned[binning] = preprocess_adt(tmp_path / "adt.h5ad", pbmc.obs_names, settings)
    assert binned["cell_range"].uns["preprocess"]["binning"] == "cell_range"
    # RNA levels in [0, 1] (unit_range): proteins are ranked within each cell instead of all
    # landing in the top bin
    assert binned["unit_range"].uns["preprocess"]["binning"] == "cell_quantile"
    assert (binned["unit_range"].X != binned["cell_quantile"].X).nnz == 0
    assert np.unique(binned["unit_range"].X.data).tolist() == [1, 2, 3, 4, 5]


def test_rna_and_adt_with_different_cells_are_refused(tmp_path, pbmc) -> None:
    proteins = synthetic_adt(pbmc.obs, "bulk_labels", seed=0)
    write_h5ad(proteins[:-3].copy(), tmp_path / "adt.h5ad")
    with pytest.raises(InputError, match="the ADT file must hold every RNA cell; 3 of 700"):
        preprocess_adt(tmp_path / "adt.h5ad", pbmc.obs_names, PreprocessSettings(num_bins=5, min_cells=0))
    # an ADT file with more cells (the whole file of a split's RNA cells): rows picked by barcode
    cells = pbmc.obs_names[10:20][::-1]
    split = preprocess_adt(tmp_path / "adt.h5ad", cells, PreprocessSettings(num_bins=5, min_cells=0))
    assert list(split.obs_names) == list(cells)

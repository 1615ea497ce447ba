"""Gene embeddings initialised from the training cells' co-expression (model.gene_init)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scgenai_flow.contexts import ContextSettings, build_windows
from scgenai_flow.models import CellClassifier, ModelSpec
from scgenai_flow.models.embedding import feature_presence, init_gene_embeddings, principal_axes
from scgenai_flow.preprocess import bin_rows
from scgenai_flow.runtime import seed_everything
from scgenai_flow.vocab import build_vocabulary


@pytest.fixture(scope="module")
def pbmc_windows(pbmc):
    """All 700 real PBMCs as 128-token windows (several per cell)."""
    vocab = build_vocabulary(np.asarray(pbmc.var_names), 10, pbmc.obs["bulk_labels"].astype(str), "pbmc")
    binned = bin_rows(sp.csr_matrix(pbmc.X), 10)
    return vocab, binned, build_windows(binned, vocab, ContextSettings(max_length=128))


def test_presence_matrix_is_the_cells_expressed_genes(pbmc_windows) -> None:
    vocab, binned, windows = pbmc_windows
    assert np.bincount(windows.cell_index).max() > 1  # cells span several windows
    matrix = feature_presence(windows, binned.shape[0], vocab.size, vocab.gene_offset)
    genes = matrix[:, vocab.gene_offset : vocab.gene_offset + vocab.genes.size].toarray()
    # every expressed gene of a cell appears once (columns are in vocabulary order), nothing else
    np.testing.assert_array_equal(genes, (binned > 0).toarray())
    assert matrix.nnz == binned.nnz and set(np.unique(matrix.data)) == {1.0}


def test_randomised_axes_match_the_exact_svd() -> None:
    rng = np.random.default_rng(0)
    dense = (rng.random((300, 40)) < 0.2).astype(float)
    dense[:150, :10] = 1.0  # one strong co-expression block
    loadings = principal_axes(sp.csr_matrix(dense), 5, seed=1)
    centred = dense - dense.mean(axis=0)
    _, values, axes = np.linalg.svd(centred, full_matrices=False)
    exact = axes[:5].T * values[:5]
    # the dominant axis equals the exact one up to its sign; the others (noise, small gaps
    # between singular values) capture as much variance as the exact ones
    sign = np.sign(loadings[:, 0] @ exact[:, 0])
    np.testing.assert_allclose(sign * loadings[:, 0], exact[:, 0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(loadings, axis=0), values[:5], rtol=0.03)


def test_co_expressed_genes_start_with_similar_embeddings(pbmc_windows) -> None:
    vocab, binned, windows = pbmc_windows
    seed_everything(0)
    model = CellClassifier(ModelSpec("llama", "tiny", vocab.size, vocab.pad_id, 128, int(vocab.classes.size)))
    weight = model.backbone.get_input_embeddings().weight
    gene_rows = slice(vocab.gene_offset, vocab.gene_offset + vocab.genes.size)
    random_norm = weight[gene_rows].norm(dim=1).mean().item()
    assert (
        init_gene_embeddings(model, windows, binned.shape[0], vocab.gene_offset, seed=0)
        == binned.getnnz(axis=0).astype(bool).sum()
    )
    genes = weight[gene_rows].detach().numpy()
    assert np.linalg.norm(genes, axis=1).mean() == pytest.approx(random_norm, rel=1e-4)
    # gene pairs whose expression correlates across cells start out pointing the same way
    presence = (binned > 0).toarray().astype(float)
    varying = presence.std(axis=0) > 0
    correlation = np.corrcoef(presence[:, varying].T)
    unit = genes[varying] / np.linalg.norm(genes[varying], axis=1, keepdims=True)
    cosine = unit @ unit.T
    pairs = np.triu_indices_from(cosine, 1)
    top = np.argsort(correlation[pairs])[-200:]
    assert cosine[pairs][top].mean() > 0.5
    assert np.corrcoef(cosine[pairs], correlation[pairs])[0, 1] > 0.5
    assert torch.isfinite(weight).all()

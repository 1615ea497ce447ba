"""Shared fixtures: the embedded real data set and small generated matrices."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scgenai_flow.data import embedded_pbmc68k
from scgenai_flow.io import write_h5ad

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pbmc() -> ad.AnnData:
    """scanpy's pbmc68k_reduced: 700 real PBMCs, log-normalised, 10 bulk labels."""
    return embedded_pbmc68k()


@pytest.fixture(scope="session")
def pbmc_h5ad(pbmc: ad.AnnData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pbmc") / "pbmc.h5ad"
    write_h5ad(pbmc, path)
    return path


def random_counts(n_cells: int, n_genes: int, density: float, seed: int) -> sp.csr_matrix:
    """Integer counts (max well above 20) with empty rows possible."""
    rng = np.random.default_rng(seed)
    matrix = sp.random(n_cells, n_genes, density=density, format="csr", random_state=rng, dtype=np.float32)
    matrix.data = np.ceil(matrix.data * 60).astype(np.float32)
    return matrix


def counts_adata(n_cells: int = 60, n_genes: int = 40, seed: int = 0) -> ad.AnnData:
    """A small raw-count AnnData with three labelled classes."""
    labels = np.array(["A", "B", "C"])[np.arange(n_cells) % 3]
    return ad.AnnData(
        X=random_counts(n_cells, n_genes, 0.3, seed),
        obs=pd.DataFrame({"celltype": labels}, index=[f"cell{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)]),
    )

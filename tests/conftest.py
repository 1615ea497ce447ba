"""Shared fixtures: the embedded real data set and small generated matrices."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scgenai_flow.contexts import ContextSettings, Windows, build_windows
from scgenai_flow.data import embedded_pbmc68k
from scgenai_flow.io import write_h5ad
from scgenai_flow.preprocess import EXPRESSION_LAYER, bin_rows
from scgenai_flow.vocab import Vocabulary, build_vocabulary

REPO = Path(__file__).resolve().parents[1]
FOUR_TYPES = ("CD14+ Monocyte", "CD19+ B", "CD56+ NK", "Dendritic")


def test_settings(*names: str) -> dict:
    """The settings of `.test/<name>/config.yaml` (the snakemake-workflows convention), layered
    in order as `--configfile` layers them: what the tests run and a user can run by hand."""
    import yaml

    from scgenai_flow.legacy import deep_update

    config: dict = {}
    for name in names:
        config = deep_update(config, yaml.safe_load((REPO / ".test" / name / "config.yaml").read_text()))
    return config


test_settings.__test__ = False  # a helper, not a test


@pytest.fixture(scope="session")
def pbmc() -> ad.AnnData:
    """scanpy's pbmc68k_reduced: 700 real PBMCs, log-normalised, 10 bulk labels."""
    return embedded_pbmc68k()


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir where the whole workflow ran on the embedded data with tiny settings."""
    from test_workflow import snakemake

    workdir = tmp_path_factory.mktemp("run")
    snakemake(workdir, "all")
    return workdir


@pytest.fixture(scope="session")
def pbmc_h5ad(pbmc: ad.AnnData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pbmc") / "pbmc.h5ad"
    write_h5ad(pbmc, path)
    return path


def four_type_cells(
    pbmc: ad.AnnData, parts: dict[str, slice]
) -> tuple[Vocabulary, dict[str, tuple[sp.csr_matrix, Windows, np.ndarray, sp.csr_matrix]]]:
    """Real PBMCs of `FOUR_TYPES` (per part, those rows of each type): binned into 10 levels,
    their 64-token windows, label ids and log-normalised values (the vocabulary's gene order);
    the vocabulary is built on the first part."""
    vocab, cells = None, {}
    for part, rows in parts.items():
        keep = np.concatenate([np.flatnonzero(pbmc.obs["bulk_labels"] == c)[rows] for c in FOUR_TYPES])
        data = pbmc[keep]
        labels = data.obs["bulk_labels"].astype(str)
        vocab = vocab or build_vocabulary(np.asarray(data.var_names), 10, labels, "pbmc")
        binned = bin_rows(sp.csr_matrix(data.X), 10)
        windows = build_windows(binned, vocab, ContextSettings(max_length=64))
        expression = sp.csr_matrix(data.X, dtype=np.float32)
        cells[part] = (binned, windows, vocab.encode_labels(labels, "pbmc"), expression)
    assert vocab is not None
    return vocab, cells


def preprocessed_h5ad(
    path: Path, vocab: Vocabulary, binned: sp.csr_matrix, expression: sp.csr_matrix
) -> Path:
    """An h5ad laid out as the preprocess rule writes it: bins in X, values in layer `expression`."""
    cells = pd.DataFrame(index=[f"c{i}" for i in range(binned.shape[0])])
    adata = ad.AnnData(X=binned, obs=cells, var=pd.DataFrame(index=pd.Index(vocab.genes, name="gene")))
    adata.layers[EXPRESSION_LAYER] = expression
    write_h5ad(adata, path)
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


def assert_held_out(run_dir: Path) -> dict[str, int]:
    """From the files the rules wrote under `run_dir` (results/ or results/finetune/): every
    split's windows hold exactly the cells of its preprocessed file, and no val, predict or shard
    cell is a training cell. Returns the cells per split."""
    from scgenai_flow.contexts import window_cell_names

    cells = {}
    for npz in sorted((run_dir / "contexts").glob("*.npz")):
        barcodes = pd.Index(ad.read_h5ad(run_dir / "preprocessed" / f"{npz.stem}.h5ad", backed="r").obs_names)
        in_windows = window_cell_names(npz)
        assert list(in_windows) == list(barcodes), f"{npz}: windows of other cells than its h5ad"
        cells[npz.stem] = barcodes
    assert "train" in cells and len(cells) > 1, f"{run_dir}: no held-out split to compare"
    for split, barcodes in cells.items():
        if split != "train":
            shared = barcodes.intersection(cells["train"])
            assert shared.empty, f"{run_dir}: {shared.size} {split} cells are training cells"
    return {split: barcodes.size for split, barcodes in cells.items()}

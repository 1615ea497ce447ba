"""Context methods: each turns binned cells into fixed-length token windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..config import schema_default
from ..io import InputError
from ..vocab import Vocabulary
from . import biofunction, genelist, genomic, sliding  # noqa: F401  (register the built-in methods)
from .core import (
    CONTEXT_METHODS,
    ChunkWindows,
    ContextMethod,
    ContextSettings,
    Windows,
    concat_windows,
    load_windows,
    merge_by_cell,
    register,
    save_windows,
    shared_cells,
    window_cell_names,
    with_empty_cells,
)
from .reference import reference_options, write_vocabulary_dir
from .sliding import sliding_windows

# The package's API (docs/api.md): what a user or a benchmark may import.
__all__ = [
    "CONTEXT_METHODS", "ChunkWindows", "ContextMethod", "ContextSettings", "Windows", "build_windows",
    "concat_windows", "load_windows", "merge_by_cell", "reference_options", "register", "save_windows",
    "shared_cells", "sliding_windows", "window_cell_names", "window_genes", "windows_from_preprocessed",
    "with_empty_cells", "write_vocabulary_dir",
]  # fmt: skip


def build_windows(
    binned: sp.csr_matrix,
    vocab: Vocabulary,
    settings: ContextSettings,
    chunk_cells: int = schema_default("preprocess.chunk_cells"),
    first_cell: int = 0,
) -> Windows:
    """Windows of every cell with the configured method, built chunk by chunk of cells;
    `first_cell` is the first row's index in the whole data set (seeded draws depend on it)."""
    if settings.method not in CONTEXT_METHODS:
        raise InputError(
            f"context.method '{settings.method}' is unknown;"
            f" expected one of {', '.join(sorted(CONTEXT_METHODS))}"
        )
    if settings.max_length < 4 or settings.max_length % 2:
        raise InputError(f"context.max_length={settings.max_length}: expected an even number >= 4")
    chunk_windows = CONTEXT_METHODS[settings.method](vocab, settings)
    starts = list(range(0, binned.shape[0], chunk_cells)) or [0]
    parts = [
        with_empty_cells(
            chunk_windows(binned[s : s + chunk_cells], first_cell + s),
            min(chunk_cells, binned.shape[0] - s),
            settings.max_length,
            vocab.pad_id,
        )
        for s in starts
    ]
    return concat_windows(parts, starts)


def windows_from_preprocessed(
    h5ad: str | Path,
    vocab_dir: str | Path,
    settings: ContextSettings,
    target_feature: str,
    labels_required: bool,
    target: str | Path,
    adt_h5ad: str | Path | None = None,
    first_cell: int = 0,
) -> Windows:
    """Build and save the windows of a preprocessed file (plus its preprocessed ADT file in
    multi-omics mode); labels are -1 where unknown. A shard passes its `first_cell`."""
    import logging
    from dataclasses import replace

    import anndata as ad

    from ..vocab import require_label_column

    vocab = Vocabulary.load(vocab_dir)
    settings = replace(settings, options=reference_options(settings.method, vocab_dir))
    adata = ad.read_h5ad(h5ad)
    if labels_required:
        labels = vocab.encode_labels(require_label_column(adata.obs, target_feature, str(h5ad)), str(h5ad))
    elif target_feature in adata.obs.columns:
        values = np.asarray(adata.obs[target_feature], dtype=str)
        labels = np.asarray(pd.Index(vocab.classes).get_indexer(values), dtype=np.int32)
    else:
        labels = np.full(adata.n_obs, -1, dtype=np.int32)
    binned = adata.X
    if bool(adt_h5ad) != bool(vocab.adt_features.size):
        raise InputError(f"{vocab_dir}: the vocabulary and the data disagree on multi-omics (ADT) mode")
    if adt_h5ad:
        binned = sp.hstack([binned, ad.read_h5ad(adt_h5ad).X], format="csr")
    windows = build_windows(binned, vocab, settings, first_cell=first_cell)
    logging.getLogger(__name__).info(
        "%s: %d cells -> %d windows of %d tokens (%s)",
        h5ad,
        adata.n_obs,
        len(windows),
        settings.max_length,
        settings.method,
    )
    save_windows(target, windows, labels, np.asarray(adata.obs_names))
    return windows


def window_genes(vocab: Vocabulary, method: str, vocab_dir: str | Path) -> np.ndarray | None:
    """Which vocabulary genes the method's windows can hold (a boolean per gene), so that the
    linear member sees no other; None where every gene can be in a window."""
    if method != "genelist":
        return None
    return genelist.listed_genes(vocab, reference_options(method, vocab_dir)["genelist"])

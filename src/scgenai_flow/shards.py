"""Prediction at scale: the predict data cut into contiguous shards, and their predictions joined."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .io import InputError, iter_csr_chunks, read_obs, read_var_names, write_csv, write_h5ad


def shard_bounds(n_cells: int, shards: int) -> np.ndarray:
    """First cell of each shard, then the cell count: near-equal contiguous parts."""
    return np.linspace(0, n_cells, shards + 1).astype(np.int64)


def _shard_matrices(chunks: Iterator[sp.csr_matrix], bounds: np.ndarray) -> Iterator[sp.csr_matrix]:
    """Re-cut a stream of row blocks at the shard bounds, holding one shard at a time."""
    pending: list[sp.csr_matrix] = []
    shard = filled = 0
    for chunk in chunks:
        row = 0
        while row < chunk.shape[0]:
            part = chunk[row : row + int(bounds[shard + 1] - bounds[shard]) - filled]
            pending.append(part)
            filled += part.shape[0]
            row += part.shape[0]
            if filled == bounds[shard + 1] - bounds[shard]:
                yield sp.vstack(pending, format="csr")
                pending, filled, shard = [], 0, shard + 1


def write_shards(source: str, use_raw: bool, targets: list[str], offsets_csv: str, chunk_cells: int) -> None:
    """Cut `source` into `len(targets)` h5ad shards in cell order, streaming its matrix, and
    record each shard's first cell (the seeded contexts depend on it)."""
    obs, genes = read_obs(source), read_var_names(source, use_raw)
    bounds = shard_bounds(len(obs), len(targets))
    if len(obs) < len(targets):
        raise InputError(f"predict.shards={len(targets)}: {source} has only {len(obs)} cells")
    blocks = _shard_matrices(iter_csr_chunks(source, chunk_cells, use_raw), bounds)
    for k, (target, matrix) in enumerate(zip(targets, blocks)):
        part = obs.iloc[bounds[k] : bounds[k + 1]]
        write_h5ad(ad.AnnData(X=matrix, obs=part, var=pd.DataFrame(index=genes)), target)
    table = pd.DataFrame({"shard": [Path(t).stem for t in targets], "first_cell": bounds[:-1],
                          "cells": np.diff(bounds)})  # fmt: skip
    write_csv(table, offsets_csv)


def shard_offset(offsets_csv: str, shard: str) -> int:
    """The first cell (in the unsharded data) of shard `shard`."""
    table = pd.read_csv(offsets_csv, index_col="shard")
    return int(table.loc[shard, "first_cell"])


def gather_predictions(shard_csvs: list[str], target: str) -> None:
    """Join the shards' prediction tables in shard order: the unsharded table."""
    frames = [pd.read_csv(path, index_col=0, keep_default_na=False, dtype=str) for path in shard_csvs]
    write_csv(pd.concat(frames), target, index=True)

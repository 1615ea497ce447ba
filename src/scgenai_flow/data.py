"""The embedded default data set and seeded stratified splits."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .io import InputError

EMBEDDED = "pbmc68k_reduced"


def embedded_pbmc68k() -> ad.AnnData:
    """scanpy's bundled 700 PBMCs with log-normalised `.raw` values as a sparse `X`."""
    import scanpy as sc

    full = sc.datasets.pbmc68k_reduced()
    raw = full.raw
    return ad.AnnData(
        X=sp.csr_matrix(raw.X, dtype=np.float32),
        obs=full.obs.copy(),
        var=pd.DataFrame(index=raw.var_names.copy()),
    )


def stratified_split(labels: pd.Series, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Split cell positions by label: each named part takes its fraction of every class
    (rounded), and "train" takes the rest."""
    if labels.isna().any():
        raise InputError(f"label column '{labels.name}' has missing values")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], **{name: [] for name in fractions}}
    codes, _ = pd.factorize(labels, sort=True)
    for code in range(codes.max() + 1):
        members = rng.permutation(np.flatnonzero(codes == code))
        start = 0
        for name, fraction in fractions.items():
            take = int(round(fraction * members.size))
            parts[name].append(members[start : start + take])
            start += take
        parts["train"].append(members[start:])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def write_splits(
    adata: ad.AnnData, target_feature: str, fractions: dict[str, float], seed: int, outputs: dict[str, Path]
) -> dict[str, int]:
    """Write each part of a stratified split to its own h5ad; return cells per part."""
    from .io import write_h5ad
    from .vocab import require_label_column

    labels = require_label_column(adata.obs, target_feature, "data")
    parts = stratified_split(labels, fractions, seed)
    for name, rows in parts.items():
        if rows.size == 0:
            raise InputError(f"split '{name}' got no cells; lower its fraction or give a file")
        write_h5ad(adata[rows].copy(), outputs[name])
    return {name: int(rows.size) for name, rows in parts.items()}


def load_source(source: str, use_raw: bool) -> ad.AnnData:
    """The data set to split: the embedded one by name, or a user's h5ad (read, never modified)."""
    if source == EMBEDDED:
        return embedded_pbmc68k()
    from .io import h5ad_info

    h5ad_info(source, use_raw)  # clear error for a missing or non-h5ad file
    adata = ad.read_h5ad(source)
    if use_raw:
        if adata.raw is None:
            raise InputError(f"{source}: data.use_raw is true but the file has no .raw")
        adata = ad.AnnData(X=adata.raw.X, obs=adata.obs, var=pd.DataFrame(index=adata.raw.var_names))
    return adata

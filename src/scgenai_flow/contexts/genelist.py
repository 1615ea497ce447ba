"""The `genelist` context: only the genes of a user's list, then sliding windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..io import InputError
from ..preprocess import align_columns, case_hint
from ..vocab import Vocabulary
from .core import ChunkWindows, ContextSettings, Windows, register
from .multiomics import emphasised_tokens
from .sliding import sliding_windows


def read_gene_list(path: str | Path) -> np.ndarray:
    """Gene symbols, one per line, no header; blank lines and surrounding spaces ignored."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: gene list not found (context.genelist)")
    genes = np.array([line.strip() for line in path.read_text().splitlines() if line.strip()])
    if genes.size == 0:
        raise InputError(f"{path}: gene list is empty (expected one gene symbol per line)")
    if any(len(g.split()) > 1 for g in genes):
        raise InputError(f"{path}: expected one gene symbol per line, found lines with several fields")
    return genes


def listed_genes(vocab: Vocabulary, path: str | Path | None) -> np.ndarray:
    """Which vocabulary genes the list names (a boolean per gene); an error when it names none."""
    if not path:
        raise InputError("context.method 'genelist' needs context.genelist (a gene list file)")
    names = read_gene_list(path)
    listed = np.isin(vocab.genes, names)
    if not listed.any():
        raise InputError(
            f"{path}: none of its genes is among the {vocab.genes.size} vocabulary genes"
            + case_hint(names, vocab.genes, "the vocabulary", "its genes")
        )
    return listed


@register("genelist")
def genelist_context(vocab: Vocabulary, settings: ContextSettings) -> ChunkWindows:
    """Keep the listed vocabulary genes (and any ADT features) of each cell, then slide
    windows as `random` does."""
    listed = listed_genes(vocab, settings.options.get("genelist"))
    keep = np.where(np.r_[listed, np.ones(vocab.adt_features.size, bool)], np.arange(vocab.n_features), -1)

    def chunk_windows(binned: sp.csr_matrix, first_cell: int) -> Windows:
        subset = align_columns(binned, keep, vocab.n_features)
        tokens, offsets = emphasised_tokens(subset, vocab, settings.depth, settings.seed, first_cell)
        return sliding_windows(tokens, offsets, settings.max_length, settings.stride, vocab.pad_id)

    return chunk_windows

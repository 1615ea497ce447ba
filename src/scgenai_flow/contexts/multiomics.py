"""Multi-omics windows: ADT (protein) features join each cell's tokens, `depth` times each."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..vocab import ADT_PREFIX, Vocabulary
from .groups import GeneGroups, mix


def emphasised_tokens(
    binned: sp.csr_matrix, vocab: Vocabulary, depth: int, seed: int, first_cell: int
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids per cell: RNA pairs in order, each ADT pair repeated `depth` times at seeded
    random positions between them (the SPEC's "emphasis"); plain tokens without ADT."""
    tokens, _ = vocab.tokenize(binned)
    if not vocab.adt_features.size:
        return tokens, 2 * binned.indptr.astype(np.int64)
    counts = np.diff(binned.indptr)
    row = np.repeat(np.arange(binned.shape[0]), counts)
    is_adt = binned.indices >= vocab.genes.size
    rank = np.arange(binned.nnz) - np.repeat(binned.indptr[:-1], counts)  # RNA columns come first
    rna_per_cell = np.bincount(row[~is_adt], minlength=binned.shape[0])
    copies = np.where(is_adt, depth, 1)
    pair = np.repeat(np.arange(binned.nnz), copies)
    repeat = np.arange(pair.size) - np.repeat(np.cumsum(copies) - copies, copies)
    draw = mix(np.uint64(seed), row[pair] + first_cell, binned.indices[pair], repeat)
    slot = (draw % (rna_per_cell[row[pair]] + 1).astype(np.uint64)).astype(np.int64)
    key = np.where(is_adt[pair], 2 * slot, 2 * rank[pair] + 1)
    order = np.lexsort((draw, key, row[pair]))
    pairs = tokens.reshape(-1, 2)[pair[order]]
    per_cell = np.bincount(row[pair], minlength=binned.shape[0])
    return pairs.reshape(-1), 2 * np.concatenate(([0], np.cumsum(per_cell)))


def with_adt_groups(groups: GeneGroups, vocab: Vocabulary) -> GeneGroups:
    """Each ADT feature becomes a group of its own (after the gene groups)."""
    n_adt = vocab.adt_features.size
    if not n_adt:
        return groups
    membership = sp.bmat(
        [[groups.membership, None], [None, sp.identity(n_adt, dtype=bool, format="csr")]], format="csr"
    )
    names = np.concatenate((groups.names, np.char.add(ADT_PREFIX, vocab.adt_features.astype(str))))
    return GeneGroups(membership.astype(bool), names)

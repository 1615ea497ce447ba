"""Pack gene groups (cytobands, gene sets) of each cell into windows.

A cell's expressed genes are grouped; each group (split into window-sized pieces when
larger than a window) is repeated `depth` times, the pieces are put in a seeded random
order, and whole pieces are packed greedily, in that order, into windows. The per-cell
work is the compiled kernel in `packing`; this module turns its output into `Windows`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..vocab import Vocabulary
from .core import Windows


@dataclass(frozen=True)
class GeneGroups:
    """Which vocabulary genes belong to which group (a gene may be in several or none)."""

    membership: sp.csr_matrix  # (n_genes, n_groups), genes in vocabulary order
    names: np.ndarray  # group names


def mix(*keys: np.ndarray) -> np.ndarray:
    """A splitmix64 hash of integer keys: seeded random order independent of chunking."""
    h = np.zeros(np.broadcast(*keys).shape, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for key in keys:
            h = h ^ np.asarray(key, dtype=np.uint64)
            h = h + np.uint64(0x9E3779B97F4A7C15)
            h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = h ^ (h >> np.uint64(31))
    return h


def group_windows(
    binned: sp.csr_matrix,
    vocab: Vocabulary,
    groups: GeneGroups,
    max_length: int,
    depth: int,
    seed: int,
    first_cell: int,
    name_all: bool = False,
) -> Windows:
    """Windows of whole (repeated, shuffled) gene groups; genes in no group are left out,
    and a cell with no grouped gene gets no window.

    The context id of a window is the group that contributes most of its tokens, or with
    `name_all` the names of all its groups joined by ';' (in window order).
    """
    from .packing import pack_cells

    n_cells = binned.shape[0]
    membership = groups.membership
    entry, position, lengths, window, p_group, dominant, per_cell = pack_cells(
        binned.indptr.astype(np.int64),
        binned.indices.astype(np.int64),
        membership.indptr.astype(np.int64),
        membership.indices.astype(np.int64),
        max_length // 2,  # gene-bin pairs per window
        depth,
        seed,
        first_cell,
        max_length,
    )
    n_windows = int(per_cell.sum())
    flat = np.full(n_windows * max_length, vocab.pad_id, dtype=vocab.token_dtype)
    flat[position] = vocab.feature_tokens(binned.indices[entry])
    flat[position + 1] = vocab.bin_tokens(binned.indices[entry], binned.data[entry])
    tokens = flat.reshape(n_windows, max_length)
    cell_index = np.repeat(np.arange(n_cells, dtype=np.int32), per_cell)
    if name_all:
        names, context = joined_group_names(window, p_group, groups.names)
        return Windows(tokens, lengths, cell_index, context, names)
    return Windows(tokens, lengths, cell_index, dominant.astype(np.int32), groups.names)


def joined_group_names(
    window: np.ndarray, group: np.ndarray, names: np.ndarray, at_most: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Per window, its distinct group names in packing order joined by ';' (the first
    `at_most`, then '+N more', so that ids stay short on large gene-set collections)."""
    from .packing import window_groups

    n_windows = int(window.max(initial=-1)) + 1
    shown, hidden = window_groups(window, group, n_windows, names.size, at_most)
    padded = np.append(names.astype(str), "")
    labels = padded[shown[:, 0]]
    for column in range(1, at_most):
        more = shown[:, column] >= 0
        labels = np.where(more, np.strings.add(np.strings.add(labels, ";"), padded[shown[:, column]]), labels)
    suffix = np.strings.add(np.strings.add(";+", hidden.astype(str)), " more")
    labels = np.where(hidden > 0, np.strings.add(labels, suffix), labels)
    return labels, np.arange(n_windows, dtype=np.int32)  # one name per window

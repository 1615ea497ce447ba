"""Pack gene groups (cytobands, gene sets) of each cell into windows, vectorised over cells.

A cell's expressed genes are grouped; each group (split into window-sized pieces when
larger than a window) is repeated `depth` times, the pieces are put in a seeded random
order, and whole pieces are packed greedily, in that order, into windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..vocab import Vocabulary
from . import Windows


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


def segment_starts(values: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array."""
    return np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if values.size else values


def pack_in_order(cell: np.ndarray, size: np.ndarray, capacity: int) -> np.ndarray:
    """Window number (within its cell) of each piece, packing pieces greedily in order.

    `cell` is sorted; every size is at most `capacity`. One round per window of the
    fullest cell, each round vectorised over all remaining pieces.
    """
    window = np.empty(cell.size, dtype=np.int64)
    remaining = np.arange(cell.size)
    round_number = 0
    while remaining.size:
        cells, sizes = cell[remaining], size[remaining]
        total = np.cumsum(sizes)
        starts = segment_starts(cells)
        before = np.repeat(total[starts] - sizes[starts], np.diff(np.r_[starts, cells.size]))
        fits = total - before <= capacity  # a prefix of each cell's remaining pieces
        window[remaining[fits]] = round_number
        remaining = remaining[~fits]
        round_number += 1
    return window


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
    n_cells = binned.shape[0]
    capacity = max_length // 2  # gene-bin pairs per window
    row = np.repeat(np.arange(n_cells), np.diff(binned.indptr))
    gene, bins = binned.indices, binned.data
    # expand each expressed gene over its groups
    per_gene = np.diff(groups.membership.indptr)[gene]
    entry = np.repeat(np.arange(gene.size), per_gene)
    within = np.arange(entry.size) - np.repeat(np.cumsum(per_gene) - per_gene, per_gene)
    group = groups.membership.indices[groups.membership.indptr[gene[entry]] + within]
    order = np.argsort(row[entry].astype(np.int64) * len(groups.names) + group, kind="stable")
    entry, group = entry[order], group[order]
    cell_of = row[entry]
    # units: one (cell, group) run each, cut into pieces of at most `capacity` pairs
    unit_key = cell_of.astype(np.int64) * len(groups.names) + group
    unit_start = segment_starts(unit_key)
    position = np.arange(entry.size) - np.repeat(unit_start, np.diff(np.r_[unit_start, entry.size]))
    piece_start = np.flatnonzero(position % capacity == 0)
    piece_size = np.diff(np.r_[piece_start, entry.size])
    piece_number = position[piece_start] // capacity
    # repeat every piece `depth` times and give it a seeded random place in its cell
    piece = np.repeat(np.arange(piece_start.size), depth)
    repeat = np.tile(np.arange(depth), piece_start.size)
    p_cell = cell_of[piece_start[piece]]
    p_group = group[piece_start[piece]]
    key = mix(np.uint64(seed), p_cell + first_cell, p_group, piece_number[piece], repeat)
    shuffled = np.lexsort((key, p_cell))
    piece, p_cell, p_group = piece[shuffled], p_cell[shuffled], p_group[shuffled]
    sizes = piece_size[piece]
    number = pack_in_order(p_cell, sizes, capacity)
    # global window index: cells in order, windows in packing order
    per_cell = np.zeros(n_cells, dtype=np.int64)
    np.maximum.at(per_cell, p_cell, number + 1)
    first_window = np.cumsum(per_cell) - per_cell
    window = first_window[p_cell] + number
    n_windows = int(per_cell.sum())
    # pairs of each piece laid out one after another inside its window
    pair_piece = np.repeat(np.arange(piece.size), sizes)
    pair_offset = np.arange(pair_piece.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    pair_entry = entry[piece_start[piece[pair_piece]] + pair_offset]
    window_of_pair = window[pair_piece]  # non-decreasing: each packing round takes a prefix
    run_start = segment_starts(window_of_pair)
    slot = np.arange(pair_piece.size) - np.repeat(run_start, np.diff(np.r_[run_start, pair_piece.size]))
    tokens = np.full((n_windows, max_length), vocab.pad_id, dtype=vocab.token_dtype)
    tokens[window_of_pair, 2 * slot] = vocab.feature_tokens(gene[pair_entry])
    tokens[window_of_pair, 2 * slot + 1] = vocab.bin_tokens(gene[pair_entry], bins[pair_entry])
    lengths = 2 * np.bincount(window_of_pair, minlength=n_windows).astype(np.int32)
    cell_index = np.repeat(np.arange(n_cells, dtype=np.int32), per_cell)
    if name_all:
        names, context = joined_group_names(window, p_group, groups.names)
        return Windows(tokens, lengths, cell_index, context, names)
    # context id: the group with the largest piece in the window
    biggest = np.lexsort((-sizes, window))
    first = segment_starts(window[biggest])
    context = np.empty(n_windows, dtype=np.int32)
    context[window[biggest[first]]] = p_group[biggest[first]]
    return Windows(tokens, lengths, cell_index, context, groups.names)


def joined_group_names(
    window: np.ndarray, group: np.ndarray, names: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per window (pieces sorted by window), its distinct group names in order, joined by ';'."""
    key = window.astype(np.int64) * names.size + group
    _, first_seen = np.unique(key, return_index=True)
    first_seen.sort()
    windows, groups = window[first_seen], group[first_seen]
    cuts = segment_starts(windows)[1:]
    labels = [";".join(part) for part in np.split(names[groups], cuts)]
    unique, inverse = np.unique(np.array(labels, dtype=str), return_inverse=True)
    return unique, inverse.astype(np.int32)

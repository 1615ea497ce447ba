"""Compiled per-cell kernel of the group contexts (genomic, biofunction).

Grouping, seeded shuffling and greedy packing are inherently sequential within a cell; a
numba loop does them in one pass per cell, linear in the cell's (gene, group) pairs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

C0, C1, C2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@njit(cache=True)
def _mix(h: np.uint64, key: np.uint64) -> np.uint64:
    h = (h ^ key) + C0
    h = (h ^ (h >> np.uint64(30))) * C1
    h = (h ^ (h >> np.uint64(27))) * C2
    return h ^ (h >> np.uint64(31))


@njit(cache=True)
def piece_key(seed: int, cell: int, group: int, number: int, repeat: int) -> np.uint64:
    """splitmix64 of the keys, equal to `groups.mix` (the seeded order of a piece)."""
    h = _mix(np.uint64(0), np.uint64(seed))
    h = _mix(h, np.uint64(cell))
    h = _mix(h, np.uint64(group))
    h = _mix(h, np.uint64(number))
    return _mix(h, np.uint64(repeat))


@njit(cache=True)
def pack_cells(indptr, genes, n_genes, member_ptr, member_groups, capacity, depth, seed, first_cell):
    """Lay out every cell's group pieces into windows.

    Returns per pair: its entry (position in `genes`), window and slot; per piece (in
    packing order): window, group, size; and windows per cell.
    """
    n_cells = indptr.size - 1
    total = 0
    for e in range(genes.size):
        total += member_ptr[genes[e] + 1] - member_ptr[genes[e]]
    pair_entry = np.empty(total * depth, np.int64)
    pair_window = np.empty(total * depth, np.int64)
    pair_slot = np.empty(total * depth, np.int64)
    piece_window = np.empty(total * depth, np.int64)
    piece_group = np.empty(total * depth, np.int64)
    piece_size = np.empty(total * depth, np.int64)
    windows_per_cell = np.zeros(n_cells, np.int64)
    n_pairs = n_pieces = n_windows = 0
    for c in range(n_cells):
        # the cell's (group, gene) pairs, sorted by group then gene
        count = 0
        for e in range(indptr[c], indptr[c + 1]):
            count += member_ptr[genes[e] + 1] - member_ptr[genes[e]]
        if count == 0:
            continue
        unit_group = np.empty(count, np.int64)
        unit_entry = np.empty(count, np.int64)
        sort_key = np.empty(count, np.int64)
        k = 0
        for e in range(indptr[c], indptr[c + 1]):
            for m in range(member_ptr[genes[e]], member_ptr[genes[e] + 1]):
                unit_group[k], unit_entry[k] = member_groups[m], e
                sort_key[k] = member_groups[m] * n_genes + genes[e]
                k += 1
        order = np.argsort(sort_key)  # keys are unique: no need for a stable sort
        unit_group, unit_entry = unit_group[order], unit_entry[order]
        # pieces: runs of one group cut every `capacity` pairs, each repeated `depth` times
        n_runs_pieces = 0
        for i in range(count):
            if i == 0 or unit_group[i] != unit_group[i - 1]:
                run = i
            if (i - run) % capacity == 0:
                n_runs_pieces += 1
        keys = np.empty(n_runs_pieces * depth, np.uint64)
        p_start = np.empty(n_runs_pieces * depth, np.int64)
        p_size = np.zeros(n_runs_pieces * depth, np.int64)
        j = -1
        for i in range(count):
            if i == 0 or unit_group[i] != unit_group[i - 1]:
                run = i
            if (i - run) % capacity == 0:
                j += 1
                for r in range(depth):
                    keys[j * depth + r] = piece_key(
                        seed, c + first_cell, unit_group[i], (i - run) // capacity, r
                    )
                    p_start[j * depth + r] = i
            for r in range(depth):
                p_size[j * depth + r] += 1
        # seeded order, then greedy packing of whole pieces
        filled = 0
        window = 0
        for q in np.argsort(keys):  # 64-bit random keys: ties have probability ~0
            if filled + p_size[q] > capacity:
                window += 1
                filled = 0
            for i in range(p_size[q]):
                pair_entry[n_pairs] = unit_entry[p_start[q] + i]
                pair_window[n_pairs] = n_windows + window
                pair_slot[n_pairs] = filled + i
                n_pairs += 1
            piece_window[n_pieces] = n_windows + window
            piece_group[n_pieces] = unit_group[p_start[q]]
            piece_size[n_pieces] = p_size[q]
            n_pieces += 1
            filled += p_size[q]
        windows_per_cell[c] = window + 1
        n_windows += window + 1
    return (
        pair_entry[:n_pairs],
        pair_window[:n_pairs],
        pair_slot[:n_pairs],
        piece_window[:n_pieces],
        piece_group[:n_pieces],
        piece_size[:n_pieces],
        windows_per_cell,
    )

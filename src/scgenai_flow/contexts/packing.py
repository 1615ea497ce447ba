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
def draw(seed: int, cell: int, step: int) -> np.uint64:
    """A seeded random number per (cell, step), equal to `groups.mix(seed, cell, step)`."""
    return _mix(_mix(_mix(np.uint64(0), np.uint64(seed)), np.uint64(cell)), np.uint64(step))


@njit(cache=True)
def shuffle(order: np.ndarray, n: int, seed: int, cell: int) -> None:
    """Fisher-Yates shuffle of order[:n], seeded per cell (the same whatever the chunking)."""
    for i in range(n - 1, 0, -1):
        j = draw(seed, cell, i) % np.uint64(i + 1)
        order[i], order[j] = order[j], order[i]


@njit(cache=True)
def sort_by_group(groups: np.ndarray, items: np.ndarray, n: int, scratch_g, scratch_i) -> None:
    """Stable LSD radix sort of groups[:n] (and items alongside), 8 bits a pass."""
    counts = np.empty(257, np.int64)
    shift = 0
    top = groups[:n].max() if n else 0
    while (top >> shift) > 0 or shift == 0:
        counts[:] = 0
        for i in range(n):
            counts[((groups[i] >> shift) & 255) + 1] += 1
        for b in range(256):
            counts[b + 1] += counts[b]
        for i in range(n):
            b = (groups[i] >> shift) & 255
            scratch_g[counts[b]], scratch_i[counts[b]] = groups[i], items[i]
            counts[b] += 1
        groups[:n], items[:n] = scratch_g[:n], scratch_i[:n]
        shift += 8


@njit(cache=True)
def pack_cells(indptr, genes, member_ptr, member_groups, capacity, depth, seed, first_cell, max_length):
    """Lay out every cell's group pieces into windows.

    A cell's (group, gene) pairs are sorted by group (genes stay in vocabulary order), cut
    into pieces of at most `capacity` pairs, each piece repeated `depth` times; the pieces
    are shuffled (seeded Fisher-Yates) and packed whole, greedily, into windows.
    Returns per pair: its entry (position in `genes`) and the flat position of its gene
    token in a (windows, max_length) array; per piece (in packing order): window and group;
    per window: its length in tokens and the group of its largest piece (the first, on
    ties); and windows per cell.
    """
    n_cells = indptr.size - 1
    total = longest = 0
    for c in range(n_cells):
        count = 0
        for e in range(indptr[c], indptr[c + 1]):
            count += member_ptr[genes[e] + 1] - member_ptr[genes[e]]
        total += count
        longest = max(longest, count)
    pair_entry = np.empty(total * depth, np.int64)
    pair_position = np.empty(total * depth, np.int64)
    window_length = np.zeros(total * depth, np.int32)
    piece_window = np.empty(total * depth, np.int64)
    piece_group = np.empty(total * depth, np.int64)
    window_group = np.empty(total * depth, np.int64)
    largest = 0
    windows_per_cell = np.zeros(n_cells, np.int64)
    unit_group, unit_entry = np.empty(longest, np.int64), np.empty(longest, np.int64)
    scratch_g, scratch_i = np.empty(longest, np.int64), np.empty(longest, np.int64)
    p_start, p_size = np.empty(longest * depth, np.int64), np.empty(longest * depth, np.int64)
    order = np.empty(longest * depth, np.int64)
    n_pairs = n_pieces = n_windows = 0
    for c in range(n_cells):
        count = 0
        for e in range(indptr[c], indptr[c + 1]):
            for m in range(member_ptr[genes[e]], member_ptr[genes[e] + 1]):
                unit_group[count], unit_entry[count] = member_groups[m], e
                count += 1
        if count == 0:
            continue
        sort_by_group(unit_group, unit_entry, count, scratch_g, scratch_i)
        n_cell_pieces = 0
        run = 0
        for i in range(count):
            if i == 0 or unit_group[i] != unit_group[i - 1]:
                run = i
            if (i - run) % capacity == 0:
                for r in range(depth):
                    p_start[n_cell_pieces + r], p_size[n_cell_pieces + r] = i, 0
                n_cell_pieces += depth
            for r in range(depth):
                p_size[n_cell_pieces - depth + r] += 1
        for q in range(n_cell_pieces):
            order[q] = q
        shuffle(order, n_cell_pieces, seed, c + first_cell)
        filled = window = 0
        for k in range(n_cell_pieces):
            q = order[k]
            if filled + p_size[q] > capacity:
                window += 1
                filled = 0
            if filled == 0 or p_size[q] > largest:
                window_group[n_windows + window] = unit_group[p_start[q]]
                largest = p_size[q]
            for i in range(p_size[q]):
                pair_entry[n_pairs] = unit_entry[p_start[q] + i]
                pair_position[n_pairs] = (n_windows + window) * max_length + 2 * (filled + i)
                n_pairs += 1
            window_length[n_windows + window] += 2 * p_size[q]
            piece_window[n_pieces] = n_windows + window
            piece_group[n_pieces] = unit_group[p_start[q]]
            n_pieces += 1
            filled += p_size[q]
        windows_per_cell[c] = window + 1
        n_windows += window + 1
    return (
        pair_entry[:n_pairs],
        pair_position[:n_pairs],
        window_length[:n_windows],
        piece_window[:n_pieces],
        piece_group[:n_pieces],
        window_group[:n_windows],
        windows_per_cell,
    )


@njit(cache=True)
def window_groups(piece_window, piece_group, n_windows, n_groups, at_most):
    """Per window, its first `at_most` distinct groups in packing order (-1 = none) and how
    many more it holds."""
    shown = np.full((n_windows, at_most), -1, np.int64)
    hidden = np.zeros(n_windows, np.int64)
    count = np.zeros(n_windows, np.int64)
    seen = np.full(n_groups, -1, np.int64)  # last window each group was counted in
    for p in range(piece_window.size):
        w, g = piece_window[p], piece_group[p]
        if seen[g] == w:
            continue
        seen[g] = w
        if count[w] < at_most:
            shown[w, count[w]] = g
            count[w] += 1
        else:
            hidden[w] += 1
    return shown, hidden

"""The `random` context: sliding windows over each cell's token sequence."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.lib.stride_tricks import sliding_window_view

from ..vocab import Vocabulary
from .core import ChunkWindows, ContextSettings, Windows, register
from .multiomics import emphasised_tokens


def sliding_windows(
    tokens: np.ndarray, offsets: np.ndarray, max_length: int, stride: int, pad_id: int
) -> Windows:
    """Windows of `max_length` tokens every `stride` tokens until each cell's end is covered.

    A cell no longer than a window is one padded window; a cell without tokens has none.
    """
    n_tokens = np.diff(offsets)
    n_windows = np.where(n_tokens <= max_length, 1, (n_tokens - max_length + stride - 1) // stride + 1)
    n_windows[n_tokens == 0] = 0
    cell_index = np.repeat(np.arange(n_tokens.size, dtype=np.int32), n_windows)
    first = np.cumsum(n_windows) - n_windows
    number = np.arange(cell_index.size) - np.repeat(first, n_windows)
    start = number * stride
    lengths = np.minimum(max_length, n_tokens[cell_index] - start).astype(np.int32)
    padded = np.concatenate((tokens, np.full(max_length, pad_id, dtype=tokens.dtype)))
    windows = sliding_window_view(padded, max_length)[offsets[cell_index] + start]
    windows[np.arange(max_length) >= lengths[:, None]] = pad_id
    names = np.array([f"window_{k}" for k in range(int(n_windows.max(initial=1)))])
    return Windows(windows, lengths, cell_index, number.astype(np.int32), names)


@register("random")
def random_context(vocab: Vocabulary, settings: ContextSettings) -> ChunkWindows:
    """Sliding windows over the interleaved `gene, bin` tokens of each cell."""

    def chunk_windows(binned: sp.csr_matrix, first_cell: int) -> Windows:
        tokens, offsets = emphasised_tokens(binned, vocab, settings.depth, settings.seed, first_cell)
        return sliding_windows(tokens, offsets, settings.max_length, settings.stride, vocab.pad_id)

    return chunk_windows


def redealt_windows(windows: Windows, rng: np.random.Generator) -> Windows:
    """Training augmentation: each window takes as many (gene, bin) pairs as before, drawn
    without replacement from all the distinct pairs of its cell's windows, in gene order."""
    n_windows, width = windows.tokens.shape
    pairs = windows.tokens[:, : width // 2 * 2].reshape(n_windows, -1, 2)
    n_pairs = windows.lengths // 2
    row, col = np.nonzero(np.arange(pairs.shape[1]) < n_pairs[:, None])
    cell = windows.cell_index[row].astype(np.int64)
    gene = pairs[row, col, 0].astype(np.int64)
    _, first = np.unique(cell * (int(gene.max(initial=0)) + 1) + gene, return_index=True)
    pool, pool_cell = pairs[row[first], col[first]], cell[first]  # by cell, then gene
    per_cell = np.bincount(pool_cell, minlength=int(windows.cell_index.max(initial=-1)) + 1)
    candidates = per_cell[windows.cell_index]  # a window draws from its cell's whole pool
    window = np.repeat(np.arange(n_windows), candidates)
    rank = np.arange(window.size) - np.repeat(np.cumsum(candidates) - candidates, candidates)
    member = np.repeat((np.cumsum(per_cell) - per_cell)[windows.cell_index], candidates) + rank
    member = member[np.lexsort((rng.random(window.size), window))]
    keep = rank < n_pairs[window]
    chosen, window, rank = member[keep], window[keep], rank[keep]
    chosen = chosen[np.lexsort((chosen, window))]  # gene order inside each window
    tokens = windows.tokens.copy()
    tokens[window, 2 * rank], tokens[window, 2 * rank + 1] = pool[chosen, 0], pool[chosen, 1]
    return Windows(tokens, windows.lengths, windows.cell_index, windows.context_index, windows.context_names)

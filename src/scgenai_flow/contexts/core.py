"""What every context method shares: its settings, the windows it makes, their registry and
their file (windows `.npz`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..config import default_of
from ..io import npz_memmap, write_npz
from ..vocab import Vocabulary


@dataclass(frozen=True)
class ContextSettings:
    """Parameters shared by every context method."""

    method: str = default_of("context.method")
    max_length: int = default_of("context.max_length")
    depth: int = default_of("context.depth")
    seed: int = default_of("seed")
    options: dict = field(default_factory=dict)  # method-specific (reference files, ...)

    @property
    def stride(self) -> int:
        """Sliding-window step: half a window, rounded down to whole (gene, bin) pairs."""
        return max(2, self.max_length // 4 * 2)


@dataclass
class Windows:
    """Token windows of a set of cells and where each came from."""

    tokens: np.ndarray  # (n_windows, max_length) token ids, PAD after `lengths`
    lengths: np.ndarray  # real tokens per window
    cell_index: np.ndarray  # window -> cell row, non-decreasing
    context_index: np.ndarray  # window -> row of `context_names`
    context_names: np.ndarray  # what each context is (window number, cytoband, gene sets)

    def __len__(self) -> int:
        return int(self.lengths.size)

    def subset(self, rows: np.ndarray | slice) -> Windows:
        """The windows at `rows` (cell indices unchanged)."""
        return Windows(
            self.tokens[rows],
            self.lengths[rows],
            self.cell_index[rows],
            self.context_index[rows],
            self.context_names,
        )

    def context_ids(self) -> np.ndarray:
        """Context name of every window."""
        return self.context_names[self.context_index]


ChunkWindows = Callable[[sp.csr_matrix, int], Windows]
# A context method prepares once per data set (reads its reference, maps genes to integer
# groups) and returns the function that turns a chunk of binned cells (and the index of
# its first cell, so that seeded choices do not depend on chunking) into windows.
ContextMethod = Callable[[Vocabulary, ContextSettings], ChunkWindows]
CONTEXT_METHODS: dict[str, ContextMethod] = {}


def register(*names: str) -> Callable[[ContextMethod], ContextMethod]:
    """Register a context method factory under one or more config names."""

    def add(method: ContextMethod) -> ContextMethod:
        for name in names:
            CONTEXT_METHODS[name] = method
        return method

    return add


def concat_windows(parts: list[Windows], cell_offsets: list[int]) -> Windows:
    """Join per-chunk windows, shifting cell indices; context names are concatenated (a name
    may repeat across chunks: sorting millions of strings to dedupe them is not worth it)."""
    names = np.concatenate([p.context_names for p in parts])
    starts = np.cumsum([0] + [p.context_names.size for p in parts])
    return Windows(
        tokens=np.concatenate([p.tokens for p in parts]),
        lengths=np.concatenate([p.lengths for p in parts]),
        cell_index=np.concatenate([p.cell_index + off for p, off in zip(parts, cell_offsets)]),
        context_index=np.concatenate([start + p.context_index for p, start in zip(parts, starts)]).astype(
            np.int32
        ),
        context_names=names,
    )


def merge_by_cell(first: Windows, second: Windows) -> Windows:
    """Windows of both sets in cell order (each cell: `first`'s windows, then `second`'s),
    copying the token rows once."""
    names = np.concatenate((first.context_names, second.context_names))
    cells = np.concatenate((first.cell_index, second.cell_index))
    place = np.empty(cells.size, dtype=np.int64)
    place[np.argsort(cells, kind="stable")] = np.arange(cells.size)
    head, tail = place[: len(first)], place[len(first) :]
    tokens = np.empty((cells.size, first.tokens.shape[1]), dtype=first.tokens.dtype)
    tokens[head], tokens[tail] = first.tokens, second.tokens
    lengths, cell_index, context = (
        np.empty_like(first.lengths, shape=cells.size),
        np.empty_like(cells),
        np.empty(cells.size, np.int32),
    )
    lengths[head], lengths[tail] = first.lengths, second.lengths
    cell_index[head], cell_index[tail] = first.cell_index, second.cell_index
    context[head] = first.context_index
    context[tail] = first.context_names.size + second.context_index
    return Windows(tokens, lengths, cell_index.astype(np.int32), context, names)


def with_empty_cells(windows: Windows, n_cells: int, max_length: int, pad_id: int) -> Windows:
    """Give each cell without a window one window holding `<unk>`, so every cell is predicted."""
    from ..vocab import UNK_ID

    missing = np.setdiff1d(np.arange(n_cells), windows.cell_index)
    if missing.size == 0:
        return windows
    filler = np.full((missing.size, max_length), pad_id, dtype=windows.tokens.dtype)
    filler[:, 0] = UNK_ID
    empty = Windows(
        filler,
        np.ones(missing.size, dtype=np.int32),
        missing.astype(np.int32),
        np.zeros(missing.size, dtype=np.int32),
        np.array(["no_expressed_gene"]),
    )
    return merge_by_cell(windows, empty)


def save_windows(
    path: str | Path, windows: Windows, cell_labels: np.ndarray, cell_names: np.ndarray | None = None
) -> None:
    """Write windows, per-cell labels (-1 = unknown) and per-cell barcodes to one `.npz`,
    atomically; the barcodes let training prove that no held-out cell is among its own."""
    names = np.array([], dtype=str) if cell_names is None else np.asarray(cell_names, dtype=str)
    write_npz(
        path,
        cell_names=names,
        tokens=windows.tokens,
        lengths=windows.lengths,
        cell_index=windows.cell_index,
        context_index=windows.context_index,
        context_names=windows.context_names.astype(str),
        cell_labels=cell_labels.astype(np.int32),
    )


def load_windows(path: str | Path, mapped: bool = False) -> tuple[Windows, np.ndarray]:
    """Read what `save_windows` wrote: the windows and per-cell labels; with `mapped`, the token
    array (nearly all of the file) is memory-mapped, not read, so memory stays flat in windows."""
    with np.load(path) as npz:
        windows = Windows(
            tokens=npz_memmap(path, "tokens") if mapped else npz["tokens"],
            lengths=npz["lengths"],
            cell_index=npz["cell_index"],
            context_index=npz["context_index"],
            context_names=npz["context_names"],
        )
        return windows, npz["cell_labels"]


def window_cell_names(path: str | Path) -> np.ndarray:
    """The barcodes of the cells a windows `.npz` was built from (empty for older files)."""
    with np.load(path) as npz:
        return npz["cell_names"] if "cell_names" in npz.files else np.array([], dtype=str)


def shared_cells(first: str | Path, second: str | Path) -> np.ndarray:
    """Barcodes present in both windows files (sorted)."""
    return np.intersect1d(window_cell_names(first), window_cell_names(second))

"""Labelled windows and what one epoch draws from them: items (windows or cells), class
weights, gene dropout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..contexts import Windows
from .settings import TrainSettings


@dataclass
class LabelledWindows:
    """Windows with the label of each cell they came from."""

    windows: Windows
    cell_labels: np.ndarray

    @property
    def window_labels(self) -> np.ndarray:
        return self.cell_labels[self.windows.cell_index]

    @property
    def n_cells(self) -> int:
        return int(self.cell_labels.size)

    def cells(self, rows: np.ndarray) -> LabelledWindows:
        """The cells at `rows` (sorted) with their windows, renumbered in that order; itself
        when `rows` are all the cells."""
        if rows.size == self.n_cells:
            return self
        keep = np.isin(self.windows.cell_index, rows)
        windows = self.windows.subset(np.flatnonzero(keep))
        windows.cell_index = np.searchsorted(rows, windows.cell_index).astype(self.windows.cell_index.dtype)
        return LabelledWindows(windows, self.cell_labels[rows])

    def class_cells(self, n_classes: int) -> np.ndarray:
        """Labelled cells per class."""
        return np.bincount(self.cell_labels[self.cell_labels >= 0], minlength=n_classes)


@dataclass(frozen=True)
class TrainingItems:
    """What one epoch shuffles and the loss scores: windows, or cells with all their windows."""

    labels: np.ndarray  # per item
    items: np.ndarray  # the items that train (cells without windows have nothing to score)
    batch_size: int  # items per optimiser step
    first_window: np.ndarray | None = None  # per cell (cell items only)
    window_count: np.ndarray | None = None

    @classmethod
    def of(cls, data: LabelledWindows, settings: TrainSettings) -> TrainingItems:
        n_windows = len(data.windows)
        if settings.loss == "window":
            return cls(data.window_labels, np.arange(n_windows), settings.batch_size)
        count = np.bincount(data.windows.cell_index, minlength=data.n_cells)
        cells = np.flatnonzero(count > 0)
        # as many cells per step as hold batch_size windows on average: the steps stay alike
        per_step = max(1, round(settings.batch_size * cells.size / max(n_windows, 1)))
        return cls(data.cell_labels, cells, per_step, np.cumsum(count) - count, count)

    def steps(self) -> int:
        return -(-self.items.size // self.batch_size)

    def windows_of(self, idx: np.ndarray) -> tuple[np.ndarray, torch.Tensor | None]:
        """The windows of the items `idx` and, for cells, each window's position in `idx`."""
        if self.first_window is None or self.window_count is None:
            return idx, None
        count = self.window_count[idx]
        offset = np.repeat(self.first_window[idx] - (np.cumsum(count) - count), count)
        segment = np.repeat(np.arange(idx.size), count)
        return offset + np.arange(segment.size), torch.from_numpy(segment)


BATCHES_PER_SORT = 50  # by_length batching: how many batches are sorted together


def by_length(
    order: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> np.ndarray:
    """`order` (shuffled windows) regrouped so that each run of `batch_size` holds windows of
    similar length: every BATCHES_PER_SORT batches are sorted by length and cut into batches,
    which are shuffled (a short last batch stays last, so the batches keep their boundaries)."""
    span = batch_size * BATCHES_PER_SORT
    sorted_runs = [
        run[np.argsort(lengths[run], kind="stable")]
        for run in (order[start : start + span] for start in range(0, order.size, span))
    ]
    batches = [run[i : i + batch_size] for run in sorted_runs for i in range(0, run.size, batch_size)]
    last = [batches.pop()] if batches and batches[-1].size < batch_size else []
    shuffled = [batches[i] for i in rng.permutation(len(batches))]
    return np.concatenate(shuffled + last) if order.size else order


def class_weights(window_labels: np.ndarray, n_classes: int, kind: str) -> torch.Tensor | None:
    """Loss weights (count share)^-1 (`balanced`) or ^-1/2 (`sqrt`), scaled to average 1 over
    the training windows so the loss keeps its scale; None for `none`."""
    if kind == "none":
        return None
    counts = np.bincount(window_labels, minlength=n_classes).astype(float)
    power = {"balanced": 1.0, "sqrt": 0.5}[kind]
    weights = np.where(counts > 0, np.maximum(counts, 1.0) ** -power, 0.0)
    weights /= (weights * counts).sum() / counts.sum()
    return torch.tensor(weights, dtype=torch.float32)


def drop_gene_pairs(
    ids: torch.Tensor, lengths: torch.Tensor, rate: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmentation: drop each (gene, bin) pair of a window with probability `rate` (at least
    one pair stays) and close the gaps, keeping the order of what remains."""
    rows, pairs = ids.shape[0], ids.shape[1] // 2
    position = np.arange(pairs)
    keep = (rng.random((rows, pairs)) >= rate) & (position < lengths.cpu().numpy()[:, None] // 2)
    keep[~keep.any(axis=1), 0] = True
    order = np.argsort(np.where(keep, position, pairs + position), axis=1, kind="stable")
    index = torch.from_numpy(order).to(ids.device)[..., None].expand(rows, pairs, 2)
    packed = ids[:, : 2 * pairs].reshape(rows, pairs, 2).gather(1, index).reshape(rows, 2 * pairs)
    new_lengths = torch.from_numpy(2 * keep.sum(axis=1)).to(lengths)
    return packed[:, : int(new_lengths.max())], new_lengths

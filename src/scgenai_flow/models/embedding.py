"""Gene token embeddings initialised from the training cells themselves: the principal axes of
which genes are expressed together, an offline stand-in for pretrained gene embeddings."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..contexts import Windows
from . import CellClassifier

# Enough cells to estimate the axes; more only costs time (a seeded subset is used).
MAX_CELLS = 50_000
WINDOWS_PER_CHUNK = 65536
# Axes computed at most; wider models keep zeros in their remaining dimensions.
MAX_AXES = 256


def feature_presence(windows: Windows, n_cells: int, vocab_size: int, first_feature: int) -> sp.csr_matrix:
    """Cells x token ids: 1 where a cell's windows hold the feature token (a gene or ADT
    feature: the first token of each pair, from id `first_feature` on); read in chunks of
    windows, so memory stays flat in windows."""
    cells, ids = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for start in range(0, len(windows), WINDOWS_PER_CHUNK):
        chunk = windows.subset(slice(start, start + WINDOWS_PER_CHUNK))
        features = chunk.tokens[:, 0::2].astype(np.int64)
        real = np.arange(features.shape[1])[None, :] < (chunk.lengths[:, None] // 2)
        real &= features >= first_feature
        cells.append(np.broadcast_to(chunk.cell_index[:, None], features.shape)[real].astype(np.int64))
        ids.append(features[real])
    rows, columns = np.concatenate(cells), np.concatenate(ids)
    matrix = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, columns)), shape=(n_cells, vocab_size))
    matrix.data[:] = 1.0  # a gene in two overlapping windows counts once
    return matrix


def principal_axes(matrix: sp.csr_matrix, k: int, seed: int, power_iterations: int = 4) -> np.ndarray:
    """Loadings (columns x k: right singular vectors times singular values) of the
    column-centred matrix, by randomised SVD; the centring is implicit, so it stays sparse."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(matrix.mean(axis=0)).ravel()

    def right(v: np.ndarray) -> np.ndarray:  # (X - 1 mean^T) v
        return matrix @ v - (mean @ v)[None, :]

    def left(u: np.ndarray) -> np.ndarray:  # (X - 1 mean^T)^T u
        return matrix.T @ u - np.outer(mean, u.sum(axis=0))

    basis = np.linalg.qr(right(rng.standard_normal((matrix.shape[1], k + 10))))[0]
    for _ in range(power_iterations):
        basis = np.linalg.qr(right(np.linalg.qr(left(basis))[0]))[0]
    _, values, axes = np.linalg.svd(left(basis).T, full_matrices=False)
    return axes[:k].T * values[:k]


def init_gene_embeddings(
    model: CellClassifier, windows: Windows, n_cells: int, first_feature: int, seed: int
) -> int:
    """Set the input embedding of every feature token seen in training to its co-expression
    loadings, scaled to the norm of the random initialisation; the number of tokens set."""
    matrix = feature_presence(windows, n_cells, model.spec.vocab_size, first_feature)
    if n_cells > MAX_CELLS:
        keep = np.random.default_rng(seed).choice(n_cells, MAX_CELLS, replace=False)
        matrix = matrix[np.sort(keep)]
    used = np.flatnonzero(matrix.getnnz(axis=0) > 0)
    k = min(model.spec.dims.hidden, MAX_AXES, used.size - 1, matrix.shape[0] - 1)
    if k < 1:
        return 0
    loadings = principal_axes(matrix[:, used].tocsr(), k, seed)
    weight = model.backbone.get_input_embeddings().weight
    with torch.no_grad():
        target_norm = weight[used].norm(dim=1).mean().item()
        scale = target_norm / max(float(np.linalg.norm(loadings, axis=1).mean()), 1e-12)
        rows = torch.zeros(used.size, weight.shape[1], dtype=weight.dtype)
        rows[:, :k] = torch.from_numpy(loadings * scale)
        weight[torch.from_numpy(used)] = rows.to(weight.device)
    return int(used.size)

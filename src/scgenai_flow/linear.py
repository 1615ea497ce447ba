"""The linear member: a multinomial logistic regression on which genes (and ADT features) each
cell expresses, read from its windows and fitted to its optimum beside the transformer networks.
Its log-probabilities and theirs are averaged when cells are decided."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from .contexts import Windows
from .io import InputError
from .vocab import Vocabulary

LINEAR_FILE = "linear_member.npz"
WINDOWS_PER_CHUNK = 65536  # presence is gathered in chunks so memory stays flat in windows


def presence(windows: Windows, n_cells: int, vocab: Vocabulary) -> sp.csr_matrix:
    """Cells x features (genes, then ADT features, in vocabulary order): 1 where the feature's
    token is in any of the cell's windows."""
    column_of = np.full(vocab.size, -1, dtype=np.int64)
    column_of[vocab.feature_tokens(np.arange(vocab.n_features))] = np.arange(vocab.n_features)
    parts = []
    for start in range(0, len(windows), WINDOWS_PER_CHUNK):
        chunk = windows.subset(slice(start, start + WINDOWS_PER_CHUNK))
        columns = column_of[chunk.tokens]  # PAD and bin tokens map to -1
        hit = columns >= 0
        rows = np.broadcast_to(chunk.cell_index[:, None], columns.shape)[hit]
        part = sp.coo_matrix(
            (np.ones(rows.size, dtype=np.float32), (rows, columns[hit])), shape=(n_cells, vocab.n_features)
        ).tocsr()
        part.data[:] = 1.0  # a feature repeated in a cell's windows counts once
        parts.append(part)
    matrix = sum(parts, sp.csr_matrix((n_cells, vocab.n_features), dtype=np.float32))
    matrix.data[:] = 1.0
    return matrix


@dataclass(frozen=True)
class LinearMember:
    """Class weights per feature and class biases of the fitted regression."""

    weights: np.ndarray  # (features, classes)
    bias: np.ndarray  # (classes,)

    def log_probs(self, cells: sp.csr_matrix) -> np.ndarray:
        """Class log-probabilities of each cell (rows of a `presence` matrix)."""
        logits = np.asarray(cells @ self.weights) + self.bias
        shifted = logits - logits.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def save(self, directory: Path) -> None:
        np.savez(directory / LINEAR_FILE, weights=self.weights, bias=self.bias)

    @classmethod
    def load(cls, directory: str | Path, n_features: int, n_classes: int) -> LinearMember | None:
        """The model dir's linear member; None for a model dir without one."""
        path = Path(directory) / LINEAR_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path) as saved:
                member = cls(saved["weights"], saved["bias"])
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{path}: {err}; expected the arrays 'weights' and 'bias'") from err
        if member.weights.shape != (n_features, n_classes) or member.bias.shape != (n_classes,):
            raise InputError(
                f"{path}: weights {member.weights.shape} and bias {member.bias.shape}; expected"
                f" ({n_features}, {n_classes}) and ({n_classes},) for the model's vocabulary"
            )
        return member


def fit_linear(cells: sp.csr_matrix, labels: np.ndarray, n_classes: int, l2: float = 1.0) -> LinearMember:
    """The minimum of the summed cross-entropy plus l2/2 x squared weights (biases free), as
    scikit-learn's LogisticRegression(C=1/l2) fits it: convex, so L-BFGS reaches the one optimum."""
    known = labels >= 0
    coo = cells[known].tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    x = torch.sparse_coo_tensor(indices, coo.data.astype(np.float64), coo.shape, check_invariants=True)
    y = torch.from_numpy(labels[known].astype(np.int64))
    weights = torch.zeros(cells.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weights, bias],
        max_iter=1000,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )
    scale = 1.0 / max(int(known.sum()), 1)  # the mean keeps L-BFGS's tolerances meaningful

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        logits = torch.sparse.mm(x, weights) + bias
        loss = scale * (
            torch.nn.functional.cross_entropy(logits, y, reduction="sum") + 0.5 * l2 * weights.square().sum()
        )
        loss.backward()
        return loss

    optimizer.step(objective)
    return LinearMember(weights.detach().numpy().astype(np.float32), bias.detach().numpy().astype(np.float32))

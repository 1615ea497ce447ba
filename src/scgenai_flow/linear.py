"""The linear member: a multinomial logistic regression on each cell's normalised gene expression
and on which genes (and ADT features) it expresses, read from its windows; fitted by L-BFGS beside
the transformer networks. Its log-probabilities and theirs are averaged when cells are
decided."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from .contexts import Windows
from .io import InputError, read_layer, read_var_names
from .modeldir import LINEAR_FILE
from .preprocess import EXPRESSION_LAYER
from .vocab import Vocabulary

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = ["LinearFit", "LinearMember", "fit_linear", "member_features", "presence", "read_expression"]

WINDOWS_PER_CHUNK = 65536  # presence is gathered in chunks so memory stays flat in windows


def presence(windows: Windows, n_cells: int, vocab: Vocabulary) -> sp.csr_matrix:
    """Cells x features (genes, then ADT features, in vocabulary order): 1 where the feature's
    token is in any of the cell's windows."""
    column_of = np.full(vocab.size, -1, dtype=np.int64)
    column_of[vocab.feature_tokens(np.arange(vocab.n_features))] = np.arange(vocab.n_features)
    rows, columns = [np.empty(0, np.int32)], [np.empty(0, np.int32)]
    for start in range(0, len(windows), WINDOWS_PER_CHUNK):
        chunk = windows.subset(slice(start, start + WINDOWS_PER_CHUNK))
        column = column_of[chunk.tokens]  # PAD and bin tokens map to -1
        hit = column >= 0
        row = np.broadcast_to(chunk.cell_index[:, None], column.shape)[hit]
        part = as_presence(row, column[hit], n_cells, vocab.n_features).tocoo()  # a chunk's repeats merge
        rows.append(part.row.astype(np.int32))
        columns.append(part.col.astype(np.int32))
    return as_presence(np.concatenate(rows), np.concatenate(columns), n_cells, vocab.n_features)


def read_expression(
    h5ad: str | Path, vocab: Vocabulary, n_cells: int, genes: np.ndarray | None = None
) -> sp.csr_matrix:
    """Cells x genes: the normalised values a preprocessed file keeps, columns in vocabulary order
    (`n_cells`: as many as its windows have); zero outside `genes` (a boolean per gene) if given."""
    hint = "a file written by this version's preprocess rule (run it again)"
    matrix = read_layer(h5ad, EXPRESSION_LAYER, hint)
    if matrix.shape[0] != n_cells or not np.array_equal(read_var_names(h5ad), vocab.genes):
        raise InputError(
            f"{h5ad}: {matrix.shape[0]} cells x {matrix.shape[1]} genes; expected the {n_cells} cells of its"
            f" windows and the vocabulary's {vocab.genes.size} genes in order (preprocessed for this model)"
        )
    return matrix if genes is None else sp.csr_matrix(matrix.multiply(genes[None, :].astype(matrix.dtype)))


def member_features(
    windows: Windows, n_cells: int, vocab: Vocabulary, expression: sp.csr_matrix | None = None
) -> sp.csr_matrix:
    """The member's input: the cells' normalised expression (when given) beside their `presence`."""
    found = presence(windows, n_cells, vocab)
    return found if expression is None else sp.hstack([expression, found], format="csr")


def as_presence(rows: np.ndarray, columns: np.ndarray, n_cells: int, n_features: int) -> sp.csr_matrix:
    """A cells x features matrix of ones at the (row, column) pairs, repeats counted once."""
    matrix = sp.csr_matrix(
        (np.ones(rows.size, dtype=np.float32), (rows, columns)), shape=(n_cells, n_features)
    )
    matrix.data[:] = 1.0  # the conversion summed repeats
    return matrix


@dataclass(frozen=True)
class LinearMember:
    """Class weights per feature and class biases of the fitted regression."""

    weights: np.ndarray  # (features, classes)
    bias: np.ndarray  # (classes,)
    expression: bool = False  # the first features are expression values (members of older versions: not)

    def log_probs(self, cells: sp.csr_matrix) -> np.ndarray:
        """Class log-probabilities of each cell (rows of its `member_features`)."""
        logits = np.asarray(cells @ self.weights) + self.bias
        shifted = logits - logits.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def calibrated(self, temperature: float) -> LinearMember:
        """This member with its logits divided by `temperature` (fitted on validation cells)."""
        return replace(self, weights=self.weights / temperature, bias=self.bias / temperature)

    def save(self, directory: Path) -> None:
        np.savez(directory / LINEAR_FILE, weights=self.weights, bias=self.bias, expression=self.expression)

    @classmethod
    def load(cls, directory: str | Path, vocab: Vocabulary) -> LinearMember | None:
        """The model dir's linear member; None for a model dir without one."""
        path = Path(directory) / LINEAR_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path) as saved:
                expression = bool(saved["expression"]) if "expression" in saved.files else False
                member = cls(saved["weights"], saved["bias"], expression)
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{path}: {err}; expected the arrays 'weights' and 'bias'") from err
        n_classes = vocab.classes.size
        n_features = vocab.n_features + (vocab.genes.size if member.expression else 0)
        if member.weights.shape != (n_features, n_classes) or member.bias.shape != (n_classes,):
            raise InputError(
                f"{path}: weights {member.weights.shape} and bias {member.bias.shape}; expected"
                f" ({n_features}, {n_classes}) and ({n_classes},) for the model's vocabulary"
            )
        return member


@dataclass(frozen=True)
class LinearFit:
    """How the member's fit went: L-BFGS iterations, passes over the cells (objective and gradient
    evaluations), the final objective per cell, seconds, and why it stopped."""

    iterations: int
    passes: int
    objective: float
    seconds: float
    stopped: str

    def describe(self) -> str:
        return (
            f"{self.iterations} L-BFGS iterations ({self.passes} passes, {self.seconds:.1f} s),"
            f" objective {self.objective:.4f} per cell: {self.stopped}"
        )


# Held-out macro-F1 of the harness's sets stops changing by 50 iterations (benchmarks/accuracy/RESULTS.md):
# the optimum's last digits take hundreds more passes and change no decision.
MAX_ITERATIONS = 100
ITERATIONS_PER_CHECK = 10
PLATEAU = 1e-3  # stop when 10 iterations lower the objective by less than this share of it
GRADIENT_TOLERANCE = 1e-5  # per cell: converged


def torch_csr(matrix: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor (float32, int32 indices) on `device`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int32, copy=False)),
            torch.from_numpy(matrix.indices.astype(np.int32, copy=False)),
            torch.from_numpy(matrix.data.astype(np.float32, copy=False)),
            size=matrix.shape,
            check_invariants=False,
        ).to(device)


def fit_linear(
    cells: sp.csr_matrix,
    labels: np.ndarray,
    n_classes: int,
    l2: float = 1.0,
    device: torch.device | None = None,
) -> tuple[LinearMember, LinearFit]:
    """Minimise the mean cross-entropy plus l2/2 x squared weights per cell (biases free), the
    objective of scikit-learn's LogisticRegression(C=1/l2), by full-batch L-BFGS in float32 on
    `device` (the training device); stops at a small gradient, a plateau or MAX_ITERATIONS."""
    started = time.perf_counter()
    device = device or torch.device("cpu")
    known = labels >= 0
    x = (
        (cells if known.all() else cells[known]).astype(np.float32, copy=False).tocsr()
    )  # no copy if it is one
    forward, backward = torch_csr(x, device), torch_csr(x.T.tocsr(), device)
    target = torch.from_numpy(labels[known].astype(np.int64)).to(device)
    n_cells = max(int(known.sum()), 1)
    weights = torch.zeros(x.shape[1], n_classes, device=device)
    bias = torch.zeros(n_classes, device=device)
    weights.grad, bias.grad = torch.zeros_like(weights), torch.zeros_like(bias)
    rows = torch.arange(target.numel(), device=device)
    passes = 0

    def closure() -> torch.Tensor:  # the objective; its gradient is set by hand (no autograd)
        nonlocal passes
        passes += 1
        logits = forward @ weights + bias
        loss = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
        residual = torch.softmax(logits, dim=1)
        residual[rows, target] -= 1.0
        weights.grad.copy_((backward @ residual + l2 * weights) / n_cells)
        bias.grad.copy_(residual.sum(dim=0) / n_cells)
        return (loss + 0.5 * l2 * weights.square().sum()) / n_cells

    optimizer = torch.optim.LBFGS(
        [weights, bias], max_iter=ITERATIONS_PER_CHECK, tolerance_grad=GRADIENT_TOLERANCE,
        tolerance_change=0.0, history_size=10, line_search_fn="strong_wolfe",
    )  # fmt: skip
    previous, stopped = float("inf"), f"reached {MAX_ITERATIONS} iterations"
    while True:
        done = optimizer.state[weights].get("n_iter", 0)
        optimizer.param_groups[0]["max_iter"] = min(ITERATIONS_PER_CHECK, MAX_ITERATIONS - done)
        objective = float(optimizer.step(closure))
        iterations = optimizer.state[weights]["n_iter"]
        gradient = max(float(weights.grad.abs().max()), float(bias.grad.abs().max()))
        if gradient <= GRADIENT_TOLERANCE:
            stopped = f"converged (largest gradient {gradient:.1e} per cell)"
            break
        if previous - objective < PLATEAU * objective:
            stopped = (
                f"plateau (the last {ITERATIONS_PER_CHECK} iterations lowered the objective by < {PLATEAU:g})"
            )
            break
        if iterations >= MAX_ITERATIONS:
            break
        previous = objective
    objective = float(closure())
    member = LinearMember(weights.cpu().numpy(), bias.cpu().numpy())
    return member, LinearFit(iterations, passes, objective, time.perf_counter() - started, stopped)

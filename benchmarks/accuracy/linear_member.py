"""The linear member alone, fitted by the package (`fit_linear`) and by the exact solver it replaced
(scipy L-BFGS in float64 to the regularised optimum): held-out macro-F1, accuracy and seconds on
the harness's data sets, with the same windows and expression values for both."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import datasets  # noqa: E402

from scgenai_flow.contexts import load_windows, window_genes  # noqa: E402
from scgenai_flow.linear import fit_linear, member_features, read_expression  # noqa: E402
from scgenai_flow.metrics import macro_f1  # noqa: E402
from scgenai_flow.vocab import Vocabulary  # noqa: E402

REPO = HERE.parents[1]
PARTS = {"train": "train", "val": "val", "test": "predict"}


def exact_fit(x: sp.csr_matrix, labels: np.ndarray, n_classes: int, l2: float = 1.0) -> np.ndarray:
    """The previous solver: full-batch L-BFGS-B in float64, 500 iterations; returns logits' weights
    stacked over the bias row."""
    known = labels >= 0
    x = x[known].astype(np.float64).tocsr()
    onehot = np.eye(n_classes)[labels[known]]
    n_features = x.shape[1]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights, bias = theta[:-n_classes].reshape(n_features, n_classes), theta[-n_classes:]
        logits = np.asarray(x @ weights) + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(axis=1, keepdims=True))
        residual = np.exp(logits - log_norm) - onehot
        loss = float(-(onehot * (logits - log_norm)).sum() + 0.5 * l2 * (weights**2).sum())
        return loss, np.concatenate([(x.T @ residual + l2 * weights).ravel(), residual.sum(axis=0)])

    start = np.zeros(n_features * n_classes + n_classes)
    options = {"maxiter": 500, "gtol": 1e-6, "ftol": 1e-12}
    theta = minimize(objective, start, jac=True, method="L-BFGS-B", options=options).x
    return np.vstack([theta[:-n_classes].reshape(n_features, n_classes), theta[-n_classes:]])


def contexts(args, workdir: Path) -> Path:
    """Split the data set as the harness does and let the workflow build windows and
    preprocessed files for train, val and test; the results folder."""
    split = datasets.split_dataset(args)
    paths = datasets.write_split(split, args.label, workdir / "data")
    results = workdir / "results"
    data = {"train": str(paths["train"]), "val": str(paths["val"]), "predict": str(paths["test"])}
    overrides = {"results": str(results), "seed": args.seed,
                 "data": {**data, "target_feature": args.label, "use_raw": False}}  # fmt: skip
    (workdir / "linear.yaml").write_text(json.dumps(overrides))
    targets = [str(results / f"contexts/{p}.npz") for p in PARTS.values()]
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               *targets, "--cores", "2", "--quiet", "all",
               "--configfile", str(REPO / "config/config.yaml"), str(workdir / "linear.yaml")]  # fmt: skip
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return results


def features(results: Path, vocab: Vocabulary, part: str) -> tuple[sp.csr_matrix, np.ndarray]:
    windows, labels = load_windows(results / f"contexts/{part}.npz")
    genes = window_genes(vocab, "random", results / "vocab")
    values = read_expression(results / f"preprocessed/{part}.h5ad", vocab, labels.size, genes)
    return member_features(windows, labels.size, vocab, values), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--seed", type=int, default=1314521)
    parser.add_argument("--max-cells", type=int)
    parser.add_argument("--top-genes", type=int)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.train_file = args.test_file = args.val_file = None
    args.val_fraction = args.test_fraction = 0.15
    results = contexts(args, args.out)
    vocab = Vocabulary.load(results / "vocab")
    (x, y), (x_test, y_test) = features(results, vocab, "train"), features(results, vocab, "predict")
    k = vocab.classes.size
    started = time.perf_counter()
    stacked = exact_fit(x, y, k)
    exact_s = time.perf_counter() - started
    member, fit = fit_linear(x, y, k)
    rows = {}
    for name, weights, bias, seconds in (
        ("exact L-BFGS (before)", stacked[:-1], stacked[-1], exact_s),
        ("fit_linear (torch L-BFGS)", member.weights, member.bias, fit.seconds),
    ):
        predicted = np.asarray(x_test @ weights + bias).argmax(axis=1)
        accuracy = float((predicted == y_test).mean())
        rows[name] = {"macro_f1": macro_f1(y_test, predicted, k), "accuracy": accuracy, "seconds": seconds}
    report = {"dataset": args.dataset, "label": args.label, "seed": args.seed, "train_cells": int(y.size),
              "features": int(x.shape[1]), "values": int(x.nnz), "fit": fit.describe(),
              "methods": rows}  # fmt: skip
    (args.out / "linear_member.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

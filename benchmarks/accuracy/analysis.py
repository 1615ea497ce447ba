"""Candidates measured on finished runs of run.py, without retraining: how a cell's windows are
combined (the workflow's best window, mean log-probability, mean probability), temperature
scaling fitted on the validation cells, and the training class prior divided out; for the best
and the last model of each run.

    .venv/bin/python benchmarks/accuracy/analysis.py benchmarks/out/accuracy/RUN/runs/default ... \
        --out benchmarks/out/accuracy/RUN/candidates
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

AGGREGATIONS = ("best_window", "mean_log_prob", "mean_prob")
TEMPERATURES = np.exp(np.linspace(np.log(0.2), np.log(10.0), 121))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def cell_distributions(log_probs: np.ndarray, cell_index: np.ndarray, n_cells: int, how: str) -> np.ndarray:
    """One class distribution per cell from its windows' log-probabilities."""
    from scgenai_flow.predict import first_windows, predict_cells

    if how == "best_window":  # the workflow's rule: the window with the highest top probability
        return np.exp(log_probs[predict_cells(np.exp(log_probs), cell_index, n_cells).window])
    first = first_windows(cell_index, n_cells)
    counts = np.diff(np.append(first, cell_index.size))[:, None]
    if how == "mean_log_prob":
        return softmax(np.add.reduceat(log_probs, first, axis=0) / counts)
    if how == "mean_prob":
        return np.add.reduceat(np.exp(log_probs), first, axis=0) / counts
    raise ValueError(how)


def tempered(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    """Window log-probabilities after dividing the logits by `temperature`."""
    scaled = log_probs / temperature  # log-softmax differs from the logits by a per-row constant
    top = scaled.max(axis=1, keepdims=True)
    return scaled - top - np.log(np.exp(scaled - top).sum(axis=1, keepdims=True))


def scores(dist: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from scgenai_flow.metrics import balanced_accuracy, expected_calibration_error, macro_f1

    predicted, n = dist.argmax(1), dist.shape[1]
    return {
        "accuracy": float((predicted == labels).mean()),
        "macro_f1": macro_f1(labels, predicted, n),
        "balanced_accuracy": balanced_accuracy(labels, predicted, n),
        "ece": expected_calibration_error(dist.max(1), predicted == labels),
        "nll": float(-np.log(np.clip(dist[np.arange(labels.size), labels], 1e-12, None)).mean()),
    }


def split_log_probs(results: Path, split: str, model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window log-probabilities of a split, window -> cell, and the cell labels."""
    import torch

    from scgenai_flow.contexts import load_windows
    from scgenai_flow.predict import window_probabilities

    windows, labels = load_windows(results / "contexts" / f"{split}.npz")
    if (labels < 0).any():
        raise ValueError(f"{results}/contexts/{split}.npz: unlabelled cells")
    probs = window_probabilities(model, windows, 64, torch.device("cpu"))
    return np.log(np.clip(probs, 1e-30, None)), windows.cell_index, labels


def training_prior(results: Path, n_classes: int) -> np.ndarray:
    """Class shares of the training windows (what the window-level loss sees)."""
    from scgenai_flow.contexts import load_windows

    windows, labels = load_windows(results / "contexts" / "train.npz")
    counts = np.bincount(labels[windows.cell_index], minlength=n_classes)
    return np.maximum(counts, 1) / counts.sum()


def analyse(run: Path, model_name: str) -> list[dict]:
    """Every aggregation of a model's windows: as trained (T = 1), with the temperature
    that minimises the validation cells' NLL, and with the training class prior divided out
    (p(c|x) / prior(c): the post-hoc counterpart of a class-weighted loss)."""
    import torch

    from scgenai_flow.models import load_model

    torch.set_num_threads(1)
    results = run / "results"
    model = load_model(results / "model" / model_name)
    val, test = (split_log_probs(results, s, model) for s in ("val", "predict"))
    log_prior = np.log(training_prior(results, val[0].shape[1]))
    rows = []
    for how in AGGREGATIONS:

        def dist(part, t: float, prior: bool = False, how: str = how) -> np.ndarray:
            log_probs, cells, labels = part
            adjusted = tempered(log_probs - log_prior if prior else log_probs, 1.0 if prior else t)
            return cell_distributions(adjusted, cells, labels.size, how)

        nll = [scores(dist(val, t), val[2])["nll"] for t in TEMPERATURES]
        fitted = float(TEMPERATURES[int(np.argmin(nll))])
        for variant, t, prior in (
            ("as trained", 1.0, False),
            ("T fitted on val", fitted, False),
            ("prior divided out", 1.0, True),
        ):
            row = {
                "run": f"{run.name} {model_name}",
                "aggregation": how,
                "variant": variant,
                "temperature": round(t, 3),
            }
            row.update({f"val_{k}": v for k, v in scores(dist(val, t, prior), val[2]).items()})
            row.update({f"test_{k}": v for k, v in scores(dist(test, t, prior), test[2]).items()})
            rows.append(row)
    return rows


def distinct_models(run: Path, names: list[str]) -> list[str]:
    """The named model dirs of a run, without one whose weights equal an earlier one's
    (best_model is last_model when the last epoch was the best)."""
    import filecmp

    kept: list[str] = []
    for name in names:
        weights = run / "results" / "model" / name / "scGenAI_model.pt"
        if not any(
            filecmp.cmp(weights, run / "results" / "model" / k / "scGenAI_model.pt", shallow=False)
            for k in kept
        ):
            kept.append(name)
    return kept


def paired(table: pd.DataFrame) -> pd.DataFrame:
    """Per candidate, the mean change against the workflow's rule (best window, as trained) on
    the same model, and on how many models macro-F1 rose / fell (val: T is fitted there)."""
    base = table[(table["aggregation"] == "best_window") & (table["variant"] == "as trained")]
    rows = {}
    for (how, variant), part in table.groupby(["aggregation", "variant"], sort=False):
        delta = part.drop(columns=["aggregation", "variant", "temperature"]) - base.loc[part.index].drop(
            columns=["aggregation", "variant", "temperature"]
        )
        row = {
            f"d_{k}": delta[k].mean() for k in ("test_accuracy", "test_macro_f1", "test_ece", "val_macro_f1")
        }
        row["test_macro_f1 up/down"] = (
            f"{(delta['test_macro_f1'] > 1e-9).sum()}/{(delta['test_macro_f1'] < -1e-9).sum()}"
        )
        rows[f"{how}, {variant}"] = row
    frame = pd.DataFrame(rows).T
    frame.index.name = f"change vs best window ({base.shape[0]} models)"
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run dirs: OUT/runs/CONFIG of run.py")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.csv and OUT.md")
    parser.add_argument(
        "--models", nargs="+", default=["best_model", "last_model"], help="model dirs of each run"
    )
    args = parser.parse_args(argv)
    from report import markdown

    rows = [
        row for run in args.runs for model in distinct_models(run, args.models) for row in analyse(run, model)
    ]
    table = pd.DataFrame(rows).set_index("run")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out.with_suffix(".csv"))
    metrics = ("accuracy", "macro_f1", "balanced_accuracy", "ece", "nll")
    columns = ["aggregation", "variant", "temperature", *(f"test_{k}" for k in metrics)]
    mean = table.groupby(["aggregation", "variant"], sort=False)[columns[2:]].mean()
    mean.index = [f"{a}, {v}" for a, v in mean.index]
    mean.index.name = f"mean over {table.index.nunique()} models"
    text = markdown(table[columns]) + "\n" + markdown(mean) + "\n" + markdown(paired(table))
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

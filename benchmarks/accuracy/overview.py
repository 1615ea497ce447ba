"""One row per harness run (an `--out` of run.py): test macro-F1 (ECE) of our config, its linear
member alone, logistic regression and CellTypist; ours minus the best baseline and minus the
linear member alone (macro-F1), and minus logistic regression (ECE), each with its 95% interval
over bootstrap resamples of the test cells; the decision predict fitted; training seconds.

    .venv/bin/python benchmarks/accuracy/overview.py OUT1 OUT2 ... [--config default]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def interval(row: pd.Series, metric: str) -> str:
    return f"{row[metric]:+.3f} [{row[f'{metric}_low']:+.3f}, {row[f'{metric}_high']:+.3f}]"


def overview_row(out: Path, config: str) -> dict[str, str]:
    metrics = pd.read_csv(out / "metrics.csv", index_col=0)
    paired = pd.read_csv(out / "paired_cells.csv")
    paired = paired[paired["method"] == f"ours:{config}"]
    best = paired[paired["best_baseline"]].iloc[0]
    alone = paired[paired["versus"] == f"ours:{config}:linear"].iloc[0]
    logreg = paired[paired["versus"] == "logreg"].iloc[0]
    test_cells = int(pd.read_csv(out / "per_class_f1.csv")["test_cells"].sum())

    def scored(method: str) -> str:
        return f"{metrics.loc[method, 'macro_f1']:.3f} ({metrics.loc[method, 'ece']:.3f})"

    ours = metrics.loc[f"ours:{config}"]
    return {
        "run": out.name,
        "test cells": str(test_cells),
        "ours": scored(f"ours:{config}"),
        "linear member alone": scored(f"ours:{config}:linear"),
        "logreg": scored("logreg"),
        "CellTypist": scored("celltypist"),
        "ours - best baseline (F1)": f"{interval(best, 'macro_f1')} ({best['versus']})",
        "ours - linear alone (F1)": interval(alone, "macro_f1"),
        "ours - logreg (ECE)": interval(logreg, "ece"),
        "weight / adjustment": f"{ours['linear_weight']:g} / {ours['logit_adjustment']:g}",
        "train s: ours / logreg": f"{ours['train_s']:.0f} / {metrics.loc['logreg', 'train_s']:.1f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("outs", nargs="+", type=Path)
    parser.add_argument("--config", default="default")
    args = parser.parse_args()
    rows = [overview_row(out, args.config) for out in args.outs]
    header = list(rows[0])
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(row[key] for key in header) + " |")


if __name__ == "__main__":
    main()

"""Summarise harness runs over several splits: mean and spread per method, and ours against
the best baseline split by split (paired), so that a difference can be told from split noise.

    .venv/bin/python benchmarks/accuracy/summary.py OUT [MORE ...] [--to DIR]   # */seed_*/metrics.csv

Several OUT dirs of the same data set (e.g. runs of other configs on the same seeds) are joined;
a method seen twice on one split (the baselines) counts once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import report
from scipy.stats import t as student_t

BASELINES = ("logreg", "celltypist")
# Metrics compared paired by split, and their tables.
PAIRED = {"macro_f1": "paired.csv", "ece": "paired_ece.csv"}
LOWER_IS_BETTER = {"ece"}


def collect(outs: list[Path]) -> pd.DataFrame:
    """All `seed_*/metrics.csv` under the `outs`, one row per (split, method)."""
    frames = [
        pd.read_csv(path).assign(split=path.parent.name.removeprefix("seed_"))
        for out in outs
        for path in sorted(out.glob("seed_*/metrics.csv"))
    ]
    if not frames:
        raise SystemExit(
            f"{', '.join(map(str, outs))}: no seed_*/metrics.csv; expected run.py --seeds output"
        )
    return pd.concat(frames, ignore_index=True).drop_duplicates(["split", "method"])


def per_method(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample standard deviation of each metric over the splits a method ran on."""
    grouped = rows.groupby("method", sort=False)
    table = pd.DataFrame({"splits": grouped.size()})
    for metric in (m for m in (*report.COLUMNS, *report.VALIDATION_COLUMNS) if m in rows):
        table[f"{metric}_mean"] = grouped[metric].mean()
        table[f"{metric}_sd"] = grouped[metric].std(ddof=1)
    return table


def paired(rows: pd.DataFrame, metric: str = "macro_f1", versus: str | None = None) -> pd.DataFrame:
    """Each of our configs minus the best baseline (highest mean macro-F1), or minus the method
    `versus`, in `metric` on the splits both ran on."""
    wide = rows.pivot(index="split", columns="method", values=metric)
    f1 = rows.pivot(index="split", columns="method", values="macro_f1")
    baselines = [b for b in BASELINES if b in wide]
    if (versus is None and not baselines) or (versus is not None and versus not in wide):
        return pd.DataFrame()
    best = versus or max(baselines, key=lambda b: f1[b].mean())
    out = []
    for method in (m for m in wide if m.startswith("ours:") and m != best):
        diff = (wide[method] - wide[best]).dropna()
        n = diff.size
        half = student_t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
        out.append(
            {
                "method": method,
                "versus": best,
                "splits": n,
                f"{metric}_difference": diff.mean(),
                "ci95_low": diff.mean() - half,
                "ci95_high": diff.mean() + half,
                "splits_at_least_as_good": int((diff <= 0 if metric in LOWER_IS_BETTER else diff >= 0).sum()),
            }
        )
    return pd.DataFrame(out).set_index("method") if out else pd.DataFrame()


def write_summary(out: Path, more: tuple[Path, ...] = ()) -> str:
    """summary.{csv,md} (per method) and paired.{csv,md} in `out`, over the splits of `out` and
    `more`; returns the Markdown."""
    rows = collect([out, *more])
    methods = per_method(rows)
    versus = {metric: paired(rows, metric) for metric in PAIRED}
    methods.to_csv(out / "summary.csv")
    text = f"splits: {', '.join(sorted(rows['split'].unique()))}\n\n" + report.markdown(
        methods.astype(object)
    )
    for metric, table in versus.items():
        if table.empty:
            continue
        table.to_csv(out / PAIRED[metric])
        text += f"\nours minus the best baseline, paired by split ({metric}, 95% t interval):\n\n"
        text += report.markdown(table.astype(object))
    (out / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("outs", type=Path, nargs="+", help="run.py --seeds output dirs")
    parser.add_argument("--to", type=Path, help="where the tables go (default: the first dir)")
    args = parser.parse_args(argv)
    target = args.to or args.outs[0]
    target.mkdir(parents=True, exist_ok=True)
    print(write_summary(target, tuple(o for o in args.outs if o != target)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The whole workflow at growing cell numbers: synthetic cells through every stage (preprocess,
vocabulary, contexts, training steps, the linear member, validation, prediction, the prediction
report), each in its own process, with its seconds, peak RSS and growth per 10x cells.

Reuses `stages.py` for the first stages; the package's public functions for the others.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import stages  # benchmarks/ is sys.path[0] when this file runs as a script

SCALE_STAGES = (
    "preprocess",
    "vocabulary",
    "contexts",
    "train",
    "linear_member",
    "validate",
    "predict",
    "report",
)
MODEL_DIR = "model"
VAL_SHARE = 0.1  # the first 10% of the cells stand in for validation cells


def model_config(spec: dict) -> dict:
    """The default config's model with the benchmark's backbone and size."""
    import yaml

    from scgenai_flow.config import with_defaults

    repo = Path(__file__).resolve().parents[1]
    config = with_defaults(yaml.safe_load((repo / "config/config.yaml").read_text()) or {})
    config["model"].update(backbone=spec["backbone"], size=spec["size"])
    return config


def run_stage(spec: dict) -> dict:
    """One stage in this process (the child side): the three data stages come from stages.py."""
    if spec["stage"] not in ("train", "validate", "predict", "report"):
        return stages.run_stage(spec)
    import numpy as np
    import torch

    from scgenai_flow.contexts import load_windows

    imported = time.perf_counter()
    work = Path(spec["workdir"])
    torch.set_num_threads(spec["threads"])
    windows, labels = load_windows(work / "contexts_random.npz", mapped=True)
    if spec["stage"] == "train":
        detail = train_steps(spec, work, windows, labels)
    elif spec["stage"] == "validate":
        from scgenai_flow.models import load_model
        from scgenai_flow.train import LabelledWindows, evaluate

        n_val = max(1, int(labels.size * VAL_SHARE))
        val = LabelledWindows(windows.subset(np.flatnonzero(windows.cell_index < n_val)), labels[:n_val])
        started = time.perf_counter()
        metrics = evaluate(load_model(work / MODEL_DIR), val, 64, torch.device("cpu"))
        rate = len(val.windows) / (time.perf_counter() - started)
        accuracy = metrics["Validation Accuracy"]
        detail = (
            f"{n_val:,} cells, {len(val.windows):,} windows, {rate:,.0f} windows/s, accuracy {accuracy:.3f}"
        )
    elif spec["stage"] == "predict":
        from scgenai_flow.predict import predict_from_files

        started = time.perf_counter()
        predict_from_files(
            str(work / "contexts_random.npz"), str(work / "preprocessed.h5ad"), str(work / MODEL_DIR),
            64, 0, spec["threads"], str(work / "predictions.csv"),
        )  # fmt: skip
        rate = len(windows) / (time.perf_counter() - started)
        detail = f"{labels.size:,} cells, {len(windows):,} windows, {rate:,.0f} windows/s"
    else:
        from scgenai_flow.annotate import PredictionOutputs, report_predictions

        outputs = PredictionOutputs(
            *(str(work / f"report.{e}") for e in ("h5ad", "umap.png", "csv", "confusion.png"))
        )
        report_predictions(str(work / "predictions.csv"), spec["h5ad"], False, spec["target"], 0, outputs)
        detail = f"{labels.size:,} cells"
    cells, _, nnz = stages.matrix_size(work / "preprocessed.h5ad")
    return {"imported": imported, "cells": cells, "nnz": nnz, "detail": detail}


def train_steps(spec: dict, work: Path, windows, labels) -> str:
    """A fixed number of optimiser steps on seeded random batches of the windows (memory-mapped),
    then the network written as a model dir for the later stages."""
    import numpy as np
    import torch

    from scgenai_flow.predict import batch_tensors
    from scgenai_flow.train import new_model, write_model_dir
    from scgenai_flow.vocab import Vocabulary

    config = model_config(spec)
    vocab = Vocabulary.load(work / "vocab")
    model = new_model(config, vocab, int(windows.tokens.shape[1]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    window_labels = torch.from_numpy(labels[windows.cell_index].astype(np.int64))
    rng = np.random.default_rng(0)
    model.train()
    started, tokens = time.perf_counter(), 0
    for _ in range(spec["steps"]):
        idx = np.sort(rng.choice(len(windows), spec["batch_size"], replace=False))
        ids, lengths = batch_tensors(windows, idx, torch.device("cpu"))
        loss = torch.nn.functional.cross_entropy(model(ids, lengths), window_labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tokens += int(lengths.sum())
    seconds = time.perf_counter() - started
    write_model_dir(work / MODEL_DIR, model, work / "vocab", config)
    rate = spec["steps"] * spec["batch_size"] / seconds
    return (
        f"{spec['steps']} steps of {spec['batch_size']} windows: {rate:,.1f} windows/s,"
        f" {tokens / seconds:,.0f} tokens/s ({spec['backbone']}/{spec['size']})"
    )


def growth(rows: list[dict]) -> dict[tuple[str, int], tuple[float, float]]:
    """Per stage and size: seconds and peak RSS divided by the previous size's, per 10x cells."""
    import math

    factors = {}
    for stage in SCALE_STAGES:
        runs = sorted((r for r in rows if r["stage"] == stage), key=lambda r: r["cells_asked"])
        for before, after in zip(runs, runs[1:]):
            decades = math.log10(after["cells_asked"] / before["cells_asked"])
            factors[stage, after["cells_asked"]] = (
                (after["seconds"] / before["seconds"]) ** (1 / decades),
                (after["peak_rss_mib"] / before["peak_rss_mib"]) ** (1 / decades),
            )
    return factors


def markdown(rows: list[dict]) -> str:
    """The results as a Markdown table, growth per 10x cells beside each stage."""
    factors = growth(rows)
    lines = [
        "| cells | stage | seconds | peak RSS MiB | time growth per 10x | RSS growth per 10x | detail |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        time_x, rss_x = factors.get((r["stage"], r["cells_asked"]), (None, None))
        show = lambda v: f"{v:.1f}x" if v is not None else ""  # noqa: E731
        lines.append(
            f"| {r['cells_asked']:,} | {r['stage']} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f}"
            f" | {show(time_x)} | {show(rss_x)} | {r['detail']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--nnz-per-cell", type=float, default=500)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50, help="training steps (fixed, whatever the cells)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backbone", default="llama")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--max-growth", type=float, help="fail if a stage grows more per 10x cells")
    parser.add_argument("--max-rss-mib", type=float, help="fail if a stage peaks above this")
    args = parser.parse_args(argv)
    rows = []
    for cells in args.cells:
        work = (args.workdir / f"cells_{cells}").resolve()
        work.mkdir(parents=True, exist_ok=True)
        h5ad = work / "synthetic.h5ad"
        common = {"workdir": str(work), "h5ad": str(h5ad), "max_length": 256, "min_cells": 10,
                  "num_bins": 10, "target": "celltype", "steps": args.steps, "batch_size": args.batch_size,
                  "threads": args.threads, "backbone": args.backbone, "size": args.size}  # fmt: skip
        if not h5ad.is_file():
            generate = {"cells": cells, "genes": args.genes, "nnz_per_cell": args.nnz_per_cell}
            stages.launch({**common, **generate, "classes": args.classes, "seed": 0, "stage": "generate"})
        for stage in SCALE_STAGES:
            row = stages.launch({**common, "stage": stage}, Path(__file__))
            rows.append({**row, "cells_asked": cells})
            print(
                f"{cells:,} cells, {stage}: {row['seconds']:.1f} s, {row['peak_rss_mib']:.0f} MiB;",
                row["detail"],
                flush=True,
            )
    table = markdown(rows)
    print(table)
    (args.workdir / "scale.md").write_text(table + "\n")
    (args.workdir / "scale.json").write_text(json.dumps(rows, indent=1))
    failures = [
        f"{stage} at {cells:,} cells grows {time_x:.1f}x / {rss_x:.1f}x per 10x cells"
        for (stage, cells), (time_x, rss_x) in growth(rows).items()
        if args.max_growth is not None and max(time_x, rss_x) > args.max_growth
    ] + [
        f"{r['stage']} at {r['cells_asked']:,} cells: peak RSS {r['peak_rss_mib']:.0f} MiB"
        for r in rows
        if args.max_rss_mib is not None and r["peak_rss_mib"] > args.max_rss_mib
    ]
    for failure in failures:
        print(f"TARGET MISSED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        stages.child(sys.argv[2], run_stage)
    else:
        sys.exit(main())

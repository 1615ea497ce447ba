"""Screen a training change on a harness run's saved windows: train with the package's own
`fit` (the workflow's loop, best_model rule included) and score the test cells after every
epoch and with the kept network (test scores are for screening only; the workflow never looks
at test cells).

    .venv/bin/python benchmarks/accuracy/screen.py RUN_DIR --seed 1 --out OUT \
        --set train.learning_rate=2e-3 --set model.dropout=0.2 [--device cuda] [--save DIR]

RUN_DIR is a harness run (`run.py --out .../runs/NAME`) whose `results/contexts/{train,val,
predict}.npz` and `results/vocab` exist. The settings are config/config.yaml with `--set`
overrides (YAML values; model and train keys only: the windows are fixed). OUT receives
`epochs.csv` (per epoch: loss, validation and test metrics), `kept.json` (the kept network's
epochs and test metrics) and `scores.npz` (its validation and test cell log-scores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from scgenai_flow.config import with_defaults
from scgenai_flow.contexts import load_windows
from scgenai_flow.metrics import macro_f1
from scgenai_flow.predict import cell_log_scores, window_probabilities
from scgenai_flow.runtime import seed_everything
from scgenai_flow.train import LabelledWindows, fit, initial_model, train_settings
from scgenai_flow.vocab import Vocabulary

REPO = Path(__file__).resolve().parents[2]
SETTABLE = ("model", "train")


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--seed", type=int, required=True, help="the workflow seed (init, batches)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save", type=Path, help="save each epoch's weights here (epoch_E.pt)")
    return parser.parse_args(argv)


def screen_config(overrides: list[str], seed: int) -> dict:
    """config/config.yaml (over the schema's defaults) with `section.key=value` overrides of the
    model and train sections."""
    config = with_defaults(yaml.safe_load((REPO / "config" / "config.yaml").read_text()) or {})
    for item in overrides:
        name, sep, value = item.partition("=")
        section, _, key = name.partition(".")
        if not sep or section not in SETTABLE or not key:
            raise SystemExit(f"--set {item!r}: expected model.KEY=VALUE or train.KEY=VALUE")
        config[section][key] = yaml.safe_load(value)
    return config | {"seed": seed}


def cell_scores(model: torch.nn.Module, data: LabelledWindows, device: torch.device) -> np.ndarray:
    """Each cell's mean-log-probability class scores (the workflow's default cell rule)."""
    probs = window_probabilities(model, data.windows, 64, device)
    return cell_log_scores(probs, data.windows.cell_index, data.n_cells, "mean")[0]


def test_metrics(scores: np.ndarray, data: LabelledWindows) -> dict[str, float]:
    label = scores.argmax(axis=1)
    return {
        "test_accuracy": float((label == data.cell_labels).mean()),
        "test_macro_f1": macro_f1(data.cell_labels, label, scores.shape[1]),
    }


def main(argv: list[str]) -> int:
    args = arguments(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = screen_config(args.set, args.seed)
    results = args.run / "results"
    train, val, test = (
        LabelledWindows(*load_windows(results / "contexts" / f"{part}.npz"))
        for part in ("train", "val", "predict")
    )
    seed_everything(args.seed)
    max_length = int(train.windows.tokens.shape[1])
    model = initial_model(config, Vocabulary.load(results / "vocab"), train, max_length)
    settings = train_settings(config, config["train"])
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def progress(history: pd.DataFrame) -> None:
        """After each epoch: the live model's test metrics."""
        row = history.iloc[-1].to_dict() | test_metrics(cell_scores(model, test, device), test)
        rows.append(row)
        print(pd.DataFrame([row]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
        pd.DataFrame(rows).to_csv(args.out / "epochs.csv", index=False)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), args.save / f"epoch_{len(rows)}.pt")

    started = time.perf_counter()
    best = fit(model, train, val, settings, device, progress).best
    seconds = time.perf_counter() - started
    kept = {"epochs": best.epochs, "validation": best.metrics}
    kept |= {"val": cell_scores(best.model, val, device), "test": cell_scores(best.model, test, device)}
    labels = {"val_labels": val.cell_labels, "test_labels": test.cell_labels}
    np.savez(args.out / "scores.npz", val=kept["val"], test=kept["test"], **labels)
    summary = {"settings": args.set, "seed": args.seed, "epochs": kept["epochs"], "train_s": seconds}
    summary |= {"validation": kept["validation"]} | test_metrics(kept["test"], test)
    (args.out / "kept.json").write_text(json.dumps(summary, indent=1))
    print(
        f"kept epochs {kept['epochs']}: test macro-F1 {summary['test_macro_f1']:.3f},"
        f" accuracy {summary['test_accuracy']:.3f} ({seconds:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

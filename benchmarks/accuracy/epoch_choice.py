"""Which network to keep, measured on screen runs saved with `screen.py --save`: the test
macro-F1 of the best validation epoch, of the lowest validation loss, and of the mean weights
(or mean log-probabilities) of the 3 best or of the last half of the epochs, for each epoch
budget (the first N epochs of the run).

    .venv/bin/python benchmarks/accuracy/epoch_choice.py SCREEN_DIR HARNESS_DIR --budgets 10,20

SCREEN_DIR holds `w_SEED/epoch_E.pt` (one `screen.py --save SCREEN_DIR/w_SEED --seed SEED` per
split); HARNESS_DIR is the harness `--out` whose `seed_SEED/runs/NAME/results` gave the windows.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import torch

from scgenai_flow.checkpoint import RankedEpoch, averaged_weights
from scgenai_flow.contexts import load_windows
from scgenai_flow.metrics import macro_f1, selection_key
from scgenai_flow.predict import cell_log_scores, window_probabilities
from scgenai_flow.train import LabelledWindows, new_model
from scgenai_flow.vocab import Vocabulary

CPU = torch.device("cpu")
MODEL = {"backbone": "llama", "size": "tiny", "dropout": 0.1, "pooling": "mean", "pair_input": "summed"}


def cell_scores(model: torch.nn.Module, data: LabelledWindows) -> tuple[np.ndarray, float]:
    """Mean-log-probability cell scores and the window loss."""
    probs = window_probabilities(model, data.windows, 64, CPU)
    picked = probs[np.arange(len(data.windows)), data.window_labels]
    scores, _ = cell_log_scores(probs, data.windows.cell_index, data.n_cells, "mean")
    return scores, float(-np.log(np.clip(picked, 1e-12, None)).mean())


def split_results(weights_dir: Path, results: Path, budgets: list[int]) -> dict[tuple[int, str], float]:
    """Test macro-F1 of each way of choosing, per epoch budget, on one split."""
    val, test = (LabelledWindows(*load_windows(results / f"contexts/{p}.npz")) for p in ("val", "predict"))
    model = new_model({"model": MODEL}, Vocabulary.load(results / "vocab"), int(val.windows.tokens.shape[1]))
    epochs = sorted(int(re.findall(r"\d+", p.name)[0]) for p in weights_dir.glob("epoch_*.pt"))
    states = {e: torch.load(weights_dir / f"epoch_{e}.pt") for e in epochs}

    def scored(weights: dict) -> tuple[np.ndarray, float, np.ndarray]:
        model.load_state_dict(weights)
        val_scores, val_loss = cell_scores(model, val)
        return val_scores, val_loss, cell_scores(model, test)[0]

    def test_f1(scores: np.ndarray) -> float:
        return macro_f1(test.cell_labels, scores.argmax(1), scores.shape[1])

    def mean_weights(chosen: list[int]) -> float:
        return test_f1(scored(averaged_weights([RankedEpoch((), e, states[e]) for e in chosen]))[2])

    each = {e: scored(states[e]) for e in epochs}
    val_metrics = {
        e: {
            "Validation Accuracy": float((each[e][0].argmax(1) == val.cell_labels).mean()),
            "Validation Macro F1": macro_f1(val.cell_labels, each[e][0].argmax(1), each[e][0].shape[1]),
            "Validation Loss": each[e][1],
        }
        for e in epochs
    }
    out = {}
    for n in (b for b in budgets if b <= len(epochs)):
        key = {e: (selection_key(val_metrics[e], "macro_f1"), -e) for e in epochs[:n]}
        ranked = sorted(key, key=key.__getitem__, reverse=True)
        out |= {
            (n, "best epoch (macro-F1)"): test_f1(each[ranked[0]][2]),
            (n, "lowest validation loss"): test_f1(each[min(epochs[:n], key=lambda e: each[e][1])][2]),
            (n, "mean weights, 3 best"): mean_weights(ranked[:3]),
            (n, "mean weights, last half"): mean_weights(epochs[n // 2 : n]),
            (n, "mean log-probability, 3 best"): test_f1(sum(each[e][2] for e in ranked[:3])),
        }
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("screen", type=Path)
    parser.add_argument("harness", type=Path)
    parser.add_argument("--budgets", default="10,20")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    budgets = [int(b) for b in args.budgets.split(",")]
    table: dict[tuple[int, str], list[float]] = {}
    for weights_dir in sorted(args.screen.glob("w_*")):
        seed = weights_dir.name.removeprefix("w_")
        results = next((args.harness / f"seed_{seed}" / "runs").iterdir()) / "results"
        for key, value in split_results(weights_dir, results, budgets).items():
            table.setdefault(key, []).append(value)
    print("| epochs | kept network | mean test macro-F1 | per split |\n| --- | --- | --- | --- |")
    for (n, rule), values in sorted(table.items()):
        print(f"| {n} | {rule} | {np.mean(values):.3f} | {' '.join(f'{v:.3f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Screen one training change at a time on a harness run's saved windows: train with the
package's model and training step, and score the validation and test cells after every epoch
(test scores per epoch are for screening only; the workflow never looks at test cells).

    .venv/bin/python benchmarks/accuracy/screen.py RUN_DIR --pooling mean --class-weight sqrt

RUN_DIR is a harness run (`--out .../runs/NAME`) whose `results/contexts/{train,val,predict}.npz`
and `results/vocab` exist; the last lines give the mean test macro-F1 over epochs 5-10.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from scgenai_flow.contexts import load_windows
from scgenai_flow.metrics import macro_f1
from scgenai_flow.models import CellClassifier
from scgenai_flow.predict import predict_cells, window_probabilities
from scgenai_flow.runtime import seed_everything
from scgenai_flow.train import LabelledWindows, TrainSettings, class_weights, initial_model, train_epoch
from scgenai_flow.vocab import Vocabulary

CPU = torch.device("cpu")


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--pooling", default="mean", choices=["mean", "last"])
    parser.add_argument("--gene-init", default="coexpression", choices=["coexpression", "random"])
    parser.add_argument("--pair-input", default="summed", choices=["summed", "interleaved"])
    parser.add_argument("--class-weight", default="sqrt", choices=["none", "sqrt", "balanced"])
    parser.add_argument("--lr-schedule", default="constant", choices=["constant", "warmup_cosine"])
    parser.add_argument("--gene-dropout", type=float, default=0.0)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--resample-windows", action="store_true")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1314521)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the per-epoch table here (CSV)")
    parser.add_argument("--save", type=Path, help="save each epoch's weights here (epoch_E.pt)")
    return parser.parse_args(argv)


def scores(model: CellClassifier, data: LabelledWindows) -> dict[str, float]:
    """Cell accuracy and macro-F1 with the best-window and mean-log-probability rules."""
    probs = window_probabilities(model, data.windows, 64, CPU)
    picked = probs[np.arange(len(data.windows)), data.window_labels]
    out = {"window_loss": float(-np.log(np.clip(picked, 1e-12, None)).mean())}
    for rule in ("max", "mean"):
        label = predict_cells(probs, data.windows.cell_index, data.n_cells, rule).label
        out[f"{rule}_accuracy"] = float((label == data.cell_labels).mean())
        out[f"{rule}_macro_f1"] = macro_f1(data.cell_labels, label, probs.shape[1])
    return out


def main(argv: list[str]) -> int:
    args = arguments(argv)
    torch.set_num_threads(args.threads)
    results = args.run / "results"
    train, val, test = (
        LabelledWindows(*load_windows(results / "contexts" / f"{part}.npz"))
        for part in ("train", "val", "predict")
    )
    vocab = Vocabulary.load(results / "vocab")
    seed_everything(args.seed)
    max_length = int(train.windows.tokens.shape[1])
    model_settings = {"backbone": "llama", "size": "tiny", "dropout": 0.1, "pooling": args.pooling}
    model_settings["pair_input"] = args.pair_input
    config = {"seed": args.seed, "model": {**model_settings, "gene_init": args.gene_init}}
    model = initial_model(config, vocab, train, max_length, pretrained_dir=None)
    settings = TrainSettings(
        num_epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        seed=args.seed,
        lr_schedule=args.lr_schedule,
        class_weight=args.class_weight,
        label_smoothing=args.label_smoothing,
        gene_dropout=args.gene_dropout,
        resample_windows=args.resample_windows,
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.learning_rate, weight_decay=settings.weight_decay
    )
    weights = class_weights(train.window_labels, model.spec.num_classes, settings.class_weight)
    rng = np.random.default_rng(args.seed)
    rows = []
    for epoch in range(1, args.epochs + 1):
        loss, _ = train_epoch(model, optimizer, train, settings, rng, CPU, epoch=epoch, weights=weights)
        row = {"epoch": epoch, "loss": loss}
        row |= {f"val_{k}": v for k, v in scores(model, val).items()}
        row |= {f"test_{k}": v for k, v in scores(model, test).items()}
        rows.append(row)
        print(pd.DataFrame([row]).round(3).to_string(index=False, header=epoch == 1), flush=True)
        if args.out:
            pd.DataFrame(rows).to_csv(args.out, index=False)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), args.save / f"epoch_{epoch}.pt")
    late = pd.DataFrame(rows).query("5 <= epoch <= 10").mean()
    print(
        f"mean over epochs 5-10: test macro-F1 {late['test_mean_macro_f1']:.3f} (mean rule),"
        f" {late['test_max_macro_f1']:.3f} (best window); test accuracy {late['test_mean_accuracy']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

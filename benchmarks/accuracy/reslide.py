"""Slide a harness data set's `random` windows again at another length or stride, for
`grid.py` screens of window shapes without rerunning the workflow.

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/reslide.py DATA OUT --length 128 [--stride 64]

DATA is a harness --out dir (seed_S/runs/NAME/results/{contexts,vocab} and the baseline
tables); OUT receives the same layout with each cell's token sequence, rebuilt from its
sliding windows, slid again (stride: half the length, the SPEC's, unless given). The rebuild
is checked: sliding it at the original shape gives back the original windows.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scgenai_flow.contexts import ContextSettings, Windows, load_windows, save_windows, sliding_windows
from scgenai_flow.vocab import Vocabulary


def cell_sequences(windows: Windows, stride: int, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's tokens (concatenated) and offsets: a cell's first window whole, then what
    each later window adds beyond the overlap."""
    width = windows.tokens.shape[1]
    start = np.where(windows.context_index == 0, 0, width - stride)
    position = np.arange(width)[None, :]
    keep = (position >= start[:, None]) & (position < windows.lengths[:, None])
    per_cell = np.bincount(windows.cell_index, weights=keep.sum(axis=1), minlength=n_cells).astype(np.int64)
    return windows.tokens[keep], np.concatenate(([0], np.cumsum(per_cell)))


def reslide(results: Path, out: Path, length: int, stride: int) -> None:
    """Write the val/train/predict windows of one harness run's results at the new shape."""
    pad = Vocabulary.load(results / "vocab").pad_id
    shutil.copytree(results / "vocab", out / "vocab", dirs_exist_ok=True)
    (out / "contexts").mkdir(parents=True, exist_ok=True)
    for part in ("train", "val", "predict"):
        windows, labels = load_windows(results / "contexts" / f"{part}.npz")
        width = windows.tokens.shape[1]
        old_stride = ContextSettings(max_length=width).stride
        tokens, offsets = cell_sequences(windows, old_stride, labels.size)
        again = sliding_windows(tokens, offsets, width, old_stride, pad)
        if not np.array_equal(again.tokens, windows.tokens):
            raise SystemExit(f"{results}/contexts/{part}.npz: not sliding windows of the random context")
        new = sliding_windows(tokens, offsets, length, stride, pad)
        save_windows(out / "contexts" / f"{part}.npz", new, labels)
        print(f"{results.parents[2].name} {part}: {windows.tokens.shape} -> {new.tokens.shape}")


def rewrite_bundle(data: Path, out: Path, rewrite: Callable[[Path, Path], None]) -> None:
    """Copy harness dir `data` to `out`: each split's baseline tables as they are, and each
    run's `results` (windows, vocabulary) through `rewrite(results, out_results)`."""
    for seed_dir in sorted(data.glob("seed_*")):
        target = out / seed_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for table in ("metrics.csv", "per_class_f1.csv"):
            shutil.copy(seed_dir / table, target / table)
        for results in sorted(seed_dir.glob("runs/*/results")):
            rewrite(results, target / "runs" / results.parent.name / "results")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--length", type=int, required=True, help="tokens per window")
    parser.add_argument("--stride", type=int, help="tokens between window starts (default: half)")
    args = parser.parse_args(argv)
    stride = args.stride or ContextSettings(max_length=args.length).stride
    rewrite_bundle(args.data, args.out, lambda results, out: reslide(results, out, args.length, stride))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Merge a harness data set's expression bins into fewer, for `grid.py` screens of
`preprocess.num_bins` without rerunning the workflow.

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/rebin.py DATA OUT --bins 2

DATA is a harness --out dir whose runs used `cell_range` (the original) or `unit_range` bins;
OUT receives the same layout with every bin token mapped to the bin it falls in with `--bins`
bins (which must divide the run's `num_bins`): the new edges are every k-th edge of the run's,
so bin b becomes ceil(b * bins / num_bins), and `cell_range`'s cell-maximum bin stays the top
one. The mapping is checked on the split's training values against binning them afresh.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
from reslide import rewrite_bundle

from scgenai_flow.contexts import load_windows, save_windows
from scgenai_flow.preprocess import bin_rows
from scgenai_flow.vocab import Vocabulary, read_binning


def merged_bins(num_bins: int, bins: int) -> np.ndarray:
    """New bin of each old bin 0..num_bins+1 (index 0 unused)."""
    old = np.arange(num_bins + 2)
    return np.where(old > num_bins, bins + 1, -(-old * bins // num_bins))


def check_mapping(train_h5ad: Path, binning: str, num_bins: int, bins: int) -> None:
    """Binning the training values with `bins` must equal merging their `num_bins` bins."""
    matrix = sp.csr_matrix(ad.read_h5ad(train_h5ad).X)
    merged = merged_bins(num_bins, bins)[bin_rows(matrix, num_bins, binning).data]
    fresh = bin_rows(matrix, bins, binning).data
    differ = int(np.count_nonzero(merged != fresh))
    if differ:
        raise SystemExit(f"{train_h5ad}: {differ} of {fresh.size} values bin differently when merged")


def rebin(results: Path, out: Path, bins: int) -> None:
    """Write the windows of one harness run's results with merged bin tokens."""
    vocab, binning = Vocabulary.load(results / "vocab"), read_binning(results / "vocab")
    if binning not in ("cell_range", "unit_range") or vocab.num_bins % bins:
        raise SystemExit(
            f"{results}/vocab: {binning} x {vocab.num_bins}; expected cell_range or unit_range"
            f" bins, a multiple of {bins}"
        )
    check_mapping(results.parents[2] / "data" / "train.h5ad", binning, vocab.num_bins, bins)
    table = np.arange(vocab.size, dtype=np.int64)
    old_ids = vocab.bin_offset + np.arange(vocab.n_bin_tokens)
    table[old_ids] = vocab.bin_offset + merged_bins(vocab.num_bins, bins)[1:] - 1
    shutil.copytree(results / "vocab", out / "vocab", dirs_exist_ok=True)
    (out / "contexts").mkdir(parents=True, exist_ok=True)
    for part in ("train", "val", "predict"):
        windows, labels = load_windows(results / "contexts" / f"{part}.npz")
        windows.tokens = table[windows.tokens].astype(windows.tokens.dtype)
        save_windows(out / "contexts" / f"{part}.npz", windows, labels)
    print(f"{results.parents[2].name}: {vocab.n_bin_tokens} bin tokens -> {bins + 1}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--bins", type=int, required=True, help="bins after merging")
    args = parser.parse_args(argv)
    rewrite_bundle(args.data, args.out, lambda results, out: rebin(results, out, args.bins))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

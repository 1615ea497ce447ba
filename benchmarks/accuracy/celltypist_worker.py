"""Train and apply CellTypist on h5ad files; runs in CellTypist's own virtualenv.

usage: celltypist_worker.py TRAIN.h5ad TEST.h5ad LABEL OUT.csv  (also writes OUT.json: seconds)

celltypist 1.7.1 passes `multi_class='ovr'` to scikit-learn's LogisticRegression, which
scikit-learn 1.8 removed; the project pins 1.9.1, hence the separate environment.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anndata as ad
import celltypist
import pandas as pd


def main(train_path: str, test_path: str, label: str, out: str) -> None:
    train, test = ad.read_h5ad(train_path), ad.read_h5ad(test_path)
    started = time.perf_counter()
    # The inputs are log1p values but not always of all genes (pbmc68k_reduced keeps 765), so
    # CellTypist's check that a cell sums to 10,000 counts would refuse them.
    model = celltypist.train(train, labels=label, check_expression=False, n_jobs=1)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    result = celltypist.annotate(test, model=model, majority_voting=False)
    predict_s = time.perf_counter() - started
    probs = result.probability_matrix.loc[test.obs_names]
    table = pd.DataFrame(
        {
            "predicted": result.predicted_labels.loc[test.obs_names, "predicted_labels"].astype(str),
            "score": probs.max(axis=1),  # one-vs-rest sigmoid probability of the predicted class
        },
        index=test.obs_names,
    )
    table.to_csv(out)
    Path(out).with_suffix(".json").write_text(json.dumps({"train_s": train_s, "predict_s": predict_s}))


if __name__ == "__main__":
    main(*sys.argv[1:5])

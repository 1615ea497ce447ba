"""Baselines on the same split and genes: majority class, logistic regression on
log-normalised expression, and CellTypist (in its own virtualenv, see README)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

DEFAULT_CELLTYPIST_PYTHON = "/tmp/scgf_acc_venv/bin/python"
WORKER = Path(__file__).resolve().parent / "celltypist_worker.py"


def majority(train: ad.AnnData, test: ad.AnnData, label: str) -> dict:
    """Every cell gets the most frequent training class; its score is that class's share."""
    started = time.perf_counter()
    shares = train.obs[label].value_counts(normalize=True)
    train_s = time.perf_counter() - started
    return {
        "predicted": np.full(test.n_obs, str(shares.index[0]), dtype=object),
        "score": np.full(test.n_obs, float(shares.iloc[0])),
        "train_s": train_s,
        "predict_s": 0.0,
    }


def logreg(train: ad.AnnData, test: ad.AnnData, label: str, seed: int) -> dict:
    """Multinomial logistic regression (L2, C=1) on the log-normalised values."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    started = time.perf_counter()
    model.fit(train.X, train.obs[label].astype(str).to_numpy())
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    probs = model.predict_proba(test.X)
    predict_s = time.perf_counter() - started
    return {
        "predicted": model.classes_[probs.argmax(axis=1)],
        "score": probs.max(axis=1),
        "train_s": train_s,
        "predict_s": predict_s,
    }


def celltypist(paths: dict[str, Path], label: str, python: str, workdir: Path) -> dict:
    """celltypist.train + celltypist.annotate (best match, no majority voting) in a subprocess."""
    if not Path(python).is_file():
        raise FileNotFoundError(
            f"{python}: no CellTypist interpreter; create it as benchmarks/accuracy/README.md says"
            " or pass --celltypist-python"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "celltypist_predictions.csv"
    command = [python, str(WORKER), str(paths["train"]), str(paths["test"]), label, str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with open(workdir / "celltypist.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"CellTypist failed: see {workdir / 'celltypist.log'}")
    table = pd.read_csv(out, index_col=0)
    times = json.loads((workdir / "celltypist_predictions.json").read_text())
    return {
        "predicted": table["predicted"].astype(str).to_numpy(),
        "score": table["score"].to_numpy(dtype=float),
        **times,
    }

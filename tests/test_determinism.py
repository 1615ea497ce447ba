"""Same config and seed twice: identical splits, preprocessing, windows and predictions."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from conftest import REPO
from snakemake.utils import validate

from scgenai_flow.contexts import ContextSettings, load_windows, windows_from_preprocessed
from scgenai_flow.data import write_splits
from scgenai_flow.io import write_h5ad
from scgenai_flow.predict import predict_from_files
from scgenai_flow.preprocess import PreprocessSettings, preprocess_file
from scgenai_flow.train import TrainOutputs, train_from_files
from scgenai_flow.train.settings import TIMING_COLUMNS
from scgenai_flow.vocab import vocabulary_from_preprocessed


def tiny_config(results: Path) -> dict:
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))  # the schema's defaults
    config.update(results=str(results))
    config["preprocess"]["min_cells"] = 150
    config["context"]["max_length"] = 128
    config["model"]["size"] = "tiny"
    config["train"].update(num_epochs=1, batch_size=32, ensemble=1)  # networks: tests/test_ensemble.py
    return config


def run_stages(pbmc, out: Path) -> dict:
    """The rules' package calls, in DAG order, on the embedded data."""
    config = tiny_config(out)
    files = {split: out / f"data/{split}.h5ad" for split in ("train", "val", "predict")}
    write_splits(pbmc, "bulk_labels", {"val": 0.15, "predict": 0.15}, config["seed"], files)
    settings = PreprocessSettings(num_bins=10, min_cells=150, seed=config["seed"])
    write_h5ad(preprocess_file(files["train"], settings), out / "pre/train.h5ad")
    vocabulary_from_preprocessed(out / "pre/train.h5ad", "bulk_labels").save(out / "vocab")
    genes = np.load(out / "vocab/trained_genes.npy")
    context = ContextSettings(max_length=128, seed=config["seed"])
    for split in ("val", "predict"):
        write_h5ad(preprocess_file(files[split], settings, genes), out / f"pre/{split}.h5ad")
    for split in ("train", "val", "predict"):
        windows_from_preprocessed(
            out / f"pre/{split}.h5ad",
            out / "vocab",
            context,
            "bulk_labels",
            split != "predict",
            out / f"ctx/{split}.npz",
        )
    outputs = TrainOutputs(
        str(out / "model/best_model"), str(out / "model/last_model"), str(out / "model/history.csv")
    )
    train_from_files(
        str(out / "ctx/train.npz"),
        str(out / "ctx/val.npz"),
        str(out / "vocab"),
        copy.deepcopy(config),
        outputs,
        threads=2,
    )
    predict_from_files(
        str(out / "ctx/predict.npz"),
        str(out / "pre/predict.h5ad"),
        outputs.best_model,
        64,
        0,
        2,
        str(out / "predictions.csv"),
    )
    return config


def test_same_seed_gives_identical_outputs(tmp_path: Path, pbmc) -> None:
    import anndata as ad

    run_stages(pbmc, tmp_path / "a")
    run_stages(pbmc, tmp_path / "b")
    for split in ("train", "val", "predict"):
        a, b = (ad.read_h5ad(tmp_path / run / f"pre/{split}.h5ad") for run in "ab")
        assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
        for part in ("data", "indices", "indptr"):
            np.testing.assert_array_equal(getattr(a.X, part), getattr(b.X, part))
        (wa, la), (wb, lb) = (load_windows(tmp_path / run / f"ctx/{split}.npz") for run in "ab")
        np.testing.assert_array_equal(wa.tokens, wb.tokens)
        np.testing.assert_array_equal(wa.cell_index, wb.cell_index)
        np.testing.assert_array_equal(la, lb)
    history = [
        pd.read_csv(tmp_path / run / "model/history.csv").drop(columns=list(TIMING_COLUMNS)) for run in "ab"
    ]
    pd.testing.assert_frame_equal(*history)
    predictions = [pd.read_csv(tmp_path / run / "predictions.csv") for run in "ab"]
    pd.testing.assert_frame_equal(*predictions)
    assert len(predictions[0]) == ad.read_h5ad(tmp_path / "a/data/predict.h5ad").n_obs


def test_another_seed_changes_the_gene_order(tmp_path: Path, pbmc) -> None:
    write_h5ad(pbmc, tmp_path / "all.h5ad")
    a = preprocess_file(tmp_path / "all.h5ad", PreprocessSettings(seed=1))
    b = preprocess_file(tmp_path / "all.h5ad", PreprocessSettings(seed=2))
    assert list(a.var_names) != list(b.var_names)

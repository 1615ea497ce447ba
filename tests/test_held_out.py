"""Held out means held out: on every data path, no validation or prediction cell is among the
training windows, proven from the files the rules wrote (barcodes of the preprocessed splits and
the cells of their windows). Paths trained end to end are checked where they already run (the
embedded data, shards, context methods and multi-omics in test_workflow, fine-tuning and the
`scgenai` commands in test_finetune and test_cli); the own-data paths are checked here up to
their windows, and the guards that refuse overlapping cells are tested directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import assert_held_out
from test_workflow import TINY, snakemake

from scgenai_flow.contexts import ContextSettings, build_windows, save_windows
from scgenai_flow.io import InputError, write_h5ad
from scgenai_flow.preprocess import bin_rows
from scgenai_flow.train import check_held_out
from scgenai_flow.vocab import build_vocabulary

WINDOWS = [f"results/contexts/{split}.npz" for split in ("train", "val", "predict")]


@pytest.fixture(scope="module")
def own_files(pbmc, tmp_path_factory) -> dict[str, Path]:
    """pbmc68k as a user's files: 560 labelled training cells, 70 validation and 70 test cells."""
    root = tmp_path_factory.mktemp("own")
    order = np.random.default_rng(3).permutation(pbmc.n_obs)
    parts = {"train": order[:560], "val": order[560:630], "test": order[630:]}
    paths = {}
    for name, rows in parts.items():
        paths[name] = root / f"my_{name}.h5ad"
        write_h5ad(pbmc[np.sort(rows)].copy(), paths[name])
    return paths


def test_own_train_without_val_trains_only_what_the_split_left(own_files, tmp_path: Path) -> None:
    config = {**TINY, "data": {"train": str(own_files["train"]), "predict": str(own_files["test"])}}
    snakemake(tmp_path, *WINDOWS, config=config)
    cells = assert_held_out(tmp_path / "results")
    # the user's 560 cells, split: the val cells are not trained on (before, all 560 were)
    assert cells["train"] + cells["val"] == 560 and cells["val"] >= 0.1 * 560
    assert cells["predict"] == 70


def test_own_train_and_val_files_stay_apart(own_files, tmp_path: Path) -> None:
    data = {"train": str(own_files["train"]), "val": str(own_files["val"]), "predict": str(own_files["test"])}
    snakemake(tmp_path, *WINDOWS, config={**TINY, "data": data})
    assert assert_held_out(tmp_path / "results") == {"train": 560, "val": 70, "predict": 70}


def test_a_val_file_sharing_cells_with_train_is_refused_before_any_stage(own_files, tmp_path: Path) -> None:
    data = {"train": str(own_files["train"]), "val": str(own_files["train"])}
    result = snakemake(tmp_path, *WINDOWS[:2], config={**TINY, "data": data}, check=False)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "data.val:" in out and "560 of its 560 cells are also in data.train" in out
    assert not (tmp_path / "results/preprocessed").exists()


@pytest.mark.slow
@pytest.mark.parametrize("finetune_val", [False, True])
def test_finetuning_holds_out_its_validation_cells(
    finished_run: Path, own_files, tmp_path: Path, finetune_val: bool
) -> None:
    finetune = {
        "model": str(finished_run / "results/model/best_model"),
        "train": str(own_files["train"]),
        "val": str(own_files["val"]) if finetune_val else None,
        "min_cells": 150,
    }
    targets = [f"results/finetune/contexts/{split}.npz" for split in ("train", "val")]
    snakemake(tmp_path, *targets, config={**TINY, "finetune": finetune})
    cells = assert_held_out(tmp_path / "results/finetune")
    assert cells["train"] == 560 if finetune_val else cells["train"] + cells["val"] == 560


def test_training_refuses_windows_whose_val_cells_are_training_cells(pbmc, tmp_path: Path) -> None:
    labels = pbmc.obs["bulk_labels"].astype(str)
    vocab = build_vocabulary(np.asarray(pbmc.var_names), 10, labels, "pbmc")
    windows = build_windows(bin_rows(sp.csr_matrix(pbmc.X[:40]), 10), vocab, ContextSettings(max_length=64))
    codes = vocab.encode_labels(labels[:40], "pbmc")
    save_windows(tmp_path / "train.npz", windows, codes, np.asarray(pbmc.obs_names[:40]))
    save_windows(tmp_path / "val.npz", windows, codes, np.asarray(pbmc.obs_names[30:70]))
    with pytest.raises(InputError, match="10 of its cells are also training cells"):
        check_held_out(str(tmp_path / "train.npz"), str(tmp_path / "val.npz"))
    save_windows(tmp_path / "val.npz", windows, codes, np.asarray(pbmc.obs_names[40:80]))
    check_held_out(str(tmp_path / "train.npz"), str(tmp_path / "val.npz"))


def test_predicting_training_cells_is_allowed_with_a_warning(own_files, tmp_path: Path) -> None:
    data = {"train": str(own_files["train"]), "predict": str(own_files["train"])}
    result = snakemake(tmp_path, "results/checks/inputs.ok", config={**TINY, "data": data})
    log = (tmp_path / "results/logs/check_inputs.log").read_text()
    assert "data.predict: " in log and "560 of its 560 cells are also in data.train" in log, result.stderr

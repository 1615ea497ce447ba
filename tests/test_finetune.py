"""Fine-tuning: the vocabulary and classifier grow, old ids and rows stay, new labels are learnt."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import assert_held_out
from test_workflow import snakemake

from scgenai_flow.data import stratified_split
from scgenai_flow.io import write_h5ad
from scgenai_flow.models import CellClassifier, ModelSpec, grow
from scgenai_flow.vocab import Vocabulary, build_vocabulary

NEW_LABELS = ["CD14+ Monocyte", "CD56+ NK"]


def test_extending_a_vocabulary_keeps_every_old_id() -> None:
    old = build_vocabulary(np.array(["A", "B", "C"]), 10, pd.Series(["x", "y"], name="l"), "t")
    new = old.extend(np.array(["D", "B", "E"]), np.array(["y", "z"]))
    assert list(new.genes) == ["A", "B", "C", "D", "E"] and list(new.classes) == ["x", "y", "z"]
    old_tokens, new_tokens = old.tokens(), new.tokens()
    assert new_tokens[: len(old_tokens)] == old_tokens  # every old id keeps its token
    assert new_tokens[len(old_tokens) :] == ["D", "E"] and new.size == old.size + 2
    np.testing.assert_array_equal(new.feature_tokens(np.arange(3)), old.feature_tokens(np.arange(3)))
    twice = new.extend(np.array(["F"]), np.array([]))
    assert twice.tokens()[: new.size] == new_tokens and twice.n_added_genes == 3


def test_extended_vocabulary_round_trips(tmp_path: Path) -> None:
    old = build_vocabulary(np.array(["A", "B"]), 5, pd.Series(["x", "y"], name="l"), "t")
    new = old.extend(np.array(["C"]), np.array(["z"]))
    new.save(tmp_path / "v")
    loaded = Vocabulary.load(tmp_path / "v")
    assert loaded.tokens() == new.tokens() and loaded.n_added_genes == 1


@pytest.mark.parametrize("backbone", ["llama", "gpt", "bigbird", "scgent"])
def test_grown_model_keeps_old_rows(backbone: str) -> None:
    torch.manual_seed(0)
    model = CellClassifier(ModelSpec(backbone, "tiny", 60, 59, 32, 4))
    grown = grow(model, 75, 6)
    old, new = model.state_dict(), grown.state_dict()
    grew = [name for name in old if old[name].shape != new[name].shape]
    assert any("head" in name for name in grew) and len(grew) >= 2  # embeddings and classifier
    for name, tensor in old.items():
        torch.testing.assert_close(new[name][tuple(slice(0, n) for n in tensor.shape)], tensor)
    assert grown.spec.vocab_size == 75 and grown.head.out_features == 6


def make_files(pbmc, workdir: Path) -> dict[str, Path]:
    """Pretraining data without the new labels and with 500 of the genes; fine-tuning data
    with every label and gene; held-out cells of every label to predict."""
    parts = stratified_split(pbmc.obs["bulk_labels"], {"test": 0.2, "finetune": 0.4}, seed=4)
    old = parts["train"][~pbmc.obs["bulk_labels"].iloc[parts["train"]].isin(NEW_LABELS).to_numpy()]
    first = stratified_split(pbmc.obs["bulk_labels"].iloc[old].astype(str), {"val": 0.2}, seed=4)
    files = {
        "pre_train": (old[first["train"]], slice(0, 500)),
        "pre_val": (old[first["val"]], slice(0, 500)),
        "finetune": (parts["finetune"], slice(None)),
        "test": (parts["test"], slice(None)),
    }
    paths = {}
    for name, (rows, genes) in files.items():
        paths[name] = workdir / f"{name}.h5ad"
        write_h5ad(pbmc[rows, genes].copy(), paths[name])
    return paths


@pytest.mark.slow
def test_finetuning_end_to_end_learns_new_labels_and_genes(tmp_path: Path, pbmc) -> None:
    paths = make_files(pbmc, tmp_path)
    config = {
        "data": {
            "train": str(paths["pre_train"]),
            "val": str(paths["pre_val"]),
            "predict": str(paths["test"]),
        },
        "preprocess": {"min_cells": 30},
        "context": {"max_length": 128},
        "model": {"size": "tiny", "backbone": "llama"},
        "train": {"num_epochs": 1, "batch_size": 32, "learning_rate": 2e-3, "ensemble": 2},
        "finetune": {
            "train": str(paths["finetune"]),
            "num_epochs": 4,
            "batch_size": 32,
            "learning_rate": 2e-3,
        },
        "predict": {"model": "finetune"},
    }
    # what the assertions need (not "all": the base model's report and the prediction figures)
    snakemake(tmp_path, "results/predictions.csv", "results/finetune/train_summary.pdf", config=config)
    results = tmp_path / "results"
    assert_held_out(results)
    assert_held_out(results / "finetune")  # its val cells split off finetune.train
    pre, fine = (
        Vocabulary.load(results / "model/best_model"),
        Vocabulary.load(results / "finetune/best_model"),
    )
    assert fine.tokens()[: pre.size] == pre.tokens()  # old token ids unchanged
    assert fine.genes.size > pre.genes.size and set(NEW_LABELS) <= set(fine.classes[pre.classes.size :])
    for name in ("best_model", "last_model", "combined_epoch_results.csv", "train_summary.pdf"):
        assert (results / "finetune" / name).exists()
    history = pd.read_csv(results / "finetune/combined_epoch_results.csv")
    # each network of the pretrained ensemble is tuned in turn
    assert list(history["Member"]) == [1] * 4 + [2] * 4
    assert json.loads((results / "finetune/best_model/config.json").read_text())["members"] == 2
    table = pd.read_csv(results / "predictions.csv", index_col=0)
    assert len(table) == ad.read_h5ad(paths["test"]).n_obs
    new = table[table["bulk_labels"].isin(NEW_LABELS)]
    recall = (new["PredictedFeature"] == new["bulk_labels"]).mean()
    assert recall > 1 / len(fine.classes), f"new labels recalled {recall:.2f}"  # above chance


def test_a_config_that_contradicts_the_pretrained_model_is_refused(tmp_path: Path) -> None:
    from scgenai_flow.finetune import finetune_config
    from scgenai_flow.io import InputError

    settings = {
        "seed": 1,
        "context": {"method": "genomic", "max_length": 128, "depth": 1},
        "model": {"backbone": "gpt"},
    }
    (tmp_path / "train_setting.yaml").write_text(yaml.safe_dump(settings))
    config = {
        "seed": 2,
        "context": {"method": "random", "max_length": 128, "depth": 1},
        "preprocess": {"num_bins": 10},
        "model": {"backbone": "gpt", "size": "tiny"},
        "data": {"multiomics": False},
        "finetune": {"num_epochs": 3},
    }
    with pytest.raises(InputError, match="context.method: config 'random', model 'genomic'"):
        finetune_config(tmp_path, config)
    config["context"]["method"] = "genomic"
    merged = finetune_config(tmp_path, config)
    assert merged["context"]["method"] == "genomic" and merged["finetune"]["num_epochs"] == 3

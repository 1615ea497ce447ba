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
from conftest import assert_held_out, test_settings
from test_workflow import snakemake

from scgenai_flow.data import stratified_split
from scgenai_flow.io import InputError, write_h5ad
from scgenai_flow.legacy import deep_update
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
    config = deep_update(
        test_settings("finetune"),  # .test/finetune/config.yaml, plus this test's files
        {
            "data": {
                "train": str(paths["pre_train"]),
                "val": str(paths["pre_val"]),
                "predict": str(paths["test"]),
            },
            "finetune": {"train": str(paths["finetune"])},
        },
    )
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


def test_extending_a_multiomics_vocabulary_adds_proteins_after_every_old_id(tmp_path: Path) -> None:
    old = build_vocabulary(
        np.array(["A", "B"]), 5, pd.Series(["x", "w"], name="l"), "t", adt_features=np.array(["P1", "P2"])
    )
    new = old.extend(np.array(["C"]), np.array(["y"]), np.array(["P2", "P3"]))
    again = new.extend(np.array(["D"]), np.array([]), np.array(["P4"]))
    assert again.tokens()[: old.size] == old.tokens() and again.tokens()[: new.size] == new.tokens()
    assert again.tokens()[old.size :] == ["C", "ADT_P3", "D", "ADT_P4"]
    assert list(again.adt_features) == ["P1", "P2", "P3", "P4"] and again.n_added_adt == 2
    # binned-matrix columns (genes, then proteins) map to their tokens; protein bins stay protein bins
    tokens = again.tokens()
    columns = np.arange(again.n_features)
    expected = [*"ABCD", *[f"ADT_P{i}" for i in range(1, 5)]]
    assert [tokens[i] for i in again.feature_tokens(columns)] == expected
    assert tokens[again.bin_tokens(np.array([6]), np.array([2]))[0]] == "<adtbin2>"
    again.save(tmp_path / "v")
    assert Vocabulary.load(tmp_path / "v").tokens() == tokens
    with pytest.raises(InputError, match="only a multi-omics"):
        build_vocabulary(np.array(["A"]), 5, pd.Series(["x", "w"], name="l"), "t").extend(
            np.array([]), np.array([]), np.array(["P1"])
        )


def test_genomic_finetuning_places_a_new_gene_in_its_band(tmp_path: Path, pbmc) -> None:
    from scgenai_flow.contexts.genomic import UNMAPPED, cytoband_groups, read_cytobands
    from scgenai_flow.contexts.reference import reference_options, write_vocabulary_dir
    from scgenai_flow.finetune import extended_vocabulary, write_extended_vocabulary

    genes = np.asarray(pbmc.var_names[:300])
    vocab = build_vocabulary(genes, 10, pbmc.obs["bulk_labels"], "pbmc")
    write_vocabulary_dir(vocab, "genomic", None, tmp_path / "model")  # the built-in table
    new = pbmc[:, 300:400].copy()  # genes the model never saw
    write_h5ad(new, tmp_path / "new.h5ad")
    extended = extended_vocabulary(tmp_path / "model", tmp_path / "new.h5ad", "bulk_labels", 5, 0, False)
    write_extended_vocabulary(extended, tmp_path / "model", tmp_path / "tuned")
    stored = reference_options("genomic", tmp_path / "tuned")["cytobands"]
    groups = cytoband_groups(extended.genes, read_cytobands(stored), "stored")
    band = groups.names[groups.membership[vocab.genes.size :].nonzero()[1]]  # of each added gene
    known = read_cytobands(None).set_index("gene_symbol")["cytobandID"]
    added = extended.genes[vocab.genes.size :]
    in_table = np.isin(added, known.index)
    assert in_table.sum() > 20 and (band[in_table] == known[added[in_table]].to_numpy()).all()
    assert (band[~in_table] == UNMAPPED).all()


def test_a_gene_list_limits_the_linear_member_too(tmp_path: Path, pbmc) -> None:
    from scgenai_flow.contexts import window_genes
    from scgenai_flow.contexts.reference import write_vocabulary_dir
    from scgenai_flow.linear import fit_linear
    from scgenai_flow.preprocess import PreprocessSettings, preprocess_file

    genes = np.asarray(pbmc.var_names)
    (tmp_path / "genes.txt").write_text("\n".join(genes[::3]) + "\n")
    vocab = build_vocabulary(genes, 10, pbmc.obs["bulk_labels"], "pbmc")
    write_vocabulary_dir(vocab, "genelist", str(tmp_path / "genes.txt"), tmp_path / "vocab")
    write_h5ad(pbmc, tmp_path / "cells.h5ad")
    preprocessed = preprocess_file(tmp_path / "cells.h5ad", PreprocessSettings(min_cells=0), genes)
    write_h5ad(preprocessed, tmp_path / "p.h5ad")
    listed = window_genes(vocab, "genelist", tmp_path / "vocab")
    assert listed.sum() == genes[::3].size and window_genes(vocab, "random", tmp_path / "vocab") is None
    from scgenai_flow.linear import read_expression

    values = read_expression(tmp_path / "p.h5ad", vocab, pbmc.n_obs, listed)
    member, _ = fit_linear(values, vocab.encode_labels(pbmc.obs["bulk_labels"], "pbmc"), vocab.classes.size)
    assert np.abs(member.weights[~listed]).max() == 0 and np.abs(member.weights[listed]).max() > 0


@pytest.mark.slow
def test_the_default_model_finetunes_with_a_config_naming_only_new_data(finished_run, tmp_path) -> None:
    """The model of a default run (windows of 128 tokens, not the default 256) fine-tuned through
    the original's command and through Snakemake, with configs that name only the new data and
    a short run: every setting that defines the model comes from it."""
    import subprocess
    import sys

    from test_workflow import planned_jobs

    model = finished_run / "results/model/best_model"
    new = str(finished_run / "results/data/predict.h5ad")
    native = {"finetune": {"train": new, "model": str(model), "num_epochs": 1}}
    assert planned_jobs(tmp_path, "all", config=native)["finetune"] == 1
    old = {"mode": "Finetune", "model_dir": str(model), "finetune_dir": "tuned", "train_file": new}
    old["num_epochs"] = 1
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    scgenai = str(Path(sys.executable).parent / "scgenai")
    command = [scgenai, "finetune", "--config_file", "old.yaml", "--cores", "2"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    setting = yaml.safe_load((tmp_path / "tuned/best_model/train_setting.yaml").read_text())
    trained = yaml.safe_load((model / "train_setting.yaml").read_text())
    assert setting["context"] == trained["context"] and setting["context"]["max_length"] == 128
    assert setting["preprocess"] == trained["preprocess"] and setting["model"] == trained["model"]

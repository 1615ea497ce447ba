"""The `scgenai` command: config files of the original scGenAI translated and run end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest
import yaml
from conftest import assert_held_out
from test_workflow import MODEL_FILES, planned_jobs

from scgenai_flow.cli import main
from scgenai_flow.data import synthetic_adt, write_splits
from scgenai_flow.io import InputError, write_h5ad
from scgenai_flow.legacy import translate

SCGENAI = str(Path(sys.executable).parent / "scgenai")
# Tiny settings in the original's keys (one epoch of a tiny model on 280 real cells).
TINY_OLD = {
    "min_cells": 150,
    "max_length": 64,
    "model_backbone_name": "scGenT",
    "model_backbone_size": "tiny",
    "num_epochs": 1,
    "batch_size": 64,
    "learning_rate": 2e-3,
}


def scgenai(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([SCGENAI, *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"scgenai {args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def files(pbmc, tmp_path_factory) -> Path:
    """pbmc68k (log-normalised `.raw`) split into train/val/predict h5ad files, their generated
    ADT files, and a gene list, a cytoband table and a GMT made from the data's genes."""
    root = tmp_path_factory.mktemp("cli")
    outputs = {s: root / f"{s}.h5ad" for s in ("train", "val", "predict", "spare")}
    # 105 val and predict cells each; 280 train cells keep the training short
    write_splits(pbmc, "bulk_labels", {"val": 0.15, "predict": 0.15, "spare": 0.3}, 7, outputs)
    for split, path in list(outputs.items())[:3]:
        write_h5ad(synthetic_adt(ad.read_h5ad(path).obs, "bulk_labels", seed=1), root / f"{split}_ADT.h5ad")
    genes = list(pbmc.var_names)
    (root / "genes.txt").write_text("\n".join(genes[::2]) + "\n")
    bands = pd.DataFrame({"gene_symbol": genes, "cytobandID": [f"1p{i % 30}" for i in range(len(genes))]})
    bands.to_csv(root / "cytobands.tsv", sep="\t", index=False)
    sets = [f"SET{k}\tset {k}\t" + "\t".join(genes[k::20]) for k in range(20)]
    (root / "sets.gmt").write_text("\n".join(sets) + "\n")
    return root


# The original's documented config shapes (its examples/config_templates), on our files.
TRAIN_TEMPLATE = {
    "mode": "Train",
    "cache_dir": "cache",
    "model_dir": "model/",
    "log_dir": "logs/",
    "train_file": "train.h5ad",
    "val_file": "val.h5ad",
    "savelog": "Yes",
    "target_feature": "bulk_labels",
    "num_bins": 10,
    "model_backbone_name": "llama",
    "model_backbone_size": "small",
    "max_length": 1024,
    "min_cells": 50,
    "batch_size": 1,
    "learning_rate": "1e-5",  # as the templates write it: a string to YAML 1.1
    "num_epochs": 30,
}
SHAPES = {
    "random": {"context_method": "random", "model_backbone_name": "scgent", "model_backbone_size": "normal"},
    "genelist": {"context_method": "genelist", "glstfile": "genes.txt", "depth": 2, "max_length": 2048},
    "genomic": {"context_method": "genomic", "cytofile": "cytobands.tsv", "depth": 2},
    "biofunction": {"context_method": "biofounction", "gmtfile": "sets.gmt", "depth": 2},
    "multiomics": {
        "context_method": "random",
        "multiomics": "Yes",
        "depth": 2,
        "train_ADTfile": "train_ADT.h5ad",
        "val_ADTfile": "val_ADT.h5ad",
    },
}


def expected_native(root: Path, shape: str) -> dict:
    """The native config each shape must become, written out by hand: the keys the old file sets
    (every other key takes the schema default, the same whichever way the file is run)."""
    data = {"target_feature": "bulk_labels", "train": f"{root}/train.h5ad", "val": f"{root}/val.h5ad"}
    context = {"max_length": 1024, "method": "random"}
    model = {"backbone": "llama", "size": "small"}
    if shape == "random":
        model = {"backbone": "scgent", "size": "normal"}
    if shape == "genelist":
        context = {"depth": 2, "genelist": f"{root}/genes.txt", "max_length": 2048, "method": "genelist"}
    if shape == "genomic":
        context = {"cytobands": f"{root}/cytobands.tsv", "depth": 2, "max_length": 1024, "method": "genomic"}
    if shape == "biofunction":
        context = {"depth": 2, "gmt": f"{root}/sets.gmt", "max_length": 1024, "method": "biofunction"}
    if shape == "multiomics":
        data |= {"multiomics": True, "train_adt": f"{root}/train_ADT.h5ad", "val_adt": f"{root}/val_ADT.h5ad"}
        context["depth"] = 2
    return {
        "data": dict(sorted(data.items())),
        "preprocess": {"min_cells": 50, "num_bins": 10},
        "context": context,
        "model": model,
        "train": {"batch_size": 1, "learning_rate": 1e-5, "num_epochs": 30},
    }


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_train_shape_converts_to_the_expected_native_config(files, shape, monkeypatch, capsys) -> None:
    old = write_config(files / f"old_{shape}.yaml", {**TRAIN_TEMPLATE, **SHAPES[shape]})
    monkeypatch.chdir(files)  # relative paths are the current directory's, as in the original
    assert main(["config", "convert", old.name]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out) == expected_native(files, shape)
    assert "cache_dir: accepted, not used" in err


def test_converted_train_config_plans_the_same_jobs_as_the_old_one(files, tmp_path, capsys) -> None:
    old = {**TRAIN_TEMPLATE, **SHAPES["genelist"]}
    old = {k: str(files / v) if k in ("train_file", "val_file", "glstfile") else v for k, v in old.items()}
    assert main(["config", "convert", str(write_config(tmp_path / "old.yaml", old))]) == 0
    native = yaml.safe_load(capsys.readouterr().out)
    # snakemake --configfile old.yaml: the flat file is detected and translated in common.smk
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    direct = planned_jobs(tmp_path / "a", "all", config=old)
    assert direct == planned_jobs(tmp_path / "b", "all", config=native)
    assert direct["train"] == 1 and direct["vocabulary"] == 1 and "split_data" not in direct


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("num_epoch", 3, "unknown config key 'num_epoch'; did you mean 'num_epochs'?"),
        ("multiomics", "maybe", "config key 'multiomics': expected Yes or No, got 'maybe'"),
        ("model_backbone_name", "bert", "config key 'model_backbone_name': expected one of llama, gpt"),
        ("batch_size", 2.5, "config key 'batch_size': expected an integer, got 2.5"),
        ("mode", "Predict", "mode Predict needs config key(s): predict_file, outputfile"),
    ],
)
def test_bad_keys_and_values_are_named(key, value, message) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        translate({**TRAIN_TEMPLATE, key: value})


def test_yes_no_strings_and_booleans_are_the_same() -> None:
    for yes, no in (("Yes", "No"), (True, False), ("yes", "no")):
        run = translate({**TRAIN_TEMPLATE, "multiomics": no, "savelog": yes, "keepIntermediateFiles": yes})
        assert run.config["data"]["multiomics"] is False and run.keep_intermediate is True
        assert run.log_dir == Path("logs")


def test_mode_must_match_the_command(files) -> None:
    result = scgenai(
        files, "predict", "--config_file", str(write_config(files / "m.yaml", TRAIN_TEMPLATE)), check=False
    )
    assert result.returncode == 2
    assert "config key 'mode' is 'Train' but the command is 'scgenai predict'" in result.stderr


@pytest.fixture(scope="module")
def trained(files) -> Path:
    """`scgenai train --original` on a genelist config of the original: the model dir it writes."""
    old = {
        **TRAIN_TEMPLATE,
        **SHAPES["genelist"],
        **TINY_OLD,
        "model_dir": "trained",
        "keepIntermediateFiles": "No",
    }
    # --original: the original's method for the keys the file leaves out (one network, its rules)
    config = str(write_config(files / "train_old.yaml", old))
    scgenai(files, "train", "--original", "--config_file", config, "--cores", "2")
    return files / "trained"


@pytest.mark.slow
def test_train_writes_where_the_original_did(trained: Path, files: Path) -> None:
    for name in ("best_model", "last_model"):
        assert MODEL_FILES <= {p.name for p in (trained / name).iterdir()}
    assert (trained / "best_model/context_genelist.txt").read_text() == (files / "genes.txt").read_text()
    history = pd.read_csv(trained / "combined_epoch_results.csv")
    assert list(history["Epoch"]) == [1]
    assert (trained / "train_summary.pdf").read_bytes().startswith(b"%PDF")
    assert not (trained / "scgenai_work").exists()  # keepIntermediateFiles: No
    assert (files / "logs/train.log").is_file()  # savelog: Yes copies the rule logs to log_dir
    setting = yaml.safe_load((trained / "best_model/train_setting.yaml").read_text())
    assert setting["context"] == {**setting["context"], "method": "genelist", "max_length": 64, "depth": 2}


@pytest.mark.slow
def test_predict_with_a_model_dir_reproduces_its_validation(trained: Path, files: Path) -> None:
    # the original's prediction template: only the cells, the model dir and the output file
    old = {
        "mode": "Predict",
        "predict_file": "val.h5ad",
        "batch_size": 1,
        "model_dir": "trained/best_model/",
        "outputfile": "out/val.Predict.csv",
        "keepIntermediateFiles": "Yes",
    }
    # --original: the trained model's own decision rule (its best window, no logit adjustment)
    scgenai(
        files, "predict", "--original", "--config_file", str(write_config(files / "predict_old.yaml", old))
    )
    table = pd.read_csv(files / "out/val.Predict.csv", index_col=0)
    cells = ad.read_h5ad(files / "val.h5ad")
    assert list(table.index) == list(cells.obs_names)
    assert list(table.columns) == [*cells.obs.columns, "context_id", "PredictedFeature", "prediction_score"]
    # the same cells, model and windows as the training's validation: the same accuracy
    history = pd.read_csv(trained / "combined_epoch_results.csv")
    accuracy = (table["PredictedFeature"] == table["bulk_labels"]).mean()
    assert accuracy == pytest.approx(history["Validation Accuracy"].max(), abs=1.5 / len(table))
    work = files / "out/val.Predict.scgenai_work"
    assert (work / "predictions.csv").is_file() and not (work / "model").exists()  # nothing trained


@pytest.mark.slow
def test_finetune_writes_to_finetune_dir(trained: Path, files: Path) -> None:
    old = {
        "mode": "Finetune",
        "cache_dir": "cache",
        "model_dir": "trained/best_model/",
        "finetune_dir": "finetuned/",
        "train_file": "predict.h5ad",  # no val_file: a stratified fraction is held out
        "target_feature": "bulk_labels",
        "num_epochs": 1,
        "batch_size": 64,
        "learning_rate": 1e-3,
        "keepIntermediateFiles": "Yes",
    }
    scgenai(files, "finetune", "--config_file", str(write_config(files / "finetune_old.yaml", old)))
    out = files / "finetuned"
    assert_held_out(out / "scgenai_work/finetune")
    for name in ("best_model", "last_model"):
        assert MODEL_FILES <= {p.name for p in (out / name).iterdir()}
    assert len(pd.read_csv(out / "combined_epoch_results.csv")) == 1
    assert (out / "train_summary.pdf").is_file()
    setting = yaml.safe_load((out / "best_model/train_setting.yaml").read_text())
    assert setting["finetune"]["model"] == str(trained / "best_model")
    assert setting["context"]["method"] == "genelist"  # the pretrained model's settings


@pytest.mark.slow
def test_flat_predict_config_given_to_snakemake_trains_nothing(trained: Path, files: Path, tmp_path) -> None:
    old = {
        "mode": "Predict",
        "predict_file": str(files / "predict.h5ad"),
        "model_dir": str(trained / "best_model"),
        "outputfile": str(tmp_path / "out.csv"),
    }
    jobs = planned_jobs(tmp_path, "results/predictions.csv", config=old)
    assert jobs == {"check_inputs": 1, "preprocess_aligned": 1, "contexts": 1, "predict": 1}
    # a multi-omics model needs the ADT file too, aligned to the model's ADT features
    multi = tmp_path / "multi"
    multi.mkdir()
    setting = yaml.safe_load((trained / "best_model/train_setting.yaml").read_text())
    write_config(multi / "train_setting.yaml", {**setting, "data": {**setting["data"], "multiomics": True}})
    with pytest.raises(InputError, match="multiomics is Yes in Predict mode: predict_ADTfile required"):
        translate({**old, "model_dir": str(multi)})
    (tmp_path / "m").mkdir()
    jobs = planned_jobs(
        tmp_path / "m",
        "results/predictions.csv",
        config={**old, "model_dir": str(multi), "predict_ADTfile": str(files / "predict_ADT.h5ad")},
    )
    assert jobs == {
        "check_inputs": 1,
        "preprocess_aligned": 1,
        "preprocess_adt_aligned": 1,
        "contexts": 1,
        "predict": 1,
    }


def test_dry_run_of_a_multiomics_train_config_through_the_api(files) -> None:
    old = {**TRAIN_TEMPLATE, **SHAPES["multiomics"], **TINY_OLD, "model_dir": "mo_model"}
    result = scgenai(files, "train", "--config_file", str(write_config(files / "mo.yaml", old)), "-n")
    assert "preprocess_adt_train" in result.stdout + result.stderr
    assert not (files / "mo_model/best_model").exists()


def test_finetuning_a_multiomics_model_takes_adt_files(files, tmp_path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    setting = translate({**TRAIN_TEMPLATE, **SHAPES["multiomics"]}).config
    write_config(model / "train_setting.yaml", setting)
    old = {"mode": "Finetune", "model_dir": str(model), "finetune_dir": "ft", "train_file": "predict.h5ad"}
    with pytest.raises(InputError, match="multiomics is Yes in Finetune mode: train_ADTfile required"):
        translate(old)
    run = translate({**old, "train_ADTfile": "predict_ADT.h5ad"})
    assert run.config["finetune"]["train_adt"] == "predict_ADT.h5ad" and run.config["data"]["multiomics"]
    with pytest.raises(InputError, match="val_ADTfile required"):
        translate({**old, "train_ADTfile": "predict_ADT.h5ad", "val_file": "val.h5ad"})


def test_run_passes_targets_and_flags_to_snakemake(tmp_path) -> None:
    result = scgenai(tmp_path, "run", "-d", str(tmp_path), "-n", "--cores", "1", "results/predictions.csv")
    assert re.search(r"^predict\s+1$", result.stdout, re.M) and not re.search(
        r"^report\s", result.stdout, re.M
    )
    until = scgenai(tmp_path, "run", "-n", "--until", "vocabulary")  # any snakemake flag passes through
    assert re.search(r"^vocabulary\s+1$", until.stdout, re.M) and not re.search(
        r"^train\s", until.stdout, re.M
    )
    help_text = scgenai(tmp_path, "--help").stdout
    assert all(stage in help_text for stage in ("split_data", "contexts", "train", "report", "predict"))

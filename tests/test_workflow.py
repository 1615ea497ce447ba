"""The Snakemake DAG end to end on pbmc68k with tiny settings, and its re-run behaviour."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, assert_held_out, test_settings

from scgenai_flow.decide import fit_decision
from scgenai_flow.legacy import deep_update
from scgenai_flow.models import read_calibration

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
MODEL_FILES = {
    "config.json",
    "expression_vocab.npy",
    "gene_vocab.npy",
    "label_encoder_classes.npy",
    "pad_token_id.npy",
    "scGenAI_model.pt",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "train_setting.yaml",
    "trained_genes.npy",
}
TINY = test_settings("tiny")


def snakemake_command(workdir: Path, *args: str, config: dict | None = None) -> list[str]:
    """The command running the repository's Snakefile in `workdir` with the default config
    plus `config` (written to `workdir/overrides-<digest>.yaml`, one file per config, so that
    dry runs of several configs can run at once)."""
    text = yaml.safe_dump(config or TINY)
    overrides = workdir / f"overrides-{hashlib.sha1(text.encode()).hexdigest()[:12]}.yaml"
    overrides.write_text(text)
    return [
        *SNAKEMAKE,
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--cores",
        "2",
        *args,
        "--configfile",
        str(REPO / "config/config.yaml"),
        str(overrides),
    ]


def snakemake(
    workdir: Path, *args: str, config: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run snakemake_command; with `check`, a failure shows the end of its output."""
    command = snakemake_command(workdir, *args, config=config)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


def planned_jobs(workdir: Path, *targets: str, config: dict | None = None) -> dict[str, int]:
    """Rule -> job count of a dry run."""
    out = snakemake(workdir, *targets, "-n", "--quiet", "rules", config=config).stdout
    table = out[out.index("Job stats") :] if "Job stats" in out else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


@pytest.mark.slow
def test_all_outputs_of_the_spec_exist(finished_run: Path) -> None:
    results = finished_run / "results"
    for model in ("best_model", "last_model"):
        assert MODEL_FILES <= {p.name for p in (results / "model" / model).iterdir()}
    setting = yaml.safe_load((results / "model/best_model/train_setting.yaml").read_text())
    assert setting["train"]["num_epochs"] == 2 and setting["context"]["max_length"] == 128
    history = pd.read_csv(results / "model/combined_epoch_results.csv")
    assert list(history.columns[:4]) == ["Epoch", "Train Loss", "Train Accuracy", "Validation Accuracy"]
    # an ensemble of 2 networks (the defaults: 3), trained one after another
    assert list(history["Epoch"]) == [1, 2] * 2 and list(history["Member"]) == [1, 1, 2, 2]
    assert json.loads((results / "model/best_model/config.json").read_text())["members"] == 2
    # beside them the linear member, and the training cells per class for the logit adjustment
    with np.load(results / "model/best_model/linear_member.npz") as member:
        assert bool(member["expression"])  # it reads the preprocessed files' values beside presence
    train_labels = ad.read_h5ad(results / "preprocessed/train.h5ad").obs["bulk_labels"].value_counts()
    calibration = json.loads((results / "model/best_model/calibration.json").read_text())
    assert sorted(calibration["class_cells"]) == sorted(train_labels[train_labels > 0].tolist())
    assert calibration["network_temperature"] > 0  # the networks' own, for the member's average
    assert (results / "model/train_summary.pdf").read_bytes().startswith(b"%PDF")
    for split in ("train", "val", "predict"):
        preprocessed = ad.read_h5ad(results / f"preprocessed/{split}.h5ad")
        assert preprocessed.X.dtype == np.uint8 and preprocessed.layers["expression"].dtype == np.float32
        assert (results / f"contexts/{split}.npz").is_file()
    for rule in (
        "check_inputs",
        "split_data",
        "vocabulary",
        "train",
        "model/validate",
        "model/report",
        "predict",
    ):
        assert (results / "logs" / f"{rule}.log").is_file()
        assert (results / "benchmarks" / f"{rule}.tsv").is_file()


@pytest.mark.slow
def test_no_val_or_predict_cell_is_a_training_cell(finished_run: Path) -> None:
    cells = assert_held_out(finished_run / "results")
    assert sum(cells.values()) == 700  # the embedded data, split three ways
    log = (finished_run / "results/logs/train.log").read_text()
    assert f"train windows ({cells['train']} cells)" in log and f"val windows ({cells['val']} cells)" in log


@pytest.mark.slow
def test_one_prediction_row_per_input_cell(finished_run: Path) -> None:
    results = finished_run / "results"
    cells = ad.read_h5ad(results / "data/predict.h5ad")
    table = pd.read_csv(results / "predictions.csv", index_col=0)
    assert list(table.index) == list(cells.obs_names)
    assert list(table.columns) == [*cells.obs.columns, "context_id", "PredictedFeature", "prediction_score"]
    assert table["prediction_score"].between(0, 1).all()
    classes = np.load(results / "model/best_model/label_encoder_classes.npy")
    assert set(table["PredictedFeature"]) <= set(classes)
    assert table["context_id"].str.match(r"window_\d+").all()
    # two epochs of a tiny model already beat the majority class (Dendritic, 34%)
    accuracy = (table["PredictedFeature"] == table["bulk_labels"]).mean()
    assert accuracy > 0.4


@pytest.mark.slow
def test_nothing_to_do_after_a_run_and_parameter_changes_rerun_only_dependants(finished_run: Path) -> None:
    assert planned_jobs(finished_run, "all") == {}
    epochs = {**TINY, "train": {**TINY["train"], "num_epochs": 3}}
    after_training = {"train": 1, "validate": 1, "report": 1, "predict": 1, "prediction_report": 1}
    assert planned_jobs(finished_run, "all", config=epochs) == {**after_training, "all": 1}
    linear_off = {**TINY, "model": {**TINY["model"], "linear_member": False}}
    assert planned_jobs(finished_run, "all", config=linear_off) == {**after_training, "all": 1}
    adjusted = {**TINY, "predict": {"logit_adjustment": 0.25}}  # prediction only: no retraining
    after_prediction = {"validate": 1, "report": 1, "predict": 1, "prediction_report": 1, "all": 1}
    assert planned_jobs(finished_run, "all", config=adjusted) == after_prediction
    length = {**TINY, "context": {"max_length": 64}}
    assert planned_jobs(finished_run, "all", config=length) == {**after_training, "contexts": 3, "all": 1}
    bins = {**TINY, "preprocess": {"min_cells": 150, "num_bins": 5}}
    assert set(planned_jobs(finished_run, "all", config=bins)) == {
        "preprocess_train",
        "preprocess_aligned",
        "vocabulary",
        "contexts",
        "train",
        "validate",
        "report",
        "predict",
        "prediction_report",
        "all",
    }


@pytest.mark.slow
def test_sharded_prediction_gathers_the_unsharded_table(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    sharded = tmp_path / "sharded"
    shutil.copytree(finished_run, sharded, symlinks=True)
    (sharded / "results/predictions.csv").unlink()
    config = test_settings("tiny", "shards")
    assert planned_jobs(sharded, "results/predictions.csv", config=config) == {
        "shard_predict": 1,
        "preprocess_aligned": 3,
        "contexts": 3,
        "predict_shard": 3,
        "gather_predictions": 1,
    }
    snakemake(sharded, "results/predictions.csv", config=config)
    assert_held_out(sharded / "results")  # the shards' windows too
    offsets = pd.read_csv(sharded / "results/shards/offsets.csv")
    assert offsets["cells"].sum() == len(pd.read_csv(finished_run / "results/predictions.csv"))
    assert (sharded / "results/predictions.csv").read_bytes() == (
        finished_run / "results/predictions.csv"
    ).read_bytes()


@pytest.mark.slow
def test_summary_pdf_has_its_sections_figures_and_the_csv_numbers(finished_run: Path) -> None:
    from pypdf import PdfReader

    model = finished_run / "results/model"
    pdf = PdfReader(model / "train_summary.pdf")
    text = " ".join(" ".join(page.extract_text() for page in pdf.pages).split())  # lines unwrapped
    for section in (
        "training summary", "genes kept", "parameters", "windows per train cell", "device",
        "Wall time per stage", "Training curves", "Validation per class", "Confusion matrix",
        "Is the score a confidence?", "Per-epoch results", "Settings", "training speed",
    ):  # fmt: skip
        assert section in text, section
    speed = pd.read_csv(model / "combined_epoch_results.csv")[["Windows/s", "MFU"]].median()
    assert f"{speed['Windows/s']:,.0f} windows/s" in text and f"MFU {speed['MFU']:.2%}" in text
    assert sum(len(page.images) for page in pdf.pages) >= 3  # curves, confusion, scores
    selection = json.loads((model / "best_model/selection.json").read_text())
    history = pd.read_csv(model / "combined_epoch_results.csv")
    keys = ["Validation Macro F1", "Validation Accuracy", "Validation Loss"]
    held = []
    for member, rows in zip(selection["members"], (r for _, r in history.groupby("Member"))):
        ranked = rows.sort_values(keys, ascending=[False, False, True])  # the epoch number breaks ties
        assert member["epochs"] == ranked["Epoch"].tolist()[:3]  # each network averages its 3 best
        held.append(", ".join(map(str, member["epochs"])))
    best = selection["validation"]  # the ensemble's own validation metrics
    assert f"validation accuracy {best['Validation Accuracy']:.3f} (cells)" in text
    assert "mean of 2 networks (epochs " + " | ".join(held) + "), from 2 networks x 2 epochs" in text
    # the report's validation table is the best model's cells as predict decides them: the
    # networks' and the linear member's log-scores mixed, the logit adjustment, as fitted on them
    metrics = pd.read_csv(model / "validation_metrics.csv", index_col=0)
    scores = f"accuracy {metrics.loc['accuracy', 'f1']:.3f}, macro-F1 {metrics.loc['macro avg', 'f1']:.3f}"
    decision = fit_decision(read_calibration(model / "best_model"), True)
    assert decision.val_cells == yaml.safe_load((model / "run_info.yaml").read_text())["val_cells"]
    assert f"validation cells as predicted {scores} ({decision.describe()}" in text
    validate_log = (finished_run / "results/logs/model/validate.log").read_text()
    assert f"decision: {decision.describe()}" in validate_log
    assert (
        metrics.loc["accuracy", "support"]
        == yaml.safe_load((model / "run_info.yaml").read_text())["val_cells"]
    )
    for figure in ("training_curves", "validation_confusion", "validation_scores"):
        assert (model / f"{figure}.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_predictions_h5ad_holds_the_input_cells_with_predictions_and_a_umap(finished_run: Path) -> None:
    results = finished_run / "results"
    table = pd.read_csv(results / "predictions.csv", index_col=0)
    cells = ad.read_h5ad(results / "predictions.h5ad")
    source = ad.read_h5ad(results / "data/predict.h5ad")
    assert list(cells.obs_names) == list(table.index) and cells.shape == source.shape
    assert (cells.X != source.X).nnz == 0  # the input's expression, unchanged
    assert list(cells.obs["PredictedFeature"].astype(str)) == list(table["PredictedFeature"])
    np.testing.assert_allclose(cells.obs["prediction_score"], table["prediction_score"])
    assert cells.obsm["X_umap"].shape == (cells.n_obs, 2) and np.isfinite(cells.obsm["X_umap"]).all()
    metrics = pd.read_csv(results / "prediction_metrics.csv", index_col=0)
    accuracy = (table["PredictedFeature"] == table["bulk_labels"]).mean()
    assert metrics.loc["accuracy", "f1"] == pytest.approx(accuracy)
    assert (results / "prediction_umap.png").stat().st_size > 10_000


@pytest.mark.slow
def test_snakemake_html_report_lists_the_figures(finished_run: Path) -> None:
    snakemake(finished_run, "--report", "report.html")
    html = (finished_run / "report.html").read_text()
    for name in ("train_summary.pdf", "validation_confusion.png", "prediction_umap.png", "Prediction"):
        assert name in html, name


def test_prediction_target_builds_only_what_prediction_needs(tmp_path: Path) -> None:
    jobs = planned_jobs(tmp_path, "results/predictions.csv")
    assert "report" not in jobs and "all" not in jobs
    assert jobs["predict"] == 1 and jobs["train"] == 1 and jobs["contexts"] == 3


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    result = snakemake(tmp_path, "-n", config={"train": {"num_epoch": 3}}, check=False)
    assert result.returncode != 0
    assert (
        "unknown config key 'train.num_epoch'; did you mean 'train.num_epochs'?"
        in result.stdout + result.stderr
    )
    result = snakemake(tmp_path, "-n", config={"context": {"max_length": 63}}, check=False)
    assert result.returncode != 0 and "max_length" in result.stdout + result.stderr


def test_lint_and_format_are_clean(tmp_path: Path) -> None:
    lint = snakemake(tmp_path, "--lint", check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    files = [str(REPO / "Snakefile"), *map(str, sorted((REPO / "workflow/rules").glob("*.smk")))]
    fmt = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", *files], capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stderr


ONE_THREAD = {"train": {"threads": 1}, "predict": {"threads": 1}}  # two runs share the cores


def tiny_context(method: str, **extra) -> dict:
    """The one-epoch settings of .test/multiomics without ADT, for a context method."""
    context = {"method": method, "depth": 1, **extra}
    return deep_update(
        test_settings("multiomics"), {**ONE_THREAD, "data": {"multiomics": False}, "context": context}
    )


CONTEXT_METHODS = ["genomic", "biofunction", "genelist", "multiomics"]


@pytest.fixture(scope="module")
def context_runs(
    request, tmp_path_factory, pbmc
) -> tuple[dict[str, subprocess.CompletedProcess], list[str], Path]:
    """The selected context methods' workflows up to predictions.csv, two at a time (most of a
    run is single-threaded start-up); their results, the GMT lines and the root dir."""
    root = tmp_path_factory.mktemp("contexts")
    genes = list(pbmc.var_names)
    (root / "genes.txt").write_text("\n".join(genes[::2]) + "\n")
    # one gene set per cell type: its 15 most over-expressed genes (markers picked from the data)
    expression = pd.DataFrame(pbmc.X.toarray(), columns=genes)
    labels = pbmc.obs["bulk_labels"].astype(str).to_numpy()
    means = expression.groupby(labels).mean()
    lines = [
        f"{name.replace(' ', '_')}\tmarkers of {name}\t"
        + "\t".join((means.loc[name] - means.mean()).nlargest(15).index)
        for name in means.index
    ]
    (root / "sets.gmt").write_text("\n".join(lines) + "\n")
    cases = {
        "genomic": tiny_context("genomic", depth=2),  # built-in cytoband table
        "biofunction": tiny_context("biofunction", gmt=str(root / "sets.gmt")),
        "genelist": tiny_context("genelist", genelist=str(root / "genes.txt")),
        "multiomics": deep_update(test_settings("multiomics"), ONE_THREAD),  # generated ADT
    }
    selected = {
        item.callspec.params["method"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and "method" in item.callspec.params
    }

    def run(method: str) -> subprocess.CompletedProcess:
        (root / method).mkdir()
        return snakemake(root / method, "results/predictions.csv", config=cases[method], check=False)

    methods = [m for m in CONTEXT_METHODS if m in selected]
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(methods, pool.map(run, methods))), lines, root


@pytest.mark.slow
@pytest.mark.parametrize("method", CONTEXT_METHODS)
def test_every_context_method_runs_end_to_end(context_runs, method: str) -> None:
    _, lines, _ = context_runs
    results = context_results(context_runs, method)
    assert_held_out(results)
    table = pd.read_csv(results / "predictions.csv", index_col=0)
    assert len(table) == ad.read_h5ad(results / "data/predict.h5ad").n_obs
    reference = {
        "genomic": "context_cytobands.tsv",
        "biofunction": "context_gene_sets.gmt",
        "genelist": "context_genelist.txt",
        "multiomics": "adt_vocab.npy",
    }[method]
    assert (results / "model/best_model" / reference).is_file()  # prediction needs nothing else
    if method == "genomic":
        assert table["context_id"].str.match(r"^(\d+|X|Y)[pq]|unmapped").all()
    if method == "biofunction":
        names = "|".join(re.escape(n.split("\t")[0]) for n in lines)
        assert table["context_id"].str.contains(f"{names}|no_set_", regex=True).all()


def context_results(context_runs, method: str) -> Path:
    """The results dir of a context method's run, which must have succeeded."""
    runs, _, root = context_runs
    result = runs[method]
    assert result.returncode == 0, f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return root / method / "results"


def val_as_predict(results: Path) -> dict[str, str]:
    """A multi-omics run's val cells (RNA and ADT) as the data to predict."""
    return {"predict": str(results / "data/val.h5ad"), "predict_adt": str(results / "data/val_adt.h5ad")}


def multiomics_finetune_files(results: Path, root: Path) -> dict[str, str]:
    """Fine-tuning data from a multi-omics run's held-out cells: its predict cells, one class
    renamed to a new one and a new protein beside the model's; its val cells to predict."""
    cells = ad.read_h5ad(results / "data/predict.h5ad")
    proteins = ad.read_h5ad(results / "data/predict_adt.h5ad")
    labels = cells.obs["bulk_labels"].astype(str)
    cells.obs["bulk_labels"] = labels.where(labels != labels.value_counts().index[0], "New state")
    new = ad.AnnData(proteins.X[:, :1] * 2, obs=proteins.obs[[]], var=pd.DataFrame(index=["CD999"]))
    proteins = ad.concat([proteins, new], axis=1, merge="first")
    paths = {"train": root / "ft.h5ad", "train_adt": root / "ft_adt.h5ad"}
    cells.write_h5ad(paths["train"])
    proteins.write_h5ad(paths["train_adt"])
    return {key: str(path) for key, path in paths.items()}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["multiomics"])
def test_multiomics_finetuning_learns_a_new_protein_and_class(context_runs, method: str, tmp_path) -> None:
    from scgenai_flow.data import PROTEINS
    from scgenai_flow.vocab import Vocabulary

    results = context_results(context_runs, method)
    files = multiomics_finetune_files(results, tmp_path)
    config = {  # names only the new data, the model and a short run: the rest is the model's
        "finetune": {**files, "model": str(results / "model/best_model"), "num_epochs": 1, "threads": 1},
        "data": val_as_predict(results),
        "predict": {"model": "finetune", "threads": 1},
    }
    snakemake(tmp_path, "results/predictions.csv", config=config)  # no finetune.val: split off
    run = tmp_path / "results/finetune"
    assert_held_out(run)
    old, new = Vocabulary.load(results / "model/best_model"), Vocabulary.load(run / "best_model")
    assert new.tokens()[: old.size] == old.tokens()  # no old id moves
    assert list(new.adt_features) == [*PROTEINS, "CD999"] and new.n_added_adt == 1
    assert "New state" in new.classes and "ADT_CD999" in new.tokens()[old.size :]
    windows = np.load(run / "contexts/train.npz")["tokens"]
    assert (windows == new.feature_tokens(np.array([new.n_features - 1]))[0]).any()  # the new protein
    table = pd.read_csv(tmp_path / "results/predictions.csv", index_col=0)
    assert len(table) == ad.read_h5ad(results / "data/val.h5ad").n_obs
    # with a fine-tuning val file, through the original's command
    from scgenai_flow.data import write_splits

    parts = {s: tmp_path / f"part_{s}.h5ad" for s in ("train", "val")}
    write_splits(ad.read_h5ad(files["train"]), "bulk_labels", {"val": 0.3}, 3, parts)
    old_config = {
        "mode": "Finetune",
        "model_dir": str(results / "model/best_model"),
        "finetune_dir": str(tmp_path / "tuned"),
        "train_file": str(parts["train"]),
        "val_file": str(parts["val"]),
        "train_ADTfile": files["train_adt"],  # rows picked by barcode for both
        "val_ADTfile": files["train_adt"],
        "num_epochs": 1,
    }
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old_config))
    scgenai = str(Path(sys.executable).parent / "scgenai")
    command = [scgenai, "finetune", "--config_file", "old.yaml", "--cores", "2"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    tuned = Vocabulary.load(tmp_path / "tuned/best_model")
    assert tuned.n_added_adt == 1 and "New state" in tuned.classes


@pytest.mark.slow
@pytest.mark.parametrize("method", ["multiomics"])
def test_predicting_with_a_model_takes_its_adt_bins(context_runs, method: str, tmp_path) -> None:
    results = context_results(context_runs, method)
    model = results / "model/best_model"
    assert yaml.safe_load((model / "train_setting.yaml").read_text())["preprocess"]["adt_num_bins"] == 5
    config = {"data": val_as_predict(results), "predict": {"model_dir": str(model)}}
    # not set: the model's bins (and multi-omics mode, window length, ...), said in the log
    result = snakemake(tmp_path, "-n", config=config)
    assert "data.multiomics: the model's True is used (the default is False)" in result.stdout + result.stderr
    assert "preprocess_adt_aligned" in result.stdout
    # set to another value: an error naming the key, both values and the model dir
    config["preprocess"] = {"adt_num_bins": 9}
    refused = snakemake(tmp_path, "-n", config=config, check=False)
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert f"{model}: the settings that define a model come from its model dir" in said
    assert "preprocess.adt_num_bins: config 9, model 5" in said


def header_command(path: Path) -> str:
    """The command a `.test/<name>/config.yaml` shows in its header (`#   snakemake ...`, `\\` joins)."""
    lines = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#   ")]
    return " ".join(line.rstrip("\\").strip() for line in lines)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / ".test").iterdir()))
def test_each_test_config_runs_by_hand_as_its_header_shows(
    name: str, tmp_path: Path, pbmc_h5ad: Path
) -> None:
    command = header_command(REPO / ".test" / name / "config.yaml")
    assert command.startswith("snakemake --cores 2 --configfile config/config.yaml .test/")
    (tmp_path / "my_new_cells.h5ad").symlink_to(pbmc_h5ad)  # the fine-tuning example's file
    snakemake_dry = f"{sys.executable} -m snakemake -s Snakefile -d {tmp_path} -n"
    result = subprocess.run(
        command.replace("snakemake", snakemake_dry, 1), shell=True, cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    expected = {
        "shards": "shard_predict",
        "finetune": "finetune_vocabulary",
        "multiomics": "preprocess_adt_train",
    }
    assert expected.get(name, "train") in result.stdout

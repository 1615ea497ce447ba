"""Which jobs a config change re-runs after a finished run: every key of the schema, classified.

A key that says how a job runs (threads, GPUs, processes, chunk and batch sizes) re-runs nothing;
a key that changes what a stage computes re-runs that stage and exactly what depends on it. The
table below names, per key, a changed value and the rules `snakemake -n` must then plan; a key
the schema gains without a row here fails the test, so no key slips in unclassified.
"""

from __future__ import annotations

import copy
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO
from test_workflow import TINY, planned_jobs, snakemake

from scgenai_flow.config import load_schema

# The rules of a whole run on the embedded data (check_inputs is cheap and re-checks on any
# change of the files or checks it plans; its consumers take it as `ancient`).
PREDICTION = {"validate", "report", "predict", "prediction_report"}
TRAINING = {"train", *PREDICTION}
CONTEXTS = {"contexts", *TRAINING}
PREPROCESSING = {"preprocess_train", "preprocess_aligned", "vocabulary", *CONTEXTS}
SPLIT = {"split_data", *PREPROCESSING}
EVERYTHING = {"check_inputs", *SPLIT}
NOTHING: set[str] = set()
NEW_PREDICT_DATA = {"check_inputs", "preprocess_aligned", "contexts", "predict", "prediction_report"}
FINETUNING = {"finetune_split", "finetune_vocabulary", "finetune_preprocess", "finetune_contexts", "finetune"}
SHARDED = {"shard_predict", "preprocess_aligned", "contexts", "predict_shard", "gather_predictions"}

# key -> (a changed value, the rules a dry run of `all` plans after the finished run). Paths are
# relative to the run's workdir, where `user_files` writes them.
CHANGES: dict[str, tuple[object, set[str]]] = {
    "results": ("elsewhere", EVERYTHING),
    "seed": (7, SPLIT),
    # own data: a different DAG (the split carves only val out of the user's file; no predict file)
    "data.train": ("user/train.h5ad", EVERYTHING - {"predict", "prediction_report"}),
    "data.val": ("user/val.h5ad", {"check_inputs", "preprocess_aligned", *CONTEXTS}),
    "data.predict": ("user/predict.h5ad", NEW_PREDICT_DATA),
    "data.target_feature": ("louvain", EVERYTHING),
    "data.use_raw": (True, SPLIT),
    "data.val_fraction": (0.2, SPLIT),
    "data.predict_fraction": (0.2, SPLIT),
    "data.multiomics": (True, {"preprocess_adt_train", "preprocess_adt_aligned", *SPLIT}),
    # ADT files are read only in multi-omics mode
    "data.train_adt": ("user/adt.h5ad", NOTHING),
    "data.val_adt": ("user/adt.h5ad", NOTHING),
    "data.predict_adt": ("user/adt.h5ad", NOTHING),
    "preprocess.min_cells": (100, PREPROCESSING),
    "preprocess.num_bins": (5, PREPROCESSING),
    "preprocess.top_genes": (100, PREPROCESSING),
    "preprocess.binning": ("cell_quantile", PREPROCESSING),
    "preprocess.adt_num_bins": (3, NOTHING),  # multi-omics only
    "preprocess.chunk_cells": (100, NOTHING),
    # a new vocabulary: val and predict are aligned to it again
    "context.method": ("genomic", {"vocabulary", "preprocess_aligned", *CONTEXTS}),
    "context.max_length": (64, CONTEXTS),
    "context.depth": (2, CONTEXTS),
    # reference files are read only by their context method
    "context.genelist": ("user/genes.txt", NOTHING),
    "context.cytobands": ("user/bands.tsv", NOTHING),
    "context.gmt": ("user/sets.gmt", NOTHING),
    "model.backbone": ("gpt", TRAINING),
    "model.size": ("small", TRAINING),
    "model.dropout": (0.2, TRAINING),
    "model.linear_member": (False, TRAINING),
    "model.gene_init": ("random", TRAINING),
    "model.pooling": ("last", TRAINING),
    "model.pair_input": ("interleaved", TRAINING),
    "train.num_epochs": (3, TRAINING),
    "train.batch_size": (8, TRAINING),
    "train.learning_rate": (1e-4, TRAINING),
    "train.weight_decay": (0.1, TRAINING),
    "train.lr_schedule": ("warmup_cosine", TRAINING),
    "train.warmup_fraction": (0.2, TRAINING),
    "train.class_weight": ("none", TRAINING),
    "train.label_smoothing": (0.1, TRAINING),
    "train.gene_dropout": (0.1, TRAINING),
    "train.resample_windows": (True, TRAINING),
    "train.batching": ("by_length", TRAINING),
    "train.loss": ("cell", TRAINING),
    "train.select_by": ("accuracy", TRAINING),
    "train.average_best": (1, TRAINING),
    "train.ensemble": (1, TRAINING),
    "train.patience": (1, TRAINING),
    "train.threads": (1, NOTHING),
    "train.gpu": (1, NOTHING),
    "train.processes": (2, NOTHING),
    # fine-tuning: its own stages, never the base model's
    "finetune.train": ("user/train.h5ad", {"check_inputs", *FINETUNING, "validate", "report"}),
    # used only with finetune.train
    "finetune.val": ("user/val.h5ad", NOTHING),
    "finetune.model": ("user/model", NOTHING),
    "finetune.train_adt": ("user/adt.h5ad", NOTHING),
    "finetune.val_adt": ("user/adt.h5ad", NOTHING),
    "finetune.use_raw": (True, NOTHING),
    "finetune.min_cells": (10, NOTHING),
    "finetune.num_epochs": (5, NOTHING),
    "finetune.batch_size": (4, NOTHING),
    "finetune.learning_rate": (1e-4, NOTHING),
    "finetune.weight_decay": (0.1, NOTHING),
    "finetune.threads": (1, NOTHING),
    "finetune.gpu": (1, NOTHING),
    "finetune.processes": (2, NOTHING),
    "predict.model": ("train", NOTHING),  # the default; 'finetune' needs finetune.train
    # an existing model and the embedded data: nothing to train, nothing of the user's to predict
    "predict.model_dir": ("user/model", NOTHING),
    "predict.batch_size": (8, NOTHING),
    "predict.threads": (1, NOTHING),
    "predict.gpu": (1, NOTHING),
    "predict.aggregation": ("max", TRAINING),  # it decides the validation cells that pick epochs
    "predict.logit_adjustment": (0.5, PREDICTION),
    "predict.linear_weight": (1.0, PREDICTION),
    "predict.calibrate": (False, PREDICTION),
    "predict.unassigned_below": (0.5, {"predict", "prediction_report"}),
    "predict.shards": (2, {*SHARDED, "prediction_report"}),
}  # fmt: skip


def schema_keys() -> list[str]:
    """Every leaf key of the config schema, dotted."""
    keys = []
    for name, node in load_schema()["properties"].items():
        if node.get("type") == "object":
            keys += [f"{name}.{key}" for key in node["properties"]]
        else:
            keys.append(name)
    return keys


def test_every_schema_key_is_classified() -> None:
    assert sorted(CHANGES) == sorted(schema_keys())


def changed(key: str, value: object) -> dict:
    """TINY (the finished run's config) with `key` set to `value`."""
    config = copy.deepcopy(TINY)
    *sections, name = key.split(".")
    target = config
    for section in sections:
        target = target.setdefault(section, {})
    target[name] = value
    return config


def user_files(workdir: Path, pbmc) -> None:
    """The files the table's path values name (real data, a model dir, references)."""
    from scgenai_flow.io import write_h5ad

    user = workdir / "user"
    if user.is_dir():
        return
    user.mkdir()
    write_h5ad(pbmc[:500].copy(), user / "train.h5ad")
    write_h5ad(pbmc[500:600].copy(), user / "val.h5ad")
    write_h5ad(pbmc[600:].copy(), user / "predict.h5ad")
    write_h5ad(pbmc[:, :20].copy(), user / "adt.h5ad")
    genes = list(pbmc.var_names)
    (user / "genes.txt").write_text("\n".join(genes[:100]) + "\n")
    (user / "bands.tsv").write_text(
        "gene_symbol\tcytobandID\n" + "".join(f"{g}\t1p{i % 9}\n" for i, g in enumerate(genes))
    )
    (user / "sets.gmt").write_text("set\tdesc\t" + "\t".join(genes[:30]) + "\n")
    shutil.copytree(workdir / "results/model/best_model", user / "model")


@pytest.mark.slow
def test_a_changed_key_reruns_what_it_changes_and_nothing_else(finished_run: Path, pbmc) -> None:
    user_files(finished_run, pbmc)
    shutil.rmtree(finished_run / str(CHANGES["results"][0]), ignore_errors=True)
    assert planned_jobs(finished_run, "all") == {}

    def plan(key: str) -> set[str]:
        return set(planned_jobs(finished_run, "all", config=changed(key, CHANGES[key][0]))) - {"all"}

    with ThreadPoolExecutor(2) as pool:
        planned = dict(zip(CHANGES, pool.map(plan, CHANGES)))
    # check_inputs is a checkpoint: a dry run shows the stages after it only once it has run
    for key in [key for key, rules in planned.items() if "check_inputs" in rules]:
        config = changed(key, CHANGES[key][0])
        snakemake(finished_run, f"{config.get('results', 'results')}/checks/inputs.ok", config=config)
        planned[key] = {"check_inputs", *plan(key)}
    snakemake(finished_run, "results/checks/inputs.ok")  # back to the finished run's own config
    shutil.rmtree(finished_run / str(CHANGES["results"][0]))
    wrong = {
        key: {"expected": sorted(CHANGES[key][1]), "planned": sorted(rules)}
        for key, rules in planned.items()
        if rules != CHANGES[key][1]
    }
    assert not wrong, "\n".join(f"{key}: {diff}" for key, diff in wrong.items())
    assert planned_jobs(finished_run, "all") == {}


def test_the_table_names_only_rules_of_the_workflow() -> None:
    rules = set()
    for path in [REPO / "Snakefile", *(REPO / "workflow/rules").glob("*.smk")]:
        rules |= {
            line.split()[1].rstrip(":")
            for line in path.read_text().splitlines()
            if line.strip().startswith(("rule ", "checkpoint "))
        }
    assert set().union(*(expected for _, expected in CHANGES.values())) <= rules

"""Our workflow on a split, run through Snakemake as a user would: the split files as
data.train / data.val / data.predict (or a given train file whole, with data.val null), a named
config on top of config/config.yaml."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import pandas as pd
import yaml

from scgenai_flow.io import InputError, read_obs
from scgenai_flow.metrics import evaluate_predictions, expected_calibration_error

CONFIGS = Path(__file__).resolve().parent / "configs"
log = logging.getLogger("accuracy")
# Rules on the way to a trained model, and those that predict (benchmarks/<name>.tsv).
TRAIN_STAGES = (
    "split_data",
    "preprocess/train",
    "preprocess/val",
    "vocabulary",
    "contexts/train",
    "contexts/val",
    "train",
)
PREDICT_STAGES = ("preprocess/predict", "contexts/predict", "predict")
# The validate rule's output: the best model's prediction of every validation cell.
VALIDATION = "model/validation_predictions.csv"
TARGETS = ("predictions.csv", VALIDATION)  # what the harness asks Snakemake for, under results/


def config_path(name: str) -> Path:
    """A named config (benchmarks/accuracy/configs/NAME.yaml) or a YAML path."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONFIGS / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
        raise InputError(f"config {name!r}: no file {path}; named configs: {known}")
    return path


def effective(repo: Path, named: Path) -> dict:
    """config/config.yaml with the named overrides merged in (as Snakemake merges them)."""

    def merge(base: dict, extra: dict) -> dict:
        out = dict(base)
        for key, value in extra.items():
            out[key] = (
                merge(out[key], value)
                if isinstance(value, dict) and isinstance(out.get(key), dict)
                else value
            )
        return out

    base = yaml.safe_load((repo / "config" / "config.yaml").read_text()) or {}
    return with_schema_defaults(repo, merge(base, yaml.safe_load(named.read_text()) or {}))


def with_schema_defaults(repo: Path, config: dict) -> dict:
    """The keys `config` leaves out from the repo's schema defaults, as Snakemake's validation
    fills them (a checkout whose config/config.yaml sets every key has nothing to add)."""
    from scgenai_flow.config import with_defaults

    schema = repo / "workflow" / "schemas" / "config.schema.yaml"
    return with_defaults(config, yaml.safe_load(schema.read_text())) if schema.is_file() else config


def write_if_changed(target: Path, text: str) -> Path:
    """Keep an identical file (and its time stamp: it is an input of the vocabulary rule)."""
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return target


def write_hvg_list(train: ad.AnnData, target: Path, n_top: int = 300) -> Path:
    """Highly variable genes of the training cells (Seurat flavour on log values)."""
    import scanpy as sc

    table = sc.pp.highly_variable_genes(train, n_top_genes=min(n_top, train.n_vars // 2), inplace=False)
    genes = train.var_names[table["highly_variable"].to_numpy()]
    return write_if_changed(target, "\n".join(genes) + "\n")


def write_marker_gmt(train: ad.AnnData, label: str, target: Path, n_genes: int = 25) -> Path:
    """One gene set per class: its top `n_genes` by t-test against the rest, training cells only."""
    import scanpy as sc

    data = ad.AnnData(X=train.X, obs=train.obs[[label]], var=train.var[[]])
    sc.tl.rank_genes_groups(data, label, method="t-test", n_genes=n_genes)
    names = data.uns["rank_genes_groups"]["names"]
    lines = [
        "\t".join([f"markers_{group}", "training-split markers", *names[group]])
        for group in names.dtype.names
    ]
    return write_if_changed(target, "\n".join(lines) + "\n")


def references(config: dict, train: ad.AnnData, label: str, directory: Path) -> dict:
    """Reference files the context method needs and the config leaves null, made from train."""
    method = config["context"]["method"]
    directory.mkdir(parents=True, exist_ok=True)
    if method == "genelist" and not config["context"].get("genelist"):
        return {"genelist": str(write_hvg_list(train, directory / "hvg_genes.txt"))}
    if method in ("biofunction", "biofounction") and not config["context"].get("gmt"):
        return {"gmt": str(write_marker_gmt(train, label, directory / "train_markers.gmt"))}
    return {}


def stage_seconds(results: Path, stages: tuple[str, ...]) -> float:
    """Sum of the wall seconds Snakemake's benchmark files recorded for these rules."""
    total = 0.0
    for stage in stages:
        path = results / "benchmarks" / f"{stage}.tsv"
        if path.exists():
            total += float(pd.read_csv(path, sep="\t")["s"].iloc[-1])
    return total


def run_ours(
    name: str,
    paths: dict[str, Path],
    train: ad.AnnData,
    label: str,
    seed: int,
    workdir: Path,
    repo: Path,
    cores: int,
    val_fraction: float = 0.15,
) -> dict:
    """Run the workflow up to predictions.csv (and the validation cells' predictions); return
    predictions (test order), scores, times and validation metrics."""
    named = config_path(name)
    config = effective(repo, named)
    workdir.mkdir(parents=True, exist_ok=True)
    overrides = {
        "results": str(workdir / "results"),
        "seed": (yaml.safe_load(named.read_text()) or {}).get("seed", seed),  # a config may fix its own
        "data": workflow_data(paths, label, val_fraction),
    }
    context = references(config, train, label, workdir / "references")
    if context:
        overrides["context"] = context
    (workdir / "harness.yaml").write_text(yaml.safe_dump(overrides, sort_keys=False))
    results = workdir / "results"
    command = [
        *(sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir)),
        *("--cores", str(cores), "--rerun-incomplete", *(str(results / t) for t in TARGETS)),
        *("--configfile", str(repo / "config" / "config.yaml"), str(named), str(workdir / "harness.yaml")),
    ]
    started = time.perf_counter()
    with open(workdir / "snakemake.log", "w") as log:
        # the snapshot's package, not the one installed in the venv (an editable checkout)
        path = os.pathsep.join(filter(None, (str(repo / "src"), os.environ.get("PYTHONPATH"))))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"workflow run {name!r} failed: see {workdir / 'snakemake.log'}")
    table = pd.read_csv(results / "predictions.csv", index_col=0)
    return {
        "predicted": table["PredictedFeature"].astype(str).to_numpy(),
        "score": table["prediction_score"].to_numpy(dtype=float),
        "train_s": stage_seconds(results, TRAIN_STAGES),
        "predict_s": stage_seconds(results, PREDICT_STAGES),
        "wall_s": time.perf_counter() - started,
        "results": results,
        **epochs(results, config["train"].get("select_by", "accuracy")),
        **validation(results, label, paths),
        **decision(results, config["predict"]),
    }


def decision(results: Path, settings: dict) -> dict:
    """How predict decided with the config's `predict` settings (the member's weight, the logit
    adjustment), and the test cells decided by the model's linear member alone (weight 1, the
    rest as predict fits it)."""
    from scgenai_flow.decide import fit_decision
    from scgenai_flow.modeldir import has_linear_member
    from scgenai_flow.models import read_calibration
    from scgenai_flow.predict import predict_from_files

    model = results / "model" / "best_model"
    member = has_linear_member(model)
    chosen = fit_decision(
        read_calibration(model), member, settings["linear_weight"], settings["logit_adjustment"]
    )
    fitted = {"linear_weight": chosen.linear_weight, "logit_adjustment": chosen.logit_adjustment}
    if not member:
        return fitted
    started = time.perf_counter()
    table = predict_from_files(
        *(str(results / "contexts" / "predict.npz"), str(results / "preprocessed" / "predict.h5ad")),
        *(str(model), 64, 0, 1, str(results.parent / "linear_alone.csv")),
        linear_weight=1.0,
    )
    linear = {
        "predicted": table["PredictedFeature"].astype(str).to_numpy(),
        "score": table["prediction_score"].to_numpy(dtype=float),
        "train_s": float("nan"),
        "predict_s": time.perf_counter() - started,
    }
    return {**fitted, "linear_alone": linear}


def workflow_data(paths: dict[str, Path], label: str, val_fraction: float) -> dict:
    """The `data` section: the split files, or (given a `source`) the whole train file with
    data.val null, so that the workflow splits val off it as a user's run does."""
    own = "source" in paths
    return {
        "train": str(paths["source" if own else "train"]),
        "val": None if own else str(paths["val"]),
        "predict": str(paths["test"]),
        "target_feature": label,
        "use_raw": False,
        **({"val_fraction": val_fraction} if own else {}),
    }


def validation(results: Path, label: str, paths: dict[str, Path]) -> dict[str, float]:
    """Macro-F1 and ECE of the validation cells as the validate rule predicted them; warns when
    the workflow's own val split is not the harness's (the baselines train without it)."""
    table = pd.read_csv(results / VALIDATION, index_col=0)
    if set(table.index.astype(str)) != set(read_obs(paths["val"]).index.astype(str)):
        log.warning("%s: the workflow's validation cells differ from the harness's %s", results, paths["val"])
    scored = evaluate_predictions(table, label)
    return {
        "val_macro_f1": float(scored.table.loc["macro avg", "f1"]),
        "val_ece": expected_calibration_error(scored.scores, scored.correct),
    }


def epochs(results: Path, select_by: str) -> dict[str, int]:
    """Epochs trained (fewer than num_epochs after an early stop) and the best model's epoch,
    chosen as train.fit chooses it."""
    from scgenai_flow.metrics import best_row

    history = pd.read_csv(results / "model" / "combined_epoch_results.csv")
    return {"epochs": len(history), "best_epoch": int(best_row(history, select_by)["Epoch"])}

"""Our workflow on a split, run through Snakemake as a user would: the split files as
data.train / data.val / data.predict, a named config on top of config/config.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import pandas as pd
import yaml

from scgenai_flow.io import InputError

CONFIGS = Path(__file__).resolve().parent / "configs"
# Rules on the way to a trained model, and those that predict (benchmarks/<name>.tsv).
TRAIN_STAGES = ("preprocess/train", "preprocess/val", "vocabulary", "contexts/train", "contexts/val", "train")
PREDICT_STAGES = ("preprocess/predict", "contexts/predict", "predict")


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

    base = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    return merge(base, yaml.safe_load(named.read_text()) or {})


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
) -> dict:
    """Run the workflow up to predictions.csv; return predictions (test order), scores, times."""
    named = config_path(name)
    config = effective(repo, named)
    workdir.mkdir(parents=True, exist_ok=True)
    overrides = {
        "results": str(workdir / "results"),
        "seed": (yaml.safe_load(named.read_text()) or {}).get("seed", seed),  # a config may fix its own
        "data": {
            "train": str(paths["train"]),
            "val": str(paths["val"]),
            "predict": str(paths["test"]),
            "target_feature": label,
            "use_raw": False,
        },
    }
    context = references(config, train, label, workdir / "references")
    if context:
        overrides["context"] = context
    (workdir / "harness.yaml").write_text(yaml.safe_dump(overrides, sort_keys=False))
    results = workdir / "results"
    command = [
        *(sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir)),
        *("--cores", str(cores), "--rerun-incomplete", str(results / "predictions.csv")),
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
    }


def epochs(results: Path, select_by: str) -> dict[str, int]:
    """Epochs trained (fewer than num_epochs after an early stop) and the best model's epoch,
    chosen as train.fit chooses it."""
    from scgenai_flow.metrics import best_row

    history = pd.read_csv(results / "model" / "combined_epoch_results.csv")
    return {"epochs": len(history), "best_epoch": int(best_row(history, select_by)["Epoch"])}

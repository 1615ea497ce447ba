import copy
import os
import sys

import yaml
from snakemake.utils import validate

SRC = os.path.join(workflow.basedir, "src")
# Rule scripts import the package from this checkout, also in conda envs and cluster jobs.
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# UMAP's nearest-neighbour code is numba-compiled (~30 s per process); cache it across jobs.
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.abspath(".snakemake/numba-cache"))

from scgenai_flow.adopt import adopt_model_settings, model_multiomics
from scgenai_flow.config import check_config, gpu_request, model_config
from scgenai_flow.contexts.reference import REFERENCES
from scgenai_flow.data import EMBEDDED
from scgenai_flow.legacy import is_legacy, translate

if is_legacy(config):  # a config file of the original scGenAI (flat keys): translate it
    from snakemake.logging import logger

    LEGACY = translate(config)
    for note in LEGACY.notes:
        logger.info(f"scGenAI config: {note}")
    config.clear()
    config.update(LEGACY.config)

SCHEMA = os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")
with open(SCHEMA) as handle:
    check_config(config, yaml.safe_load(handle))
GIVEN = copy.deepcopy(dict(config))  # what the user set (validation adds the defaults)
validate(config, SCHEMA)

PREDICT_DIR = config["predict"]["model_dir"]
# An existing model and no training data: `all` runs only that model's stages.
EXTERNAL_ONLY = config["data"]["train"] is None and bool(
    PREDICT_DIR or config["finetune"]["model"]
)
EXTERNAL_MODEL = config["finetune"]["model"] or PREDICT_DIR
if EXTERNAL_ONLY and os.path.isdir(EXTERNAL_MODEL):
    # what defines the model (binning, windows, network) comes from it; check_inputs reports a
    # missing dir
    from snakemake.logging import logger

    ADOPTED, NOTES = adopt_model_settings(config, GIVEN, EXTERNAL_MODEL)
    for note in NOTES:
        logger.info(f"{EXTERNAL_MODEL}: {note}")
    config.update(ADOPTED)

R = config["results"]
DATA = config["data"]
ENV = "../../envs/scgenai-flow.yaml"
EMBEDDED_DATA = DATA["train"] is None
HAS_PREDICT = DATA["predict"] is not None or (EMBEDDED_DATA and not EXTERNAL_ONLY)
MULTIOMICS = DATA["multiomics"]
if MULTIOMICS and not EMBEDDED_DATA and DATA["val"] is None:
    raise ValueError(
        "data.multiomics with your own data needs data.val and data.val_adt"
    )


FT = config["finetune"]
FINETUNE = FT["train"] is not None
F = f"{R}/finetune"
if config["predict"]["model"] == "finetune" and not FINETUNE:
    raise ValueError("predict.model is 'finetune' but finetune.train is not set")
# the model fine-tuning starts from is multi-omics: its data need ADT files too
FT_MULTIOMICS = FINETUNE and (
    model_multiomics(FT["model"]) if FT["model"] else MULTIOMICS
)
if FT_MULTIOMICS and (FT["train_adt"] is None or (FT["val"] and FT["val_adt"] is None)):
    raise ValueError(
        "fine-tuning a multi-omics (RNA + ADT) model needs finetune.train_adt"
        + (" and finetune.val_adt" if FT["val"] else "")
    )


def pretrained_model():
    """The model dir fine-tuning starts from."""
    return FT["model"] or f"{R}/model/best_model"


def finetune_source(split):
    """The fine-tuning h5ad of a split: the user's files, or the split rule's (train without val)."""
    if FT["train"] is not None and FT["val"] is not None:
        return FT[split]
    return f"{F}/data/{split}.h5ad"


def finetune_adt_source(split):
    """The fine-tuning ADT file of a split: without finetune.val both splits read the train
    ADT file, whose rows are picked by the RNA split's barcodes."""
    return FT["val_adt"] if split == "val" and FT["val"] else FT["train_adt"]


def finetune_adt_input(split):
    """The preprocessed fine-tuning ADT file of a split as a named input (multi-omics)."""
    return {"adt": f"{F}/preprocessed/{split}_adt.h5ad"} if FT_MULTIOMICS else {}


SHARDS = config["predict"]["shards"]
if SHARDS > 1 and MULTIOMICS:
    raise ValueError("predict.shards > 1 is not supported with data.multiomics; use 1")


def base_split(split):
    """'predict_3' (a shard of the predict data) -> 'predict'."""
    return split.split("_")[0]


def shard_offsets(split):
    """For a shard of the predict data: the table of shard offsets, as a named input."""
    return {"offsets": f"{R}/shards/offsets.csv"} if split != base_split(split) else {}


def vocab_for(split):
    """The vocabulary a split is aligned to: the predicting model's when it is not trained here."""
    split = base_split(split)
    if split == "predict" and PREDICT_DIR:
        return PREDICT_DIR
    if split == "predict" and config["predict"]["model"] == "finetune":
        return f"{F}/vocab"
    return f"{R}/vocab"


def pretrained_for(split):
    """A model not trained here: predict windows follow its (pretrained) context settings."""
    split = base_split(split)
    if split == "predict" and PREDICT_DIR:
        return {"pretrained": PREDICT_DIR}
    if split == "predict" and config["predict"]["model"] == "finetune":
        return {"pretrained": pretrained_model()}
    return {}


def predict_model():
    """The model dir that predicts."""
    if PREDICT_DIR:
        return PREDICT_DIR
    if config["predict"]["model"] == "finetune":
        return f"{F}/best_model"
    return f"{R}/model/best_model"


def split_fractions():
    """Parts the split rule carves out of its source ("train" takes the rest)."""
    if EMBEDDED_DATA:
        return {"val": DATA["val_fraction"], "predict": DATA["predict_fraction"]}
    if DATA["val"] is None:
        return {"val": DATA["val_fraction"]}
    return {}


def source_h5ad(split):
    """The h5ad a split is read from: the user's file, the split rule's or the shard rule's output.
    Training reads what split_data left after carving out val (and predict), never the whole
    file, whose held-out cells would otherwise be trained on."""
    if split != base_split(split):
        return f"{R}/shards/{split}.h5ad"
    if split == "train" and split_fractions():
        return f"{R}/data/train.h5ad"
    given = DATA[split]
    return given if given is not None else f"{R}/data/{split}.h5ad"


def adt_source(split):
    """The ADT h5ad of a split: the user's file, or generated beside the embedded data."""
    given = DATA[f"{split}_adt"]
    if given is not None:
        return given
    if EMBEDDED_DATA:
        return f"{R}/data/{split}_adt.h5ad"
    raise ValueError(
        f"data.multiomics is true: data.{split}_adt (an ADT .h5ad) is required"
    )


def adt_input(split):
    """The preprocessed ADT file of a split as a named input, in multi-omics mode."""
    return {"adt": f"{R}/preprocessed/{split}_adt.h5ad"} if MULTIOMICS else {}


def adt_settings():
    return {
        "num_bins": config["preprocess"]["adt_num_bins"],
        "binning": config["preprocess"]["binning"],
        "min_cells": 0,
        "seed": config["seed"],
        "use_raw": False,
    }


def uses_raw(split):
    """`.raw` is read from user files only; split outputs already hold the chosen matrix."""
    return DATA["use_raw"] and source_h5ad(split) == DATA.get(split)


def preprocess_settings(split):
    """Settings of the preprocess rules (params: a change re-runs them)."""
    return {
        "num_bins": config["preprocess"]["num_bins"],
        "binning": config["preprocess"]["binning"],
        "min_cells": config["preprocess"]["min_cells"],
        "seed": config["seed"],
        "use_raw": uses_raw(split),
        # only the training file chooses genes: the others follow its vocabulary
        **(
            {"top_genes": config["preprocess"]["top_genes"]} if split == "train" else {}
        ),
    }


def context_reference():
    """The user's reference file of the context method, as a named input (if any)."""
    key = REFERENCES.get(config["context"]["method"], (None,))[0]
    path = config["context"].get(key) if key else None
    return {"reference": path} if path else {}


# One set of rules for both runs: {run} is "model" (training) or "finetune".
RUN_DIRS = {"model": "", "finetune": "finetune/"}


def run_stage(wildcards, path):
    """A path of the stages that fed run `wildcards.run` (fine-tuning has its own)."""
    return f"{R}/{RUN_DIRS[wildcards.run]}{path}"


def train_config(loop="train"):
    """The config that training computes from (its params, saved as train_setting.yaml);
    execution and prediction-only keys left out, so that changing them does not retrain.
    """
    return model_config(
        config, loop, REFERENCES.get(config["context"]["method"], (None,))[0]
    )


def gpus(section):
    """GPUs that a job asks the scheduler for (`auto` asks for none; a visible GPU is still used)."""
    return gpu_request(config[section]["gpu"])


def scaled(base, per_mb):
    """A resource (MB of memory, minutes of runtime) growing with the job's input size and
    doubling on each retry, so large data sets and SLURM time limits get what they need.
    """
    return lambda wildcards, input, attempt: int(
        (base + per_mb * input.size_mb) * attempt
    )


def log(name):
    return f"{R}/logs/{name}.log"


def bench(name):
    return f"{R}/benchmarks/{name}.tsv"


def all_targets():
    runs = [*([] if EXTERNAL_ONLY else ["model"]), *(["finetune"] if FINETUNE else [])]
    targets = [
        f"{R}/{run}/{name}"
        for run in runs
        for name in (
            "best_model",
            "last_model",
            "combined_epoch_results.csv",
            "train_summary.pdf",
            "validation_metrics.csv",
        )
    ]
    if HAS_PREDICT:
        targets += [
            f"{R}/predictions.csv",
            f"{R}/predictions.h5ad",
            f"{R}/prediction_umap.png",
        ]
    return targets

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

from scgenai_flow.config import check_config
from scgenai_flow.contexts.reference import REFERENCES
from scgenai_flow.data import EMBEDDED

SCHEMA = os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")
with open(SCHEMA) as handle:
    check_config(config, yaml.safe_load(handle))
validate(config, SCHEMA)

R = config["results"]
DATA = config["data"]
ENV = "../../envs/scgenai-flow.yaml"
EMBEDDED_DATA = DATA["train"] is None
HAS_PREDICT = EMBEDDED_DATA or DATA["predict"] is not None
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


def pretrained_model():
    """The model dir fine-tuning starts from."""
    return FT["model"] or f"{R}/model/best_model"


def finetune_source(split):
    """The fine-tuning h5ad of a split: the user's file or the hold-out split."""
    if split == "val" and FT["val"] is not None:
        return FT["val"]
    if split == "train" and FT["val"] is not None:
        return FT["train"]
    return f"{F}/data/{split}.h5ad"


def vocab_for(split):
    """The vocabulary a split is aligned to: the fine-tuned one when it predicts."""
    if split == "predict" and config["predict"]["model"] == "finetune":
        return f"{F}/vocab"
    return f"{R}/vocab"


def pretrained_for(split):
    """With the fine-tuned model, predict windows follow its pretrained context settings."""
    if split == "predict" and config["predict"]["model"] == "finetune":
        return {"pretrained": pretrained_model()}
    return {}


def predict_model():
    """The model dir that predicts."""
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
    """The h5ad a split is read from: the user's file or the split rule's output."""
    given = DATA[split]
    if given is not None and not (split == "train" and EMBEDDED_DATA):
        return given
    return f"{R}/data/{split}.h5ad"


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
        "min_cells": 0,
        "seed": config["seed"],
        "use_raw": False,
        "chunk_cells": config["preprocess"]["chunk_cells"],
    }


def uses_raw(split):
    """`.raw` is read from user files only; split outputs already hold the chosen matrix."""
    return DATA["use_raw"] and source_h5ad(split) == DATA[split]


def preprocess_settings(split):
    """Settings of the preprocess rules (params: a change re-runs them)."""
    return {
        "num_bins": config["preprocess"]["num_bins"],
        "min_cells": config["preprocess"]["min_cells"],
        "seed": config["seed"],
        "use_raw": uses_raw(split),
        "chunk_cells": config["preprocess"]["chunk_cells"],
    }


def context_reference():
    """The user's reference file of the context method, as a named input (if any)."""
    key = REFERENCES.get(config["context"]["method"], (None,))[0]
    path = config["context"].get(key) if key else None
    return {"reference": path} if path else {}


def log(name):
    return f"{R}/logs/{name}.log"


def bench(name):
    return f"{R}/benchmarks/{name}.tsv"


def all_targets():
    targets = [
        f"{R}/model/best_model",
        f"{R}/model/last_model",
        f"{R}/model/combined_epoch_results.csv",
        f"{R}/model/train_summary.pdf",
    ]
    if HAS_PREDICT:
        targets.append(f"{R}/predictions.csv")
    if FINETUNE:
        targets += [f"{F}/best_model", f"{F}/last_model", f"{F}/train_summary.pdf"]
    return targets

"""Fine-tuning: extend a trained model's vocabulary and classes, keep its settings."""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

import numpy as np

from .contexts import ContextSettings
from .io import InputError, atomic_path, read_obs, read_var_names
from .modeldir import read_settings
from .preprocess import check_unique_genes, scan_matrix
from .vocab import Vocabulary, require_label_column

log = logging.getLogger(__name__)


MODEL_DEFINING = (
    ("context", "method"),
    ("context", "max_length"),
    ("context", "depth"),
    ("preprocess", "num_bins"),
    ("preprocess", "binning"),
    ("model", "backbone"),
    ("model", "size"),
    ("model", "pooling"),
    ("model", "pair_input"),
    ("data", "multiomics"),
)


def check_no_conflict(model_dir: str | Path, pretrained: dict, config: dict) -> None:
    """Settings that define a model come from the pretrained one; a different value is an error."""
    clashes = [
        f"{section}.{key}: config {config[section][key]!r}, model {pretrained[section][key]!r}"
        for section, key in MODEL_DEFINING
        if key in pretrained.get(section, {}) and config[section][key] != pretrained[section][key]
    ]
    if clashes:
        raise InputError(
            f"{model_dir}: fine-tuning keeps the pretrained model's settings, but the config differs:\n  "
            + "\n  ".join(clashes)
        )


def finetune_config(model_dir: str | Path, config: dict) -> dict:
    """Settings of a fine-tuning run: the pretrained model's, plus this run's `finetune` section."""
    check_no_conflict(model_dir, read_settings(model_dir), config)
    settings = copy.deepcopy(read_settings(model_dir))
    settings["seed"] = config["seed"]
    settings["finetune"] = {**config["finetune"], "model": str(model_dir)}
    return settings


def context_settings_of(model_dir: str | Path) -> ContextSettings:
    """The window settings a model was trained with: fine-tuning data must use the same."""
    settings = read_settings(model_dir)
    context = settings["context"]
    return ContextSettings(
        method=context["method"],
        max_length=context["max_length"],
        depth=context["depth"],
        seed=settings["seed"],
    )


def extended_vocabulary(
    model_dir: str | Path, h5ad: str | Path, target_feature: str, min_cells: int, seed: int, use_raw: bool
) -> Vocabulary:
    """The model's vocabulary plus the fine-tuning data's new genes (expressed in at least
    `min_cells` cells, in a seeded order) and new labels, both appended at the end."""
    old = Vocabulary.load(model_dir)
    genes = read_var_names(h5ad, use_raw)
    check_unique_genes(genes, h5ad)
    scan = scan_matrix(h5ad, use_raw)
    candidates = genes[scan.expressed_cells >= min_cells]
    candidates = candidates[np.random.default_rng(seed).permutation(candidates.size)]
    labels = require_label_column(read_obs(h5ad), target_feature, str(h5ad)).dropna().astype(str)
    vocab = old.extend(candidates, np.unique(labels))
    log.info(
        "%s: %d new genes (%d in all), %d new classes (%s)",
        h5ad,
        vocab.genes.size - old.genes.size,
        vocab.genes.size,
        vocab.classes.size - old.classes.size,
        ", ".join(vocab.classes[old.classes.size :]) or "none",
    )
    return vocab


def write_extended_vocabulary(vocab: Vocabulary, model_dir: str | Path, target: str | Path) -> None:
    """Vocabulary files plus the model's context reference, written atomically."""
    with atomic_path(target) as tmp:
        tmp.mkdir()
        vocab.write_files(tmp)
        for reference in Path(model_dir).glob("context_*"):
            shutil.copyfile(reference, tmp / reference.name)

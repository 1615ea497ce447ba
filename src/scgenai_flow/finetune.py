"""Fine-tuning: extend a trained model's vocabulary and classes, keep its settings."""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

import numpy as np

from .adopt import adopt_model_settings
from .contexts import ContextSettings
from .io import InputError, atomic_path, read_obs, read_var_names
from .modeldir import read_settings
from .preprocess import check_unique_genes, scan_matrix
from .vocab import Vocabulary, require_label_column

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = ["finetune_config", "context_settings_of", "extended_vocabulary", "write_extended_vocabulary"]

log = logging.getLogger(__name__)


def finetune_config(model_dir: str | Path, config: dict) -> dict:
    """Settings of a fine-tuning run: the pretrained model's, plus this run's seed and `finetune`
    section; where the config's model-defining values differ, the model's win (noted in the log)."""
    _, notes = adopt_model_settings(config, {}, model_dir)
    for note in notes:
        log.info("%s: %s", model_dir, note)
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


def new_features(h5ad: str | Path, min_cells: int, seed: int, use_raw: bool) -> np.ndarray:
    """The features of a file expressed in at least `min_cells` cells, in a seeded order."""
    names = read_var_names(h5ad, use_raw)
    check_unique_genes(names, h5ad)
    if min_cells > 0:  # a pass over the matrix only when there is something to filter
        names = names[scan_matrix(h5ad, use_raw).expressed_cells >= min_cells]
    return names[np.random.default_rng(seed).permutation(names.size)]


def extended_vocabulary(
    model_dir: str | Path,
    h5ad: str | Path,
    target_feature: str,
    min_cells: int,
    seed: int,
    use_raw: bool,
    adt_h5ad: str | Path | None = None,
) -> Vocabulary:
    """The model's vocabulary plus the fine-tuning data's new genes (expressed in at least
    `min_cells` cells, in a seeded order), new ADT features (of `adt_h5ad`, every one) and new
    labels, appended at the end."""
    old = Vocabulary.load(model_dir)
    if bool(adt_h5ad) != bool(old.adt_features.size):
        raise InputError(
            f"{model_dir}: a {'multi-omics (RNA + ADT)' if old.adt_features.size else 'RNA-only'} model;"
            f" expected fine-tuning data {'with' if old.adt_features.size else 'without'} an ADT file"
            " (finetune.train_adt)"
        )
    genes = new_features(h5ad, min_cells, seed, use_raw)
    proteins = new_features(adt_h5ad, 0, seed, False) if adt_h5ad else None
    labels = require_label_column(read_obs(h5ad), target_feature, str(h5ad)).dropna().astype(str)
    vocab = old.extend(genes, np.unique(labels), proteins)
    log.info(
        "%s: %d new genes (%d in all), %d new ADT features (%s), %d new classes (%s)",
        h5ad,
        vocab.n_added_genes - old.n_added_genes,
        vocab.genes.size,
        vocab.n_added_adt - old.n_added_adt,
        ", ".join(vocab.adt_features[old.adt_features.size :]) or "none",
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

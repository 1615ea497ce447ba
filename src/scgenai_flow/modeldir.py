"""The model directory: the name of every file it holds (the only place that spells them), its
format version, and reading and writing its settings, selection and format. The vocabulary,
the network, its calibration and the linear member write their own files under these names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .io import InputError

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = [
    "FORMAT_VERSION",
    "read_settings",
    "write_settings",
    "read_selection",
    "write_selection",
    "format_version",
    "write_format",
    "has_linear_member",
]

# The original scGenAI's files (a vocabulary dir holds the vocabulary ones too) ...
WEIGHTS_FILE = "scGenAI_model.pt"
CONFIG_FILE = "config.json"  # the network's ModelSpec
VOCAB_FILES = (
    "gene_vocab.npy",
    "expression_vocab.npy",
    "pad_token_id.npy",
    "trained_genes.npy",
    "label_encoder_classes.npy",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
GENE_VOCAB, EXPRESSION_VOCAB, PAD_ID, TRAINED_GENES, CLASSES = VOCAB_FILES[:5]
SPECIAL_TOKENS_FILE = VOCAB_FILES[7]
SETTINGS_FILE = "train_setting.yaml"  # the effective configuration it was trained with
# ... and ours: multi-omics vocabulary, binning, calibration, linear member, selection, format.
ADT_VOCAB = "adt_vocab.npy"
ADT_EXPRESSION_VOCAB = "adt_expression_vocab.npy"
BINNING_FILE = "binning.json"  # a directory without it was binned the original way
CALIBRATION_FILE = "calibration.json"
LINEAR_FILE = "linear_member.npz"
SELECTION_FILE = "selection.json"  # best_model: the epochs it averages, its validation, its decision
FORMAT_FILE = "format.json"
# context method -> the reference file stored with the vocabulary and every model dir
REFERENCE_FILES = {
    "genelist": "context_genelist.txt",
    "genomic": "context_cytobands.tsv",
    "biofunction": "context_gene_sets.gmt",
    "biofounction": "context_gene_sets.gmt",
}

# Version 1: model dirs without format.json (written before it). Version 2: calibration.json
# keeps the validation cells' networks' and linear member's scores, selection.json the decision.
FORMAT_VERSION = 2


def write_format(directory: Path) -> None:
    """Record the format this version writes (`format.json`)."""
    (directory / FORMAT_FILE).write_text(json.dumps({"format": FORMAT_VERSION}) + "\n")


def format_version(directory: str | Path) -> int:
    """The format a model dir was written in; an error for one newer than this version reads."""
    path = Path(directory) / FORMAT_FILE
    if not path.is_file():
        return 1
    try:
        version = int(json.loads(path.read_text())["format"])
    except (ValueError, TypeError, KeyError) as err:
        raise InputError(f'{path}: {err}; expected {{"format": <integer>}}') from err
    if version > FORMAT_VERSION:
        raise InputError(
            f"{path}: format {version}; this version of scgenai-flow reads formats up to"
            f" {FORMAT_VERSION}: update scgenai-flow to use this model"
        )
    return version


def write_settings(directory: Path, settings: dict) -> None:
    """Save the effective configuration a model was trained with."""
    (directory / SETTINGS_FILE).write_text(yaml.safe_dump(settings, sort_keys=False))


def read_settings(model_dir: str | Path) -> dict:
    """The effective configuration a model was trained with."""
    path = Path(model_dir) / SETTINGS_FILE
    if not path.is_file():
        raise InputError(f"{model_dir}: missing {SETTINGS_FILE} (expected a model directory)")
    return yaml.safe_load(path.read_text())


def write_selection(directory: Path, selection: dict[str, Any]) -> None:
    """Save best_model's selection: the epochs it averages, its validation, its decision."""
    (directory / SELECTION_FILE).write_text(json.dumps(selection, indent=1))


def read_selection(model_dir: str | Path) -> dict[str, Any] | None:
    """best_model's selection; None for a last_model or a dir from before the file."""
    path = Path(model_dir) / SELECTION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def has_linear_member(model_dir: str | Path) -> bool:
    """Whether a model dir holds a linear member."""
    return (Path(model_dir) / LINEAR_FILE).is_file()

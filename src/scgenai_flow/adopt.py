"""The settings that define a trained model, taken from its model dir when a run predicts with it
or fine-tunes it: a config value the user left out gives way with a note; one the user set to
something else is an error naming the key, both values and the model dir."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .io import InputError
from .modeldir import REFERENCE_FILES, read_settings

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = ["MODEL_DEFINING", "adopt_model_settings", "model_multiomics"]

# (section, key): what a trained model is made of. Its binning and bins, its windows, its network.
MODEL_DEFINING = (
    ("preprocess", "num_bins"),
    ("preprocess", "binning"),
    ("preprocess", "adt_num_bins"),
    ("context", "method"),
    ("context", "max_length"),
    ("context", "depth"),
    ("model", "backbone"),
    ("model", "size"),
    ("model", "pooling"),
    ("model", "pair_input"),
    ("model", "linear_member"),
    ("data", "multiomics"),
)
# The model's label column, used unless the user names the column of their new data.
UNLESS_SET = (("data", "target_feature"),)
# context method -> the config key of its reference file (the model keeps its own copy)
REFERENCE_KEYS = {"genelist": "genelist", "genomic": "cytobands", "biofunction": "gmt", "biofounction": "gmt"}


def user_set(given: Mapping[str, Any], section: str, key: str) -> bool:
    """Whether the user's config (before defaults) names `section.key`."""
    part = given.get(section)
    return isinstance(part, Mapping) and key in part


def same_reference(method: str, user_file: str, stored: Path) -> bool:
    """Whether a user's reference file says what the model's stored copy says."""
    if method == "genomic":
        from .contexts.genomic import read_cytobands

        first, second = (read_cytobands(p).sort_values("gene_symbol") for p in (user_file, stored))
        return first.reset_index(drop=True).equals(second.reset_index(drop=True))
    return Path(user_file).read_bytes() == stored.read_bytes()


def adopt_model_settings(
    config: Mapping[str, Any], given: Mapping[str, Any], model_dir: str | Path
) -> tuple[dict, list[str]]:
    """`config` (complete, with defaults) with every model-defining key set to the model's value,
    and a note for each default that gave way. `given` is what the user wrote: a key it sets to
    another value than the model's is an error."""
    trained = read_settings(model_dir)
    adopted = copy.deepcopy(dict(config))
    notes, clashes = [], []
    for section, key in (*MODEL_DEFINING, *UNLESS_SET):
        known = key in trained.get(section, {}) and key in config.get(section, {})
        if not known or config[section][key] == trained[section][key]:
            continue  # older model dirs lack newer keys (and ADT bins outside multi-omics)
        value, current = trained[section][key], config[section][key]
        if user_set(given, section, key) and (section, key) in MODEL_DEFINING:
            clashes.append(f"{section}.{key}: config {current!r}, model {value!r}")
            continue
        if not user_set(given, section, key):
            notes.append(f"{section}.{key}: the model's {value!r} is used (the default is {current!r})")
            adopted[section][key] = value
    method = trained["context"]["method"]
    key = REFERENCE_KEYS.get(method)
    stored = Path(model_dir) / REFERENCE_FILES.get(method, "")
    user_file = config.get("context", {}).get(key) if key else None
    if user_file and stored.is_file() and Path(user_file).is_file():
        if not same_reference(method, user_file, stored):
            clashes.append(f"context.{key}: config {user_file!r}, model its own {stored.name}")
    if clashes:
        raise InputError(
            f"{model_dir}: the settings that define a model come from its model dir, but the config"
            " sets them otherwise:\n  " + "\n  ".join(clashes) + "\nremove these keys from the config"
            " (or set the model's values)"
        )
    return adopted, notes


def model_multiomics(model_dir: str | Path) -> bool:
    """Whether a model dir holds a multi-omics (RNA + ADT) model; False for a missing dir (the
    input checks report it)."""
    if not Path(model_dir).is_dir():
        return False
    return bool(read_settings(model_dir).get("data", {}).get("multiomics", False))

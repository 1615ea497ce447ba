"""Config files of the original scGenAI (flat keys, `mode: Train|Predict|Finetune`) translated
to the native nested configuration, plus where the original wrote its outputs."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import schema_default
from .io import InputError
from .modeldir import SETTINGS_FILE

MODES = {"train": "Train", "predict": "Predict", "finetune": "Finetune"}
# Top-level keys of the native config; `seed` is shared by both formats.
NATIVE_SECTIONS = ("results", "data", "preprocess", "context", "model", "train", "finetune", "predict")

# An old file without target_feature meant the original's label column. Every other key it
# leaves out takes the schema default (the recommended method), whichever way the file is run;
# the original's method is the preset config/presets/original.yaml (`scgenai train --original`).
ORIGINAL_TARGET_FEATURE = "celltype"
NOT_USED = {
    "cache_dir": "no model templates are downloaded",
    "output_dir": "outputs go to model_dir, finetune_dir and outputfile",
    "optimizer": "AdamW is always used",
    "world_size": "one GPU per training or prediction job (scgenai --gpus)",
    "master_addr": "no distributed training",
    "master_port": "no distributed training",
    "evaluate_during_training": "validation runs after every epoch",
    "savesetting": f"every model dir holds its {SETTINGS_FILE}",
}
# The settings that define a trained model: read from its train_setting.yaml when predicting
# or fine-tuning (as the original does), never from the old file.
MODEL_KEYS = {
    "context_method": ("context", "method"),
    "max_length": ("context", "max_length"),
    "depth": ("context", "depth"),
    "num_bins": ("preprocess", "num_bins"),
    "model_backbone_name": ("model", "backbone"),
    "model_backbone_size": ("model", "size"),
    "multiomics": ("data", "multiomics"),
}
LOOP_KEYS = ("batch_size", "learning_rate", "num_epochs", "weight_decay")
TRAIN_MAP = {
    "seed": ("seed",),
    "train_file": ("data", "train"),
    "val_file": ("data", "val"),
    "target_feature": ("data", "target_feature"),
    "train_ADTfile": ("data", "train_adt"),
    "val_ADTfile": ("data", "val_adt"),
    "min_cells": ("preprocess", "min_cells"),
    "glstfile": ("context", "genelist"),
    "cytofile": ("context", "cytobands"),
    "gmtfile": ("context", "gmt"),
    **MODEL_KEYS,
    **{key: ("train", key) for key in LOOP_KEYS},
}
FINETUNE_MAP = {
    "seed": ("seed",),
    "train_file": ("finetune", "train"),
    "val_file": ("finetune", "val"),
    "model_dir": ("finetune", "model"),
    "target_feature": ("data", "target_feature"),
    "train_ADTfile": ("finetune", "train_adt"),
    "val_ADTfile": ("finetune", "val_adt"),
    "min_cells": ("finetune", "min_cells"),
    **{key: ("finetune", key) for key in LOOP_KEYS},
}
PREDICT_MAP = {
    "seed": ("seed",),
    "predict_file": ("data", "predict"),
    "predict_ADTfile": ("data", "predict_adt"),
    "model_dir": ("predict", "model_dir"),
    "target_feature": ("data", "target_feature"),
}
# Keys that steer a run, not the model (handled by the `scgenai` command), by mode.
RUN_USED = {
    "train": {"model_dir", "keepIntermediateFiles", "savelog", "log_dir"},
    "finetune": {"model_dir", "finetune_dir", "keepIntermediateFiles", "savelog", "log_dir"},
    "predict": {"model_dir", "outputfile", "keepIntermediateFiles", "savelog", "log_dir"},
}
MAPS = {"train": TRAIN_MAP, "finetune": FINETUNE_MAP, "predict": PREDICT_MAP}
REQUIRED = {
    "train": ("train_file", "model_dir"),
    "finetune": ("train_file", "model_dir", "finetune_dir"),
    "predict": ("predict_file", "model_dir", "outputfile"),
}
PATH_KEYS = (
    "train_file",
    "val_file",
    "predict_file",
    "train_ADTfile",
    "val_ADTfile",
    "predict_ADTfile",
    "cytofile",
    "gmtfile",
    "glstfile",
    "model_dir",
    "finetune_dir",
    "outputfile",
    "log_dir",
    "cache_dir",
)
LEGACY_KEYS = frozenset(["mode", *RUN_USED["finetune"], *NOT_USED, *PATH_KEYS, *TRAIN_MAP, *PREDICT_MAP])
# What each mode writes: native result path (under `results`) -> (run key, name there).
MODEL_OUTPUTS = ("best_model", "last_model", "combined_epoch_results.csv", "train_summary.pdf")
OUTPUTS = {
    "train": {f"model/{name}": ("model_dir", name) for name in MODEL_OUTPUTS},
    "finetune": {f"finetune/{name}": ("finetune_dir", name) for name in MODEL_OUTPUTS},
    "predict": {"predictions.csv": ("outputfile", "")},
}


@dataclass(frozen=True)
class LegacyRun:
    """A translated old config: the native config, the original's output locations, notes."""

    mode: str  # train, predict or finetune
    config: dict
    outputs: dict[str, Path]  # native result path (relative to `results`) -> original location
    keep_intermediate: bool = False
    log_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


def is_legacy(config: Mapping[str, Any]) -> bool:
    """True for a config in the original's flat format (or one merged over native defaults)."""
    return any(key in LEGACY_KEYS and key != "seed" for key in config)


def yes_no(value: Any, key: str) -> bool:
    """The original's "Yes"/"No" strings, or booleans."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "true", "no", "false"):
        return value.strip().lower() in ("yes", "true")
    raise InputError(f"config key '{key}': expected Yes or No, got {value!r}")


def number(kind: Callable[[Any], Any]) -> Callable[[Any, str], Any]:
    """A converter to int or float that also reads "1e-5" (a string to YAML 1.1)."""

    def convert(value: Any, key: str) -> Any:
        try:
            converted = kind(float(value)) if kind is int and isinstance(value, str) else kind(value)
        except (TypeError, ValueError):
            converted = None
        if converted is None or isinstance(value, bool) or (kind is int and converted != float(value)):
            raise InputError(
                f"config key '{key}': expected {'an integer' if kind is int else 'a number'}, got {value!r}"
            )
        return converted

    return convert


def choice(options: Mapping[str, str]) -> Callable[[Any, str], str]:
    """A case-insensitive choice among `options` (spelling -> native value)."""

    def convert(value: Any, key: str) -> str:
        found = options.get(str(value).strip().lower())
        if found is None:
            raise InputError(f"config key '{key}': expected one of {', '.join(options)}, got {value!r}")
        return found

    return convert


def path(value: Any, key: str) -> str:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise InputError(f"config key '{key}': expected a file or directory path, got {value!r}")
    return str(value)


CONVERTERS: dict[str, Callable[[Any, str], Any]] = {
    **{key: number(int) for key in ("seed", "num_bins", "min_cells", "max_length", "depth")},
    **{key: number(int) for key in ("batch_size", "num_epochs")},
    "learning_rate": number(float),
    "weight_decay": number(float),
    "multiomics": yes_no,
    "savelog": yes_no,
    "keepIntermediateFiles": yes_no,
    "model_backbone_name": choice({n: n for n in ("llama", "gpt", "bigbird", "scgent")}),
    "model_backbone_size": choice({n: n for n in ("tiny", "small", "normal", "large")}),
    "context_method": choice(
        {"random": "random", "genelist": "genelist", "genomic": "genomic", "biofunction": "biofunction"}
        | {"biofounction": "biofunction"}  # the original's spelling
    ),
    "target_feature": lambda value, key: str(value),
    **{key: path for key in PATH_KEYS},
}


def legacy_mode(flat: Mapping[str, Any], command: str | None) -> str:
    """The run's mode: the file's `mode` (default Train), which must match the command if given."""
    given = flat.get("mode")
    if given is None:
        return command or "train"
    mode = str(given).strip().lower()
    if mode not in MODES:
        raise InputError(f"config key 'mode': expected one of {', '.join(MODES.values())}, got {given!r}")
    if command and command != mode:
        raise InputError(f"config key 'mode' is {given!r} but the command is 'scgenai {command}'")
    return mode


def check_keys(flat: Mapping[str, Any]) -> None:
    """Unknown keys are an error naming each, with the closest valid key."""
    messages = []
    for key in flat:
        if key not in LEGACY_KEYS:
            close = difflib.get_close_matches(str(key), sorted(LEGACY_KEYS), n=1)
            messages.append(
                f"unknown config key '{key}'" + (f"; did you mean '{close[0]}'?" if close else "")
            )
    if messages:
        raise InputError("invalid scGenAI configuration:\n  " + "\n  ".join(messages))


def model_settings(model_dir: str) -> dict:
    """The native settings a model dir was trained with (its train_setting.yaml)."""
    from .modeldir import read_settings

    settings = read_settings(model_dir)
    if is_legacy(settings) or "context" not in settings:
        raise InputError(
            f"{model_dir}/{SETTINGS_FILE}: not a model trained by scgenai-flow "
            "(models of the original scGenAI cannot be loaded; retrain with `scgenai train`)"
        )
    return settings


def check_adt(mode: str, values: Mapping[str, Any], multiomics: bool) -> None:
    """Multi-omics needs an ADT file beside each RNA file (no ADT hold-out split)."""
    if not multiomics:
        return
    needed = {
        "predict": ["predict_ADTfile"],
        "train": ["train_ADTfile", "val_file", "val_ADTfile"],
        "finetune": ["train_ADTfile", *(["val_ADTfile"] if values.get("val_file") else [])],
    }[mode]
    missing = [key for key in needed if not values.get(key)]
    if missing:
        raise InputError(f"multiomics is Yes in {MODES[mode]} mode: {', '.join(missing)} required")


def put(config: dict, where: tuple[str, ...], value: Any) -> None:
    target = config
    for part in where[:-1]:
        target = target.setdefault(part, {})
    target[where[-1]] = value


def from_model(mode: str, values: Mapping[str, Any]) -> tuple[dict, list[str], str]:
    """Predict and finetune: the settings that define the model come from its train_setting.yaml,
    and predict scores in batches of the training's size (as the original did)."""
    from .adopt import MODEL_DEFINING

    trained = model_settings(values["model_dir"])
    taken = {key: (where, where) for key, where in MODEL_KEYS.items()}
    if mode == "predict":
        taken["batch_size"] = (("train", "batch_size"), ("predict", "batch_size"))
    config: dict[str, Any] = {}
    notes = []
    for key, (source, target) in taken.items():
        value = trained[source[0]][source[1]]
        if key in values and values[key] != value:
            notes.append(f"{key}: {values[key]!r} ignored; the model's {value!r} is used")
        put(config, target, value)
    # the model-defining settings an old file cannot name (binning, pooling, ...): the model's too
    for section, key in MODEL_DEFINING:
        if key in trained.get(section, {}):
            put(config, (section, key), trained[section][key])
    return config, notes, trained["data"]["target_feature"]


def translate_flat(flat: Mapping[str, Any], command: str | None = None) -> LegacyRun:
    """Translate an old flat config; relative paths stay as given (resolved by the caller)."""
    check_keys(flat)
    mode = legacy_mode(flat, command)
    values = {key: CONVERTERS[key](value, key) for key, value in flat.items() if key in CONVERTERS}
    missing = [key for key in REQUIRED[mode] if values.get(key) is None]
    if missing:
        raise InputError(f"mode {MODES[mode]} needs config key(s): {', '.join(missing)}")
    mapping, config, notes = MAPS[mode], {}, []
    if mode == "train":
        if "target_feature" not in values:
            notes.append(f"target_feature: not set; the original's {ORIGINAL_TARGET_FEATURE!r} is used")
        values = {"target_feature": ORIGINAL_TARGET_FEATURE, **values}
    else:
        config, notes, target_feature = from_model(mode, values)
        values = {"target_feature": target_feature, **values}
    # model keys and predict's batch_size were taken from the model (with a note if they differ)
    used = set(mapping) | RUN_USED[mode] | {"mode", "batch_size", *MODEL_KEYS}
    for key, value in values.items():
        if key in mapping:
            put(config, mapping[key], value)
    for key in flat:
        if key in NOT_USED:
            notes.append(f"{key}: accepted, not used ({NOT_USED[key]})")
        elif key not in used:
            notes.append(f"{key}: accepted, not used in {MODES[mode]} mode")
    check_adt(mode, values, config.get("data", {}).get("multiomics", schema_default("data.multiomics")))
    if values.get("savelog") and not values.get("log_dir"):
        raise InputError("savelog is Yes: log_dir is required")
    return LegacyRun(
        mode=mode,
        config=in_native_order(config),
        outputs={
            native: Path(values[key]) / name if name else Path(values[key])
            for native, (key, name) in OUTPUTS[mode].items()
        },
        keep_intermediate=bool(values.get("keepIntermediateFiles", False)),
        log_dir=Path(values["log_dir"]) if values.get("savelog") else None,
        notes=notes,
    )


def in_native_order(config: Mapping[str, Any]) -> dict:
    """Sections in the order of the native config file (seed first), keys sorted within."""
    order = ["seed", *NATIVE_SECTIONS]
    return {
        key: dict(sorted(config[key].items())) if isinstance(config[key], Mapping) else config[key]
        for key in sorted(config, key=order.index)
    }


def deep_update(base: dict, new: Mapping[str, Any]) -> dict:
    """`base` with `new` merged in, section by section."""
    merged = copy.deepcopy(base)
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_update(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def translate(config: Mapping[str, Any], command: str | None = None) -> LegacyRun:
    """Translate a config holding flat keys of the original, possibly merged over native
    sections (as `snakemake --configfile old.yaml` gives): the translation wins."""
    native = {key: value for key, value in config.items() if key in NATIVE_SECTIONS}
    flat = {key: value for key, value in config.items() if key not in NATIVE_SECTIONS}
    run = translate_flat(flat, command)
    return replace(run, config=deep_update(native, run.config))


def resolve_paths(flat: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths of an old config resolved against `base` (the original used the cwd)."""
    return {
        key: str((base / Path(value).expanduser()).resolve())
        if key in PATH_KEYS and isinstance(value, str) and value.strip()
        else value
        for key, value in flat.items()
    }

"""Config checks that go beyond the JSON schema: unknown keys with a suggestion, values with
what was expected, window lengths the backbone can take, options that need another setting."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .io import InputError

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = ["SCHEMA_PATH", "load_schema", "schema_default", "with_defaults", "check_config", "model_config"]

# The one home of every config default (the recommended method); see docs/config.md.
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
# Keys that say how a job runs, not what it computes: never a rule's params, so changing one
# re-runs nothing (threads and GPUs go to `threads:`/`resources:`; the jobs read the rest).
EXECUTION_KEYS = {
    "preprocess": ("chunk_cells",),
    "train": ("threads", "gpu", "processes"),
    "finetune": ("threads", "gpu", "processes"),
    "predict": ("threads", "gpu", "batch_size"),
}

# Sequence positions per backbone: GPT-2 and BigBird as published (1,024 and 4,096 learned
# positions); LLaMA (rotary positions) and scgent have no table limit, so the bound is memory.
# A window of max_length tokens fills max_length positions, or half as many with
# model.pair_input summed (one per gene-bin pair).
MAX_POSITIONS = {"gpt": 1024, "bigbird": 4096, "llama": 16384, "scgent": 16384}
# Context methods whose windows slide over a cell's pairs (the others' windows are gene groups).
SLIDING_METHODS = ("random", "genelist")


def unknown_keys(config: Mapping[str, Any], schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Messages for keys the schema does not define, each with the closest valid key."""
    known = schema.get("properties", {})
    messages = []
    for key, value in config.items():
        where = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = (
                f"; did you mean '{prefix}{close[0]}'?" if close else f"; expected one of {', '.join(known)}"
            )
            messages.append(f"unknown config key '{where}'{hint}")
        elif isinstance(value, Mapping) and known[key].get("type") == "object":
            messages.extend(unknown_keys(value, known[key], f"{where}."))
    return messages


def expected(schema: Mapping[str, Any]) -> str:
    """What a schema node accepts, in words: 'an even integer >= 4', 'one of a, b'."""
    if "oneOf" in schema:
        return " or ".join(expected(option) for option in schema["oneOf"])
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    kinds = schema.get("type", "value")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    words = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false"}
    text = " or ".join(words.get(k, k) for k in kinds)
    if schema.get("multipleOf") == 2:
        text = text.replace("an integer", "an even integer")
    elif "multipleOf" in schema:
        text += f" that is a multiple of {schema['multipleOf']}"
    bounds = [
        f"{sign} {schema[key]}"
        for key, sign in (
            ("minimum", ">="),
            ("exclusiveMinimum", ">"),
            ("maximum", "<="),
            ("exclusiveMaximum", "<"),
        )
        if key in schema
    ]
    return " ".join([text, " and ".join(bounds)]).strip()


def value_errors(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Messages for values the schema refuses: '<key>: <value> <problem>; expected <what>'."""
    from jsonschema import Draft202012Validator

    messages = []
    for error in Draft202012Validator(schema).iter_errors(config):
        if error.validator == "additionalProperties":
            continue  # reported by unknown_keys with a suggestion
        key = ".".join(map(str, error.absolute_path)) or "config"
        hint = ""
        if error.validator == "enum" and isinstance(error.instance, str):
            close = difflib.get_close_matches(error.instance, list(map(str, error.validator_value)), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
        messages.append(f"{key}: {error.instance!r} is not valid; expected {expected(error.schema)}{hint}")
    return sorted(set(messages))  # one line per key and problem


@functools.cache
def load_schema() -> dict:
    """The configuration schema (workflow/schemas/config.schema.yaml)."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def schema_default(key: str) -> Any:
    """The default of a dotted key ('train.num_epochs'), from the schema: its only home."""
    node: Mapping[str, Any] = load_schema()
    for part in key.split("."):
        node = node["properties"][part]
    return copy.deepcopy(node["default"])


def default_of(key: str) -> Any:
    """A dataclass field whose default is the schema's for `key` (the only home of defaults)."""
    return dataclasses.field(default_factory=lambda: schema_default(key))


def with_defaults(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> dict:
    """`config` with every key it leaves out set to its schema default, section by section
    (what Snakemake's validation does): the validated config is complete."""
    schema = load_schema() if schema is None else schema
    complete = dict(copy.deepcopy(config))
    for key, node in schema.get("properties", {}).items():
        if key not in complete and "default" in node:
            complete[key] = copy.deepcopy(node["default"])
        if node.get("type") == "object" and isinstance(complete.get(key), Mapping):
            complete[key] = with_defaults(complete[key], node)
    return complete


def model_config(config: Mapping[str, Any], loop: str = "train", reference_key: str | None = None) -> dict:
    """What a training rule computes from (its params, saved as train_setting.yaml): the config
    without execution keys, prediction-only keys, the other loop's section and the keys no stage
    reads (ADT keys outside multi-omics; reference files of other context methods, the method's
    own being `reference_key`), so that changing those re-runs nothing."""
    kept = {
        key: dict(value) if isinstance(value, Mapping) else value
        for key, value in config.items()
        if key not in ("finetune", "predict") or key == loop
    }
    kept["data"] = {**config["data"], "predict": None, "predict_adt": None}
    if not config["data"]["multiomics"]:
        kept["data"].update(train_adt=None, val_adt=None)
        kept["preprocess"].pop("adt_num_bins", None)
    kept["context"] = {
        key: value
        for key, value in config["context"].items()
        if key not in REFERENCE_KEYS or key == reference_key
    }
    # how validation cells are decided picks the best epochs
    kept["predict"] = {"aggregation": config["predict"]["aggregation"]}
    for section, keys in EXECUTION_KEYS.items():
        if isinstance(kept.get(section), dict):
            kept[section] = {k: v for k, v in kept[section].items() if k not in keys}
    return in_key_order(kept)


def in_key_order(config: Mapping[str, Any]) -> dict:
    """`config` with keys sorted at every level: Snakemake compares params as text, so the order
    in which config files named the keys must not count as a change."""
    return {
        key: in_key_order(value) if isinstance(value, Mapping) else value
        for key, value in sorted(config.items())
    }


# context keys naming a reference file (each read by one context method only)
REFERENCE_KEYS = ("genelist", "cytobands", "gmt")


def gpu_request(value: int | str) -> int:
    """GPUs a job asks the scheduler for: `auto` asks for none (a visible GPU is still used)."""
    return 0 if value == "auto" else int(value)


def setting(config: Mapping[str, Any], schema: Mapping[str, Any], section: str, key: str) -> Any:
    """A config value, or its schema default when the config leaves it out."""
    given = config.get(section)
    if isinstance(given, Mapping) and key in given:
        return given[key]
    return schema["properties"][section]["properties"][key].get("default")


def length_errors(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """A window longer than the backbone takes."""
    backbone = setting(config, schema, "model", "backbone")
    length = setting(config, schema, "context", "max_length")
    pairs = setting(config, schema, "model", "pair_input") == "summed"
    limit = MAX_POSITIONS.get(backbone, 0) * (2 if pairs else 1)
    if not limit or not isinstance(length, int) or length <= limit:
        return []
    return [
        f"context.max_length: {length} is above what model.backbone '{backbone}' takes; expected <= {limit}"
    ]


def resample_errors(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Resampled windows need sliding windows: other contexts' windows are gene groups."""
    method = setting(config, schema, "context", "method")
    if not setting(config, schema, "train", "resample_windows") or method in SLIDING_METHODS:
        return []
    return [
        f"train.resample_windows: true needs sliding windows; expected context.method"
        f" {' or '.join(SLIDING_METHODS)}, not '{method}'"
    ]


def check_config(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Raise one error listing every unknown key and every invalid value (before the schema
    check, whose messages are terse)."""
    messages = unknown_keys(config, schema)
    messages += value_errors(config, schema)
    if not messages:
        messages = length_errors(config, schema) + resample_errors(config, schema)
    if messages:
        raise InputError("invalid configuration:\n  " + "\n  ".join(messages))

"""Config checks that go beyond the JSON schema: unknown keys with a suggestion, values with
what was expected, window lengths the backbone can take, options that need another setting."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from .io import InputError

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

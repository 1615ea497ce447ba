"""Config checks that go beyond the JSON schema: unknown keys with a suggestion."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from .io import InputError


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


def check_config(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Raise one error listing every unknown key (the schema check follows)."""
    messages = unknown_keys(config, schema)
    if messages:
        raise InputError("invalid configuration:\n  " + "\n  ".join(messages))

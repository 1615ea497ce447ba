"""docs/config.md, rendered from the configuration schema and the original's preset:
`python -m scgenai_flow.config_docs --output docs/config.md` (`--check`: is it up to date?)."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .cli import ORIGINAL_PRESET
from .config import EXECUTION_KEYS, SCHEMA_PATH, expected, load_schema

REPO = SCHEMA_PATH.parents[2]
DOCS_PATH = REPO / "docs" / "config.md"
COMMAND = "python -m scgenai_flow.config_docs --output docs/config.md"
TOP_LEVEL = "top level"


# Meanings of the keys whose schema node has no description (the schema's own wins).
def leaves(schema: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, dict]]:
    """Every settable key of the schema, dotted ('train.gpu'), with its node, in schema order."""
    for key, node in schema.get("properties", {}).items():
        if node.get("type") == "object" and "properties" in node:
            yield from leaves(node, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", node


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys: {'train': {'gpu': 1}} -> {'train.gpu': 1}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def preset(path: Path = ORIGINAL_PRESET) -> dict[str, Any]:
    """The original's preset as dotted keys; a key the schema lacks is an error."""
    values = flatten(yaml.safe_load(path.read_text()) or {})
    unknown = sorted(set(values) - {key for key, _ in leaves(load_schema())})
    if unknown:
        raise ValueError(f"{path} sets keys the schema lacks: {', '.join(unknown)}")
    return values


def scalar(value: Any) -> str:
    """A value as YAML writes it, in a code span: `null`, `true`, `1.0e-05`, `auto`."""
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    return f"`{text}`"


def cell(text: str) -> str:
    """Text fit for a table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def description(key: str, node: Mapping[str, Any]) -> str:
    """The schema's description of a key (every key has one: its only home)."""
    return cell(node["description"])


def execution_keys() -> list[str]:
    """The dotted keys that only say how a job runs."""
    return [f"{section}.{key}" for section, keys in EXECUTION_KEYS.items() for key in keys]


def header() -> str:
    """What precedes the tables: the defaults, the original's preset, layering, execution keys."""
    runs_only = textwrap.fill(", ".join(f"`{key}`" for key in execution_keys()), width=96)
    return f"""\
# Configuration

Generated from `workflow/schemas/config.schema.yaml` and `config/presets/original.yaml`: do not
edit it by hand; regenerate it with `.venv/bin/{COMMAND}`
(with `--check` it only tells whether this file is up to date; `tests/test_config_docs.py` fails
when it is not).

A run reads one YAML file or several, validated against the schema: an unknown key is an error
that names it and suggests the closest valid one, and a wrong value names what the key allows
(the "allowed" column).

**The defaults are the recommended method**: the settings the accuracy harness measured as best
(`benchmarks/accuracy/RESULTS.md`). `config/config.yaml` is empty: write in it (or in a file of
your own) only what your run changes; every key you leave out takes its default below.

**The original scGenAI's method is a preset**, `config/presets/original.yaml`; the column
"original" shows what it sets (blank: it leaves the key at the default). Layer it under your
config on purpose:

```sh
.venv/bin/snakemake --cores 4 all --configfile config/presets/original.yaml my_config.yaml
.venv/bin/scgenai train --original --config_file old.yaml
```

**Layering config files.** `--configfile A B` reads A, then B: a key that B sets wins, the keys
it leaves out keep A's value, section by section. Name the targets (`all`, `results/...`) before
`--configfile`, which takes every following word as a config file.

**A config of the original scGenAI** gets the same model whichever way it runs
(`scgenai train --config_file old.yaml`, `snakemake --cores 4 all --configfile old.yaml`,
`scgenai config convert old.yaml`): the keys it sets are translated (docs/cli.md has the
mapping), and every key it leaves out takes the default below, except `target_feature`, whose
absence means the original's `celltype`. With `--original` (or the preset layered under it) the
keys it leaves out take the original's method instead.

**Keys that only say how a job runs** re-run nothing when you change them (the jobs read them
from the config; they are not rule params). Changing any other key re-runs the stages that
compute from it and exactly their dependants.

{runs_only}
"""


def section_title(section: str, schema: Mapping[str, Any]) -> str:
    """A section's heading, with its schema description when it has one."""
    if section == TOP_LEVEL:
        return "## Top level"
    about = schema["properties"][section].get("description")
    return f"## `{section}`" + (f"\n\n{cell(about[0].upper() + about[1:])}." if about else "")


def table(rows: list[tuple[str, dict]], original: Mapping[str, Any]) -> str:
    """One section's table: key, default, original, allowed values, description."""
    lines = ["| key | default | original | allowed | description |", "| --- | --- | --- | --- | --- |"]
    for key, node in rows:
        kept = scalar(original[key]) if key in original else ""
        lines.append(
            f"| `{key}` | {scalar(node.get('default'))} | {kept} | {cell(expected(node))} "
            f"| {description(key, node)} |"
        )
    return "\n".join(lines)


def render(schema: Mapping[str, Any] | None = None, original: Mapping[str, Any] | None = None) -> str:
    """docs/config.md: the header, then one table per section of the schema."""
    schema = load_schema() if schema is None else schema
    original = preset() if original is None else original
    sections: dict[str, list[tuple[str, dict]]] = {}
    for key, node in leaves(schema):
        sections.setdefault(key.split(".")[0] if "." in key else TOP_LEVEL, []).append((key, node))
    parts = [header()]
    parts += [
        f"{section_title(name, schema)}\n\n{table(rows, original)}\n" for name, rows in sections.items()
    ]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Print docs/config.md, write it (--output), or compare it with the file (--check)."""
    parser = argparse.ArgumentParser(prog="python -m scgenai_flow.config_docs", description=__doc__)
    parser.add_argument("--output", type=Path, help="write here instead of stdout")
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 if --output (default {DOCS_PATH.name}) is stale"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        target = args.output or DOCS_PATH
        if not target.is_file() or target.read_text() != text:
            print(f"{target} is out of date: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

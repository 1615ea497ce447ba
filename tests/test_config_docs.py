"""docs/config.md is the generator's output for the current schema and preset (it cannot go stale),
and it shows every key of the schema with its default and the original's value."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from scgenai_flow import config_docs
from scgenai_flow.config import load_schema, schema_default

DOCS = REPO / "docs" / "config.md"


def rows() -> dict[str, list[str]]:
    """The table rows of docs/config.md by key: [default, original, allowed, description]."""
    found = {}
    for line in DOCS.read_text().splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            found[cells[0].strip("`")] = cells[1:]
    return found


def test_docs_config_md_is_the_generators_output() -> None:
    assert DOCS.read_text() == config_docs.render(), (
        "docs/config.md is stale: run .venv/bin/python -m scgenai_flow.config_docs --output docs/config.md"
    )


def test_every_schema_key_has_a_row_with_its_default() -> None:
    keys = [key for key, _ in config_docs.leaves(load_schema())]
    table = rows()
    assert list(table) == keys
    for key in keys:
        assert table[key][0] == config_docs.scalar(schema_default(key)), key
        assert table[key][3], f"{key} has no description"


def test_original_column_is_the_preset() -> None:
    original = config_docs.preset()
    assert original["model.size"] == "normal"
    for key, (_, shown, _, _) in rows().items():
        assert shown == (config_docs.scalar(original[key]) if key in original else ""), key


def test_the_header_names_the_execution_keys_and_the_preset() -> None:
    text = DOCS.read_text()
    assert all(f"`{key}`" in text for key in config_docs.execution_keys())
    assert "--configfile config/presets/original.yaml my_config.yaml" in text
    assert "scgenai train --original" in text


def test_check_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "config.md"
    assert config_docs.main(["--check", "--output", str(target)]) == 1
    assert config_docs.main(["--output", str(target)]) == 0
    assert config_docs.main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text() + "edited by hand\n")
    assert config_docs.main(["--check", "--output", str(target)]) == 1
    assert "out of date" in capsys.readouterr().err

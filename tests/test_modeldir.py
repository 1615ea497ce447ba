"""modeldir.py is the one home of a model directory's file names, and model dirs carry a format
version that a later format can read and an older reader refuses by name."""

from __future__ import annotations

import ast
import json
import re

import pytest
from conftest import REPO

from scgenai_flow import modeldir
from scgenai_flow.io import InputError
from scgenai_flow.modeldir import FORMAT_FILE, FORMAT_VERSION, format_version, write_format

# Every file name modeldir.py owns.
NAMES = sorted(
    {
        value
        for name, value in vars(modeldir).items()
        if name.isupper() and isinstance(value, str) and "." in value
    }
    | set(modeldir.VOCAB_FILES)
    | set(modeldir.REFERENCE_FILES.values())
)


def spelled_names(text: str) -> set[str]:
    """The owned names a piece of text spells."""
    return {name for name in NAMES if re.search(rf"(?<![\w.]){re.escape(name)}\b", text)}


def test_the_names_are_the_model_dirs_files() -> None:
    assert {"scGenAI_model.pt", "train_setting.yaml", "calibration.json", "selection.json"} <= set(NAMES)
    assert len(NAMES) == 21


def test_no_other_module_or_rule_spells_a_model_file_name() -> None:
    found = {}
    for path in sorted((REPO / "src" / "scgenai_flow").rglob("*.py")) + sorted(
        (REPO / "scripts").glob("*.py")
    ):
        if path.name == "modeldir.py":
            continue
        # string literals only: docstrings and comments may name a file for the reader
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        literals = [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
        ]
        spelled = set().union(*(spelled_names(text) for text in literals))
        if spelled:
            found[str(path.relative_to(REPO))] = sorted(spelled)
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines() if '"""' not in line)
        if spelled_names(code):
            found[str(path.relative_to(REPO))] = sorted(spelled_names(code))
    assert not found, f"model file names outside modeldir.py: {found}"


def test_the_format_version_is_written_read_and_a_newer_one_refused(tmp_path) -> None:
    assert format_version(tmp_path) == 1  # a model dir from before format.json
    write_format(tmp_path)
    assert json.loads((tmp_path / FORMAT_FILE).read_text()) == {"format": FORMAT_VERSION}
    assert format_version(tmp_path) == FORMAT_VERSION
    (tmp_path / FORMAT_FILE).write_text(json.dumps({"format": FORMAT_VERSION + 1}))
    with pytest.raises(
        InputError, match=rf"format.json: format {FORMAT_VERSION + 1}; .* up to {FORMAT_VERSION}"
    ):
        format_version(tmp_path)
    (tmp_path / FORMAT_FILE).write_text("{}")
    with pytest.raises(InputError, match=r"format.json: .*expected \{\"format\": <integer>\}"):
        format_version(tmp_path)

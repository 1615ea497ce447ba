"""The Python API is what docs/api.md lists (generated from each public module's `__all__`), and
the research code in benchmarks/ imports nothing else."""

from __future__ import annotations

import ast
import importlib

import pytest
from conftest import REPO

from scgenai_flow import api_docs


def test_docs_api_md_is_the_generators_output() -> None:
    assert (REPO / "docs/api.md").read_text() == api_docs.render(), (
        f"docs/api.md is stale: run .venv/bin/{api_docs.COMMAND}"
    )


@pytest.mark.parametrize("name", api_docs.PUBLIC_MODULES)
def test_every_public_name_exists_and_says_what_it_does(name: str) -> None:
    module = importlib.import_module(f"scgenai_flow.{name}")
    assert module.__all__ and len(set(module.__all__)) == len(module.__all__)
    for public in module.__all__:
        obj = getattr(module, public)  # an AttributeError names a stale entry
        if api_docs.documented(obj):
            assert api_docs.summary(obj), f"scgenai_flow.{name}.{public} has no docstring"


def imports_of(tree: ast.AST) -> list[tuple[str, str]]:
    """(module, name) of every `from scgenai_flow... import name` and `import scgenai_flow...`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scgenai_flow"):
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("scgenai_flow")]
    return found


def test_benchmarks_import_only_the_documented_api() -> None:
    offences, seen = [], 0
    for path in sorted((REPO / "benchmarks").rglob("*.py")):
        for module, name in imports_of(ast.parse(path.read_text())):
            seen += 1
            short = module.removeprefix("scgenai_flow").lstrip(".")
            if short not in api_docs.PUBLIC_MODULES:
                offences.append(f"{path.relative_to(REPO)}: {module} is not a public module")
            elif name and name not in importlib.import_module(module).__all__:
                offences.append(f"{path.relative_to(REPO)}: {module}.{name} is not in docs/api.md")
    assert seen > 50 and not offences, "\n".join(offences)

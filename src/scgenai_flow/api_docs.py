"""docs/api.md, rendered from the modules' `__all__` and docstrings: the functions a user or a
benchmark may import. `python -m scgenai_flow.api_docs --output docs/api.md` (`--check`: is it
up to date?)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import SCHEMA_PATH

DOCS_PATH = SCHEMA_PATH.parents[2] / "docs" / "api.md"
COMMAND = "python -m scgenai_flow.api_docs --output docs/api.md"
# The public modules, in the order data flows through them; every other module is internal.
PUBLIC_MODULES = (
    "io", "config", "data", "preprocess", "vocab", "contexts", "models", "train", "linear", "decide",
    "predict", "annotate", "metrics", "modeldir", "adopt", "finetune", "checkpoint", "runtime",
)  # fmt: skip


def summary(obj: object) -> str:
    """The first sentence-line of an object's docstring, on one line."""
    doc = inspect.getdoc(obj) or ""
    first = doc.split("\n\n")[0]
    return " ".join(first.split())


def documented(obj: object) -> bool:
    """Functions and classes (also cached functions) carry a docstring; constants do not."""
    return inspect.isroutine(obj) or inspect.isclass(obj) or hasattr(obj, "__wrapped__")


def signature(name: str, obj: object) -> str:
    """`name(parameters)` for a function or class, `name = value` for a constant."""
    if not documented(obj):
        return f"{name} = {obj!r}" if isinstance(obj, int | float | str) else name
    try:
        parameters = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return name
    return f"{name}({', '.join(parameters)})"


def render() -> str:
    """The whole of docs/api.md."""
    lines = [
        "# Python API",
        "",
        f"Generated from the modules' `__all__` and docstrings by `{COMMAND}`;",
        "a test checks it is up to date, and that the benchmarks import nothing else.",
        "Every other name (and every module not listed) is internal and may change.",
        "",
    ]
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(f"scgenai_flow.{module_name}")
        lines += [f"## `scgenai_flow.{module_name}`", "", summary(module), ""]
        for name in module.__all__:
            obj = getattr(module, name)
            text = f": {summary(obj)}" if documented(obj) else ""
            lines.append(f"- `{signature(name, obj)}`{text}")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=DOCS_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = args.output.is_file() and args.output.read_text() == text
        if not same:
            sys.stderr.write(f"{args.output} is stale: run {COMMAND}\n")
        return 0 if same else 1
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

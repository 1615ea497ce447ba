"""The reference file a context method needs, stored with the vocabulary and every model dir."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..io import InputError, atomic_path
from ..modeldir import REFERENCE_FILES
from ..preprocess import case_hint
from ..vocab import Vocabulary

# method -> (config key of the user's file, file name inside vocab / model dirs)
CONFIG_KEYS = {"genelist": "genelist", "genomic": "cytobands", "biofunction": "gmt", "biofounction": "gmt"}
REFERENCES = {method: (key, REFERENCE_FILES[method]) for method, key in CONFIG_KEYS.items()}


def write_reference(method: str, user_file: str | None, genes: np.ndarray, directory: Path) -> None:
    """Check the user's reference (or take the built-in one) and store it in `directory`."""
    if method not in REFERENCES:
        return
    key, name = REFERENCES[method]
    if not user_file and method != "genomic":
        raise InputError(
            f"context.{key}: not set; expected a file (context.method '{method}' needs context.{key})"
        )
    try:
        store_reference(method, user_file, genes, directory / name)
    except InputError as err:
        raise InputError(f"context.{key}: {err}") from err


def kept_genes(genes: np.ndarray) -> str:
    """What a reference that names no vocabulary gene should name instead."""
    return (
        "; expected genes kept in the vocabulary (expressed in at least preprocess.min_cells training"
        f" cells, e.g. {', '.join(genes[:3])})"
    )


@contextlib.contextmanager
def expecting_kept_genes(genes: np.ndarray) -> Iterator[None]:
    """Add what was expected to a context's 'names no vocabulary gene' error."""
    try:
        yield
    except InputError as err:
        raise InputError(f"{err}{kept_genes(genes)}") from err


def store_reference(method: str, user_file: str | None, genes: np.ndarray, target: Path) -> None:
    """Write the reference to `target` once it is known to name vocabulary genes."""
    if method == "genelist":
        from .genelist import read_gene_list

        names = read_gene_list(str(user_file))
        if not np.isin(genes, names).any():
            raise InputError(
                f"{user_file}: none of its genes is among the {genes.size} vocabulary genes"
                + case_hint(names, genes, "the vocabulary", "its genes")
                + kept_genes(genes)
            )
        shutil.copyfile(str(user_file), target)
    elif method == "genomic":
        from .genomic import cytoband_groups, read_cytobands

        table = read_cytobands(user_file)
        with expecting_kept_genes(genes):
            cytoband_groups(genes, table, str(user_file or "built-in cytobands"))
        # the whole table: genes that fine-tuning adds later are placed in their bands too
        table.to_csv(target, sep="\t", index=False)
    else:
        from .biofunction import gene_set_groups, read_gmt

        sets = read_gmt(str(user_file))
        with expecting_kept_genes(genes):
            gene_set_groups(genes, sets, str(user_file))
        shutil.copyfile(str(user_file), target)


def reference_options(method: str, directory: str | Path) -> dict[str, str]:
    """The `ContextSettings.options` pointing at the reference stored in `directory`."""
    if method not in REFERENCES:
        return {}
    key, name = REFERENCES[method]
    path = Path(directory) / name
    if not path.is_file():
        raise InputError(
            f"{directory}: missing {name}, the reference of context '{method}'; expected a directory"
            " written by this workflow"
        )
    return {key: str(path)}


def write_vocabulary_dir(vocab: Vocabulary, method: str, user_file: str | None, target: str | Path) -> None:
    """The vocabulary files plus the context reference, written atomically."""
    with atomic_path(target) as tmp:
        tmp.mkdir()
        vocab.write_files(tmp)
        write_reference(method, user_file, vocab.genes, tmp)

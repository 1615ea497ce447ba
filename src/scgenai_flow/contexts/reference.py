"""The reference file a context method needs, stored with the vocabulary and every model dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..io import InputError, atomic_path
from ..vocab import Vocabulary

# method -> (config key of the user's file, file name inside vocab / model dirs)
REFERENCES = {
    "genelist": ("genelist", "context_genelist.txt"),
    "genomic": ("cytobands", "context_cytobands.tsv"),
    "biofunction": ("gmt", "context_gene_sets.gmt"),
    "biofounction": ("gmt", "context_gene_sets.gmt"),
}


def write_reference(method: str, user_file: str | None, genes: np.ndarray, directory: Path) -> None:
    """Check the user's reference (or take the built-in one) and store it in `directory`."""
    if method not in REFERENCES:
        return
    key, name = REFERENCES[method]
    if method == "genomic":
        from .genomic import cytoband_groups, read_cytobands

        table = read_cytobands(user_file)
        cytoband_groups(genes, table, str(user_file or "built-in cytobands"))  # fails early if useless
        table[table["gene_symbol"].isin(genes)].to_csv(directory / name, sep="\t", index=False)
        return
    if not user_file:
        raise InputError(f"context.method '{method}' needs context.{key} (a file)")
    if method == "genelist":
        from .genelist import read_gene_list

        if not np.isin(genes, read_gene_list(user_file)).any():
            raise InputError(f"{user_file}: none of its genes is among the {genes.size} vocabulary genes")
    else:
        from .biofunction import gene_set_groups, read_gmt

        gene_set_groups(genes, read_gmt(user_file), str(user_file))
    shutil.copyfile(user_file, directory / name)


def reference_options(method: str, directory: str | Path) -> dict[str, str]:
    """The `ContextSettings.options` pointing at the reference stored in `directory`."""
    if method not in REFERENCES:
        return {}
    key, name = REFERENCES[method]
    path = Path(directory) / name
    if not path.is_file():
        raise InputError(f"{directory}: missing {name}, the reference of context '{method}'")
    return {key: str(path)}


def write_vocabulary_dir(vocab: Vocabulary, method: str, user_file: str | None, target: str | Path) -> None:
    """The vocabulary files plus the context reference, written atomically."""
    with atomic_path(target) as tmp:
        tmp.mkdir()
        vocab.write_files(tmp)
        write_reference(method, user_file, vocab.genes, tmp)

"""The `biofunction` context: gene sets (GMT) drawn at random until each was used `depth` times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..io import InputError
from ..preprocess import align_columns
from ..vocab import Vocabulary
from .core import ChunkWindows, ContextSettings, Windows, merge_by_cell, register
from .groups import GeneGroups, group_windows
from .multiomics import with_adt_groups
from .sliding import sliding_windows


def read_gmt(path: str | Path) -> dict[str, list[str]]:
    """Gene sets of a GMT file: name, description, then genes, tab-separated, one set per line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: GMT file not found (context.gmt)")
    sets: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) < 3 or not fields[0].strip():
            raise InputError(
                f"{path}, line {number}: expected 'name<TAB>description<TAB>gene…',"
                f" got {len(fields)} field(s)"
            )
        sets[fields[0].strip()] = [g.strip() for g in fields[2:] if g.strip()]
    if not sets:
        raise InputError(f"{path}: no gene set in the file (expected GMT lines)")
    return sets


def gene_set_groups(genes: np.ndarray, sets: dict[str, list[str]], source: str) -> GeneGroups:
    """Membership of vocabulary genes in the gene sets (sets without a vocabulary gene dropped)."""
    position = pd.Index(genes)
    rows, cols, names = [], [], []
    for name, members in sets.items():
        found = position.get_indexer(members)
        found = np.unique(found[found >= 0])
        if found.size:
            rows.append(found)
            cols.append(np.full(found.size, len(names)))
            names.append(name)
    if not names:
        raise InputError(f"{source}: no gene set contains any of the {genes.size} vocabulary genes")
    membership = sp.csr_matrix(
        (np.ones(sum(r.size for r in rows), dtype=bool), (np.concatenate(rows), np.concatenate(cols))),
        shape=(genes.size, len(names)),
    )
    membership.sort_indices()
    return GeneGroups(membership, np.array(names))


@register("biofunction", "biofounction")
def biofunction_context(vocab: Vocabulary, settings: ContextSettings) -> ChunkWindows:
    """Seeded gene-set windows, plus sliding windows over the genes in no set."""
    path = settings.options.get("gmt")
    if not path:
        raise InputError("context.method 'biofunction' needs context.gmt (a GMT gene-set file)")
    groups = with_adt_groups(gene_set_groups(vocab.genes, read_gmt(path), str(path)), vocab)
    in_no_set = np.where(np.diff(groups.membership.indptr) == 0, np.arange(vocab.n_features), -1)

    def chunk_windows(binned: sp.csr_matrix, first_cell: int) -> Windows:
        grouped = group_windows(
            binned,
            vocab,
            groups,
            settings.max_length,
            settings.depth,
            settings.seed,
            first_cell,
            name_all=True,
        )
        rest_tokens, rest_offsets = vocab.tokenize(align_columns(binned, in_no_set, vocab.n_features))
        rest = sliding_windows(rest_tokens, rest_offsets, settings.max_length, settings.stride, vocab.pad_id)
        rest.context_names = np.char.add("no_set_", rest.context_names)
        return merge_by_cell(grouped, rest)

    return chunk_windows

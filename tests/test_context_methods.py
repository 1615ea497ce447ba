"""genelist, genomic and biofunction contexts: invariants, determinism, slow references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scgenai_flow.contexts import ContextSettings, build_windows
from scgenai_flow.contexts.genomic import builtin_cytobands, cytoband_groups
from scgenai_flow.contexts.groups import mix
from scgenai_flow.contexts.reference import write_reference
from scgenai_flow.io import InputError
from scgenai_flow.preprocess import bin_rows
from scgenai_flow.vocab import build_vocabulary


@pytest.fixture(scope="module")
def cells(pbmc):
    """Binned real cells (200) and their vocabulary."""
    subset = pbmc[:200]
    vocab = build_vocabulary(np.asarray(subset.var_names), 10, subset.obs["bulk_labels"], "pbmc")
    binned = bin_rows(sp.csr_matrix(subset.X), 10)
    binned.sort_indices()  # as preprocessing leaves them: vocabulary order
    return binned, vocab


def cell_pairs(windows, cell: int) -> list[tuple[int, int]]:
    """(gene token, bin token) pairs of all of a cell's windows."""
    pairs = []
    for row in np.flatnonzero(windows.cell_index == cell):
        real = windows.tokens[row, : windows.lengths[row]].astype(int)
        pairs += list(zip(real[0::2], real[1::2]))
    return pairs


def reference_genomic(binned, vocab, band_of_gene: np.ndarray, max_length: int, depth: int, seed: int):
    """The genomic context one cell at a time, in plain Python."""
    _, group = np.unique(band_of_gene, return_inverse=True)
    return reference_groups(binned, vocab, [[int(g)] for g in group], max_length, depth, seed)


def reference_groups(binned, vocab, groups_of_gene: list[list[int]], max_length: int, depth: int, seed: int):
    """Group contexts one cell at a time, in plain Python: a gene goes to each of its groups."""
    capacity = max_length // 2
    windows = []
    for cell in range(binned.shape[0]):
        row = binned[cell]
        by_band: dict[int, list[tuple[int, int]]] = {}
        for gene, b in zip(row.indices, row.data):
            for g in groups_of_gene[gene]:
                by_band.setdefault(g, []).append(
                    (vocab.gene_offset + int(gene), vocab.bin_offset - 1 + int(b))
                )
        pieces = []
        for _, pairs in sorted(by_band.items()):
            for start in range(0, len(pairs), capacity):
                pieces += [pairs[start : start + capacity]] * depth
        for i in range(len(pieces) - 1, 0, -1):  # Fisher-Yates, seeded per cell
            j = int(mix(np.uint64(seed), cell, i)) % (i + 1)
            pieces[i], pieces[j] = pieces[j], pieces[i]
        current: list[tuple[int, int]] = []
        cell_windows = []
        for piece in pieces:
            if len(current) + len(piece) > capacity:
                cell_windows.append(current)
                current = []
            current = current + piece
        if current:
            cell_windows.append(current)
        windows.append(cell_windows)
    return windows


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("max_length", [32, 128])
def test_genomic_equals_the_slow_reference(cells, depth: int, max_length: int) -> None:
    binned, vocab = cells
    table = builtin_cytobands()
    bands = cytoband_groups(vocab.genes, table, "built-in").names
    band_of_gene = bands[cytoband_groups(vocab.genes, table, "built-in").membership.indices]
    settings = ContextSettings(method="genomic", max_length=max_length, depth=depth, seed=11)
    windows = build_windows(binned, vocab, settings, chunk_cells=64)
    expected = reference_genomic(binned, vocab, band_of_gene, max_length, depth, 11)
    for cell, cell_windows in enumerate(expected):
        rows = np.flatnonzero(windows.cell_index == cell)
        assert len(rows) == len(cell_windows)
        for row, pairs in zip(rows, cell_windows):
            flat = [t for pair in pairs for t in pair]
            np.testing.assert_array_equal(windows.tokens[row, : windows.lengths[row]], flat)
            assert np.all(windows.tokens[row, windows.lengths[row] :] == vocab.pad_id)


@pytest.mark.parametrize("depth", [1, 2])
def test_genomic_uses_every_expressed_gene_depth_times(cells, depth: int) -> None:
    binned, vocab = cells
    windows = build_windows(binned, vocab, ContextSettings(method="genomic", max_length=64, depth=depth))
    assert windows.tokens.shape[1] == 64
    for cell in range(0, 200, 23):
        pairs = cell_pairs(windows, cell)
        row = binned[cell]
        expected = {
            (vocab.gene_offset + int(g), vocab.bin_offset - 1 + int(b)) for g, b in zip(row.indices, row.data)
        }
        values, counts = np.unique(np.array(pairs), axis=0, return_counts=True)
        assert {tuple(v) for v in values} == expected and (counts == depth).all()
    assert set(windows.context_ids()) <= set(builtin_cytobands()["cytobandID"]) | {"unmapped"}


def test_genomic_is_seeded(cells) -> None:
    binned, vocab = cells
    a, b, c = (
        build_windows(binned, vocab, ContextSettings(method="genomic", max_length=64, seed=s), chunk_cells=n)
        for s, n in ((5, 200), (5, 37), (6, 200))
    )
    np.testing.assert_array_equal(a.tokens, b.tokens)  # chunking does not change the draw
    assert not np.array_equal(a.tokens[: len(c)], c.tokens[: len(a)])


def test_builtin_cytobands_are_chromosome_qualified() -> None:
    table = builtin_cytobands()
    assert len(table) > 30_000 and table["gene_symbol"].is_unique
    assert table.set_index("gene_symbol").loc["CD3E", "cytobandID"] == "11q23.3"


def write_gmt(path: Path, sets: dict[str, list[str]]) -> Path:
    path.write_text("".join(f"{name}\tmarkers\t" + "\t".join(genes) + "\n" for name, genes in sets.items()))
    return path


MARKERS = {
    "T_CELL": ["CD3E", "CD3D", "IL7R", "LTB", "CD2"],
    "B_CELL": ["MS4A1", "CD79A", "CD79B", "HLA-DRA", "CD74"],
    "MONOCYTE": ["LYZ", "S100A8", "S100A9", "FCN1", "CD14", "HLA-DRA"],
    "NK": ["NKG7", "GNLY", "GZMB", "PRF1", "CST7"],
    "NOT_HERE": ["NO_SUCH_GENE"],
}


def reference_sliding(pairs: list[tuple[int, int]], max_length: int) -> list[list[tuple[int, int]]]:
    """Sliding windows over a cell's pairs, in plain Python (stride: half a window in pairs)."""
    size, step = max_length // 2, max(1, max_length // 4)
    if not pairs:
        return []
    windows = [pairs[start : start + size] for start in range(0, max(1, len(pairs) - size + step), step)]
    return [w for w in windows if w]


def test_biofunction_equals_the_slow_reference(tmp_path, cells) -> None:
    binned, vocab = cells
    gmt = write_gmt(tmp_path / "m.gmt", MARKERS)
    settings = ContextSettings(
        method="biofunction", max_length=16, depth=2, seed=3, options={"gmt": str(gmt)}
    )
    windows = build_windows(binned, vocab, settings, chunk_cells=50)
    sets = [name for name, genes in MARKERS.items() if set(genes) & set(vocab.genes)]
    groups_of_gene = [[k for k, name in enumerate(sets) if g in MARKERS[name]] for g in vocab.genes]
    grouped = reference_groups(binned, vocab, groups_of_gene, 16, 2, 3)
    for cell in range(binned.shape[0]):
        row = binned[cell]
        rest = [
            (vocab.gene_offset + int(g), vocab.bin_offset - 1 + int(b))
            for g, b in zip(row.indices, row.data)
            if not groups_of_gene[g]
        ]
        expected = grouped[cell] + reference_sliding(rest, 16)
        rows = np.flatnonzero(windows.cell_index == cell)
        if not expected:
            assert windows.context_ids()[rows[0]] == "no_expressed_gene"
            continue
        got = [windows.tokens[r, : windows.lengths[r]].tolist() for r in rows]
        assert got == [[t for pair in w for t in pair] for w in expected], f"cell {cell}"


def test_genelist_equals_the_slow_reference(tmp_path, cells) -> None:
    binned, vocab = cells
    listed = set(vocab.genes[::3])
    (tmp_path / "genes.txt").write_text("\n".join(sorted(listed)) + "\n")
    settings = ContextSettings(
        method="genelist", max_length=20, options={"genelist": str(tmp_path / "genes.txt")}
    )
    windows = build_windows(binned, vocab, settings)
    for cell in range(0, binned.shape[0], 7):
        row = binned[cell]
        pairs = [
            (vocab.gene_offset + int(g), vocab.bin_offset - 1 + int(b))
            for g, b in zip(row.indices, row.data)
            if vocab.genes[g] in listed
        ]
        rows = np.flatnonzero(windows.cell_index == cell)
        got = [windows.tokens[r, : windows.lengths[r]].tolist() for r in rows]
        assert got == [[t for pair in w for t in pair] for w in reference_sliding(pairs, 20)]


@pytest.mark.parametrize("depth", [1, 2])
def test_biofunction_uses_each_matching_set_depth_times(tmp_path, cells, depth: int) -> None:
    binned, vocab = cells
    gmt = write_gmt(tmp_path / "m.gmt", MARKERS)
    settings = ContextSettings(method="biofounction", max_length=32, depth=depth, options={"gmt": str(gmt)})
    windows = build_windows(binned, vocab, settings)
    gene_token = {g: vocab.gene_offset + i for i, g in enumerate(vocab.genes)}
    ids = windows.context_ids()
    for cell in range(0, 200, 17):
        rows = np.flatnonzero(windows.cell_index == cell)
        set_rows = [r for r in rows if not ids[r].startswith("no_set_")]
        tokens = np.concatenate([windows.tokens[r, : windows.lengths[r] : 2] for r in set_rows] or [[]])
        expressed = set((vocab.gene_offset + binned[cell].indices).tolist())
        for name, genes in MARKERS.items():
            members = {gene_token[g] for g in genes if g in gene_token} & expressed
            if members:
                assert any(name in ids[r].split(";") for r in set_rows)
        for token in set(tokens.tolist()):
            sets_with_gene = sum(token in {gene_token.get(g) for g in genes} for genes in MARKERS.values())
            assert (tokens == token).sum() == depth * sets_with_gene
        no_set = np.concatenate(
            [windows.tokens[r, : windows.lengths[r] : 2] for r in rows if r not in set_rows]
        )
        in_sets = {gene_token[g] for genes in MARKERS.values() for g in genes if g in gene_token}
        assert set(no_set.tolist()) == expressed - in_sets
    assert "NOT_HERE" not in ";".join(ids)


def test_genelist_keeps_only_listed_genes(tmp_path, cells) -> None:
    binned, vocab = cells
    listed = ["CD3E", "LYZ", "NKG7", "MS4A1", "NOT_A_GENE", "HLA-DRA"]
    (tmp_path / "genes.txt").write_text("\n".join(listed) + "\n\n")
    settings = ContextSettings(
        method="genelist", max_length=8, options={"genelist": str(tmp_path / "genes.txt")}
    )
    windows = build_windows(binned, vocab, settings)
    allowed = {
        vocab.gene_offset + int(np.flatnonzero(vocab.genes == g)[0]) for g in listed if g in vocab.genes
    }
    for cell in range(200):
        genes = {p[0] for p in cell_pairs(windows, cell)}
        expected = {vocab.gene_offset + g for g in binned[cell].indices} & allowed
        assert genes == expected or (
            not expected and windows.context_ids()[windows.cell_index == cell][0] == "no_expressed_gene"
        )


@pytest.mark.parametrize(
    ("method", "content", "message"),
    [
        ("genelist", "", "gene list is empty"),
        ("genelist", "FOO\nBAR\n", "none of its genes"),
        ("genelist", "CD3E LYZ\n", "one gene symbol per line"),
        ("biofunction", "SET1\n", "expected 'name<TAB>description<TAB>gene"),
        ("biofunction", "SET1\tdesc\tFOO\tBAR\n", "no gene set contains"),
        ("biofunction", "", "no gene set in the file"),
        ("genomic", "gene\tband\nCD3E\t11q23.3\n", "lacks column"),
        ("genomic", "gene_symbol\tcytobandID\nFOO\t1p36.33\n", "no vocabulary gene has a cytoband"),
    ],
)
def test_bad_reference_files_are_refused_clearly(tmp_path, cells, method, content, message) -> None:
    _, vocab = cells
    path = tmp_path / "reference"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        write_reference(method, str(path), vocab.genes, tmp_path)


def test_missing_reference_is_refused(tmp_path, cells) -> None:
    _, vocab = cells
    with pytest.raises(InputError, match="needs context.gmt"):
        write_reference("biofunction", None, vocab.genes, tmp_path)
    with pytest.raises(InputError, match="not found"):
        write_reference("genelist", str(tmp_path / "nope.txt"), vocab.genes, tmp_path)


def test_user_cytobands_win_over_the_builtin_table(tmp_path, cells) -> None:
    _, vocab = cells
    table = pd.DataFrame({"gene_symbol": vocab.genes[:10], "cytobandID": ["my_band"] * 10})
    table.to_csv(tmp_path / "bands.tsv", sep="\t", index=False)
    write_reference("genomic", str(tmp_path / "bands.tsv"), vocab.genes, tmp_path)
    stored = pd.read_csv(tmp_path / "context_cytobands.tsv", sep="\t")
    assert set(stored["cytobandID"]) == {"my_band"} and len(stored) == 10


def test_a_gene_list_differing_only_in_letter_case_is_named(tmp_path: Path) -> None:
    genes = np.array(["CD3E", "MS4A1", "LYZ"])
    vocab = build_vocabulary(genes, 10, pd.Series(["a", "b", "a"]), "cells")
    (tmp_path / "genes.txt").write_text("cd3e\nlyz\n")
    hint = "2 of its genes match the vocabulary's only when letter case is ignored"
    with pytest.raises(InputError, match=hint):
        write_reference("genelist", str(tmp_path / "genes.txt"), genes, tmp_path)
    options = {"genelist": str(tmp_path / "genes.txt")}
    with pytest.raises(InputError, match=hint):
        build_windows(
            sp.csr_matrix(np.ones((2, 3))), vocab, ContextSettings(method="genelist", options=options)
        )

"""Gene filter, normalisation and per-cell expression binning on sparse matrices."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .config import default_of, schema_default
from .io import InputError, iter_csr_chunks, nonempty_info, read_obs, read_var_names

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = [
    "BINNINGS",
    "EXPRESSION_LAYER",
    "RAW_COUNT_THRESHOLD",
    "PreprocessSettings",
    "preprocess_file",
    "preprocess_adt",
    "scan_matrix",
    "bin_rows",
    "resolve_binning",
    "recorded_binning",
]

if TYPE_CHECKING:
    import anndata as ad

log = logging.getLogger(__name__)

RAW_COUNT_THRESHOLD = 20.0
TARGET_SUM = 1e4


@dataclass(frozen=True)
class MatrixScan:
    """One pass over a matrix: what preprocessing must know before transforming it."""

    n_cells: int
    max_value: float
    expressed_cells: np.ndarray  # per gene: cells with a value > 0
    empty_cells: int = 0  # cells without any value > 0
    cells_below_one: int = 0  # non-empty cells whose largest value is at most 1
    cells_peak_in_unit: int = 0  # of those, cells whose largest value is at least 0.5

    @property
    def raw_counts(self) -> bool:
        """The SPEC's rule: a maximum above 20 means raw counts."""
        return self.max_value > RAW_COUNT_THRESHOLD


def check_values(data: np.ndarray, path: str | Path, matrix: str) -> None:
    """Stored values must be finite and not negative."""
    if not np.isfinite(data).all():
        kind = "NaN" if np.isnan(data).any() else "infinite"
        raise InputError(
            f"{path}: {matrix} holds {kind} values; expected finite counts or log-normalised values"
        )
    if data.min() < 0:
        raise InputError(
            f"{path}: {matrix} holds negative values (min {float(data.min()):g}); expected counts or"
            " log-normalised values (scaled data? point at the unscaled layer, e.g. data.use_raw: true)"
        )


def scan_matrix(
    path: str | Path, use_raw: bool = False, chunk_cells: int = schema_default("preprocess.chunk_cells")
) -> MatrixScan:
    """Check values and count expressing cells per gene, chunk by chunk."""
    info = nonempty_info(path, use_raw)
    matrix = "raw/X" if use_raw else "X"
    expressed = np.zeros(info.n_genes, dtype=np.int64)
    max_value = 0.0
    fraction: float | None = None  # a non-integer value, if any
    empty = below_one = peak_in_unit = 0
    for chunk in iter_csr_chunks(path, chunk_cells, use_raw):
        data = chunk.data
        positive = data > 0
        seen = np.concatenate(([0], np.cumsum(positive)))[chunk.indptr]
        empty += int((np.diff(seen) == 0).sum())
        if data.size == 0:
            continue
        check_values(data, path, matrix)
        max_value = max(max_value, float(data.max()))
        maxima = np.maximum.reduceat(data, chunk.indptr[:-1][np.diff(chunk.indptr) > 0])
        below_one += int(((maxima > 0) & (maxima <= 1)).sum())  # cells of stored zeros only are empty
        peak_in_unit += int(((maxima >= 0.5) & (maxima <= 1)).sum())
        if fraction is None:
            odd = np.flatnonzero(data != np.round(data))
            fraction = float(data[odd[0]]) if odd.size else None
        expressed += np.bincount(chunk.indices[positive], minlength=info.n_genes)
    if max_value > RAW_COUNT_THRESHOLD and fraction is not None:
        raise InputError(
            f"{path}: {matrix} has values above {RAW_COUNT_THRESHOLD:g} (max {max_value:g}), so it is read as"
            f" raw counts, but holds non-integer values (e.g. {fraction:g}); expected integer raw counts,"
            f" or log-normalised values (max <= {RAW_COUNT_THRESHOLD:g}): normalised but not log-transformed?"
        )
    return MatrixScan(info.n_cells, max_value, expressed, empty, below_one, peak_in_unit)


def check_unique_genes(genes: np.ndarray, path: str | Path) -> None:
    """Duplicate gene names make alignment ambiguous: refuse them."""
    values, counts = np.unique(genes, return_counts=True)
    if (counts > 1).any():
        dups = ", ".join(values[counts > 1][:5])
        raise InputError(
            f"{path}: {int((counts > 1).sum())} duplicate gene name(s) in var_names ({dups}); expected unique"
            " names (e.g. anndata's var_names_make_unique())"
        )


def select_genes(
    genes: np.ndarray, expressed_cells: np.ndarray, min_cells: int, seed: int, among: np.ndarray | None = None
) -> np.ndarray:
    """Genes expressed in at least `min_cells` cells (and in `among`, a boolean per gene, if
    given), in the seeded vocabulary order."""
    kept = genes[(expressed_cells >= min_cells) & (True if among is None else among)]
    if kept.size == 0:
        raise InputError(
            f"preprocess.min_cells: no gene is expressed in at least min_cells={min_cells} cells"
            f" (most-expressed gene: {int(expressed_cells.max(initial=0))} cells); expected a lower min_cells"
        )
    return kept[np.random.default_rng(seed).permutation(kept.size)]


def most_variable(
    path: str | Path, settings: PreprocessSettings, scan: MatrixScan, candidates: np.ndarray
) -> np.ndarray:
    """A boolean per gene: the `settings.top_genes` of `candidates` whose normalised (log1p)
    values have the largest variance over the cells (ties: file order); a second pass, in chunks."""
    total, squares = np.zeros(candidates.size), np.zeros(candidates.size)
    for chunk in iter_csr_chunks(path, settings.chunk_cells, settings.use_raw):
        normalised = normalise_rows(chunk, scan.raw_counts)
        values = normalised.data.astype(np.float64)
        total += np.bincount(normalised.indices, weights=values, minlength=candidates.size)
        squares += np.bincount(normalised.indices, weights=values**2, minlength=candidates.size)
    n_cells = max(scan.n_cells, 1)
    variance = np.where(candidates, squares / n_cells - (total / n_cells) ** 2, -np.inf)
    chosen = np.zeros(candidates.size, dtype=bool)
    chosen[np.argsort(-variance, kind="stable")[: settings.top_genes]] = True
    return chosen & candidates


def column_map(source_genes: np.ndarray, target_genes: np.ndarray) -> np.ndarray:
    """For each source column, its column in `target_genes`, or -1 when absent."""
    position = pd.Index(target_genes).get_indexer(source_genes)
    return position.astype(np.int64)


def case_only_matches(names: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Genes of `names` not in `known` that are there when letter case is ignored, and their
    spelling in `known`."""
    names, known = np.asarray(names, dtype=str), np.asarray(known, dtype=str)
    folded = pd.Index(np.char.lower(known))
    first = ~folded.duplicated()
    position = folded[first].get_indexer(np.char.lower(names))
    found = (position >= 0) & ~np.isin(names, known)
    return names[found], known[first][position[found]]


def case_hint(names: np.ndarray, known: np.ndarray, owner: str, rename: str = "var_names") -> str:
    """A message tail for genes that match `owner`'s genes only when letter case is ignored, or ''."""
    found, spelled = case_only_matches(names, known)
    if not found.size:
        return ""
    return (
        f"; {found.size} of its genes match {owner}'s only when letter case is ignored (e.g."
        f" {str(found[0])!r} vs {str(spelled[0])!r}): rename {rename} to {owner}'s case"
    )


def align_columns(chunk: sp.csr_matrix, col_map: np.ndarray, n_target: int) -> sp.csr_matrix:
    """Move columns to their target positions, dropping unmapped ones and stored zeros."""
    mapped = col_map[chunk.indices]
    kept = np.flatnonzero((mapped >= 0) & (chunk.data != 0))
    out = sp.csr_matrix(
        (chunk.data[kept], mapped[kept].astype(np.int32), np.searchsorted(kept, chunk.indptr)),
        shape=(chunk.shape[0], n_target),
    )
    out.sort_indices()
    return out


def per_value(reduce: np.ufunc, chunk: sp.csr_matrix) -> np.ndarray:
    """Reduce each row's stored values and repeat the result per value (sums in float64)."""
    counts = np.diff(chunk.indptr)
    nonempty = counts > 0
    values = chunk.data if reduce is np.maximum else chunk.data.astype(np.float64)
    if values.size == 0:
        return values
    return np.repeat(reduce.reduceat(values, chunk.indptr[:-1][nonempty]), counts[nonempty])


def normalise_rows(chunk: sp.csr_matrix, raw_counts: bool) -> sp.csr_matrix:
    """Raw counts: scale each cell to 10,000 and log1p; log-normalised data pass through."""
    if not raw_counts:
        return chunk
    scaled = np.log1p(chunk.data * (TARGET_SUM / per_value(np.add, chunk)))
    return sp.csr_matrix((scaled.astype(np.float32), chunk.indices, chunk.indptr), shape=chunk.shape)


def bin_values(values: np.ndarray, cell_max: np.ndarray, num_bins: int) -> np.ndarray:
    """`digitize(v, linspace(1, cell_max, num_bins + 1))` clipped to 1..num_bins+1, vectorised.

    Edges are computed as numpy's linspace does, in the data's float type, so bins match
    the per-cell formula exactly, also for values on an edge.
    """
    dt = values.dtype.type if np.issubdtype(values.dtype, np.floating) else np.float64
    v = values.astype(dt)
    m = cell_max.astype(dt)
    one = dt(1.0)
    step = (m - one) / dt(num_bins)
    rising = step > 0

    def edge(k: np.ndarray) -> np.ndarray:
        # linspace: arange(num) * step + start, with the last edge set to stop exactly.
        e = k.astype(dt) * step + one
        e = np.where(k == num_bins, m, e)
        return np.where(k > num_bins, np.inf, np.where(k < 0, -np.inf, e))

    # j = index of the last edge <= v (rising edges); estimate, then correct rounding.
    estimate = np.floor((v - one) / np.where(rising, step, one))
    j = np.clip(estimate, -1, num_bins).astype(np.int64)
    for _ in range(2):
        j = np.where(edge(j + 1) <= v, j + 1, j)
        j = np.where(edge(j) > v, j - 1, j)
    count = j + 1
    # Flat edges (cell max 1): all edges equal 1. Falling edges (max < 1): digitize counts
    # the edges above v, which are all of them except the last one when v equals the max.
    count = np.where(step == 0, np.where(v >= one, num_bins + 1, 0), count)
    count = np.where(step < 0, np.where(v < m, num_bins + 1, num_bins), count)
    return np.clip(count, 1, num_bins + 1).astype(np.uint8)


def quantile_bins(chunk: sp.csr_matrix, num_bins: int) -> np.ndarray:
    """Bins 1..num_bins of equal counts of each cell's non-zero values, by rank in the cell.

    Tied values share the lowest rank, so equal values always share a bin; the bins do not
    depend on the data's scale (values below 1 keep their order, unlike `bin_values`)."""
    counts = np.diff(chunk.indptr)
    rows = np.repeat(np.arange(chunk.shape[0]), counts)
    order = np.lexsort((chunk.data, rows))
    values, owner = chunk.data[order], rows[order]
    first_of_run = np.ones(values.size, dtype=bool)
    first_of_run[1:] = (values[1:] != values[:-1]) | (owner[1:] != owner[:-1])
    run_start = np.maximum.accumulate(np.where(first_of_run, np.arange(values.size), 0))
    rank = run_start - chunk.indptr[owner]
    bins = np.empty(values.size, dtype=np.uint8)
    bins[order] = rank * num_bins // counts[owner] + 1
    return bins


def unit_bins(values: np.ndarray, num_bins: int) -> np.ndarray:
    """`digitize(v, linspace(0, 1, num_bins + 1)[1:-1]) + 1`: bins 1..num_bins of equal width
    over [0, 1], the same edges for every cell (keeps absolute levels of data scaled to [0, 1];
    values below 0 fall in bin 1, values from 1 up in the top bin)."""
    inner_edges = np.linspace(0.0, 1.0, num_bins + 1)[1:-1]
    return (np.digitize(values, inner_edges) + 1).astype(np.uint8)


BINNINGS = ("cell_range", "cell_quantile", "unit_range")


def resolve_binning(binning: str, scan: MatrixScan, path: str | Path) -> str:
    """`auto`: the original `cell_range`, unless most cells peak at or below 1, where its edges
    from 1 collapse into two bins: then `unit_range` for data spread over [0, 1] (most of those
    cells peak at 0.5 or more: scaled or simulated levels), else the scale-free `cell_quantile`."""
    if binning != "auto":
        return binning
    nonempty = scan.n_cells - scan.empty_cells
    if scan.raw_counts or not nonempty or scan.cells_below_one <= nonempty / 2:
        return "cell_range"
    chosen = "unit_range" if scan.cells_peak_in_unit > scan.cells_below_one / 2 else "cell_quantile"
    log.info(
        "%s: %d of %d cells have no value above 1 (%d of them peak at 0.5 or more): %s bins (binning auto)",
        path,
        scan.cells_below_one,
        nonempty,
        scan.cells_peak_in_unit,
        chosen,
    )
    return chosen


def bin_rows(chunk: sp.csr_matrix, num_bins: int, binning: str = "cell_range") -> sp.csr_matrix:
    """Replace each cell's non-zero values by their expression bin (uint8): `cell_range`
    (the original: equal-width edges from 1 to the cell's maximum), `cell_quantile` or
    `unit_range`."""
    if binning == "cell_quantile":
        bins = quantile_bins(chunk, num_bins)
    elif binning == "unit_range":
        bins = unit_bins(chunk.data, num_bins)
    else:
        bins = bin_values(chunk.data, per_value(np.maximum, chunk), num_bins)
    return sp.csr_matrix((bins, chunk.indices, chunk.indptr), shape=chunk.shape)


@dataclass(frozen=True)
class PreprocessSettings:
    """How one file is filtered, normalised and binned."""

    num_bins: int = default_of("preprocess.num_bins")
    binning: str = default_of("preprocess.binning")
    min_cells: int = default_of("preprocess.min_cells")
    seed: int = default_of("seed")
    use_raw: bool = default_of("data.use_raw")
    chunk_cells: int = default_of("preprocess.chunk_cells")
    top_genes: int | None = default_of("preprocess.top_genes")  # training files only


# The layer of a preprocessed file that keeps the normalised (log1p) values the bins came from.
EXPRESSION_LAYER = "expression"


def preprocess_file(
    path: str | Path,
    settings: PreprocessSettings,
    trained_genes: np.ndarray | None = None,
) -> ad.AnnData:
    """Binned, gene-ordered AnnData for one file (the normalised values in layer `expression`).

    Without `trained_genes` (training data) genes are filtered and shuffled into the
    vocabulary order; with them (val / predict) the file is aligned to that order.
    """
    if settings.num_bins < 1 or settings.num_bins > 254:
        raise InputError(f"preprocess.num_bins: {settings.num_bins}; expected 1..254")
    if settings.binning not in (*BINNINGS, "auto"):
        raise InputError(f"preprocess.binning: {settings.binning!r}; expected auto, {', '.join(BINNINGS)}")
    genes = read_var_names(path, settings.use_raw)
    check_unique_genes(genes, path)
    scan = scan_matrix(path, settings.use_raw, settings.chunk_cells)
    if trained_genes is None:
        candidates = scan.expressed_cells >= settings.min_cells
        among = None
        if settings.top_genes and candidates.sum() > settings.top_genes:
            among = most_variable(path, settings, scan, candidates)
            log.info(
                "%s: preprocess.top_genes: the %d most variable of %d genes kept",
                path, settings.top_genes, int(candidates.sum()),
            )  # fmt: skip
        trained_genes = select_genes(genes, scan.expressed_cells, settings.min_cells, settings.seed, among)
    binning = resolve_binning(settings.binning, scan, path)
    col_map = column_map(genes, trained_genes)
    overlap = int((col_map >= 0).sum())
    if overlap == 0:
        raise InputError(
            f"{path}: none of its {genes.size} genes is among the model's {trained_genes.size} trained genes;"
            f" expected the training data's gene names (e.g. {', '.join(trained_genes[:3])})"
            + case_hint(genes, trained_genes, "the model")
        )
    if overlap < 0.5 * trained_genes.size:
        log.warning(
            "%s: only %d of the %d trained genes (%.0f%%) are in the file; the others count as not"
            " expressed, so predictions may be poor (same gene names and species as the training data?)%s",
            path,
            overlap,
            trained_genes.size,
            100 * overlap / trained_genes.size,
            case_hint(genes, trained_genes, "the model"),
        )
    log.info(
        "%s: %d cells, %d genes -> %d vocabulary genes (%d present); %s",
        path,
        scan.n_cells,
        genes.size,
        trained_genes.size,
        overlap,
        "raw counts: normalised to 1e4 + log1p" if scan.raw_counts else "log-normalised: kept",
    )
    nnz_out = int(scan.expressed_cells[col_map >= 0].sum())
    data = np.empty(nnz_out, dtype=np.uint8)
    values = np.empty(nnz_out, dtype=np.float32)  # the normalised values, for the linear member
    indices = np.empty(nnz_out, dtype=np.int32)
    indptr = np.zeros(scan.n_cells + 1, dtype=np.int64)
    row = pos = 0
    for chunk in iter_csr_chunks(path, settings.chunk_cells, settings.use_raw):
        aligned = align_columns(chunk, col_map, trained_genes.size)
        normalised = normalise_rows(aligned, scan.raw_counts)
        binned = bin_rows(normalised, settings.num_bins, binning)
        data[pos : pos + binned.nnz] = binned.data
        values[pos : pos + binned.nnz] = normalised.data
        indices[pos : pos + binned.nnz] = binned.indices
        indptr[row + 1 : row + 1 + binned.shape[0]] = pos + binned.indptr[1:]
        row += binned.shape[0]
        pos += binned.nnz
    matrix = sp.csr_matrix((data, indices, indptr), shape=(scan.n_cells, trained_genes.size))
    empty = int((np.diff(indptr) == 0).sum())
    if empty:
        log.warning(
            "%s: %d of %d cells express none of the %d vocabulary genes (%d of them no gene at all);"
            " they are kept, and each gets one <unk> window (context_id 'no_expressed_gene')",
            path,
            empty,
            scan.n_cells,
            trained_genes.size,
            scan.empty_cells,
        )
    import anndata as ad

    obs = read_obs(path)
    result = ad.AnnData(X=matrix, obs=obs, var=pd.DataFrame(index=pd.Index(trained_genes, name="gene")))
    result.layers[EXPRESSION_LAYER] = sp.csr_matrix(
        (values, matrix.indices, matrix.indptr), shape=matrix.shape
    )
    chosen = {"top_genes": settings.top_genes} if settings.top_genes else {}  # h5ad stores no None
    result.uns["preprocess"] = {
        **chosen,
        "source": str(path),
        "raw_counts": scan.raw_counts,
        "num_bins": settings.num_bins,
        "binning": binning,
        "min_cells": settings.min_cells,
        "seed": settings.seed,
    }
    return result


def recorded_binning(preprocessed: str | Path) -> str:
    """The binning a preprocessed file was made with (files of older runs: `cell_range`)."""
    import anndata as ad

    adata = ad.read_h5ad(preprocessed, backed="r")
    binning = str(adata.uns.get("preprocess", {}).get("binning", "cell_range"))
    adata.file.close()
    return binning


def preprocess_adt(
    path: str | Path, cell_ids: pd.Index, settings: PreprocessSettings, features: np.ndarray | None = None
) -> ad.AnnData:
    """Binned ADT (protein) matrix, rows in the RNA file's cell order, matched by barcode (the
    ADT file may hold more cells: a split's rows are picked from the whole file).

    Features keep the file's order (training) or follow the model's `features`. `settings`
    carry the RNA's binning; `unit_range`'s edges over [0, 1] do not fit protein counts, so
    these get the scale-free `cell_quantile` instead."""
    adt_cells = read_obs(path).index
    if not adt_cells.is_unique:
        raise InputError(f"{path}: duplicate cell barcodes in the ADT file")
    position = adt_cells.get_indexer(cell_ids)
    if (position < 0).any():
        missing = cell_ids[position < 0]
        raise InputError(
            f"{path}: the ADT file must hold every RNA cell; {missing.size} of {cell_ids.size} RNA"
            f" barcodes are not in it (e.g. {', '.join(map(str, missing[:3]))}) and it has"
            f" {adt_cells.size} cells"
        )
    if features is None:
        features = read_var_names(path)
    if settings.binning == "unit_range":
        settings = replace(settings, binning="cell_quantile")
    binned = preprocess_file(path, settings, trained_genes=features)
    return binned[position].copy()

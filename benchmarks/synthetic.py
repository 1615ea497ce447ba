"""Synthetic sparse single-cell counts (CSR float32, integer values) with learnable cell-type labels.

Gene detection rates follow a truncated power law on [1e-4, 0.95], so some genes are rare and fall
to a `min_cells` filter; counts are Poisson-gamma with per-class up-shifts on marker genes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

RARE_RATE, COMMON_RATE = 1e-4, 0.95  # detection-rate range of the least and most popular genes
MARKER_FOLD = 3.0  # marker genes: draw weight and mean count multiplied by this in their class
GAMMA_SHAPE = 2.0  # negative-binomial dispersion (shape of the gamma mixing the Poisson)


def detection_rates(genes: int, nnz_per_cell: float) -> np.ndarray:
    """Per-gene detection rates, density ∝ q^-(1+beta) on [RARE_RATE, COMMON_RATE], mean nnz/genes."""
    if not 0 < nnz_per_cell <= 0.6 * genes:
        raise ValueError(f"nnz_per_cell={nnz_per_cell}: expected 0 < nnz_per_cell <= 0.6 * genes")
    u = (np.arange(genes) + 0.5) / genes

    def rates(beta: float) -> np.ndarray:
        if abs(beta) < 1e-9:
            return COMMON_RATE * (RARE_RATE / COMMON_RATE) ** u
        return (COMMON_RATE**-beta + u * (RARE_RATE**-beta - COMMON_RATE**-beta)) ** (-1 / beta)

    lo, hi = -3.0, 3.0  # the mean rate falls as beta rises: bisect for the target mean
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rates(mid).sum() > nnz_per_cell else (lo, mid)
    return rates((lo + hi) / 2)


def barcodes(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Unique 10x-style barcodes (16 nt + '-1')."""
    codes = rng.choice(4**16, size=cells, replace=False).astype(np.uint64)
    digits = (codes[:, None] >> (2 * np.arange(16, dtype=np.uint64))) & np.uint64(3)
    letters = np.frombuffer(b"ACGT", dtype="S1")[digits.astype(np.intp)]
    return np.char.add(letters.view("S16").ravel().astype(str), "-1")


def gene_symbols(genes: int) -> np.ndarray:
    """`G00001`, `G00002`, ... (wider when there are more than 99,999 genes)."""
    width = max(5, len(str(genes)))
    return np.char.add("G", np.char.zfill(np.arange(1, genes + 1).astype(str), width))


def sampled_entries(
    rng: np.random.Generator, labels: np.ndarray, draws: np.ndarray, flat_cdf: np.ndarray, genes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw genes for a chunk of cells: sorted unique `row * genes + col` keys and their multiplicity."""
    rows = np.repeat(np.arange(labels.size, dtype=np.int32), draws)
    row_class = labels[rows]
    u = rng.random(rows.size)
    u += row_class
    keys = np.searchsorted(flat_cdf, u, side="right")  # index into the classes' concatenated CDFs
    del u
    keys -= row_class * np.int64(genes)  # the column (float rounding may overshoot by one)
    del row_class
    np.minimum(keys, genes - 1, out=keys)
    keys += rows * np.int64(genes)
    del rows
    keys.sort()
    first = np.flatnonzero(np.diff(keys, prepend=-1))  # dedupe: first of each run of equal keys
    multiplicity = np.diff(first, append=keys.size)
    return keys[first], multiplicity


def make_counts(
    cells: int, genes: int, nnz_per_cell: float, classes: int, seed: int, chunk_cells: int = 10_000
) -> ad.AnnData:
    """Synthetic raw-count AnnData: CSR float32 X, obs `celltype`, barcodes and `G00001` genes."""
    if cells < 1 or classes < 2:
        raise ValueError(f"cells={cells}, classes={classes}: expected cells >= 1 and classes >= 2")
    rng = np.random.default_rng(seed)
    rate = detection_rates(genes, nnz_per_cell)[rng.permutation(genes)]
    weight = np.tile(-np.log1p(-rate), (classes, 1))  # draws per cell such that P(gene drawn) = rate
    mean = np.tile(0.1 + 2.0 * rate, (classes, 1))  # common genes are also the highly expressed ones
    candidates = rng.permutation(np.flatnonzero((rate > 0.02) & (rate < 0.6)))
    n_markers = max(1, min(candidates.size // classes, max(5, genes // 100)))
    for c in range(classes):
        markers = candidates[c * n_markers : (c + 1) * n_markers]
        weight[c, markers] *= MARKER_FOLD
        mean[c, markers] *= MARKER_FOLD
    draws_per_cell = weight.sum(axis=1)
    cdf = np.cumsum(weight, axis=1) / draws_per_cell[:, None]
    cdf[:, -1] = 1.0
    flat_cdf = (cdf + np.arange(classes)[:, None]).ravel()  # class c's CDF lives in (c, c + 1]

    share = 0.5 / classes + 0.5 * rng.dirichlet(np.full(classes, 2.0))
    labels = rng.choice(classes, size=cells, p=share).astype(np.int32)
    size = rng.lognormal(0.0, 0.25, cells)
    draws = rng.poisson(draws_per_cell[labels] * size)
    bound = int(draws.sum())  # upper bound on nnz: duplicates only merge
    data = np.empty(bound, dtype=np.float32)
    indices = np.empty(bound, dtype=np.int32)
    indptr = np.zeros(cells + 1, dtype=np.int64)
    pos = 0
    for start in range(0, cells, chunk_cells):
        stop = min(start + chunk_cells, cells)
        lab, n = labels[start:stop], stop - start
        keys, multiplicity = sampled_entries(rng, lab, draws[start:stop], flat_cdf, genes)
        row, col = np.divmod(keys, genes)
        del keys
        mu = mean[lab[row], col]
        mu *= size[start:stop][row]
        mu *= multiplicity / GAMMA_SHAPE
        counts = rng.poisson(rng.gamma(GAMMA_SHAPE, mu))
        del mu, multiplicity
        counts += 1
        data[pos : pos + counts.size] = counts
        indices[pos : pos + counts.size] = col
        indptr[start + 1 : stop + 1] = pos + np.cumsum(np.bincount(row, minlength=n))
        pos += counts.size
    data.resize(pos, refcheck=False)  # shrink in place: no second copy of the arrays
    indices.resize(pos, refcheck=False)
    if pos and data.max() <= 20:  # the pipeline calls a matrix raw counts when its max exceeds 20
        data[int(np.argmax(data))] = 21.0
    matrix = sp.csr_matrix((data, indices, indptr), shape=(cells, genes))
    matrix.has_sorted_indices = True
    names = np.array([f"celltype_{c:02d}" for c in range(classes)])
    obs = pd.DataFrame(
        {"celltype": pd.Categorical.from_codes(labels, categories=names)},
        index=pd.Index(barcodes(rng, cells)),
    )
    return ad.AnnData(X=matrix, obs=obs, var=pd.DataFrame(index=pd.Index(gene_symbols(genes))))


def write(adata: ad.AnnData, out: Path) -> None:
    """Write to a temporary sibling, then rename onto `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.h5ad")
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    """Command line: generate and write one synthetic .h5ad."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, required=True)
    parser.add_argument("--genes", type=int, required=True)
    parser.add_argument("--nnz-per-cell", type=float, required=True, help="about this many non-zeros a cell")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-cells", type=int, default=10_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    adata = make_counts(args.cells, args.genes, args.nnz_per_cell, args.classes, args.seed, args.chunk_cells)
    write(adata, args.out)
    x = adata.X
    print(f"{args.out}: {x.shape[0]} cells x {x.shape[1]} genes, {x.nnz} non-zeros, max {x.data.max():g}")


if __name__ == "__main__":
    main()

"""Reading inputs chunk by chunk and writing outputs atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import read_elem, sparse_dataset


class InputError(ValueError):
    """A user input is missing or malformed; the message names it and what was expected."""


@dataclass(frozen=True)
class H5adInfo:
    """Shape and layout of an h5ad matrix, read without loading it."""

    path: Path
    n_cells: int
    n_genes: int
    layout: str  # "csr", "csc" or "dense"


def _open_h5ad(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected an .h5ad file)")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise InputError(f"{path}: not a readable .h5ad (HDF5) file: {err}") from err


def _matrix_node(handle: h5py.File, path: Path, use_raw: bool) -> h5py.Group | h5py.Dataset:
    key = "raw/X" if use_raw else "X"
    if key not in handle:
        raise InputError(f"{path}: no '{key}' matrix in the file")
    return handle[key]


def h5ad_info(path: str | Path, use_raw: bool = False) -> H5adInfo:
    """Shape and storage layout of the expression matrix."""
    path = Path(path)
    with _open_h5ad(path) as handle:
        node = _matrix_node(handle, path, use_raw)
        if isinstance(node, h5py.Dataset):
            n_cells, n_genes = node.shape
            layout = "dense"
        else:
            n_cells, n_genes = (int(v) for v in node.attrs["shape"])
            layout = node.attrs.get("encoding-type", "csr_matrix")[:3]
    return H5adInfo(path, n_cells, n_genes, layout)


def read_obs(path: str | Path) -> pd.DataFrame:
    """The cell annotations (`obs`) of an h5ad file."""
    path = Path(path)
    with _open_h5ad(path) as handle:
        if "obs" not in handle:
            raise InputError(f"{path}: no 'obs' table in the file")
        return read_elem(handle["obs"])


def read_var_names(path: str | Path, use_raw: bool = False) -> np.ndarray:
    """Gene names (`var_names`, or `raw/var` names) as a string array."""
    path = Path(path)
    with _open_h5ad(path) as handle:
        key = "raw/var" if use_raw else "var"
        if key not in handle:
            raise InputError(f"{path}: no '{key}' table in the file")
        return np.asarray(read_elem(handle[key]).index, dtype=str)


def iter_csr_chunks(
    path: str | Path, chunk_cells: int = 5_000, use_raw: bool = False
) -> Iterator[sp.csr_matrix]:
    """Yield the expression matrix as CSR blocks of at most `chunk_cells` rows."""
    path = Path(path)
    with _open_h5ad(path) as handle:
        node = _matrix_node(handle, path, use_raw)
        if isinstance(node, h5py.Dataset):
            n_cells = node.shape[0]
            for start in range(0, n_cells, chunk_cells):
                yield sp.csr_matrix(node[start : start + chunk_cells])
            return
        matrix = sparse_dataset(node)
        if matrix.format == "csc":
            # Row blocks of a CSC matrix cost a full scan each: convert once.
            whole = matrix.to_memory().tocsr()
            for start in range(0, whole.shape[0], chunk_cells):
                yield whole[start : start + chunk_cells]
            return
        for start in range(0, matrix.shape[0], chunk_cells):
            yield matrix[start : start + chunk_cells]


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staged = tmp / target.name
    try:
        yield staged
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_h5ad(adata: ad.AnnData, target: str | Path) -> None:
    """Write an AnnData atomically."""
    with atomic_path(target) as tmp:
        adata.write_h5ad(tmp)


def write_npz(target: str | Path, **arrays: np.ndarray) -> None:
    """Write arrays to an uncompressed `.npz` atomically."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def write_csv(frame: pd.DataFrame, target: str | Path, index: bool = False) -> None:
    """Write a table to CSV atomically."""
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=index)

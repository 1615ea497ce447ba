"""Reading inputs chunk by chunk and writing outputs atomically."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = [
    "InputError",
    "OutputError",
    "read_h5ad",
    "read_obs",
    "read_var_names",
    "read_layer",
    "iter_csr_chunks",
    "atomic_path",
    "write_h5ad",
    "write_npz",
    "npz_memmap",
    "write_csv",
]

if TYPE_CHECKING:  # anndata is imported where used: the Snakefile imports this module too
    import anndata as ad


class InputError(ValueError):
    """A user input is missing or malformed; the message names it and what was expected."""


class OutputError(InputError):
    """An output cannot be written (no space, read-only location); the message names it."""


# Errors of writing, not of the data: reported as an OutputError naming the target.
WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.ENOTDIR}


@dataclass(frozen=True)
class H5adInfo:
    """Shape and layout of an h5ad matrix, read without loading it."""

    path: Path
    n_cells: int
    n_genes: int
    layout: str  # "csr", "csc" or "dense"
    dtype: np.dtype  # of the values as read (float16 upcast to float32)


def _open_h5ad(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found; expected an .h5ad file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise InputError(f"{path}: not a readable HDF5 file ({err}); expected an AnnData .h5ad file") from err


def _matrix_node(handle: h5py.File, path: Path, use_raw: bool) -> h5py.Group | h5py.Dataset:
    key = "raw/X" if use_raw else "X"
    if key not in handle:
        hint = " (use_raw is true: the file needs a .raw)" if use_raw else ""
        raise InputError(f"{path}: no '{key}' matrix in the file; expected an AnnData .h5ad{hint}")
    return handle[key]


def h5ad_info(path: str | Path, use_raw: bool = False) -> H5adInfo:
    """Shape, storage layout and value dtype of the expression matrix (non-numeric refused)."""
    path = Path(path)
    with _open_h5ad(path) as handle:
        node = _matrix_node(handle, path, use_raw)
        if isinstance(node, h5py.Dataset):
            n_cells, n_genes = node.shape
            layout = "dense"
        else:
            n_cells, n_genes = (int(v) for v in node.attrs["shape"])
            layout = node.attrs.get("encoding-type", "csr_matrix")[:3]
        dtype = value_dtype(node, path, use_raw)
    return H5adInfo(path, n_cells, n_genes, layout, dtype)


Element = h5py.Group | h5py.Dataset

# Stored value kinds read as numbers: booleans, integers and floats.
NUMERIC_KINDS = "biuf"
KIND_NAMES = {"O": "Python objects", "S": "strings", "U": "strings", "c": "complex numbers", "V": "records"}


@cache
def _scipy_takes(dtype: np.dtype) -> bool:
    try:
        sp.csr_matrix((0, 0), dtype=dtype)
    except ValueError:
        return False
    return True


def sparse_safe(stored: np.dtype) -> np.dtype:
    """The dtype numeric values of type `stored` are read as: their own where scipy.sparse
    takes it, else native byte order, else float32 (float16); booleans as float32."""
    if stored.kind == "b":
        return np.dtype(np.float32)
    for dtype in (stored, stored.newbyteorder("=")):
        if _scipy_takes(dtype):
            return dtype
    return np.dtype(np.float32)


def value_dtype(node: h5py.Group | h5py.Dataset, path: str | Path, use_raw: bool) -> np.dtype:
    """The dtype a matrix's values are read as; non-numeric values are refused."""
    matrix = "raw/X" if use_raw else "X"
    data = node if isinstance(node, h5py.Dataset) else node.get("data")
    if not isinstance(data, h5py.Dataset):
        raise InputError(
            f"{path}: {matrix} is neither an array nor a sparse matrix; expected an AnnData matrix"
        )
    if data.dtype.kind not in NUMERIC_KINDS:
        text = h5py.check_string_dtype(data.dtype) is not None
        kind = "strings" if text else KIND_NAMES.get(data.dtype.kind, f"{data.dtype} values")
        raise InputError(
            f"{path}: {matrix} holds {kind}, not numbers; expected a numeric matrix of counts or"
            " log-normalised values"
        )
    return sparse_safe(data.dtype)


def read_values(
    dataset: h5py.Dataset, dtype: np.dtype, start: int = 0, stop: int | None = None
) -> np.ndarray:
    """Rows `start:stop` of a dataset, converted to `dtype` while they are read."""
    source = dataset if dataset.dtype == dtype else dataset.astype(dtype)
    return np.asarray(source[start:stop])


def read_sparse(node: h5py.Group, dtype: np.dtype) -> sp.csr_matrix | sp.csc_matrix:
    """A whole sparse matrix group (CSR or CSC as stored), its values read as `dtype`."""
    shape = tuple(int(v) for v in node.attrs["shape"])
    kind = sp.csc_matrix if node.attrs.get("encoding-type", "csr_matrix").startswith("csc") else sp.csr_matrix
    return kind((read_values(node["data"], dtype), node["indices"][...], node["indptr"][...]), shape=shape)


def csr_rows(node: h5py.Group, dtype: np.dtype, start: int, stop: int) -> sp.csr_matrix:
    """Rows `start:stop` of a CSR matrix group, its values read as `dtype`."""
    indptr = node["indptr"][start : stop + 1].astype(np.int64)
    lo, hi = int(indptr[0]), int(indptr[-1])
    data, indices = read_values(node["data"], dtype, lo, hi), node["indices"][lo:hi]
    return sp.csr_matrix((data, indices, indptr - lo), shape=(indptr.size - 1, int(node.attrs["shape"][1])))


def nonempty_info(path: str | Path, use_raw: bool = False) -> H5adInfo:
    """`h5ad_info`, refusing a matrix without cells or genes."""
    info = h5ad_info(path, use_raw)
    if info.n_cells == 0 or info.n_genes == 0:
        raise InputError(
            f"{path}: empty expression matrix {'raw/X' if use_raw else 'X'} ({info.n_cells} cells x"
            f" {info.n_genes} genes); expected at least one cell and one gene"
        )
    return info


def read_obs(path: str | Path) -> pd.DataFrame:
    """The cell annotations (`obs`) of an h5ad file."""
    path = Path(path)
    with _open_h5ad(path) as handle:
        if "obs" not in handle:
            raise InputError(f"{path}: no 'obs' table in the file; expected an AnnData .h5ad")
        from anndata.io import read_elem

        return read_elem(handle["obs"])


def strings(node: h5py.Dataset) -> np.ndarray:
    """A dataset's values, as text."""
    values = node.asstr()[...] if node.dtype.kind in "OS" else node[...]
    return np.asarray(values).astype(str)


def frame_index(handle: h5py.File, key: str, path: str) -> pd.Index:
    """Row names of the `obs` or `var` table, read from the index dataset alone."""
    if key not in handle:
        raise InputError(f"{path}: no '{key}' table in the file; expected an AnnData .h5ad")
    node = handle[key]
    index = node.attrs.get("_index")
    if isinstance(node, h5py.Group) and isinstance(index, str) and index in node:
        return pd.Index(strings(node[index]))
    from anndata.io import read_elem  # an older layout

    return pd.Index(np.asarray(read_elem(node).index, dtype=str))


def read_layer(path: str | Path, layer: str, hint: str) -> sp.csr_matrix:
    """A layer of an h5ad file as CSR; `hint` says how to get a file that has it."""
    with _open_h5ad(path) as handle:
        if f"layers/{layer}" not in handle:
            raise InputError(f"{path}: no layer '{layer}'; expected {hint}")
        from anndata.io import read_elem

        return sp.csr_matrix(read_elem(handle[f"layers/{layer}"]))


def read_var_names(path: str | Path, use_raw: bool = False) -> np.ndarray:
    """Gene names (`var_names`, or `raw/var` names) as a string array."""
    with _open_h5ad(path) as handle:
        return np.asarray(frame_index(handle, "raw/var" if use_raw else "var", str(path)), dtype=str)


def iter_csr_chunks(path: str | Path, chunk_cells: int, use_raw: bool = False) -> Iterator[sp.csr_matrix]:
    """Yield the expression matrix as CSR blocks of at most `chunk_cells` rows (values scipy.sparse
    cannot hold, float16, are upcast to float32 block by block)."""
    path = Path(path)
    with _open_h5ad(path) as handle:
        node = _matrix_node(handle, path, use_raw)
        dtype = value_dtype(node, path, use_raw)
        if isinstance(node, h5py.Dataset):
            for start in range(0, node.shape[0], chunk_cells):
                yield sp.csr_matrix(read_values(node, dtype, start, start + chunk_cells))
            return
        if node.attrs.get("encoding-type", "csr_matrix").startswith("csc"):
            # Row blocks of a CSC matrix cost a full scan each: convert once.
            whole = read_sparse(node, dtype).tocsr()
            for start in range(0, whole.shape[0], chunk_cells):
                yield whole[start : start + chunk_cells]
            return
        n_cells = int(node.attrs["shape"][0])
        for start in range(0, n_cells, chunk_cells):
            yield csr_rows(node, dtype, start, min(start + chunk_cells, n_cells))


def read_h5ad(path: str | Path) -> ad.AnnData:
    """A whole h5ad as anndata reads it, but with X and raw/X of float16 (dense or sparse), and
    any sparse matrix of values scipy.sparse cannot hold, read as float32."""
    from anndata.experimental import read_dispatched

    def read(default: Callable[[Element], Any], name: str, elem: Element, iospec: Any) -> Any:
        values = elem if isinstance(elem, h5py.Dataset) else elem.get("data")
        if not isinstance(values, h5py.Dataset) or values.dtype.kind not in NUMERIC_KINDS:
            return default(elem)
        dtype = sparse_safe(values.dtype)
        if dtype != values.dtype and iospec.encoding_type in ("csr_matrix", "csc_matrix"):
            return read_sparse(elem, dtype)
        if dtype != values.dtype and name in ("/X", "/raw/X") and elem is values:
            return read_values(elem, dtype)
        return default(elem)

    with _open_h5ad(path) as handle:
        return read_dispatched(handle, read)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `target` only if the block succeeds.

    A full disk or an unwritable location becomes an `OutputError` naming `target`."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as err:
        raise OutputError(f"{target}: cannot create it ({err}); expected a writable directory") from err
    staged = tmp / target.name
    failure = None
    try:
        yield staged
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staged, target)
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            raise
        failure = os.strerror(err.errno)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failure:
        # Raised outside the handler: the writer's frames (open HDF5 handles) are freed now,
        # not at interpreter exit, where h5py can crash on them.
        gc.collect()
        raise OutputError(
            f"{target}: cannot write it ({failure}); expected free disk space and a writable"
            " results directory (nothing was written)"
        )


def write_h5ad(adata: ad.AnnData, target: str | Path) -> None:
    """Write an AnnData atomically."""
    with atomic_path(target) as tmp:
        adata.write_h5ad(tmp)


def write_npz(target: str | Path, **arrays: np.ndarray) -> None:
    """Write arrays to an uncompressed `.npz` atomically."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def npz_memmap(path: str | Path, name: str) -> np.ndarray:
    """The array `name` of an uncompressed `.npz`, memory-mapped read-only (read from disk as it
    is used, so a process holds only what it touches); loaded whole if the member is compressed."""
    import zipfile

    from numpy.lib import format as npy

    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            with archive.open(info) as member:
                return npy.read_array(member)
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)  # the local header: its name and extra field lengths end it
        handle.seek(
            info.header_offset
            + 30
            + int.from_bytes(local[26:28], "little")
            + int.from_bytes(local[28:30], "little")
        )
        read_header = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
        shape, fortran, dtype = read_header[npy.read_magic(handle)](handle)
        offset = handle.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def write_csv(frame: pd.DataFrame, target: str | Path, index: bool = False) -> None:
    """Write a table to CSV atomically."""
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=index)

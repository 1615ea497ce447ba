"""Bad inputs through the real workflow: each run fails early with a message naming the file or
key and what was expected, and leaves no output of the failed stage. One good run with awkward
but valid data (cells without any expressed gene, a predict file with few of the genes) must
succeed, warn, predict every cell and leave the user's files unchanged. Two more preprocess
float16 and float32 copies of the same values (dense, CSR and CSC): they must bin them alike.

The runs are Snakemake subprocesses on small files cut from pbmc68k_reduced; they run a few at
a time (`WORKERS`) in one module fixture, and each test checks its own run."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from test_workflow import snakemake

from scgenai_flow.data import load_source, stratified_split, synthetic_adt
from scgenai_flow.io import InputError, write_h5ad
from scgenai_flow.preprocess import EXPRESSION_LAYER, PreprocessSettings, preprocess_file

WORKERS = 4
CHECKED = "checks/inputs.ok"
# Outputs a failure at each stage may leave: those of the stages before it.
UPSTREAM = {
    "parse": set(),
    "check_inputs": set(),
    "preprocess_train": {CHECKED},
    "vocabulary": {CHECKED, "preprocessed/train.h5ad"},
}
LOGS = {"check_inputs": "check_inputs", "preprocess_train": "preprocess/train", "vocabulary": "vocabulary"}


@dataclass(frozen=True)
class Good:
    """The good files every case starts from, and the good run's model once it exists."""

    dir: Path
    train: ad.AnnData
    val: ad.AnnData
    predict: ad.AnnData
    model: Callable[[], Path]  # waits for the good run

    def path(self, name: str) -> str:
        return str(self.dir / name)


def base_config(good: Good, **sections: dict) -> dict:
    """Own-data settings for a one-epoch tiny model, with sections replaced or extended."""
    config = {
        "data": {
            "train": good.path("train.h5ad"),
            "val": good.path("val.h5ad"),
            "predict": good.path("predict.h5ad"),
        },
        "preprocess": {"min_cells": 20},
        "context": {"max_length": 64},
        "model": {"size": "tiny", "backbone": "scgent"},
        "train": {"num_epochs": 1, "batch_size": 64, "learning_rate": 2e-3, "threads": 1, "ensemble": 1},
        "predict": {"threads": 1},  # runs share the cores
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


def write(adata: ad.AnnData, path: Path) -> str:
    write_h5ad(adata, path)
    return str(path)


def with_x(adata: ad.AnnData, change: Callable[[np.ndarray], None]) -> ad.AnnData:
    """A copy whose stored values were changed in place by `change`."""
    copy = adata.copy()
    matrix = sp.csr_matrix(copy.X, dtype=np.float32)
    change(matrix.data)
    copy.X = matrix
    return copy


def bad_file(
    split: str, make: Callable[[Good], ad.AnnData], **sections: dict
) -> Callable[[Path, Good], dict]:
    """A case whose `split` file is replaced by `make(good)`."""

    def setup(work: Path, good: Good) -> dict:
        return base_config(good, data={split: write(make(good), work / f"{split}.h5ad")}, **sections)

    return setup


def text_file(key: str, name: str, text: str, method: str) -> Callable[[Path, Good], dict]:
    """A case whose context reference file holds `text`."""

    def setup(work: Path, good: Good) -> dict:
        (work / name).write_text(text)
        return base_config(good, context={"method": method, key: str(work / name)})

    return setup


def not_h5ad(work: Path, good: Good) -> dict:
    (work / "train.h5ad").write_text("cell,gene,count\n")
    return base_config(good, data={"train": str(work / "train.h5ad")})


def truncated(work: Path, good: Good) -> dict:
    data = Path(good.path("train.h5ad")).read_bytes()
    (work / "train.h5ad").write_bytes(data[: len(data) // 2])
    return base_config(good, data={"train": str(work / "train.h5ad")})


def renamed_genes(adata: ad.AnnData) -> ad.AnnData:
    copy = adata.copy()
    copy.var_names = [f"mouse_{g}" for g in copy.var_names]
    return copy


def lowercase_genes(adata: ad.AnnData) -> ad.AnnData:
    copy = adata.copy()
    copy.var_names = copy.var_names.str.lower()
    return copy


def strings_x(adata: ad.AnnData) -> ad.AnnData:
    """Expression values written as text (a CSV read without converting the numbers)."""
    return ad.AnnData(adata.X.toarray().astype(str).astype(object), adata.obs, adata.var)


def stored_as(adata: ad.AnnData, path: Path, dtype: type, layout: str) -> str:
    """Write `adata` with X stored as `dtype` in `layout` (dense, csr or csc), its values rounded
    to float16 for every dtype; scipy.sparse cannot hold float16: those values are rewritten in
    the file."""
    values = adata.X.toarray().astype(np.float16)
    copy = adata.copy()
    copy.X = values.astype(dtype) if layout == "dense" else sp.csr_matrix(values.astype(np.float32))
    if layout == "csc":
        copy.X = copy.X.tocsc()
    write(copy, path)
    if layout != "dense" and dtype is np.float16:
        with h5py.File(path, "r+") as handle:
            data = handle["X/data"][...]
            del handle["X/data"]
            handle["X/data"] = data.astype(np.float16)
    return str(path)


def duplicate(names: pd.Index) -> list[str]:
    values = list(names)
    values[1] = values[0]
    return values


def adt_mismatch(work: Path, good: Good) -> dict:
    adt = {
        f"{split}_adt": write(
            synthetic_adt(getattr(good, split).obs, "bulk_labels", 1), work / f"{split}_adt.h5ad"
        )
        for split in ("train", "predict")
    }
    val = synthetic_adt(good.val.obs, "bulk_labels", 1)[3:]  # three cells short
    adt["val_adt"] = write(val, work / "val_adt.h5ad")
    return base_config(good, data={"multiomics": True, **adt})


def unwritable_results(work: Path, good: Good) -> dict:
    (work / "a_file").write_text("")
    return {**base_config(good), "results": str(work / "a_file/results")}


def model_copy(work: Path, good: Good, damage: Callable[[Path], None]) -> Path:
    model = work / "model"
    shutil.copytree(good.model(), model)
    damage(model)
    return model


def model_without_weights(work: Path, good: Good) -> dict:
    model = model_copy(work, good, lambda m: (m / "scGenAI_model.pt").unlink())
    return base_config(good, data={"train": None, "val": None}, predict={"model_dir": str(model)})


def model_with_corrupt_weights(work: Path, good: Good) -> dict:
    def damage(model: Path) -> None:
        weights = model / "scGenAI_model.pt"
        weights.write_bytes(weights.read_bytes()[:1000])

    model = model_copy(work, good, damage)
    return base_config(good, data={"train": None, "val": None}, predict={"model_dir": str(model)})


def model_of_other_backbone(work: Path, good: Good) -> dict:
    model = model_copy(work, good, lambda m: None)  # an scgent model; the config asks for llama
    return base_config(
        good,
        data={"train": None, "val": None, "predict": None},
        model={"backbone": "llama"},
        finetune={"train": good.path("val.h5ad"), "model": str(model)},
    )


def model_sharing_no_gene(work: Path, good: Good) -> dict:
    model = model_copy(work, good, lambda m: None)
    predict = write(renamed_genes(good.predict), work / "predict.h5ad")
    return base_config(
        good, data={"train": None, "val": None, "predict": predict}, predict={"model_dir": str(model)}
    )


def gmt_of_rare_genes(work: Path, good: Good) -> dict:
    """Gene sets of genes present in the data but expressed in too few cells to be kept."""
    expressed = np.asarray((good.train.X > 0).sum(axis=0)).ravel()
    rare = good.train.var_names[expressed < 20][:10]
    (work / "rare.gmt").write_text("RARE\tgenes below min_cells\t" + "\t".join(rare) + "\n")
    return base_config(good, context={"method": "biofunction", "gmt": str(work / "rare.gmt")})


@dataclass(frozen=True)
class Case:
    """One bad input: how to make it, the stage that must stop, what the message must say."""

    name: str
    setup: Callable[[Path, Good], dict]
    stage: str
    message: tuple[str, ...]
    needs_model: bool = False
    needs_root: bool = False


def train_x(change: Callable[[np.ndarray], None]) -> Callable[[Good], ad.AnnData]:
    return lambda good: with_x(good.train, change)


def set_first(value: float) -> Callable[[np.ndarray], None]:
    def change(data: np.ndarray) -> None:
        data[0] = value

    return change


def scale(data: np.ndarray) -> None:
    data *= 10.0  # log-normalised values x 10: max above 20, not integers


def with_obs(adata: ad.AnnData, obs: pd.DataFrame) -> ad.AnnData:
    return ad.AnnData(adata.X, obs, adata.var)


def duplicate_genes(good: Good) -> ad.AnnData:
    return ad.AnnData(good.val.X, good.val.obs, pd.DataFrame(index=duplicate(good.val.var_names)))


def duplicate_barcodes(good: Good) -> ad.AnnData:
    return with_obs(good.train, good.train.obs.set_axis(duplicate(good.train.obs_names)))


def no_label_column(good: Good) -> ad.AnnData:
    return with_obs(good.train, good.train.obs.drop(columns="bulk_labels"))


def five_unlabelled(good: Good) -> ad.AnnData:
    labels = good.train.obs["bulk_labels"].where(np.arange(good.train.n_obs) > 4)
    return with_obs(good.train, good.train.obs.assign(bulk_labels=labels))


def one_class(good: Good) -> ad.AnnData:
    return with_obs(good.train, good.train.obs.assign(bulk_labels="T cell"))


def new_val_label(good: Good) -> ad.AnnData:
    labels = good.val.obs["bulk_labels"].astype(str).to_numpy()
    labels[:3] = "Platelet"
    return with_obs(good.val, good.val.obs.assign(bulk_labels=labels))


def on(**sections: dict) -> Callable[[Path, Good], dict]:
    """A case that only changes config values."""
    return lambda work, good: base_config(good, **sections)


def missing(section: str, key: str, name: str, **sections: dict) -> Callable[[Path, Good], dict]:
    """A case whose `section.key` points at `name`, which does not exist."""

    def setup(work: Path, good: Good) -> dict:
        config = base_config(good, **sections)
        config[section] = {**config.get(section, {}), key: str(work / name)}
        return config

    return setup


def on_tiny_fs(work: Path, good: Good) -> dict:
    return {**base_config(good), "results": str(work / "tiny_fs/results")}


EXPECT_EVEN = "is not valid; expected an even integer >= 4"
CASES = [
    # configuration: refused when the workflow is parsed, before any job
    Case("misspelt_key", on(train={"num_epoch": 3}), "parse",
         ("unknown config key 'train.num_epoch'; did you mean 'train.num_epochs'?",)),
    Case("max_length_odd", on(context={"max_length": 63}), "parse",
         (f"context.max_length: 63 {EXPECT_EVEN}",)),
    Case("max_length_too_small", on(context={"max_length": 2}), "parse",
         (f"context.max_length: 2 {EXPECT_EVEN}",)),
    # GPT-2 has 1,024 positions: 2,048 tokens of summed (gene, bin) pairs (the default)
    Case("max_length_above_backbone_limit", on(model={"backbone": "gpt"}, context={"max_length": 4096}),
         "parse", ("context.max_length: 4096 is above what model.backbone 'gpt' takes; expected <= 2048",)),
    Case("resample_without_sliding_windows",
         on(train={"resample_windows": True}, context={"method": "biofunction"}), "parse",
         ("train.resample_windows: true needs sliding windows; expected context.method random or genelist",)),
    Case("num_bins_zero", on(preprocess={"num_bins": 0}), "parse",
         ("preprocess.num_bins: 0 is not valid; expected an integer >= 1 and <= 254",)),
    Case("batch_size_zero", on(train={"batch_size": 0}), "parse",
         ("train.batch_size: 0 is not valid; expected an integer >= 1",)),
    Case("ensemble_zero", on(train={"ensemble": 0}), "parse",
         ("train.ensemble: 0 is not valid; expected an integer >= 1",)),
    Case("unknown_backbone", on(model={"backbone": "bert"}), "parse",
         ("model.backbone: 'bert' is not valid; expected one of llama, gpt, bigbird, scgent",)),
    Case("unknown_size", on(model={"size": "huge"}), "parse",
         ("model.size: 'huge' is not valid; expected one of tiny, small, normal, large",)),
    Case("unknown_context", on(context={"method": "genomics"}), "parse",
         ("context.method: 'genomics' is not valid; expected one of random", "did you mean 'genomic'?")),
    Case("missing_file", missing("data", "train", "nowhere.h5ad"), "parse",
         ("data.train: ", "nowhere.h5ad: file not found; expected an existing .h5ad file")),
    Case("missing_gmt", missing("context", "gmt", "no.gmt", context={"method": "biofunction"}), "parse",
         ("context.gmt: ", "no.gmt: file not found; expected the reference file of context.method")),
    Case("missing_model_dir", missing("predict", "model_dir", "no_model"), "parse",
         ("predict.model_dir: ", "no_model: directory not found; expected a model directory")),
    Case("results_not_writable", unwritable_results, "parse",
         ("results: ", "a_file is not a directory); expected a writable directory")),
    Case("finetune_model_of_other_backbone", model_of_other_backbone, "parse",
         ("the settings that define a model come from its model dir, but the config sets them",
          "model.backbone: config 'llama', model 'scgent'", "remove these keys"), needs_model=True),
    # input files: refused by check_inputs, which reads only headers, obs and var
    Case("not_h5ad", not_h5ad, "check_inputs",
         ("data.train: ", "train.h5ad: not a readable HDF5 file", "expected an AnnData .h5ad file")),
    Case("truncated_h5ad", truncated, "check_inputs",
         ("data.train: ", "train.h5ad: not a readable HDF5 file", "truncated file")),
    Case("zero_cells", bad_file("train", lambda g: g.train[:0].copy()), "check_inputs",
         ("data.train: ", "empty expression matrix X (0 cells x 250 genes); expected at least one cell")),
    Case("zero_genes", bad_file("predict", lambda g: g.predict[:, :0].copy()), "check_inputs",
         ("data.predict: ", "empty expression matrix X (70 cells x 0 genes); expected at least one")),
    Case("duplicate_genes", bad_file("val", duplicate_genes), "check_inputs",
         ("data.val: ", "1 duplicate gene names in var_names (e.g. ", "expected unique names")),
    Case("duplicate_barcodes", bad_file("train", duplicate_barcodes), "check_inputs",
         ("data.train: ", "1 duplicate cell barcodes in obs_names", "expected unique names")),
    Case("label_column_missing", bad_file("train", no_label_column), "check_inputs",
         ("data.train: ", "obs has no column 'bulk_labels' (data.target_feature)",
          "expected one of its columns: n_genes")),
    Case("labels_missing_values", bad_file("train", five_unlabelled), "check_inputs",
         ("data.train: ", "5 cells have no label in 'bulk_labels'; expected a label for every cell")),
    Case("one_class", bad_file("train", one_class), "check_inputs",
         ("data.train: ", "column 'bulk_labels' has 1 class (T cell); expected at least 2")),
    Case("val_labels_unseen_in_training", bad_file("val", new_val_label), "check_inputs",
         ("data.val: ", "labels never seen in training: Platelet; expected only the classes of data.train")),
    Case("predict_shares_no_gene", bad_file("predict", lambda g: renamed_genes(g.predict)), "check_inputs",
         ("data.predict: ", "none of its 100 genes is among the 250 genes of data.train",
          "expected the same gene names")),
    Case("predict_genes_differ_in_case", bad_file("predict", lambda g: lowercase_genes(g.predict)),
         "check_inputs", ("data.predict: ", "none of its 100 genes is among the 250 genes of data.train",
                          "100 of its genes match data.train's only when letter case is ignored (e.g. '",
                          "): rename var_names to data.train's case")),
    Case("x_of_strings", bad_file("train", lambda g: strings_x(g.train)), "check_inputs",
         ("data.train: ", "train.h5ad: X holds strings, not numbers; expected a numeric matrix of counts"
          " or log-normalised values",)),
    Case("use_raw_without_raw", on(data={"use_raw": True}), "check_inputs",
         ("data.train: ", "no 'raw/X' matrix in the file; expected an AnnData .h5ad (use_raw is true")),
    Case("adt_cells_differ", adt_mismatch, "check_inputs",
         ("data.val_adt: ", "3 of the 70 data.val barcodes are not in the ADT file",
          "expected every cell of data.val (any order)")),
    Case("gmt_empty", text_file("gmt", "empty.gmt", "\n", "biofunction"), "check_inputs",
         ("context.gmt: ", "empty.gmt: no gene set in the file (expected GMT lines)")),
    Case("gmt_malformed", text_file("gmt", "bad.gmt", "T_cells CD3D CD3E\n", "biofunction"), "check_inputs",
         ("context.gmt: ", "bad.gmt, line 1: expected 'name<TAB>description<TAB>gene…', got 1 field(s)")),
    Case("genelist_matches_no_gene", text_file("genelist", "genes.txt", "Cd3d\nCd3e\n", "genelist"),
         "check_inputs", ("context.genelist: ", "genes.txt: none of its 2 genes is among the 250 genes")),
    Case("genelist_empty", text_file("genelist", "genes.txt", "\n\n", "genelist"), "check_inputs",
         ("context.genelist: ", "genes.txt: gene list is empty (expected one gene symbol per line)")),
    Case("cytobands_match_no_gene", text_file("cytobands", "bands.tsv", "gene_symbol\tcytobandID\nCd3d\t9\n",
         "genomic"), "check_inputs",
         ("context.cytobands: ", "none of its 1 genes is among the 250 genes of data.train; expected")),
    Case("cytobands_malformed", text_file("cytobands", "bands.tsv", "gene,band\nCD3D,11q23.3\n", "genomic"),
         "check_inputs", ("context.cytobands: ", "bands.tsv: cytoband table lacks column(s) cytobandID")),
    Case("model_dir_missing_weights", model_without_weights, "check_inputs",
         ("predict.model_dir: ", "missing scGenAI_model.pt; expected a model directory written by this"),
         needs_model=True),
    Case("model_weights_corrupt", model_with_corrupt_weights, "check_inputs",
         ("predict.model_dir: ", "scGenAI_model.pt: cannot load weights", "expected a torch state dict"),
         needs_model=True),
    Case("predict_shares_no_gene_with_model", model_sharing_no_gene, "check_inputs",
         ("data.predict: ", "none of its 100 genes is among the ", "genes of predict.model_dir; expected"),
         needs_model=True),
    # expression values: refused while preprocessing scans X, before anything is written
    Case("nan_in_x", bad_file("train", train_x(set_first(np.nan))), "preprocess_train",
         ("train.h5ad: X holds NaN values; expected finite counts or log-normalised values",)),
    Case("inf_in_x", bad_file("train", train_x(set_first(np.inf))), "preprocess_train",
         ("train.h5ad: X holds infinite values; expected finite counts",)),
    Case("negative_in_x", bad_file("train", train_x(set_first(-1.0))), "preprocess_train",
         ("train.h5ad: X holds negative values (min -1); expected counts or log-normalised values",)),
    Case("non_integer_counts", bad_file("train", train_x(scale)), "preprocess_train",
         ("train.h5ad: X has values above 20", "but holds non-integer values",
          "expected integer raw counts")),
    Case("disk_full", on_tiny_fs, "preprocess_train",
         ("preprocessed/train.h5ad: cannot write it (No space left on device); expected free disk space",),
         needs_root=True),
    # a reference naming only genes too rare to be kept: known once the genes are filtered
    Case("gmt_matches_no_kept_gene", gmt_of_rare_genes, "vocabulary",
         ("context.gmt: ", "rare.gmt: no gene set contains any of the 205 vocabulary genes",
          "expected genes kept in the vocabulary (expressed in at least preprocess.min_cells")),
]  # fmt: skip


@dataclass(frozen=True)
class Awkward:
    """Awkward but valid inputs: the run must make `targets`."""

    name: str
    setup: Callable[[Path, Good], dict]
    targets: tuple[str, ...]


PREPROCESSED = tuple(f"results/preprocessed/{split}.h5ad" for split in ("train", "val", "predict"))
LAYOUTS = {"train": "dense", "val": "csr", "predict": "csc"}


def float_files(dtype: type) -> Callable[[Path, Good], dict]:
    """The good files' values rounded to float16, stored as `dtype`: train dense, val CSR,
    predict CSC."""

    def setup(work: Path, good: Good) -> dict:
        files = {s: stored_as(getattr(good, s), work / f"{s}.h5ad", dtype, LAYOUTS[s]) for s in LAYOUTS}
        return base_config(good, data=files)

    return setup


AWKWARD = [
    Awkward("float16", float_files(np.float16), PREPROCESSED),
    Awkward("float32", float_files(np.float32), PREPROCESSED),
]
# The runs a test of this module needs other than its case (default: the good run).
RUNS_OF = {"test_float16_matrices_are_read_as_float32": {"float16", "float32"}}


@dataclass
class Outcome:
    """A finished run: its process, work dir, what it left under results/ and the text of its
    logs (read at once: a tmpfs is unmounted later), and (good run) the input hashes."""

    result: subprocess.CompletedProcess
    workdir: Path
    left: set[str]
    logs: dict[str, str]
    hashes: tuple[dict[str, str], dict[str, str]] | None = None

    @classmethod
    def of(cls, result: subprocess.CompletedProcess, workdir: Path, config: dict, **extra) -> Outcome:
        results = workdir / config.get("results", "results")
        files = {str(p.relative_to(results)) for p in results.rglob("*") if p.is_file()}
        logs = {
            f[len("logs/") : -len(".log")]: (results / f).read_text() for f in files if f.startswith("logs/")
        }
        return cls(
            result, workdir, {f for f in files if not f.startswith(("logs/", "benchmarks/"))}, logs, **extra
        )

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


def digest(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def marker_gmt(adata: ad.AnnData) -> str:
    """One gene set per class: its 15 most over-expressed genes (picked from the data)."""
    expression = pd.DataFrame(adata.X.toarray(), columns=adata.var_names)
    means = expression.groupby(adata.obs["bulk_labels"].astype(str).to_numpy()).mean()
    return "".join(
        f"{name.replace(' ', '_')}\tmarkers\t"
        + "\t".join((means.loc[name] - means.mean()).nlargest(15).index)
        + "\n"
        for name in means.index
    )


def good_inputs(pbmc: ad.AnnData, directory: Path) -> dict[str, Path]:
    """Train (176 cells), val and predict (70 each) files of 250 of the genes (small: one epoch
    takes seconds); the predict file keeps 40% of them and has three cells without any expressed
    gene; a GMT of marker genes."""
    parts = stratified_split(pbmc.obs["bulk_labels"], {"unused": 0.55, "val": 0.1, "predict": 0.1}, seed=5)
    genes = np.sort(np.random.default_rng(5).permutation(pbmc.n_vars)[:250])
    predict = pbmc[parts["predict"], genes].copy()
    silent = np.arange(predict.n_obs) >= 3  # the first three cells express nothing
    predict.X = sp.csr_matrix(sp.diags(silent.astype(np.float32)) @ predict.X)
    predict.X.eliminate_zeros()
    files = {
        "train.h5ad": pbmc[parts["train"], genes].copy(),
        "val.h5ad": pbmc[parts["val"], genes].copy(),
        "predict.h5ad": predict[:, :100].copy(),
    }
    for name, adata in files.items():
        write(adata, directory / name)
    (directory / "sets.gmt").write_text(marker_gmt(files["train.h5ad"]))
    return {name: directory / name for name in [*files, "sets.gmt"]}


def mount_tiny_fs(path: Path) -> bool:
    """A 64 KiB tmpfs at `path` (root only): writes beyond it fail with ENOSPC."""
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)]).returncode == 0


def selected_names(request: pytest.FixtureRequest) -> set[str]:
    """The cases (and "good") that the selected tests of this module need."""
    names = set()
    for item in request.session.items:
        if item.module is not request.module or "runs" not in item.fixturenames:
            continue
        case = getattr(item, "callspec", None) and item.callspec.params.get("case")
        names |= {case.name} if case else RUNS_OF.get(item.originalname, {"good"})
        names |= {"good"} if case and case.needs_model else set()
    return names


@pytest.fixture(scope="module")
def runs(request, pbmc, tmp_path_factory) -> dict[str, Outcome]:
    """Every selected run, `WORKERS` at a time; the good run starts first."""
    root = tmp_path_factory.mktemp("bad_inputs")
    paths = good_inputs(pbmc, root)
    names = selected_names(request)
    outcomes: dict[str, Future] = {}
    mounts = []

    def good_run() -> Outcome:
        work = root / "good"
        work.mkdir()
        before = digest(list(paths.values()))
        config = base_config(good, context={"method": "biofunction", "gmt": str(paths["sets.gmt"])})
        result = snakemake(work, "results/predictions.csv", config=config, check=False)
        return Outcome.of(result, work, config, hashes=(before, digest(list(paths.values()))))

    def model() -> Path:
        outcome = outcomes["good"].result()
        assert outcome.result.returncode == 0, outcome.output[-3000:]
        return outcome.workdir / "results/model/best_model"

    def bad_run(case: Case, config: dict | None) -> Outcome:
        work = root / case.name
        config = config if config is not None else case.setup(work, good)
        return Outcome.of(snakemake(work, "all", config=config, check=False), work, config)

    def awkward_run(run: Awkward, config: dict) -> Outcome:
        work = root / run.name
        return Outcome.of(snakemake(work, *run.targets, config=config, check=False), work, config)

    good = Good(root, *(ad.read_h5ad(paths[f"{s}.h5ad"]) for s in ("train", "val", "predict")), model)
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            if "good" in names:
                outcomes["good"] = pool.submit(good_run)
            for run in (run for run in AWKWARD if run.name in names):
                (root / run.name).mkdir()
                outcomes[run.name] = pool.submit(awkward_run, run, run.setup(root / run.name, good))
            for case in sorted(CASES, key=lambda c: c.needs_model):  # those waiting for the model last
                if case.name not in names:
                    continue
                work = root / case.name
                work.mkdir()
                if case.needs_root:
                    if not mount_tiny_fs(work / "tiny_fs"):
                        continue  # the test skips
                    mounts.append(work / "tiny_fs")
                # files are written here, one case at a time; those that need the model write later
                config = None if case.needs_model else case.setup(work, good)
                outcomes[case.name] = pool.submit(bad_run, case, config)
    finally:
        for mount in mounts:
            subprocess.run(["umount", str(mount)])
    return {name: future.result() for name, future in outcomes.items()}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_fails_early_with_a_clear_message_and_no_output(
    case: Case, runs: dict[str, Outcome]
) -> None:
    if case.name not in runs:
        pytest.skip("a 64 KiB tmpfs cannot be mounted here (needs root)")
    outcome = runs[case.name]
    assert outcome.result.returncode != 0, outcome.output[-3000:]
    for part in case.message:
        assert part in outcome.output, f"{part!r} not in:\n{outcome.output[-4000:]}"
    started = set(re.findall(r"^(?:local)?rule (\w+):", outcome.output, re.M))
    if case.stage == "parse":
        assert not started and not outcome.logs, f"jobs ran: {started}"
    else:
        assert f"Error in rule {case.stage}:" in outcome.output
        assert case.message[-1] in outcome.logs[LOGS[case.stage]]
    assert outcome.left <= UPSTREAM[case.stage], outcome.left


def test_cells_without_expressed_genes_are_kept_predicted_and_reported(runs: dict[str, Outcome]) -> None:
    outcome = runs["good"]
    assert outcome.result.returncode == 0, outcome.output[-3000:]
    results = outcome.workdir / "results"
    source = ad.read_h5ad(outcome.workdir.parent / "predict.h5ad")
    table = pd.read_csv(results / "predictions.csv", index_col=0)
    assert list(table.index) == list(source.obs_names)  # every cell, in input order
    assert list(table["context_id"][:3]) == ["no_expressed_gene"] * 3
    assert not table["context_id"][3:].eq("no_expressed_gene").any()
    log = outcome.logs["preprocess/predict"]
    trained = np.load(results / "model/best_model/trained_genes.npy")
    assert (
        f"3 of 70 cells express none of the {trained.size} vocabulary genes (3 of them no gene at all)" in log
    )
    assert "they are kept, and each gets one <unk> window (context_id 'no_expressed_gene')" in log
    present = np.isin(source.var_names, trained).sum()  # 40% of the genes: a warning
    assert f"only {present} of the {trained.size} trained genes ({100 * present / trained.size:.0f}%)" in log


def test_user_input_files_are_only_read(runs: dict[str, Outcome]) -> None:
    outcome = runs["good"]
    assert outcome.result.returncode == 0, outcome.output[-3000:]
    before, after = outcome.hashes
    assert set(before) == {"train.h5ad", "val.h5ad", "predict.h5ad", "sets.gmt"}
    assert before == after


def test_float16_matrices_are_read_as_float32(runs: dict[str, Outcome]) -> None:
    """float16 X (dense, CSR, CSC) is preprocessed into the bins of the same values in float32."""
    for name in ("float16", "float32"):
        assert runs[name].result.returncode == 0, runs[name].output[-3000:]
    work = runs["float16"].workdir
    for split, layout in LAYOUTS.items():
        with h5py.File(work / f"{split}.h5ad") as handle:
            stored = handle["X"] if layout == "dense" else handle["X/data"]
            assert stored.dtype == np.float16
        half, single = (
            ad.read_h5ad(runs[name].workdir / f"results/preprocessed/{split}.h5ad")
            for name in ("float16", "float32")
        )
        assert list(half.var_names) == list(single.var_names)
        assert half.X.nnz > 0 and (half.X != single.X).nnz == 0, split
        assert (half.layers[EXPRESSION_LAYER] != single.layers[EXPRESSION_LAYER]).nnz == 0, split


def test_float16_raw_matrix_is_split_and_preprocessed_as_float32(tmp_path: Path, pbmc: ad.AnnData) -> None:
    """A float16 sparse raw/X (beside a float16 dense X) reads as float32 in split_data and
    preprocess, with the bins of its float32 copy."""
    values = sp.csr_matrix(pbmc.X[:200].toarray().astype(np.float16).astype(np.float32))
    paths = {}
    for dtype in (np.float16, np.float32):
        adata = ad.AnnData(values, pbmc.obs[:200], pbmc.var)
        adata.raw = adata
        adata.X = values.toarray().astype(dtype)
        paths[dtype] = write(adata, tmp_path / f"{np.dtype(dtype).name}.h5ad")
    with h5py.File(paths[np.float16], "r+") as handle:
        data = handle["raw/X/data"][...]
        del handle["raw/X/data"]
        handle["raw/X/data"] = data.astype(np.float16)
    source = load_source(paths[np.float16], use_raw=True)
    assert source.X.dtype == np.float32 and (sp.csr_matrix(source.X) != values).nnz == 0
    assert load_source(paths[np.float16], use_raw=False).X.dtype == np.float32
    settings = PreprocessSettings(min_cells=5, use_raw=True)
    half, single = (preprocess_file(paths[dtype], settings) for dtype in (np.float16, np.float32))
    assert half.X.nnz > 0 and (half.X != single.X).nnz == 0


def test_genes_differing_only_in_letter_case_are_named_when_aligning(
    tmp_path: Path, pbmc: ad.AnnData, caplog: pytest.LogCaptureFixture
) -> None:
    """A val or predict file in another letter case fails with a hint; partly so, warns with it."""
    trained = np.asarray(pbmc.var_names[:100])
    lower = write(lowercase_genes(pbmc[:50, :100]), tmp_path / "val.h5ad")
    with pytest.raises(InputError) as caught:
        preprocess_file(lower, PreprocessSettings(), trained_genes=trained)
    assert f"{lower}: none of its 100 genes is among the model's 100 trained genes" in str(caught.value)
    assert (
        f"; 100 of its genes match the model's only when letter case is ignored (e.g. {trained[0].lower()!r}"
        f" vs {trained[0]!r}): rename var_names to the model's case" in str(caught.value)
    )
    partly = pbmc[:50, :100].copy()
    partly.var_names = [*trained[:30], *np.char.lower(trained[30:].astype(str))]
    preprocess_file(write(partly, tmp_path / "predict.h5ad"), PreprocessSettings(), trained_genes=trained)
    assert "only 30 of the 100 trained genes (30%) are in the file" in caplog.text
    assert (
        f"70 of its genes match the model's only when letter case is ignored (e.g. {trained[30].lower()!r}"
        in (caplog.text)
    )

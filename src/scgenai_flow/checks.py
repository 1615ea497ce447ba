"""Cheap checks of the user's inputs before any stage reads them: paths when the workflow is
parsed, then h5ad headers, obs and var (never X), reference files and model dirs in one rule."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from .config import default_of
from .io import InputError, atomic_path, frame_index, nonempty_info, strings
from .preprocess import case_hint

log = logging.getLogger(__name__)

DATA_SPLITS = ("train", "val", "predict")


@dataclass(frozen=True)
class InputPlan:
    """The user's inputs by config key, and how they must agree (rule params: plain values)."""

    files: dict[str, str] = field(default_factory=dict)  # h5ad files (RNA and ADT)
    raw: list[str] = field(default_factory=list)  # files read from .raw
    target_feature: str = default_of("data.target_feature")
    labelled: list[str] = field(default_factory=list)  # files that need the label column
    min_classes: list[str] = field(default_factory=list)  # files that need two classes or more
    classes_within: dict[str, list[str]] = field(default_factory=dict)  # val -> where its classes come from
    genes_from: dict[str, list[str]] = field(default_factory=dict)  # predict -> where the genes come from
    same_cells: dict[str, str] = field(default_factory=dict)  # ADT file -> its RNA file
    held_out: dict[str, str] = field(default_factory=dict)  # val / predict file -> the train file
    reference: dict[str, str] = field(default_factory=dict)  # key, path, method, genes (a file key or "")
    models: dict[str, str] = field(default_factory=dict)  # model dirs

    def paths(self) -> list[str]:
        """Every file and directory the plan reads (the rule's inputs)."""
        return [
            *self.files.values(),
            *self.models.values(),
            *([self.reference["path"]] if self.reference else []),
        ]


def indent(err: Exception) -> str:
    """An error's text with its continuation lines indented under the first."""
    return str(err).replace("\n", "\n  ")


def inside(path: str, directory: str) -> bool:
    """Whether `path` lies in `directory` (this workflow's outputs: not the user's to check)."""
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(directory))


def input_plan(config: Mapping[str, Any], trains_here: bool) -> InputPlan:
    """What the check rule reads, from the validated config; `trains_here`: a model is trained
    in this run (not only an existing model used)."""
    from .contexts.reference import REFERENCES

    data, ft, results = config["data"], config["finetune"], config["results"]

    def user(path: str | None) -> bool:
        return bool(path) and not inside(path, results)

    files = {f"data.{s}": data[s] for s in DATA_SPLITS if user(data[s])}
    if data["multiomics"]:
        files |= {f"data.{s}_adt": data[f"{s}_adt"] for s in DATA_SPLITS if user(data[f"{s}_adt"])}
    if ft["train"]:
        given = {f"{s}{kind}": ft[f"{s}{kind}"] for s in ("train", "val") for kind in ("", "_adt")}
        files |= {f"finetune.{key}": path for key, path in given.items() if user(path)}
    models = {"predict.model_dir": config["predict"]["model_dir"], "finetune.model": ft["model"]}
    models = {k: v for k, v in models.items() if user(v) and (k != "finetune.model" or ft["train"])}
    # what the model fine-tuning starts from learnt its classes and genes from (if known)
    base = next((k for k in ("finetune.model", "data.train") if k in models or k in files), None)
    plan: dict[str, Any] = {
        "files": files,
        "models": models,
        "target_feature": data["target_feature"],
        "raw": [k for k in files if not k.endswith("_adt") and config[k.split(".")[0]]["use_raw"]],
        "labelled": [k for k in ("data.train", "data.val", "finetune.train", "finetune.val") if k in files],
        "min_classes": [k for k in ("data.train",) if k in files],
        "same_cells": {
            k: k[: -len("_adt")] for k in files if k.endswith("_adt") and k[: -len("_adt")] in files
        },
    }
    plan["held_out"] = {
        held: train
        for held, train in (
            ("data.val", "data.train"),
            ("data.predict", "data.train"),
            ("finetune.val", "finetune.train"),
        )
        if held in files and train in files
    }
    if "data.val" in files and "data.train" in files:
        plan["classes_within"] = {"data.val": ["data.train"]}
    if "finetune.val" in files and base:
        plan["classes_within"] = {**plan.get("classes_within", {}), "finetune.val": ["finetune.train", base]}
    if "data.predict" in files:
        if "predict.model_dir" in models:
            plan["genes_from"] = {"data.predict": ["predict.model_dir"]}
        elif config["predict"]["model"] == "finetune" and base:
            plan["genes_from"] = {"data.predict": ["finetune.train", base]}
        elif trains_here and "data.train" in files:
            plan["genes_from"] = {"data.predict": ["data.train"]}
    key = REFERENCES.get(config["context"]["method"], ("",))[0]
    if trains_here and key and user(config["context"].get(key)):
        plan["reference"] = {
            "key": f"context.{key}",
            "path": config["context"][key],
            "method": config["context"]["method"],
            "genes": "data.train" if "data.train" in files else "",
        }
    return InputPlan(**plan)


def writable_dir_problem(directory: str) -> str | None:
    """Why `directory` cannot be created or written, or None."""
    path = Path(os.path.abspath(directory))
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def check_before_run(plan: InputPlan, config: Mapping[str, Any]) -> None:
    """Fail when the workflow is parsed, before any job: missing inputs or model dirs, an
    unwritable results dir."""
    problems = [
        f"{key}: {path}: file not found; expected an existing .h5ad file"
        for key, path in plan.files.items()
        if not Path(path).is_file()
    ]
    problems += [
        f"{key}: {path}: directory not found; expected a model directory (e.g. results/model/best_model)"
        for key, path in plan.models.items()
        if not Path(path).is_dir()
    ]
    if plan.reference and not Path(plan.reference["path"]).is_file():
        problems.append(
            f"{plan.reference['key']}: {plan.reference['path']}: file not found;"
            f" expected the reference file of context.method '{plan.reference['method']}'"
        )
    results = config["results"]
    unwritable = writable_dir_problem(results)
    if unwritable:
        problems.append(
            f"results: {results}: cannot write there ({unwritable}); expected a writable directory"
        )
    if problems:
        raise InputError("missing or unusable inputs:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Header:
    """What the checks read of one h5ad: the matrix shape and the cell and gene names."""

    n_cells: int
    n_genes: int
    cells: pd.Index
    genes: pd.Index


def read_header(path: str, use_raw: bool) -> Header:
    """Shape and names of an h5ad, checked for emptiness, agreement and duplicates."""
    try:
        return header_of(path, use_raw)
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:  # h5py on a damaged file
        raise InputError(
            f"{path}: unreadable ({type(err).__name__}: {err}); expected an AnnData .h5ad file"
        ) from err


def header_of(path: str, use_raw: bool) -> Header:
    """`read_header` for a file h5py can read."""
    info = nonempty_info(path, use_raw)
    matrix = "raw/X" if use_raw else "X"
    with h5py.File(path, "r") as handle:
        cells = frame_index(handle, "obs", path)
        genes = frame_index(handle, "raw/var" if use_raw else "var", path)
    for names, kind, axis, n in (
        (cells, "cell barcodes", "obs", info.n_cells),
        (genes, "gene names", "var", info.n_genes),
    ):
        if names.size != n:
            raise InputError(
                f"{path}: {axis} has {names.size} rows but {matrix} has {n}; expected one per {axis} row"
            )
        duplicated = names[names.duplicated()].unique()
        if duplicated.size:
            raise InputError(
                f"{path}: {duplicated.size} duplicate {kind} in {axis}_names"
                f" (e.g. {', '.join(duplicated[:3])}); expected unique names"
                f" (e.g. anndata's {axis}_names_make_unique())"
            )
    return Header(info.n_cells, info.n_genes, cells, genes)


def obs_column(path: str, column: str) -> pd.Series | None:
    """One `obs` column (None when absent), without reading the others."""
    with h5py.File(path, "r") as handle:
        obs = handle["obs"]
        if not isinstance(obs, h5py.Group):
            from anndata.io import read_elem  # an older layout

            frame = read_elem(obs)
            return frame[column] if column in frame.columns else None
        if column not in obs or column == obs.attrs.get("_index"):
            return None
        node = obs[column]
        if isinstance(node, h5py.Group) and node.attrs.get("encoding-type") == "categorical":
            codes = node["codes"][...].astype(np.int64)
            return pd.Series(pd.Categorical.from_codes(codes, strings(node["categories"])))
        if isinstance(node, h5py.Dataset):
            return pd.Series(strings(node) if node.dtype.kind in "OS" else node[...])
        from anndata.io import read_elem  # nullable and other encodings

        return pd.Series(read_elem(node))


def columns_of(path: str) -> list[str]:
    """The `obs` column names (for the message when the label column is missing)."""
    with h5py.File(path, "r") as handle:
        order = handle["obs"].attrs.get("column-order", [])
        return [str(c) for c in np.atleast_1d(order)]


def label_classes(path: str, column: str, min_classes: int) -> set[str]:
    """The classes of the label column; every cell needs a label."""
    labels = obs_column(path, column)
    if labels is None:
        raise InputError(
            f"{path}: obs has no column '{column}' (data.target_feature); expected one of its columns:"
            f" {', '.join(columns_of(path)) or '(none)'}"
        )
    if labels.isna().any():
        raise InputError(
            f"{path}: {int(labels.isna().sum())} cells have no label in '{column}';"
            " expected a label for every cell"
        )
    classes = set(labels.astype(str))
    if len(classes) < min_classes:
        raise InputError(
            f"{path}: column '{column}' has {len(classes)} class ({', '.join(sorted(classes))});"
            f" expected at least {min_classes} to train a classifier"
        )
    return classes


def model_facts(directory: str) -> tuple[set[str], pd.Index]:
    """Check a model dir (files, config, weights, vocabulary, reference); its classes and genes."""
    import yaml

    from .contexts.reference import reference_options
    from .modeldir import CONFIG_FILE, SETTINGS_FILE, VOCAB_FILES, WEIGHTS_FILE, format_version, read_settings
    from .models import read_spec
    from .vocab import Vocabulary

    path = Path(directory)
    needed = (CONFIG_FILE, WEIGHTS_FILE, SETTINGS_FILE, *VOCAB_FILES)
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        raise InputError(
            f"{directory}: missing {', '.join(missing)}; expected a model directory written by this workflow"
            f" ({', '.join(needed)})"
        )
    format_version(path)
    read_spec(path / CONFIG_FILE)
    load_weights(path / WEIGHTS_FILE)
    try:
        settings = read_settings(path)
        method = settings["context"]["method"]
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise InputError(
            f"{path / SETTINGS_FILE}: unreadable ({err}); expected the model's settings"
        ) from err
    reference_options(method, path)
    vocab = Vocabulary.load(path)
    return set(vocab.classes.astype(str)), pd.Index(vocab.genes)


def load_weights(path: Path) -> None:
    """The weights file opens as a torch state dict (memory-mapped: cheap for large models)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises several types for damaged files
        reason = str(err).split(". ")[0]  # torch adds advice after the first sentence
        raise InputError(
            f"{path}: cannot load weights ({reason}); expected a torch state dict saved by this workflow"
        ) from err
    if not isinstance(state, Mapping) or not state:
        raise InputError(f"{path}: holds no weights; expected a torch state dict saved by this workflow")


def reference_genes(method: str, path: str) -> np.ndarray:
    """The genes a context reference file names (its format checked by the context's reader)."""
    if method == "genelist":
        from .contexts.genelist import read_gene_list

        return read_gene_list(path)
    if method == "genomic":
        from .contexts.genomic import read_cytobands

        table = read_cytobands(path)
        if table.empty:
            raise InputError(f"{path}: cytoband table has no rows; expected gene_symbol and cytobandID rows")
        return table["gene_symbol"].to_numpy(dtype=str)
    from .contexts.biofunction import read_gmt

    return np.concatenate([np.asarray(genes, dtype=str) for genes in read_gmt(path).values()])


class Problems:
    """Collects the problem of each check instead of stopping at the first."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def attempt(self, key: str, check: Callable[..., Any], *args: Any) -> Any:
        """`check(*args)`, or None with its error noted under `key`."""
        try:
            return check(*args)
        except InputError as err:
            self.messages.append(f"{key}: {indent(err)}")
            return None


def check_inputs(plan: InputPlan) -> dict[str, str]:
    """Run every check of the plan; one error lists all problems. Returns a line per input."""
    problems, summary = Problems(), {}
    headers: dict[str, Header] = {}
    for key, path in plan.files.items():
        header = problems.attempt(key, read_header, path, key in plan.raw)
        if header is not None:
            headers[key] = header
            summary[key] = f"{path}: {header.n_cells} cells x {header.n_genes} genes"
    classes: dict[str, set[str]] = {}
    genes: dict[str, pd.Index] = {key: h.genes for key, h in headers.items()}
    for key in (k for k in plan.labelled if k in headers):
        need = 2 if key in plan.min_classes else 1
        found = problems.attempt(key, label_classes, plan.files[key], plan.target_feature, need)
        if found is not None:
            classes[key] = found
            summary[key] += f", {len(found)} classes"
    for key, directory in plan.models.items():
        facts = problems.attempt(key, model_facts, directory)
        if facts is not None:
            classes[key], genes[key] = facts
            summary[key] = f"{directory}: {len(facts[0])} classes, {facts[1].size} genes"
    for adt, rna in plan.same_cells.items():
        if adt in headers and rna in headers:
            problems.attempt(adt, same_cells, headers[adt], headers[rna], plan.files[adt], rna)
    for key, train in plan.held_out.items():
        if key in headers and train in headers:
            problems.attempt(key, held_out, key, headers[key], headers[train], plan.files[key], train)
    for key, sources in plan.classes_within.items():
        if key in classes and all(s in classes for s in sources):
            problems.attempt(key, known_classes, classes[key], sources, classes, plan.files[key])
    for key, sources in plan.genes_from.items():
        if key in genes and all(s in genes for s in sources):
            problems.attempt(key, shared_genes, genes[key], sources, genes, plan.files[key])
    if plan.reference:
        ref = plan.reference
        problems.attempt(ref["key"], reference_matches, ref, genes.get(ref["genes"]))
        summary[ref["key"]] = ref["path"]
    if problems.messages:
        raise InputError("bad inputs:\n  " + "\n  ".join(problems.messages))
    for key, line in summary.items():
        log.info("%s: %s", key, line)
    return summary


def same_cells(adt: Header, rna: Header, path: str, rna_key: str) -> None:
    """An ADT file holds every cell of its RNA file (any order; rows are matched by barcode, so
    one ADT file may serve several RNA files of the same cells)."""
    missing = rna.cells.difference(adt.cells)
    if missing.size:
        raise InputError(
            f"{path}: {missing.size} of the {rna.cells.size} {rna_key} barcodes are not in the ADT file"
            f" (e.g. {', '.join(missing[:3])}); expected every cell of {rna_key} (any order)"
        )


def held_out(key: str, held: Header, train: Header, path: str, train_key: str) -> None:
    """Validation cells are never training cells (by barcode); predicting training cells is
    allowed, with a warning (their scores say nothing about new cells)."""
    shared = held.cells.intersection(train.cells)
    if not shared.size:
        return
    what = f"{path}: {shared.size} of its {held.cells.size} cells are also in {train_key}"
    what += f" (e.g. {', '.join(shared[:3])})"
    if key == "data.predict":
        log.warning("%s: %s; their scores say nothing about cells the model never saw", key, what)
        return
    raise InputError(
        f"{what}; expected validation cells held out from training (where barcodes repeat across"
        " samples, make obs_names unique, e.g. prefixed with the sample)"
    )


def known_classes(found: set[str], sources: list[str], classes: Mapping[str, set[str]], path: str) -> None:
    """Validation labels must be classes the model is trained on."""
    known = set().union(*(classes[s] for s in sources))
    unknown = sorted(found - known)
    if unknown:
        raise InputError(
            f"{path}: labels never seen in training: {', '.join(unknown[:5])}; expected only the classes of"
            f" {' and '.join(sources)} ({', '.join(sorted(known)[:10])})"
        )


def shared_genes(names: pd.Index, sources: list[str], genes: Mapping[str, pd.Index], path: str) -> None:
    """The data to predict shares genes with the model."""
    known = pd.Index(np.concatenate([genes[s].to_numpy(dtype=str) for s in sources]))
    owner = " and ".join(sources)
    if not names.isin(known).any():
        raise InputError(
            f"{path}: none of its {names.size} genes is among the {known.unique().size} genes of"
            f" {owner}; expected the same gene names (e.g. {', '.join(known[:3])})"
            + case_hint(names.to_numpy(dtype=str), known.to_numpy(dtype=str), owner)
        )


def reference_matches(reference: Mapping[str, str], genes: pd.Index | None) -> None:
    """A reference file is readable and (when the training genes are known) names some of them."""
    listed = reference_genes(reference["method"], reference["path"])
    if genes is not None and not genes.isin(listed).any():
        raise InputError(
            f"{reference['path']}: none of its {np.unique(listed).size} genes is among the {genes.size} genes"
            f" of {reference['genes']}; expected the same gene names (e.g. {', '.join(genes[:3])})"
            + case_hint(np.unique(listed), genes.to_numpy(dtype=str), reference["genes"], "its genes")
        )


def write_marker(summary: Mapping[str, str], target: str | Path) -> None:
    """The rule's output: what was checked, one line per input."""
    with atomic_path(target) as tmp:
        tmp.write_text("".join(f"{key}: {line}\n" for key, line in summary.items()) or "no user inputs\n")


def plan_params(plan: InputPlan) -> dict[str, Any]:
    """The plan as plain values (Snakemake params: a change re-runs the check)."""
    return asdict(plan)

"""Training: train (or fine-tune) the networks of a run on saved windows, with the linear member
and the calibration beside them, and write best_model, last_model and the history."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from ..checkpoint import fingerprint
from ..contexts import load_windows, shared_cells, window_genes
from ..decide import fit_decision
from ..distributed import launch, process_group
from ..io import InputError, atomic_path
from ..linear import LinearMember, read_expression
from ..modeldir import write_format, write_selection, write_settings
from ..models import Calibration, CellClassifier, Classifier, count_parameters, save_model
from ..runtime import select_device
from ..vocab import Vocabulary
from .calibration import linear_member, unselected_scores, validation_calibration
from .data import LabelledWindows, class_weights, drop_gene_pairs
from .ensemble import (
    initial_model,
    member_checkpoint,
    member_models,
    new_model,
    published_models,
    train_members,
)
from .evaluation import evaluate
from .loop import Fitted, fit, lr_factor
from .selection import BestModel, stops_early
from .settings import Resume, TrainSettings, train_settings
from .throughput import BatchCounts, flops_per_token, peak_flops, throughput

# The training API (what the rules, the CLI, tests and benchmarks import from here).
__all__ = [
    "BatchCounts", "BestModel", "Fitted", "LabelledWindows", "Resume", "TrainOutputs",
    "TrainSettings", "check_held_out", "class_weights", "drop_gene_pairs", "evaluate", "fit",
    "flops_per_token", "initial_model", "linear_member", "lr_factor", "new_model", "peak_flops",
    "processes_of", "run_facts", "stops_early", "throughput", "train_from_files", "train_settings",
    "write_model_dir",
]  # fmt: skip

log = logging.getLogger(__name__)


def write_model_dir(
    target: str | Path,
    model: Classifier,
    vocab_dir: str | Path,
    settings: dict,
    calibration: Calibration | None = None,
    selection: dict | None = None,
    linear: LinearMember | None = None,
) -> None:
    """A self-contained model directory: the vocabulary dir's files (vocabulary, tokenizer,
    context reference), the network, its calibration (temperatures, training cells per class),
    the linear member if any, the effective settings and, for best_model, which epochs it holds;
    written atomically."""
    with atomic_path(target) as tmp:
        shutil.copytree(vocab_dir, tmp, ignore=shutil.ignore_patterns(".*"))
        save_model(model, tmp, calibration)
        if linear is not None:
            linear.save(tmp)
        write_settings(tmp, settings)
        if selection is not None:
            write_selection(tmp, selection)
        write_format(tmp)


@dataclass(frozen=True)
class TrainOutputs:
    """Where the train rule writes."""

    best_model: str
    last_model: str
    history: str
    run_info: str | None = None


def processes_of(processes: int | None, gpus: int | str) -> int:
    """Training processes: `processes` if set, else one per requested GPU (at least one)."""
    return int(processes or max(gpus if isinstance(gpus, int) else 1, 1))


def check_held_out(train_npz: str, val_npz: str) -> None:
    """Refuse to train when a validation cell is also a training cell (by barcode)."""
    shared = shared_cells(train_npz, val_npz)
    if shared.size:
        raise InputError(
            f"{val_npz}: {shared.size} of its cells are also training cells in {train_npz}"
            f" (e.g. {', '.join(map(str, shared[:3]))}); validation cells must be held out: give"
            " data.val cells that are not in data.train (where barcodes repeat across samples,"
            " make obs_names unique, e.g. prefixed with the sample)"
        )


def train_from_files(
    train_npz: str,
    val_npz: str,
    vocab_dir: str,
    config: dict,
    outputs: TrainOutputs,
    threads: int,
    pretrained_dir: str | None = None,
    checkpoint: str | None = None,
    gpus: int | str = "auto",
    processes: int | None = None,
    expression: tuple[str, str] | None = None,
) -> None:
    """Train (or, from `pretrained_dir`, fine-tune) on saved windows one network, or each
    network of an ensemble in turn; write both model dirs and the history. `config` is the
    effective configuration, saved as train_setting.yaml. `gpus` is what the job was given
    (`auto`: a visible GPU, else the CPU). Several processes (`processes`, or one per GPU) train with DDP
    under torchrun. `expression`: the preprocessed train and val files, whose normalised values
    the linear member also reads (without them it reads gene presence only)."""
    arguments = {  # for the worker processes, as JSON (`python -m scgenai_flow.train`)
        "train_npz": train_npz,
        "val_npz": val_npz,
        "vocab_dir": vocab_dir,
        "config": config,
        "outputs": asdict(outputs),
        "threads": threads,
        "pretrained_dir": pretrained_dir,
        "checkpoint": checkpoint,
        "gpus": gpus,
        "processes": processes,
        "expression": expression,
    }
    if processes_of(processes, gpus) > 1 and "WORLD_SIZE" not in os.environ:
        launch(processes_of(processes, gpus), __name__, arguments)
        return
    with process_group() as ranks:
        if pretrained_dir:
            from ..finetune import finetune_config

            config = finetune_config(pretrained_dir, config)
        vocab = Vocabulary.load(vocab_dir)
        check_held_out(train_npz, val_npz)
        train = LabelledWindows(*load_windows(train_npz, mapped=True))
        val = LabelledWindows(*load_windows(val_npz, mapped=True))
        values = []  # the member's expression, read now: a wrong file fails before the epochs, not after
        if config["model"]["linear_member"] and ranks.is_main:
            genes = window_genes(vocab, config["context"]["method"], vocab_dir)  # a gene list limits it too
            files = zip(expression or (), (train, val))
            values = [read_expression(f, vocab, d.n_cells, genes) for f, d in files]
        settings = train_settings(config, config["finetune"] if pretrained_dir else config["train"])
        device = select_device(gpus, max(1, threads // ranks.world))
        if device.type == "cuda" and ranks.world > 1:
            device = torch.device("cuda", ranks.local_rank)
        max_length = int(train.windows.tokens.shape[1])
        inputs = [train_npz, val_npz, vocab_dir, *([pretrained_dir] if pretrained_dir else [])]
        resume = Resume(checkpoint, fingerprint(config, *inputs)) if checkpoint else None
        members = member_models(config, vocab, train, max_length, pretrained_dir)
        runs = train_members(members, train, val, settings, device, ranks, resume, outputs.history)
        if not ranks.is_main:
            return
        best, last = published_models(runs, val, settings, device)
        class_cells = train.class_cells(vocab.classes.size)
        member, val_linear = (
            linear_member(vocab, train, val, *values, device=device)
            if config["model"]["linear_member"]
            else (None, None)
        )
        unselected = unselected_scores(runs, val, settings)  # best_model's epochs were chosen on val
        for target, published in ((outputs.best_model, best), (outputs.last_model, last)):
            own = published.metrics["Temperature"]  # the networks' own
            scores = unselected if published is best else None
            model = published.model
            calibration = validation_calibration(model, val, val_linear, own, settings, device, scores)
            calibration = replace(calibration, class_cells=class_cells)  # for logit adjustment
            selection = published.selection
            if selection is not None:  # best_model: record how predict's `auto` decides
                decision = fit_decision(calibration, member is not None)
                log.info("best_model's decision with predict's auto settings: %s", decision.describe())
                if decision.networks_note():
                    log.info("%s", decision.networks_note())
                selection = {**selection, "decision": asdict(decision)}
            write_model_dir(target, published.model, vocab_dir, config, calibration, selection, member)
        if outputs.run_info:
            facts = run_facts(best.model, vocab, train, val, device, threads)
            facts["processes"] = ranks.world
            with atomic_path(outputs.run_info) as tmp:
                tmp.write_text(yaml.safe_dump(facts, sort_keys=False))
        if checkpoint:  # finished: nothing left to resume
            for number in range(1, len(runs) + 1):
                Path(member_checkpoint(checkpoint, number)).unlink(missing_ok=True)


def run_facts(
    model: CellClassifier,
    vocab: Vocabulary,
    train: LabelledWindows,
    val: LabelledWindows,
    device: torch.device,
    threads: int,
) -> dict:
    """What the report tells about a training run: data sizes, model size, machine."""
    import platform

    classes, counts = np.unique(train.cell_labels, return_counts=True)
    return {
        "train_cells": train.n_cells,
        "train_windows": len(train.windows),
        "val_cells": val.n_cells,
        "val_windows": len(val.windows),
        "genes": int(vocab.genes.size),
        "adt_features": int(vocab.adt_features.size),
        "class_counts": {str(vocab.classes[c]): int(n) for c, n in zip(classes, counts)},
        "parameters": count_parameters(model),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": threads,
        "host": platform.node(),
        "torch": str(torch.__version__),
    }

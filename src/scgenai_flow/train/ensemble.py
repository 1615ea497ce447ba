"""The networks of a run: made new (from the config, gene embeddings from co-expression) or
grown from a pretrained model, trained one after another from their own seeds
(`train.ensemble`), and the best and last models they make together."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..distributed import Ranks
from ..io import InputError, write_csv
from ..models import (
    CellClassifier,
    CellEnsemble,
    Classifier,
    ModelSpec,
    count_parameters,
    grow,
    load_model,
    member_networks,
)
from ..runtime import seed_everything
from ..vocab import Vocabulary
from .data import LabelledWindows
from .evaluation import evaluate
from .loop import Progress, fit
from .selection import BestModel
from .settings import METRIC_COLUMNS, Resume, TrainSettings

log = logging.getLogger(__name__)


def new_model(config: dict, vocab: Vocabulary, max_length: int) -> CellClassifier:
    """A freshly initialised classifier as `config` describes it."""
    spec = ModelSpec(
        backbone=config["model"]["backbone"],
        size=config["model"]["size"],
        vocab_size=vocab.size,
        pad_token_id=vocab.pad_id,
        max_length=max_length,
        num_classes=int(vocab.classes.size),
        dropout=config["model"]["dropout"],
        pooling=config["model"]["pooling"],
        pair_input=config["model"]["pair_input"],
    )
    return CellClassifier(spec)


def pretrained_members(model_dir: str, vocab: Vocabulary, max_length: int) -> list[CellClassifier]:
    """The networks of a trained model (one, or an ensemble's members), to be grown to the
    extended vocabulary and classes (fine-tuning)."""
    model = load_model(model_dir)
    if model.spec.max_length != max_length:
        raise InputError(f"{model_dir}: model windows are {model.spec.max_length} tokens, data {max_length}")
    return member_networks(model)


def initial_model(config: dict, vocab: Vocabulary, train: LabelledWindows, max_length: int) -> CellClassifier:
    """A new network, its gene embeddings from the training cells when `model.gene_init` says so."""
    model = new_model(config, vocab, max_length)
    if config["model"]["gene_init"] == "coexpression":
        from ..models.embedding import init_gene_embeddings

        n = init_gene_embeddings(model, train.windows, train.n_cells, vocab.gene_offset, config["seed"])
        log.info("gene embeddings: %d tokens start from the training cells' co-expression axes", n)
    return model


# Seed of ensemble member m: the run's seed + m * MEMBER_SEED_STEP.
MEMBER_SEED_STEP = 1000


def member_models(
    config: dict, vocab: Vocabulary, train: LabelledWindows, max_length: int, pretrained_dir: str | None
) -> Iterator[tuple[int, CellClassifier]]:
    """Each network to train with its seed, made just before it trains (so member m trains as a
    single run with its seed would): the pretrained model's networks grown (fine-tuning), or
    `train.ensemble` new ones."""
    pretrained = pretrained_members(pretrained_dir, vocab, max_length) if pretrained_dir else None
    count = len(pretrained) if pretrained else int(config["train"]["ensemble"])
    for index in range(count):
        seed = config["seed"] + MEMBER_SEED_STEP * index
        seed_everything(seed)
        if pretrained:
            yield seed, grow(pretrained[index], vocab.size, int(vocab.classes.size))
        else:
            yield seed, initial_model({**config, "seed": seed}, vocab, train, max_length)


def member_checkpoint(path: str, number: int) -> str:
    """Resume file of ensemble member `number` (from 1; the first uses `path` itself)."""
    return path if number == 1 else str(Path(path).with_suffix(f".member{number}.pt"))


@dataclass
class MemberRun:
    """One trained network of the run: its seed, history, last state and kept (best) network."""

    seed: int
    history: pd.DataFrame
    last: CellClassifier
    best: BestModel | None  # None on DDP processes other than the main one
    val_scores: np.ndarray | None = None  # every epoch's scores of the kept validation cells


def history_writer(path: str, done: list[pd.DataFrame], number: int) -> Progress:
    """What `fit` calls after each epoch of network `number`: the history file gets the earlier
    networks' rows (`done`) and this one's so far."""

    def write(rows: pd.DataFrame) -> None:
        write_csv(pd.concat([*done, rows.assign(Member=number)], ignore_index=True), path)

    return write


@dataclass(frozen=True)
class Published:
    """A model to write: the network (or ensemble), its validation metrics, and for best_model
    what it holds (selection.json)."""

    model: Classifier
    metrics: dict[str, float]
    selection: dict | None = None


def published_models(
    runs: list[MemberRun], val: LabelledWindows, settings: TrainSettings, device: torch.device
) -> tuple[Published, Published]:
    """best_model and last_model: one network's kept and last states, or the ensembles of all
    networks' (their metrics and temperature measured on `val`)."""
    if len(runs) == 1:
        run = runs[0]
        selection = {
            "select_by": settings.select_by,
            "epochs": run.best.epochs,
            "validation": run.best.metrics,
        }
        last = run.history[list(METRIC_COLUMNS)].iloc[-1].to_dict()
        return Published(run.best.model, run.best.metrics, selection), Published(run.last, last)

    def scored(ensemble: CellEnsemble) -> dict[str, float]:
        metrics = evaluate(
            ensemble.to(device), val, settings.eval_batch_size, device, aggregation=settings.aggregation
        )
        ensemble.to("cpu")
        return metrics

    best = CellEnsemble([r.best.model for r in runs])
    members = [{"seed": r.seed, "epochs": r.best.epochs, "validation": r.best.metrics} for r in runs]
    best_metrics = scored(best)
    selection = {"select_by": settings.select_by, "validation": best_metrics, "members": members}
    log.info("best_model: ensemble of %d networks: %s", len(runs), best_metrics)
    last = CellEnsemble([r.last for r in runs])
    return Published(best, best_metrics, selection), Published(last, scored(last))


def train_members(
    members: Iterable[tuple[int, CellClassifier]],
    train: LabelledWindows,
    val: LabelledWindows,
    settings: TrainSettings,
    device: torch.device,
    ranks: Ranks,
    resume: Resume | None,
    history_csv: str,
) -> list[MemberRun]:
    """Fit each (seed, network) in turn, each resuming from its own checkpoint (`resume.path`
    for the first); the history file holds every network's epochs so far. Only the main
    process keeps the best networks."""
    runs: list[MemberRun] = []
    for number, (seed, model) in enumerate(members, start=1):
        log.info(
            "network %d (seed %d): %s/%s, %d parameters on %s (process %d of %d); %d train windows"
            " (%d cells), %d val windows (%d cells)",
            number, seed, model.spec.backbone, model.spec.size, count_parameters(model), device,
            ranks.rank + 1, ranks.world, len(train.windows), train.n_cells, len(val.windows), val.n_cells,
        )  # fmt: skip
        progress = history_writer(history_csv, [r.history for r in runs], number)
        own = replace(resume, path=member_checkpoint(resume.path, number)) if resume else None
        fitted = fit(model, train, val, replace(settings, seed=seed), device, progress, own, ranks)
        history = fitted.history.assign(Member=number)
        runs.append(MemberRun(seed, history, model.to("cpu"), fitted.best, fitted.val_scores))
    return runs

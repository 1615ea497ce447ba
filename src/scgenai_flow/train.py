"""Train a window classifier, evaluate per cell after each epoch, keep best and last models."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import yaml
from torch import nn

from .checkpoint import (
    TrainState,
    averaged_weights,
    fingerprint,
    load_checkpoint,
    remember_best,
    save_checkpoint,
)
from .config import default_of
from .contexts import Windows, load_windows, shared_cells
from .contexts.sliding import redealt_windows
from .decide import fit_decision, fit_temperature, joint_scores
from .distributed import ONE_PROCESS, Ranks, launch, process_group
from .io import InputError, atomic_path
from .linear import LinearMember, fit_linear, member_features, read_expression
from .metrics import best_row, macro_f1, selection_key
from .modeldir import write_format, write_selection, write_settings
from .models import (
    Calibration,
    CellClassifier,
    Classifier,
    ModelSpec,
    count_parameters,
    load_model,
    member_networks,
    save_model,
)
from .predict import AGGREGATION, batch_tensors, cell_log_scores, window_probabilities
from .runtime import autocast, select_device
from .vocab import Vocabulary

log = logging.getLogger(__name__)

HISTORY_COLUMNS = (
    "Epoch",
    "Train Loss",
    "Train Accuracy",
    "Validation Accuracy",
    "Validation Window Accuracy",
    "Validation Loss",
    "Validation Macro F1",
    "Temperature",
    "Seconds",
)
# What `evaluate` measures on the validation cells (best_model's are kept for the report).
METRIC_COLUMNS = HISTORY_COLUMNS[3:8]


@dataclass(frozen=True)
class TrainSettings:
    """Optimiser and loop settings; each default is the schema's for the same key."""

    num_epochs: int = default_of("train.num_epochs")
    batch_size: int = default_of("train.batch_size")
    learning_rate: float = default_of("train.learning_rate")
    weight_decay: float = default_of("train.weight_decay")
    seed: int = default_of("seed")
    eval_batch_size: int = default_of("predict.batch_size")
    aggregation: str = default_of("predict.aggregation")  # how validation cells are decided
    lr_schedule: str = default_of("train.lr_schedule")
    warmup_fraction: float = default_of("train.warmup_fraction")
    class_weight: str = default_of("train.class_weight")
    label_smoothing: float = default_of("train.label_smoothing")
    gene_dropout: float = default_of("train.gene_dropout")
    resample_windows: bool = default_of("train.resample_windows")
    loss: str = default_of("train.loss")
    select_by: str = default_of("train.select_by")
    average_best: int = default_of("train.average_best")
    patience: int | None = default_of("train.patience")


def lr_factor(step: int, total_steps: int, settings: TrainSettings) -> float:
    """The learning-rate multiplier at optimiser step `step` (0-based) of `total_steps`."""
    if settings.lr_schedule == "constant":
        return 1.0
    warmup = max(1, round(settings.warmup_fraction * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + np.cos(np.pi * (step - warmup) / max(1, total_steps - warmup)))


def class_weights(window_labels: np.ndarray, n_classes: int, kind: str) -> torch.Tensor | None:
    """Loss weights (count share)^-1 (`balanced`) or ^-1/2 (`sqrt`), scaled to average 1 over
    the training windows so the loss keeps its scale; None for `none`."""
    if kind == "none":
        return None
    counts = np.bincount(window_labels, minlength=n_classes).astype(float)
    power = {"balanced": 1.0, "sqrt": 0.5}[kind]
    weights = np.where(counts > 0, np.maximum(counts, 1.0) ** -power, 0.0)
    weights /= (weights * counts).sum() / counts.sum()
    return torch.tensor(weights, dtype=torch.float32)


def drop_gene_pairs(
    ids: torch.Tensor, lengths: torch.Tensor, rate: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmentation: drop each (gene, bin) pair of a window with probability `rate` (at least
    one pair stays) and close the gaps, keeping the order of what remains."""
    rows, pairs = ids.shape[0], ids.shape[1] // 2
    position = np.arange(pairs)
    keep = (rng.random((rows, pairs)) >= rate) & (position < lengths.cpu().numpy()[:, None] // 2)
    keep[~keep.any(axis=1), 0] = True
    order = np.argsort(np.where(keep, position, pairs + position), axis=1, kind="stable")
    index = torch.from_numpy(order).to(ids.device)[..., None].expand(rows, pairs, 2)
    packed = ids[:, : 2 * pairs].reshape(rows, pairs, 2).gather(1, index).reshape(rows, 2 * pairs)
    new_lengths = torch.from_numpy(2 * keep.sum(axis=1)).to(lengths)
    return packed[:, : int(new_lengths.max())], new_lengths


@dataclass
class LabelledWindows:
    """Windows with the label of each cell they came from."""

    windows: Windows
    cell_labels: np.ndarray

    @property
    def window_labels(self) -> np.ndarray:
        return self.cell_labels[self.windows.cell_index]

    @property
    def n_cells(self) -> int:
        return int(self.cell_labels.size)

    def class_cells(self, n_classes: int) -> np.ndarray:
        """Labelled cells per class."""
        return np.bincount(self.cell_labels[self.cell_labels >= 0], minlength=n_classes)


@dataclass(frozen=True)
class TrainingItems:
    """What one epoch shuffles and the loss scores: windows, or cells with all their windows."""

    labels: np.ndarray  # per item
    items: np.ndarray  # the items that train (cells without windows have nothing to score)
    batch_size: int  # items per optimiser step
    first_window: np.ndarray | None = None  # per cell (cell items only)
    window_count: np.ndarray | None = None

    @classmethod
    def of(cls, data: LabelledWindows, settings: TrainSettings) -> TrainingItems:
        n_windows = len(data.windows)
        if settings.loss == "window":
            return cls(data.window_labels, np.arange(n_windows), settings.batch_size)
        count = np.bincount(data.windows.cell_index, minlength=data.n_cells)
        cells = np.flatnonzero(count > 0)
        # as many cells per step as hold batch_size windows on average: the steps stay alike
        per_step = max(1, round(settings.batch_size * cells.size / max(n_windows, 1)))
        return cls(data.cell_labels, cells, per_step, np.cumsum(count) - count, count)

    def steps(self) -> int:
        return -(-self.items.size // self.batch_size)

    def windows_of(self, idx: np.ndarray) -> tuple[np.ndarray, torch.Tensor | None]:
        """The windows of the items `idx` and, for cells, each window's position in `idx`."""
        if self.first_window is None or self.window_count is None:
            return idx, None
        count = self.window_count[idx]
        offset = np.repeat(self.first_window[idx] - (np.cumsum(count) - count), count)
        segment = np.repeat(np.arange(idx.size), count)
        return offset + np.arange(segment.size), torch.from_numpy(segment)


def cell_mean_log_probs(logits: torch.Tensor, segment: torch.Tensor, n_cells: int) -> torch.Tensor:
    """Each cell's mean window log-probabilities (the `mean` aggregation of predict)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    segment = segment.to(log_probs.device)
    summed = torch.zeros(n_cells, log_probs.shape[1], device=log_probs.device)
    summed.index_add_(0, segment, log_probs)
    return summed / torch.bincount(segment, minlength=n_cells).unsqueeze(1)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: LabelledWindows,
    settings: TrainSettings,
    rng: np.random.Generator,
    device: torch.device,
    ranks: Ranks = ONE_PROCESS,
    epoch: int = 1,
    weights: torch.Tensor | None = None,
) -> tuple[float, float]:
    """One pass over shuffled windows or cells (`settings.loss`; epoch `epoch`, 1-based, sets
    the learning rate; `weights` per class weigh the loss); mean loss and accuracy per item.
    With several ranks each batch is split between them and the loss scaled so the averaged
    gradient is the batch's."""
    model.train()
    plan = TrainingItems.of(data, settings)
    labels = torch.from_numpy(plan.labels.astype(np.int64))
    weights = None if weights is None else weights.to(device)
    step, total_steps = (epoch - 1) * plan.steps(), settings.num_epochs * plan.steps()
    order = plan.items[rng.permutation(plan.items.size)]
    windows = redealt_windows(data.windows, rng) if settings.resample_windows else data.windows
    loss_sum = correct = 0.0
    for start in range(0, order.size, plan.batch_size):
        batch = order[start : start + plan.batch_size]
        idx, weight = ranks.part(batch), 1.0
        if idx.size == 0:  # every rank must take part in each step: a zero-weight item
            idx, weight = batch[:1], 0.0
        target = labels[idx].to(device)
        rows, segment = plan.windows_of(idx)
        ids, lengths = batch_tensors(windows, rows, device)
        if settings.gene_dropout > 0:
            ids, lengths = drop_gene_pairs(ids, lengths, settings.gene_dropout, rng)
        with autocast(device):
            logits = model(ids, lengths)
        if segment is not None:
            logits = cell_mean_log_probs(logits, segment, idx.size)
        losses = nn.functional.cross_entropy(
            logits.float(), target, weight=weights, label_smoothing=settings.label_smoothing, reduction="none"
        )
        loss = losses.sum() * (weight * ranks.world / batch.size)
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate * lr_factor(step, total_steps, settings)
        step += 1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += losses.sum().item() * weight
        correct += (logits.argmax(-1) == target).sum().item() * weight
    loss_sum, correct = ranks.total(loss_sum, correct)
    return loss_sum / order.size, correct / order.size


def evaluate(
    model: CellClassifier,
    data: LabelledWindows,
    batch_size: int,
    device: torch.device,
    ranks: Ranks = ONE_PROCESS,
    aggregation: str = AGGREGATION,
) -> dict[str, float]:
    """Window loss and accuracy, cell accuracy and macro-F1 with the `aggregation` rule, and the
    temperature that calibrates the cells' scores."""
    part = ranks.part(np.arange(len(data.windows)))
    probs = window_probabilities(model, data.windows.subset(part), batch_size, device)
    probs = ranks.gather_rows(probs, len(data.windows))
    labels = data.window_labels
    picked = probs[np.arange(labels.size), labels]
    log_scores, _ = cell_log_scores(probs, data.windows.cell_index, data.n_cells, aggregation)
    cells = log_scores.argmax(axis=1)
    return {
        "Validation Accuracy": float((cells == data.cell_labels).mean()),
        "Validation Window Accuracy": float((probs.argmax(1) == labels).mean()),
        "Validation Loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
        "Validation Macro F1": macro_f1(data.cell_labels, cells, probs.shape[1]),
        "Temperature": fit_temperature(log_scores, data.cell_labels),
    }


@dataclass
class BestModel:
    """The model kept as best_model: the mean weights of the best epochs (by `select_by`)."""

    model: CellClassifier
    epochs: list[int]  # best first
    metrics: dict[str, float]  # its validation metrics, temperature included


# Called by the main rank after each epoch with the history so far and, when the best epochs
# changed (or on resume), the model to keep as best.
Publish = Callable[[pd.DataFrame, BestModel | None], None]


def kept_model(
    model: CellClassifier,
    state: TrainState,
    val: LabelledWindows,
    settings: TrainSettings,
    device: torch.device,
    ranks: Ranks,
) -> BestModel:
    """best_model from the ranked epochs: the model itself when one epoch is kept (its metrics
    from the history), else a copy holding their mean weights, evaluated on `val`."""
    epochs = [r.epoch for r in state.best]
    if len(epochs) == 1:  # the epoch just trained
        return BestModel(model, epochs, {k: state.rows[-1][k] for k in METRIC_COLUMNS})
    best = averaged_copy(model, state)
    metrics = evaluate(best, val, settings.eval_batch_size, device, ranks, settings.aggregation)
    return BestModel(best, epochs, metrics)


def averaged_copy(model: CellClassifier, state: TrainState) -> CellClassifier:
    """A copy of `model` holding the mean weights of the ranked epochs."""
    best = copy.deepcopy(model)
    best.load_state_dict(averaged_weights(state.best))
    return best


@dataclass(frozen=True)
class Resume:
    """Where the loop checkpoints, and the digest of inputs and settings it must match."""

    path: str
    digest: str


def stops_early(rows: list[dict], settings: TrainSettings) -> bool:
    """Whether the best epoch so far lies `patience` epochs behind the last one."""
    if not settings.patience or not rows:
        return False
    best = int(best_row(pd.DataFrame(rows), settings.select_by)["Epoch"])
    return int(rows[-1]["Epoch"]) - best >= settings.patience


def fit(
    model: CellClassifier,
    train: LabelledWindows,
    val: LabelledWindows,
    settings: TrainSettings,
    device: torch.device,
    publish: Publish,
    resume: Resume | None = None,
    ranks: Ranks = ONE_PROCESS,
) -> pd.DataFrame:
    """Train for `num_epochs` (fewer with `patience`), evaluating cells after each; continue
    from `resume` if valid."""
    if settings.batch_size < 1:
        raise InputError(f"train.batch_size={settings.batch_size}: expected >= 1")
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    rng = np.random.default_rng(settings.seed)
    state = (resume and load_checkpoint(resume.path, resume.digest, model, optimizer, rng)) or TrainState()
    if state.epoch and ranks.is_main:
        best = BestModel(averaged_copy(model, state), [r.epoch for r in state.best], state.best_metrics)
        publish(pd.DataFrame(state.rows, columns=list(HISTORY_COLUMNS)), best)
    plan = TrainingItems.of(train, settings)
    weights = class_weights(plan.labels[plan.items], model.spec.num_classes, settings.class_weight)
    trainer: nn.Module = model
    if ranks.world > 1:
        ids = [ranks.local_rank] if device.type == "cuda" else None
        trainer = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    for epoch in range(state.epoch + 1, settings.num_epochs + 1):
        if stops_early(state.rows, settings):  # checked first, so a resumed run stops too
            log.info(
                "early stop after epoch %d: no better validation for %d epochs", epoch - 1, settings.patience
            )
            break
        started = time.perf_counter()
        loss, accuracy = train_epoch(trainer, optimizer, train, settings, rng, device, ranks, epoch, weights)
        metrics = evaluate(model, val, settings.eval_batch_size, device, ranks, settings.aggregation)
        state.rows.append(
            {
                "Epoch": epoch,
                "Train Loss": loss,
                "Train Accuracy": accuracy,
                **metrics,
                "Seconds": time.perf_counter() - started,
            }
        )
        state.epoch = epoch
        best, key = None, selection_key(metrics, settings.select_by)
        if remember_best(state, model, key, epoch, settings.average_best):
            best = kept_model(model, state, val, settings, device, ranks)
            state.best_metrics = best.metrics
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in state.rows[-1].items()})
        if best and len(best.epochs) > 1:
            log.info("best_model: mean weights of epochs %s: %s", best.epochs, best.metrics)
        if ranks.is_main:
            if resume:
                save_checkpoint(resume.path, resume.digest, model, optimizer, rng, state)
            publish(pd.DataFrame(state.rows, columns=list(HISTORY_COLUMNS)), best)
    return pd.DataFrame(state.rows, columns=list(HISTORY_COLUMNS))


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


# Keys of the `train` section that fine-tuning takes from it too.
OBJECTIVE_KEYS = (
    "lr_schedule",
    "warmup_fraction",
    "class_weight",
    "label_smoothing",
    "gene_dropout",
    "resample_windows",
    "loss",
    "select_by",
    "average_best",
    "patience",
)


def train_settings(config: dict, loop: dict) -> TrainSettings:
    """The loop settings of `loop` (the train or finetune section) and the shared objective, from a
    complete (validated) config: no default is supplied here."""
    return TrainSettings(
        num_epochs=loop["num_epochs"],
        batch_size=loop["batch_size"],
        learning_rate=loop["learning_rate"],
        weight_decay=loop["weight_decay"],
        seed=config["seed"],
        aggregation=config["predict"]["aggregation"],
        **{key: config["train"][key] for key in OBJECTIVE_KEYS},
    )


def initial_model(config: dict, vocab: Vocabulary, train: LabelledWindows, max_length: int) -> CellClassifier:
    """A new network, its gene embeddings from the training cells when `model.gene_init` says so."""
    model = new_model(config, vocab, max_length)
    if config["model"]["gene_init"] == "coexpression":
        from .models.embedding import init_gene_embeddings

        n = init_gene_embeddings(model, train.windows, train.n_cells, vocab.gene_offset, config["seed"])
        log.info("gene embeddings: %d tokens start from the training cells' co-expression axes", n)
    return model


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
    arguments = dict(locals(), outputs=asdict(outputs))
    if processes_of(processes, gpus) > 1 and "WORLD_SIZE" not in os.environ:
        launch(processes_of(processes, gpus), __name__, arguments)
        return
    with process_group() as ranks:
        if pretrained_dir:
            from .finetune import finetune_config

            config = finetune_config(pretrained_dir, config)
        vocab = Vocabulary.load(vocab_dir)
        check_held_out(train_npz, val_npz)
        train = LabelledWindows(*load_windows(train_npz))
        val = LabelledWindows(*load_windows(val_npz))
        values = []  # the member's expression, read now: a wrong file fails before the epochs, not after
        if config["model"]["linear_member"] and ranks.is_main:
            values = [read_expression(f, vocab, d.n_cells) for f, d in zip(expression or (), (train, val))]
        settings = train_settings(config, config["finetune"] if pretrained_dir else config["train"])
        device = select_device(gpus, max(1, threads // ranks.world))
        if device.type == "cuda" and ranks.world > 1:
            device = torch.device("cuda", ranks.local_rank)
        max_length = int(train.windows.tokens.shape[1])
        inputs = [train_npz, val_npz, vocab_dir, *([pretrained_dir] if pretrained_dir else [])]
        resume = Resume(checkpoint, fingerprint(config, *inputs)) if checkpoint else None
        from .ensemble import member_checkpoint, member_models, published_models, train_members

        members = member_models(config, vocab, train, max_length, pretrained_dir)
        runs = train_members(members, train, val, settings, device, ranks, resume, outputs.history)
        if not ranks.is_main:
            return
        best, last = published_models(runs, val, settings, device)
        class_cells = train.class_cells(vocab.classes.size)
        member, val_linear = (
            linear_member(vocab, train, val, *values) if config["model"]["linear_member"] else (None, None)
        )
        for target, published in ((outputs.best_model, best), (outputs.last_model, last)):
            own = published.metrics["Temperature"]  # the networks' own
            calibration = validation_calibration(published.model, val, val_linear, own, settings, device)
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


def linear_member(
    vocab: Vocabulary,
    train: LabelledWindows,
    val: LabelledWindows,
    train_expression: sp.csr_matrix | None = None,
    val_expression: sp.csr_matrix | None = None,
) -> tuple[LinearMember, np.ndarray]:
    """The linear member fitted on the training cells' `member_features` (their expression values
    when given, and gene presence) and calibrated on the validation cells (its logits divided by
    their temperature), and their log-probabilities."""
    started = time.perf_counter()
    features = member_features(train.windows, train.n_cells, vocab, train_expression)
    member = fit_linear(features, train.cell_labels, vocab.classes.size)
    member = replace(member, expression=train_expression is not None)
    val_features = member_features(val.windows, val.n_cells, vocab, val_expression)
    temperature = fit_temperature(member.log_probs(val_features), val.cell_labels)
    member = member.calibrated(temperature)
    val_log_probs = member.log_probs(val_features)
    label = val_log_probs.argmax(axis=1)
    log.info(
        "linear member (%d features, %.1f s): validation accuracy %.4f, macro-F1 %.4f, temperature %.3f",
        features.shape[1], time.perf_counter() - started, (label == val.cell_labels).mean(),
        macro_f1(val.cell_labels, label, vocab.classes.size), temperature,
    )  # fmt: skip
    return member, val_log_probs


def validation_calibration(
    model: Classifier,
    val: LabelledWindows,
    linear: np.ndarray | None,
    network_temperature: float,
    settings: TrainSettings,
    device: torch.device,
) -> Calibration:
    """The validation cells' class log-scores (the networks', divided by their own temperature,
    and the linear member's when there is one) and labels, on which prediction fits how it
    decides (`fit_decision`), and the score temperature of the reference decision without offsets."""
    probs = window_probabilities(model.to(device), val.windows, settings.eval_batch_size, device)
    model.to("cpu")
    log_scores, _ = cell_log_scores(probs, val.windows.cell_index, val.n_cells, settings.aggregation)
    network = log_scores / network_temperature
    temperature = fit_temperature(joint_scores(network, linear=linear), val.cell_labels)
    return Calibration(
        temperature, network_temperature, val_labels=val.cell_labels, val_network=network, val_linear=linear
    )


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


if __name__ == "__main__":  # one process of a DDP run started by `launch`
    import json
    import sys

    from .runtime import setup_logging

    setup_logging()
    arguments = json.loads(Path(sys.argv[1]).read_text())
    train_from_files(**{**arguments, "outputs": TrainOutputs(**arguments["outputs"])})

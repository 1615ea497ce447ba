"""Train a window classifier, evaluate per cell after each epoch, keep best and last models."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn

from .contexts import Windows, load_windows
from .io import InputError, atomic_path, write_csv
from .metrics import macro_f1
from .models import CellClassifier, ModelSpec, count_parameters, grow, load_model, save_model
from .predict import batch_indices, batch_tensors, predict_cells, window_probabilities
from .runtime import seed_everything, select_device
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
    "Seconds",
)


@dataclass(frozen=True)
class TrainSettings:
    """Optimiser and loop settings (SPEC defaults)."""

    num_epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    seed: int = 1314521
    eval_batch_size: int = 64


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


def train_epoch(
    model: CellClassifier,
    optimizer: torch.optim.Optimizer,
    data: LabelledWindows,
    batch_size: int,
    rng: np.random.Generator,
    device: torch.device,
) -> tuple[float, float]:
    """One pass over shuffled windows; mean loss and window accuracy."""
    model.train()
    labels = torch.from_numpy(data.window_labels.astype(np.int64))
    loss_sum = correct = 0.0
    for idx in batch_indices(len(data.windows), batch_size, rng):
        target = labels[idx].to(device)
        logits = model(*batch_tensors(data.windows, idx, device))
        loss = nn.functional.cross_entropy(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * idx.size
        correct += (logits.argmax(-1) == target).sum().item()
    n = len(data.windows)
    return loss_sum / n, correct / n


def evaluate(
    model: CellClassifier, data: LabelledWindows, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Window loss and accuracy, and cell accuracy and macro-F1 with the best-window rule."""
    probs = window_probabilities(model, data.windows, batch_size, device)
    labels = data.window_labels
    picked = probs[np.arange(labels.size), labels]
    cells = predict_cells(probs, data.windows.cell_index, data.n_cells)
    return {
        "Validation Accuracy": float((cells.label == data.cell_labels).mean()),
        "Validation Window Accuracy": float((probs.argmax(1) == labels).mean()),
        "Validation Loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
        "Validation Macro F1": macro_f1(data.cell_labels, cells.label, probs.shape[1]),
    }


def fit(
    model: CellClassifier,
    train: LabelledWindows,
    val: LabelledWindows,
    settings: TrainSettings,
    device: torch.device,
    on_epoch: Callable[[int, pd.DataFrame, bool], None],
) -> pd.DataFrame:
    """Train for `num_epochs`; after each epoch call `on_epoch(epoch, history, is_best)`."""
    if settings.batch_size < 1:
        raise InputError(f"train.batch_size={settings.batch_size}: expected >= 1")
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    rng = np.random.default_rng(settings.seed)
    rows: list[dict[str, float]] = []
    best: tuple[float, float] | None = None
    for epoch in range(1, settings.num_epochs + 1):
        started = time.perf_counter()
        loss, accuracy = train_epoch(model, optimizer, train, settings.batch_size, rng, device)
        metrics = evaluate(model, val, settings.eval_batch_size, device)
        rows.append(
            {
                "Epoch": epoch,
                "Train Loss": loss,
                "Train Accuracy": accuracy,
                **metrics,
                "Seconds": time.perf_counter() - started,
            }
        )
        key = (metrics["Validation Accuracy"], -metrics["Validation Loss"])
        is_best = best is None or key > best
        best = key if is_best else best
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in rows[-1].items()})
        on_epoch(epoch, pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)), is_best)
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))


def write_model_dir(target: str | Path, model: CellClassifier, vocab_dir: str | Path, settings: dict) -> None:
    """A self-contained model directory: the vocabulary dir's files (vocabulary, tokenizer,
    context reference), the network, and the effective settings; written atomically."""
    with atomic_path(target) as tmp:
        shutil.copytree(vocab_dir, tmp, ignore=shutil.ignore_patterns(".*"))
        save_model(model, tmp)
        (tmp / "train_setting.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))


@dataclass(frozen=True)
class TrainOutputs:
    """Where the train rule writes."""

    best_model: str
    last_model: str
    history: str


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
    )
    return CellClassifier(spec)


def pretrained_model(model_dir: str, vocab: Vocabulary, max_length: int) -> CellClassifier:
    """A trained classifier grown to the extended vocabulary and classes (fine-tuning)."""
    model = load_model(model_dir)
    if model.spec.max_length != max_length:
        raise InputError(f"{model_dir}: model windows are {model.spec.max_length} tokens, data {max_length}")
    return grow(model, vocab.size, int(vocab.classes.size))


def train_from_files(
    train_npz: str,
    val_npz: str,
    vocab_dir: str,
    config: dict,
    outputs: TrainOutputs,
    threads: int,
    pretrained_dir: str | None = None,
) -> pd.DataFrame:
    """Train (or, from `pretrained_dir`, fine-tune) on saved windows; write both model dirs
    and the history. `config` is the effective configuration, saved as train_setting.yaml."""
    if pretrained_dir:
        from .finetune import finetune_config

        config = finetune_config(pretrained_dir, config)
    vocab = Vocabulary.load(vocab_dir)
    train = LabelledWindows(*load_windows(train_npz))
    val = LabelledWindows(*load_windows(val_npz))
    loop = config["finetune"] if pretrained_dir else config["train"]
    seed_everything(config["seed"])
    device = select_device(loop["gpu"], threads)
    max_length = int(train.windows.tokens.shape[1])
    if pretrained_dir:
        model = pretrained_model(pretrained_dir, vocab, max_length)
    else:
        model = new_model(config, vocab, max_length)
    log.info(
        "%s/%s: %d parameters on %s; %d train windows (%d cells), %d val windows (%d cells)",
        model.spec.backbone,
        model.spec.size,
        count_parameters(model),
        device,
        len(train.windows),
        train.n_cells,
        len(val.windows),
        val.n_cells,
    )
    settings = TrainSettings(
        num_epochs=loop["num_epochs"],
        batch_size=loop["batch_size"],
        learning_rate=loop["learning_rate"],
        weight_decay=loop["weight_decay"],
        seed=config["seed"],
    )

    def on_epoch(epoch: int, history: pd.DataFrame, is_best: bool) -> None:
        if is_best:
            write_model_dir(outputs.best_model, model, vocab_dir, config)
        write_csv(history, outputs.history)

    history = fit(model, train, val, settings, device, on_epoch)
    write_model_dir(outputs.last_model, model, vocab_dir, config)
    return history

"""The training loop: epochs of shuffled batches, an evaluation after each, checkpoints, and
the best model kept."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..checkpoint import TrainState, load_checkpoint, remember_best, save_checkpoint
from ..contexts.sliding import redealt_windows
from ..distributed import ONE_PROCESS, Ranks
from ..io import InputError
from ..metrics import selection_key
from ..models import CellClassifier, kept_rows
from ..predict import batch_tensors
from ..runtime import autocast
from .data import LabelledWindows, TrainingItems, by_length, class_weights, drop_gene_pairs
from .evaluation import scored_cells
from .selection import BestModel, averaged_copy, kept_model, on_cpu, stops_early
from .settings import HISTORY_COLUMNS, Resume, TrainSettings
from .throughput import BatchCounts, peak_flops, throughput

log = logging.getLogger(__name__)


def lr_factor(step: int, total_steps: int, settings: TrainSettings) -> float:
    """The learning-rate multiplier at optimiser step `step` (0-based) of `total_steps`."""
    if settings.lr_schedule == "constant":
        return 1.0
    warmup = max(1, round(settings.warmup_fraction * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + np.cos(np.pi * (step - warmup) / max(1, total_steps - warmup)))


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
    counts: BatchCounts | None = None,
) -> tuple[float, float]:
    """One pass over shuffled windows or cells (`settings.loss`; epoch `epoch`, 1-based, sets
    the learning rate; `weights` per class weigh the loss); mean loss and accuracy per item.
    With several ranks each batch is split between them and the loss scaled so the averaged
    gradient is the batch's. `counts` (this process's) gathers the windows and tokens it trained."""
    model.train()
    plan = TrainingItems.of(data, settings)
    labels = torch.from_numpy(plan.labels.astype(np.int64))
    weights = None if weights is None else weights.to(device)
    step, total_steps = (epoch - 1) * plan.steps(), settings.num_epochs * plan.steps()
    order = plan.items[rng.permutation(plan.items.size)]
    if settings.batching == "by_length" and plan.first_window is None:  # windows, not cells
        order = by_length(order, data.windows.lengths, plan.batch_size, rng)
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
        if counts is not None:
            counts.add(ids, lengths)
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


# Called by the main process after each epoch with the history so far (to write it).
Progress = Callable[[pd.DataFrame], None]


@dataclass(frozen=True, eq=False)
class Fitted:
    """What `fit` made: the history of its epochs, on the main process a CPU copy of the best
    model (None on the other DDP processes), and every epoch's class log-scores of the kept
    validation cells (epochs, cells, classes; None after resuming a checkpoint without them)."""

    history: pd.DataFrame
    best: BestModel | None
    val_scores: np.ndarray | None = None


def fit(
    model: CellClassifier,
    train: LabelledWindows,
    val: LabelledWindows,
    settings: TrainSettings,
    device: torch.device,
    progress: Progress | None = None,
    resume: Resume | None = None,
    ranks: Ranks = ONE_PROCESS,
) -> Fitted:
    """Train for `num_epochs` (fewer with `patience`), evaluating cells after each; continue
    from `resume` if valid. `model` ends as the last epoch left it."""
    if settings.batch_size < 1:
        raise InputError(f"train.batch_size={settings.batch_size}: expected >= 1")
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    rng = np.random.default_rng(settings.seed)
    state = (resume and load_checkpoint(resume.path, resume.digest, model, optimizer, rng)) or TrainState()
    kept = None
    if state.epoch and ranks.is_main:
        kept = on_cpu(
            BestModel(averaged_copy(model, state), [r.epoch for r in state.best], state.best_metrics)
        )
        if progress:
            progress(pd.DataFrame(state.rows, columns=list(HISTORY_COLUMNS)))
    plan = TrainingItems.of(train, settings)
    weights = class_weights(plan.labels[plan.items], model.spec.num_classes, settings.class_weight)
    trainer: nn.Module = model
    if ranks.world > 1:
        ids = [ranks.local_rank] if device.type == "cuda" else None
        trainer = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    log.info("MFU against %.3g FLOP/s (%s)", *peak_flops(device))
    # each epoch is scored on the validation cells calibration.json keeps (all up to KEPT_CELLS):
    # the best epochs are chosen on them, and crossfit splits them; the validate rule scores all
    seen = val.cells(kept_rows(val.n_cells))
    if seen.n_cells < val.n_cells:
        log.info("validation after each epoch: %d evenly spaced of the %d cells", seen.n_cells, val.n_cells)
    for epoch in range(state.epoch + 1, settings.num_epochs + 1):
        if stops_early(state.rows, settings):  # checked first, so a resumed run stops too
            log.info(
                "early stop after epoch %d: no better validation for %d epochs", epoch - 1, settings.patience
            )
            break
        started, counts = time.perf_counter(), BatchCounts()
        loss, accuracy = train_epoch(
            trainer, optimizer, train, settings, rng, device, ranks, epoch, weights, counts
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        speed = throughput(counts, time.perf_counter() - started, model, device)
        aggregation = settings.aggregation
        metrics, scores = scored_cells(model, seen, settings.eval_batch_size, device, ranks, aggregation)
        # the scores of the cells calibration.json keeps, for best_model's (see crossfit)
        state.val_scores = [*getattr(state, "val_scores", []), scores.astype(np.float32)]
        state.rows.append(
            {
                "Epoch": epoch,
                "Train Loss": loss,
                "Train Accuracy": accuracy,
                **metrics,
                "Seconds": time.perf_counter() - started,
                **speed,
            }
        )
        state.epoch = epoch
        best, key = None, selection_key(metrics, settings.select_by)
        if remember_best(state, model, key, epoch, settings.average_best):
            best = kept_model(model, state, seen, settings, device, ranks)
            state.best_metrics = best.metrics
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in state.rows[-1].items()})
        if best and len(best.epochs) > 1:
            log.info("best_model: mean weights of epochs %s: %s", best.epochs, best.metrics)
        if ranks.is_main:
            if resume:
                save_checkpoint(resume.path, resume.digest, model, optimizer, rng, state)
            if best is not None:
                kept = on_cpu(best)
            if progress:
                progress(pd.DataFrame(state.rows, columns=list(HISTORY_COLUMNS)))
    scores = getattr(state, "val_scores", [])
    return Fitted(
        pd.DataFrame(state.rows, columns=list(HISTORY_COLUMNS)),
        kept,
        np.stack(scores) if scores and len(scores) == len(state.rows) else None,
    )

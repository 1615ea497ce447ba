"""Resumable training: a checkpoint after every epoch, used only for the same inputs and settings."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .io import atomic_path

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = ["RankedEpoch", "averaged_weights", "fingerprint"]

log = logging.getLogger(__name__)


def fingerprint(config: dict, *inputs: str | Path) -> str:
    """Digest of the effective settings and of each input file's name, size and modification time."""
    digest = hashlib.sha256(yaml.safe_dump(config, sort_keys=True).encode())
    for path in sorted(Path(p) for p in inputs):
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.name.startswith("."):  # Snakemake's own markers (e.g. .snakemake_timestamp)
                continue
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


Weights = dict[str, torch.Tensor]


@dataclass
class RankedEpoch:
    """An epoch among the best so far: its selection key and a CPU copy of its weights."""

    key: tuple[float, ...]
    epoch: int
    weights: Weights


@dataclass
class TrainState:
    """What the loop carries from epoch to epoch, besides model and optimiser."""

    epoch: int = 0
    rows: list[dict[str, float]] = field(default_factory=list)
    best: list[RankedEpoch] = field(default_factory=list)  # best first
    best_metrics: dict[str, float] = field(default_factory=dict)  # of best_model on validation
    # each epoch's class log-scores of the validation cells calibration.json keeps (float32)
    val_scores: list[np.ndarray] = field(default_factory=list)


def cpu_weights(state: Weights) -> Weights:
    """A detached CPU copy of a state dict."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def remember_best(
    state: TrainState, model: torch.nn.Module, key: tuple[float, ...], epoch: int, keep: int
) -> bool:
    """Rank this epoch among the `keep` best (equal keys: the earlier epoch first); whether it
    made the list."""
    ranked = sorted([*state.best, RankedEpoch(key, epoch, {})], key=lambda r: (r.key, -r.epoch), reverse=True)
    if all(r.epoch != epoch for r in ranked[:keep]):
        return False
    weights = cpu_weights(model.state_dict())
    state.best = [r if r.weights else RankedEpoch(key, epoch, weights) for r in ranked[:keep]]
    return True


def averaged_weights(best: list[RankedEpoch]) -> Weights:
    """The mean of the ranked epochs' weights (integer buffers from the best epoch)."""
    first = best[0].weights
    return {
        name: torch.stack([r.weights[name].float() for r in best]).mean(0).to(value.dtype)
        if value.is_floating_point()
        else value
        for name, value in first.items()
    }


def save_checkpoint(
    path: str | Path,
    digest: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    state: TrainState,
) -> None:
    """Everything needed to continue after `state.epoch`, written atomically."""
    payload: dict[str, Any] = {
        "fingerprint": digest,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "state": state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(
    path: str | Path,
    digest: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
) -> TrainState | None:
    """Restore model, optimiser and random states from `path`; None when there is nothing valid."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a checkpoint cut short by a kill is not worth failing for
        log.warning("%s: unreadable checkpoint (%s); training from the start", path, err)
        return None
    if payload.get("fingerprint") != digest:
        log.warning("%s: made with other inputs or settings; training from the start", path)
        return None
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    rng.bit_generator.state = payload["numpy_rng"]
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    state: TrainState = payload["state"]
    log.info("resuming from %s after epoch %d", path, state.epoch)
    return state

"""Transformer backbones built from configs, a shared classification head, save and load."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io import InputError
from ..modeldir import CALIBRATION_FILE, CONFIG_FILE, WEIGHTS_FILE
from .spec import BACKBONES, PAIR_INPUTS, POOLINGS, SIZES, ModelSpec, Size, register  # noqa: F401  (the package's API)

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = [
    "CellClassifier",
    "CellEnsemble",
    "Calibration",
    "load_model",
    "save_model",
    "read_calibration",
    "read_spec",
    "grow",
    "count_parameters",
]


class CellClassifier(nn.Module):
    """A backbone whose pooled hidden state (last real token, or mean over real tokens) feeds a
    linear head."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        from . import hf, scgent  # noqa: F401  (register the built-in backbones; transformers loads slowly)

        if spec.backbone not in BACKBONES:
            raise InputError(
                f"model.backbone '{spec.backbone}' is unknown; expected one of {', '.join(sorted(BACKBONES))}"
            )
        self.spec = spec
        self.backbone = BACKBONES[spec.backbone](spec)
        self.dropout = nn.Dropout(spec.dropout)
        self.head = nn.Linear(spec.dims.hidden, spec.num_classes)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Class logits of a batch of right-padded windows."""
        inputs: dict[str, torch.Tensor] = {"input_ids": input_ids}
        if self.spec.pair_input == "summed":
            # rounded up: a cell's lone `<unk>` window (one token) keeps one position
            inputs, lengths = {"inputs_embeds": self.summed_pairs(input_ids)}, (lengths + 1) // 2
        width = next(iter(inputs.values())).shape[1]
        real = torch.arange(width, device=input_ids.device)[None, :] < lengths[:, None]
        # no padding: no mask, which lets attention use its causal fast path
        mask = None if bool(real.all()) else real.long()
        hidden = self.backbone(**inputs, attention_mask=mask).last_hidden_state
        if self.spec.pooling == "mean":
            weights = real.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1)
        else:
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]
        return self.head(self.dropout(pooled))

    def summed_pairs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of (feature, bin) token pairs, one position per pair: their sum."""
        features, bins = input_ids[:, 0::2], input_ids[:, 1::2]
        if bins.shape[1] < features.shape[1]:  # odd width: the last pair is padding
            bins = nn.functional.pad(bins, (0, 1), value=self.spec.pad_token_id)
        embed = self.backbone.get_input_embeddings()
        return embed(features) + embed(bins)


class CellEnsemble(nn.Module):
    """Networks of one architecture trained from different seeds. Its logits are the mean of
    their log-probabilities, so its probabilities are their normalised geometric mean."""

    def __init__(self, members: Sequence[CellClassifier]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.spec = replace(members[0].spec, members=len(members))

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean class log-probabilities of a batch of right-padded windows."""
        return torch.stack([m(input_ids, lengths).float().log_softmax(-1) for m in self.members]).mean(0)


# What predicts: one network, or an ensemble of them.
Classifier = CellClassifier | CellEnsemble


def member_networks(model: Classifier) -> list[CellClassifier]:
    """The networks of a classifier: an ensemble's members, or the network itself."""
    return list(model.members) if isinstance(model, CellEnsemble) else [model]


def grow(model: CellClassifier, vocab_size: int, num_classes: int) -> CellClassifier:
    """The same network with more token embeddings and classes: every old row is kept, new
    rows start from a fresh initialisation (fine-tuning)."""
    if vocab_size < model.spec.vocab_size or num_classes < model.spec.num_classes:
        raise InputError("a fine-tuned model can only gain tokens and classes, never lose them")
    grown = CellClassifier(replace(model.spec, vocab_size=vocab_size, num_classes=num_classes))
    state = grown.state_dict()
    for name, old in model.state_dict().items():
        state[name][tuple(slice(0, n) for n in old.shape)] = old
    grown.load_state_dict(state)
    return grown


def count_parameters(model: nn.Module) -> int:
    """The number of weights of a network."""
    return sum(p.numel() for p in model.parameters())


# The temperatures of `calibration.json`, in `Calibration`'s field order, and its validation
# cells' class log-scores (older model dirs kept none, or an equal-weight mix as "val_scores").
TEMPERATURE_KEYS = ("temperature", "network_temperature")
VALIDATION_SCORE_KEYS = ("val_network", "val_linear")


@dataclass(frozen=True, eq=False)
class Calibration:
    """What a model dir learnt from its validation and training cells (`calibration.json`)."""

    temperature: float = 1.0  # of prediction_score at the reference decision (model dirs without val cells)
    network_temperature: float = 1.0  # the networks' own, applied before the linear member's average
    class_cells: np.ndarray | None = None  # training cells per class, for logit adjustment
    val_labels: np.ndarray | None = None  # validation cells' class ids, on which predict fits
    val_network: np.ndarray | None = None  # its decision: their networks' class log-scores
    val_linear: np.ndarray | None = None  # and the linear member's (None without a member)

    def to_json(self) -> str:
        saved: dict = {key: float(getattr(self, key)) for key in TEMPERATURE_KEYS}
        if self.class_cells is not None:
            saved["class_cells"] = [int(n) for n in self.class_cells]
        if self.val_labels is not None and self.val_network is not None:
            rows = kept_rows(len(self.val_labels))
            saved["val_labels"] = [int(c) for c in np.asarray(self.val_labels)[rows]]
            for key in VALIDATION_SCORE_KEYS:
                if getattr(self, key) is not None:
                    saved[key] = np.round(
                        np.asarray(getattr(self, key), float)[rows], SCORE_DECIMALS
                    ).tolist()
        return json.dumps(saved) + "\n"

    def __eq__(self, other: object) -> bool:
        """Equal fields, the arrays compared element by element."""
        if not isinstance(other, Calibration):
            return NotImplemented
        return all(_same(getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__)


# Decimals of the validation log-scores kept in `calibration.json`, and at most how many cells
# (evenly spaced): ample for fitting one temperature, and a small file.
SCORE_DECIMALS = 5
KEPT_CELLS = 10_000


def kept_rows(n_cells: int) -> np.ndarray:
    """Which of `n_cells` validation cells `calibration.json` keeps: all, or KEPT_CELLS evenly spaced."""
    return np.unique(np.linspace(0, n_cells - 1, min(n_cells, KEPT_CELLS)).round().astype(np.int64))


def _same(a: object, b: object) -> bool:
    """Equal values: None, numbers or arrays (same shape and elements)."""
    if a is None or b is None:
        return a is b
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def save_model(model: Classifier, directory: Path, calibration: Calibration | None = None) -> None:
    """Write `config.json`, the weights and the calibration into an existing directory."""
    (directory / CONFIG_FILE).write_text(json.dumps(asdict(model.spec), indent=2) + "\n")
    torch.save(model.state_dict(), directory / WEIGHTS_FILE)
    (directory / CALIBRATION_FILE).write_text((calibration or Calibration()).to_json())


def read_calibration(directory: str | Path) -> Calibration:
    """A model dir's `Calibration`; temperatures of 1 and no class counts for model dirs
    written before they were kept."""
    path = Path(directory) / CALIBRATION_FILE
    if not path.is_file():
        return Calibration()
    expected = "expected JSON with positive 'temperature' and 'network_temperature'"
    try:
        saved = json.loads(path.read_text())
        temperatures = [float(saved.get(key, 1.0)) for key in TEMPERATURE_KEYS]
    except (ValueError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: {err}; {expected}") from err
    for key, value in zip(TEMPERATURE_KEYS, temperatures):
        if not value > 0:
            raise InputError(f"{path}: {key} {value}; {expected}")
    if "class_cells" not in saved:
        return Calibration(*temperatures)
    n_classes = read_spec(Path(directory) / CONFIG_FILE).num_classes
    cells = saved_array(saved, "class_cells", path, "training cells per class")
    if cells.shape != (n_classes,) or (cells < 0).any():
        raise InputError(f"{path}: class_cells {cells.tolist()}; expected {n_classes} counts >= 0")
    return Calibration(*temperatures, cells, *validation_cells(saved, path, n_classes))


def saved_array(saved: dict, key: str, path: Path, expected: str) -> np.ndarray:
    """A list of `calibration.json` as a float array; an `InputError` saying `expected` if not numbers."""
    try:
        return np.asarray(saved[key], dtype=float)
    except (ValueError, TypeError) as err:
        raise InputError(f"{path}: {key}: {err}; expected {expected}") from err


def validation_cells(saved: dict, path: Path, n_classes: int) -> tuple[np.ndarray | None, ...]:
    """The validation cells' class ids and class log-scores (networks', linear member's) of
    `calibration.json`; None for model dirs written before they were kept."""
    if "val_network" not in saved:
        return None, None, None
    expected = (
        f"a class id (0 to {n_classes - 1}) per validation cell and their class log-scores"
        f" (cells x {n_classes} classes)"
    )
    labels = saved_array(saved, "val_labels", path, expected) if "val_labels" in saved else np.empty(0)
    labels = labels.astype(np.int64) if np.array_equal(labels, labels.round()) else labels
    unknown = sorted(set(labels.tolist()) - set(range(n_classes)), key=float)
    if unknown:
        raise InputError(f"{path}: val_labels {unknown}; expected {expected}")
    found = []
    for key in VALIDATION_SCORE_KEYS:
        scores = saved_array(saved, key, path, expected) if key in saved else None
        if scores is not None and (
            scores.ndim != 2 or scores.shape != (labels.size, n_classes) or not np.isfinite(scores).all()
        ):
            raise InputError(f"{path}: {key} {scores.shape}, val_labels {labels.shape}; expected {expected}")
        found.append(scores)
    return labels.astype(np.int64), *found


def read_spec(path: Path) -> ModelSpec:
    """The `ModelSpec` of a model directory's `config.json`."""
    try:
        return ModelSpec(**json.loads(path.read_text()))
    except (ValueError, TypeError) as err:  # bad JSON, missing or unknown keys
        fields = ", ".join(ModelSpec.__dataclass_fields__)
        raise InputError(f"{path}: not a model config ({err}); expected JSON with {fields}") from err


def load_model(directory: str | Path, device: torch.device | str = "cpu") -> Classifier:
    """Rebuild a classifier (or an ensemble) from a model directory's `config.json` and weights."""
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise InputError(
                f"{directory}: missing {name}; expected a model directory written by this workflow"
            )
    spec = read_spec(directory / CONFIG_FILE)
    single = replace(spec, members=1)
    model = (
        CellEnsemble([CellClassifier(single) for _ in range(spec.members)])
        if spec.members > 1
        else CellClassifier(spec)
    )
    try:
        state = torch.load(directory / WEIGHTS_FILE, map_location=device, weights_only=True)
        model.load_state_dict(state)
    except Exception as err:  # torch raises several types for damaged files
        raise InputError(
            f"{directory / WEIGHTS_FILE}: cannot load weights ({err}); expected the weights saved with"
            f" {directory / CONFIG_FILE}"
        ) from err
    return model.to(device).eval()

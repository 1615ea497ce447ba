"""What a training loop is given: its settings (from the config's train or finetune section),
where it checkpoints, and the columns of its history."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import default_of

# Training speed per epoch (train/throughput.py): per process, the training passes only.
THROUGHPUT_COLUMNS = ("Windows/s", "Tokens/s", "Padding", "MFU")
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
    *THROUGHPUT_COLUMNS,
)
# Columns that differ between runs of the same seed (the machine's speed, not the model).
TIMING_COLUMNS = ("Seconds", "Windows/s", "Tokens/s", "MFU")


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
    batching: str = default_of("train.batching")


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
    "batching",
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


@dataclass(frozen=True)
class Resume:
    """Where the loop checkpoints, and the digest of inputs and settings it must match."""

    path: str
    digest: str

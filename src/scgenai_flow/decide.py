"""How a cell's class and score are decided from the networks' and the linear member's class
log-scores: their mixing weight, the logit adjustment's strength and the score's temperature,
fitted on the model's validation cells (`fit_decision`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from .metrics import macro_f1
from .models import Calibration

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = [
    "Decision",
    "fit_decision",
    "fit_temperature",
    "joint_scores",
    "prior_offsets",
    "softmax_rows",
    "cell_losses",
    "resampled_macro_f1",
]

# Temperatures a fit may reach (log scale): far beyond what a trained model needs.
TEMPERATURE_BOUNDS = (0.05, 20.0)

# `auto` tries every pair of these (linear member's weight, logit adjustment's strength) ...
CANDIDATE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
CANDIDATE_STRENGTHS = (0.0, 0.5, 1.0)
# ... and keeps this one, the best on the development data sets, unless another has a higher
# validation macro-F1 in at least CONFIDENCE of BOOTSTRAPS resamples of those cells (so that a
# hundred validation cells do not move the decision on noise, and thousands do on evidence).
REFERENCE_WEIGHT, REFERENCE_STRENGTH = 0.5, 1.0
BOOTSTRAPS = 500
CONFIDENCE = 0.95
AUTO = "auto"


def softmax_rows(log_scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of log-scores divided by `temperature`."""
    scaled = log_scores / temperature
    shifted = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def cell_losses(log_scores: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Each cell's negative log-likelihood of its label under `softmax_rows`."""
    scaled = log_scores / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    return np.log(np.exp(scaled).sum(axis=1)) - scaled[np.arange(labels.size), labels]


def fit_temperature(log_scores: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the labelled cells' mean negative log-likelihood (convex in
    1/temperature, so a bounded 1-D search finds it); 1 when no cell is labelled."""
    known = labels >= 0
    if not known.any():
        return 1.0
    rows, labels = log_scores[known], labels[known]
    low, high = np.log(TEMPERATURE_BOUNDS)
    found = minimize_scalar(
        lambda log_t: cell_losses(rows, labels, np.exp(log_t)).mean(), bounds=(low, high), method="bounded"
    )
    return float(np.exp(found.x))


def prior_offsets(class_cells: np.ndarray, strength: float) -> np.ndarray | None:
    """Post-hoc logit adjustment: -strength x log(training share) per class, added to a cell's
    class log-scores so that rare classes need less evidence; None when `strength` is 0."""
    if strength == 0:
        return None
    cells = np.maximum(np.asarray(class_cells, dtype=float), 1.0)
    return -strength * np.log(cells / cells.sum())


def joint_scores(
    network: np.ndarray,
    *,
    linear: np.ndarray | None = None,
    offsets: np.ndarray | None = None,
    linear_weight: float = REFERENCE_WEIGHT,
) -> np.ndarray:
    """Cells' class log-scores: the networks' (already divided by their temperature) and the
    linear member's mixed with weight `linear_weight` on the member, plus the class offsets;
    `linear` and `offsets` may be None."""
    if linear is not None:
        network = (1 - linear_weight) * network + linear_weight * linear
    return network if offsets is None else network + offsets


@dataclass(frozen=True)
class Decision:
    """How predict decides and scores cells, and what the validation cells said about it."""

    linear_weight: float  # the linear member's share of the mixed log-scores (0 without a member)
    logit_adjustment: float
    temperature: float  # of prediction_score
    val_cells: int  # validation cells it was fitted on (0: a model dir that kept none)
    networks_gain: float | None = None  # share of resamples in which it beats the linear member alone

    def describe(self) -> str:
        """One line for the log and the report."""
        fitted = f"fitted on {self.val_cells} validation cells" if self.val_cells else "as stored"
        return (
            f"linear member weight {self.linear_weight:g}, logit adjustment {self.logit_adjustment:g},"
            f" score temperature {self.temperature:.3f} ({fitted})"
        )

    def networks_note(self) -> str | None:
        """What the validation cells say about the networks beside the linear member."""
        if self.networks_gain is None:
            return None
        if self.linear_weight == 1:
            return (
                "the networks add nothing on the validation cells: the linear member decides alone"
                " (a linear model suffices for this data)"
            )
        if self.networks_gain <= 1 - CONFIDENCE:
            return (
                "the networks add nothing on the validation cells: the linear member alone scores as"
                " well there (a linear model may suffice for this data)"
            )
        if self.networks_gain < CONFIDENCE:
            return (
                f"the networks beat the linear member alone in only {self.networks_gain:.0%} of"
                " resamples of the validation cells: their gain is within noise"
            )
        return f"the networks beat the linear member alone in {self.networks_gain:.0%} of resamples"


def candidates(setting: float | str, grid: tuple[float, ...]) -> tuple[float, ...]:
    """The values `auto` tries, or the one set."""
    return grid if setting == AUTO else (float(setting),)


def resampled_macro_f1(
    counts: np.ndarray, labels: np.ndarray, predicted: np.ndarray, n_classes: int
) -> np.ndarray:
    """Macro-F1 (`metrics.macro_f1`) of each resample of the cells, a row of `counts` (how many
    times each cell was drawn)."""
    true_hot = np.eye(n_classes, dtype=np.float32)[labels]
    predicted_hot = np.eye(n_classes, dtype=np.float32)[predicted]
    support, claimed = counts @ true_hot, counts @ predicted_hot
    hits = counts @ (true_hot * (labels == predicted)[:, None])
    present = (support + claimed) > 0
    f1 = np.divide(2 * hits, support + claimed, out=np.zeros_like(hits), where=present)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def fit_decision(
    calibration: Calibration,
    has_linear: bool,
    linear_weight: float | str = AUTO,
    logit_adjustment: float | str = AUTO,
    seed: int = 0,
) -> Decision:
    """The weight and strength (each `auto` or set) with the highest macro-F1 of the validation
    cells (the first of equals), kept only if it beats the reference pair in CONFIDENCE of
    bootstrap resamples of those cells; the score temperature fitted for the pair chosen. Model
    dirs that kept no validation cells get the reference (or set) values and their stored
    temperature."""
    weights = candidates(linear_weight, CANDIDATE_WEIGHTS) if has_linear else (0.0,)
    if calibration.class_cells is None:  # older model dirs: no class counts, no adjustment
        strengths: tuple[float, ...] = (0.0,)
    else:
        strengths = candidates(logit_adjustment, CANDIDATE_STRENGTHS)
    pairs = [(w, s) for w in weights for s in strengths]
    pick = (
        REFERENCE_WEIGHT if REFERENCE_WEIGHT in weights else weights[0],
        REFERENCE_STRENGTH if REFERENCE_STRENGTH in strengths else strengths[0],
    )
    labels, network = calibration.val_labels, calibration.val_network
    if labels is None or network is None or (has_linear and calibration.val_linear is None):
        return Decision(*pick, calibration.temperature, 0)
    mixed = [
        joint_scores(
            network,
            linear=calibration.val_linear if has_linear else None,
            offsets=prior_offsets(calibration.class_cells, strength),
            linear_weight=weight,
        )
        for weight, strength in pairs
    ]
    n_classes = network.shape[1]
    predicted = [m.argmax(axis=1) for m in mixed]
    uniform = np.full(labels.size, 1 / labels.size)
    counts = np.random.default_rng(seed).multinomial(labels.size, uniform, BOOTSTRAPS).astype(np.float32)
    f1 = [resampled_macro_f1(counts, labels, p, n_classes) for p in predicted]
    score = np.array([macro_f1(labels, p, n_classes) for p in predicted])
    reference = pairs.index(pick)
    best = reference if score[reference] == score.max() else int(np.argmax(score))
    chosen = best if (f1[best] > f1[reference]).mean() >= CONFIDENCE else reference
    gain = None
    alone = [i for i, (w, _) in enumerate(pairs) if w == 1]
    if has_linear and alone:
        linear_best = max(alone, key=lambda i: score[i])
        gain = 0.0 if chosen in alone else float((f1[chosen] > f1[linear_best]).mean())
    temperature = fit_temperature(mixed[chosen], labels)
    return Decision(*pairs[chosen], temperature, int(labels.size), gain)

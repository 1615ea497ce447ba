"""Ensembles (`train.ensemble`): networks trained from several seeds, scored by the mean of
their log-probabilities, saved and reloaded as one model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import FOUR_TYPES, four_type_cells, preprocessed_h5ad

from scgenai_flow.config import with_defaults
from scgenai_flow.contexts import load_windows, save_windows
from scgenai_flow.decide import fit_temperature, joint_scores
from scgenai_flow.linear import LinearMember, member_features, read_expression
from scgenai_flow.models import CellClassifier, CellEnsemble, ModelSpec, load_model
from scgenai_flow.predict import cell_log_scores, window_probabilities
from scgenai_flow.runtime import seed_everything
from scgenai_flow.train import (
    LabelledWindows,
    TrainOutputs,
    evaluate,
    train_from_files,
    write_model_dir,
)
from scgenai_flow.train.ensemble import MEMBER_SEED_STEP
from scgenai_flow.train.settings import TIMING_COLUMNS
from scgenai_flow.vocab import Vocabulary

CPU = torch.device("cpu")
CLASSES = FOUR_TYPES
# the effective defaults: config/config.yaml (possibly empty) completed from the schema
CONFIG = with_defaults(yaml.safe_load((Path(__file__).parents[1] / "config/config.yaml").read_text()) or {})
CONFIG["seed"] = 7
CONFIG["train"].update(num_epochs=2, batch_size=16, learning_rate=2e-3, average_best=2)


@pytest.fixture(scope="module")
def window_files(pbmc, tmp_path_factory) -> Path:
    """Train and validation windows of real PBMCs (four classes), their preprocessed files and
    their vocabulary, on disk."""
    root = tmp_path_factory.mktemp("ensemble")
    vocab, parts = four_type_cells(pbmc, {"train": slice(0, 25), "val": slice(25, 35)})
    for part, (binned, windows, labels, values) in parts.items():
        save_windows(root / f"{part}.npz", windows, labels)
        preprocessed_h5ad(root / f"{part}.h5ad", vocab, binned, values)
    vocab.save(root / "vocab")
    return root


def train(root: Path, target: Path, **train_keys) -> pd.DataFrame:
    config = {**CONFIG, "train": {**CONFIG["train"], **train_keys}}
    outputs = TrainOutputs(*(str(target / n) for n in ("best", "last", "history.csv", "info.yaml")))
    files = [str(root / f) for f in ("train.npz", "val.npz", "vocab")]
    expression = (str(root / "train.h5ad"), str(root / "val.h5ad"))
    train_from_files(*files, config, outputs, threads=torch.get_num_threads(), expression=expression)
    return pd.read_csv(outputs.history)


def test_an_ensemble_scores_the_mean_log_probability_and_reloads(tmp_path, window_files) -> None:
    vocab = Vocabulary.load(window_files / "vocab")
    windows, _ = load_windows(window_files / "val.npz")
    spec = ModelSpec("llama", "tiny", vocab.size, vocab.pad_id, 64, int(vocab.classes.size), pooling="mean")
    seed_everything(3)
    networks = [CellClassifier(spec) for _ in range(3)]
    ensemble = CellEnsemble(networks)
    probs = window_probabilities(ensemble, windows, 32, CPU)
    each = np.stack([window_probabilities(n, windows, 32, CPU) for n in networks])
    geometric = np.exp(np.log(each).mean(0))
    np.testing.assert_allclose(probs, geometric / geometric.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
    write_model_dir(tmp_path / "model", ensemble, window_files / "vocab", {"seed": 3})
    assert json.loads((tmp_path / "model/config.json").read_text())["members"] == 3
    again = load_model(tmp_path / "model")
    assert isinstance(again, CellEnsemble) and again.spec.members == 3
    np.testing.assert_array_equal(window_probabilities(again, windows, 32, CPU), probs)


def test_each_network_trains_as_a_single_run_with_its_seed(tmp_path, window_files) -> None:
    history = train(window_files, tmp_path / "ens", ensemble=2)
    assert list(history["Member"]) == [1, 1, 2, 2] and list(history["Epoch"]) == [1, 2, 1, 2]
    ensemble = load_model(tmp_path / "ens/best")
    assert isinstance(ensemble, CellEnsemble) and len(ensemble.members) == 2
    selection = json.loads((tmp_path / "ens/best/selection.json").read_text())
    assert [m["seed"] for m in selection["members"]] == [7, 7 + MEMBER_SEED_STEP]
    # network 2 is what a single run with seed 7 + 1000 keeps
    CONFIG["seed"] += MEMBER_SEED_STEP
    try:
        alone = train(window_files, tmp_path / "alone", ensemble=1)
    finally:
        CONFIG["seed"] -= MEMBER_SEED_STEP
    second = history[history["Member"] == 2].drop(columns=list(TIMING_COLUMNS)).reset_index(drop=True)
    pd.testing.assert_frame_equal(second, alone.drop(columns=list(TIMING_COLUMNS)).assign(Member=2))
    single = load_model(tmp_path / "alone/best").state_dict()
    for name, value in ensemble.members[1].state_dict().items():
        torch.testing.assert_close(value, single[name], rtol=0, atol=0)
    # the ensemble's own validation metrics and temperature, as published
    val = LabelledWindows(*load_windows(window_files / "val.npz"))
    measured = evaluate(ensemble, val, 64, CPU, aggregation="mean")
    assert measured == pytest.approx(selection["validation"])
    calibration = json.loads((tmp_path / "ens/best/calibration.json").read_text())
    assert calibration["class_cells"] == [25, 25, 25, 25]  # training cells per class
    # the score temperature fits the networks' and the linear member's mean (the defaults)
    vocab = Vocabulary.load(window_files / "vocab")
    member = LinearMember.load(tmp_path / "ens/best", vocab)
    assert member.expression  # it reads the preprocessed files' values beside presence
    values = read_expression(window_files / "val.h5ad", vocab, val.n_cells)
    linear = member.log_probs(member_features(val.windows, val.n_cells, vocab, values))
    probs = window_probabilities(ensemble, val.windows, 64, CPU)
    assert fit_temperature(linear, val.cell_labels) == pytest.approx(1.0, rel=0.03)  # it is calibrated
    # the networks' scores kept (for predict to fit how it decides) are out-of-selection ones,
    # each network's (train/crossfit.py) averaged as the ensemble averages, not the selected
    # epochs' own; their temperature and the score temperature are fitted on them
    unselected = np.array(calibration["val_network"]) * calibration["network_temperature"]
    network, _ = cell_log_scores(probs, val.windows.cell_index, val.n_cells, "mean")
    assert not np.allclose(unselected, network, atol=1e-3)
    own = fit_temperature(unselected, val.cell_labels)
    assert calibration["network_temperature"] == pytest.approx(own, rel=1e-3)
    joint = joint_scores(unselected / own, linear=linear)
    assert calibration["temperature"] == pytest.approx(fit_temperature(joint, val.cell_labels), rel=1e-3)
    np.testing.assert_allclose(calibration["val_linear"], linear, atol=1e-4)
    assert calibration["val_labels"] == val.cell_labels.tolist()
    assert calibration["temperature"] != pytest.approx(own)  # not the networks' own
    last = load_model(tmp_path / "ens/last")
    assert isinstance(last, CellEnsemble)
    info = yaml.safe_load((tmp_path / "ens/info.yaml").read_text())
    assert info["parameters"] == 2 * sum(p.numel() for p in ensemble.members[0].parameters())

"""Training survives a kill -9 (resume from the last epoch's checkpoint, network by network of an
ensemble) and runs as 2 DDP processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_workflow import snakemake, snakemake_command

from scgenai_flow.checkpoint import TrainState, fingerprint, load_checkpoint, save_checkpoint
from scgenai_flow.models import load_model
from scgenai_flow.train import TrainOutputs, train_from_files

SETTINGS = {
    "preprocess": {"min_cells": 150},
    "context": {"max_length": 64},
    "model": {"size": "tiny", "backbone": "scgent"},
    "train": {"num_epochs": 2, "batch_size": 32, "learning_rate": 2e-3, "ensemble": 2},
}
METRICS = ["Epoch", "Train Loss", "Train Accuracy", "Validation Accuracy", "Validation Loss"]


@pytest.fixture(scope="module")
def contexts(tmp_path_factory) -> Path:
    """A workdir whose train and val windows are built."""
    workdir = tmp_path_factory.mktemp("resume")
    snakemake(workdir, "results/contexts/train.npz", "results/contexts/val.npz", config=SETTINGS)
    return workdir


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_model(model_dir).state_dict()


def train_in_process(workdir: Path, config: dict, target: Path, processes: int | None = None) -> pd.DataFrame:
    results = workdir / "results"
    outputs = TrainOutputs(*(str(target / n) for n in ("best", "last", "history.csv", "info.yaml")))
    train_from_files(
        str(results / "contexts/train.npz"), str(results / "contexts/val.npz"), str(results / "vocab"),
        config, outputs, threads=2, processes=processes,
    )  # fmt: skip
    return pd.read_csv(outputs.history)


@pytest.mark.slow
def test_a_killed_training_resumes_and_ends_as_an_uninterrupted_one(contexts: Path) -> None:
    model = contexts / "results/model"
    command = snakemake_command(contexts, "results/model/best_model", config=SETTINGS)
    run = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    history = model / "combined_epoch_results.csv"
    second = model / "checkpoint.member2.pt"  # the second network of the ensemble has begun
    deadline = time.time() + 600
    while not (history.is_file() and len(pd.read_csv(history)) >= 3 and second.is_file()):
        assert run.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.2)
    time.sleep(0.5)  # into the second network's epoch 2
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert len(pd.read_csv(history)) < 4
    snakemake(contexts, "--unlock", config=SETTINGS)  # the killed snakemake left its lock
    log = snakemake(contexts, "results/model/best_model", "--rerun-incomplete", config=SETTINGS)
    resumed_from = (contexts / "results/logs/train.log").read_text()
    assert "checkpoint.pt after epoch 2" in resumed_from, log.stderr[-2000:]  # the first network: done
    assert "checkpoint.member2.pt after epoch" in resumed_from  # the second: part-trained
    assert not list(model.glob("checkpoint*"))  # removed once training finished

    settings = yaml.safe_load((model / "best_model/train_setting.yaml").read_text())
    reference = train_in_process(contexts, settings, contexts / "reference")
    resumed = pd.read_csv(history)
    pd.testing.assert_frame_equal(resumed[METRICS], reference[METRICS])
    for name, ref in (("best_model", "best"), ("last_model", "last")):
        mine, theirs = weights(model / name), weights(contexts / "reference" / ref)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), name


def test_a_checkpoint_of_other_inputs_or_settings_is_not_used(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(net.parameters())
    rng = np.random.default_rng(0)
    save_checkpoint(tmp_path / "c.pt", "digest-a", net, optimizer, rng, TrainState(epoch=2))
    assert load_checkpoint(tmp_path / "c.pt", "digest-b", net, optimizer, rng) is None
    assert load_checkpoint(tmp_path / "c.pt", "digest-a", net, optimizer, rng).epoch == 2
    (tmp_path / "c.pt").write_bytes(b"cut short by a kill")
    assert load_checkpoint(tmp_path / "c.pt", "digest-a", net, optimizer, rng) is None
    (tmp_path / "x.npz").write_bytes(b"1")
    assert fingerprint({"a": 1}, tmp_path / "x.npz") != fingerprint({"a": 2}, tmp_path / "x.npz")


@pytest.mark.slow
def test_two_ddp_processes_on_cpu_match_one_process(contexts: Path) -> None:
    config = yaml.safe_load((Path(__file__).parents[1] / "config/config.yaml").read_text())
    from snakemake.utils import validate

    validate(config, str(Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml"))
    config["model"] = {**config["model"], **SETTINGS["model"], "dropout": 0.0}  # no per-rank dropout noise
    config["train"] = {**config["train"], **SETTINGS["train"], "num_epochs": 1, "ensemble": 1}
    one = train_in_process(contexts, config, contexts / "one", processes=1)
    two = train_in_process(contexts, config, contexts / "two", processes=2)
    assert {p.name for p in (contexts / "two").iterdir()} == {"best", "last", "history.csv", "info.yaml"}
    assert yaml.safe_load((contexts / "two/info.yaml").read_text())["processes"] == 2
    # the same batches, split between ranks: equal up to float summation order
    for column in ("Train Loss", "Train Accuracy", "Validation Loss"):
        assert two[column].iloc[0] == pytest.approx(one[column].iloc[0], rel=1e-3), column
    assert abs(two["Validation Accuracy"].iloc[0] - one["Validation Accuracy"].iloc[0]) <= 0.02

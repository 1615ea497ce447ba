"""One set of defaults: the schema's, the same through every entry point; the original's method
is a preset layered on purpose."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml
from conftest import REPO

from scgenai_flow.checks import InputPlan
from scgenai_flow.cli import ORIGINAL_PRESET, legacy_run, main
from scgenai_flow.config import load_schema, schema_default, with_defaults
from scgenai_flow.contexts import ContextSettings
from scgenai_flow.legacy import resolve_paths, translate
from scgenai_flow.preprocess import PreprocessSettings
from scgenai_flow.train import TrainSettings

OLD_TRAIN = {  # an original scGenAI train config that sets only its files and a backbone
    "mode": "Train",
    "train_file": "train.h5ad",
    "model_dir": "out",
    "target_feature": "cell_type",
    "model_backbone_name": "gpt",
}


def leaf_keys(schema: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, node in schema["properties"].items():
        if node.get("type") == "object":
            keys += leaf_keys(node, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def lookup(config: dict, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def test_the_validated_config_is_complete_and_matches_snakemake_validation() -> None:
    from snakemake.utils import validate

    complete = with_defaults({})
    for key in leaf_keys(load_schema()):
        assert lookup(complete, key) == schema_default(key), key
    by_snakemake = {}
    validate(by_snakemake, str(REPO / "workflow/schemas/config.schema.yaml"))
    assert by_snakemake == complete


def test_the_shipped_config_file_sets_no_default() -> None:
    assert yaml.safe_load((REPO / "config/config.yaml").read_text()) == {}


# dataclass field -> the config key whose default it carries
FIELDS = {
    TrainSettings: {
        "seed": "seed",
        "eval_batch_size": "predict.batch_size",
        "aggregation": "predict.aggregation",
        **{f.name: f"train.{f.name}" for f in dataclasses.fields(TrainSettings)},
    },
    PreprocessSettings: {
        "seed": "seed",
        "use_raw": "data.use_raw",
        **{f.name: f"preprocess.{f.name}" for f in dataclasses.fields(PreprocessSettings)},
    },
    ContextSettings: {
        "seed": "seed",
        **{f.name: f"context.{f.name}" for f in dataclasses.fields(ContextSettings)},
    },
    InputPlan: {"target_feature": "data.target_feature"},
}


@pytest.mark.parametrize("kind", list(FIELDS), ids=lambda kind: kind.__name__)
def test_dataclass_defaults_are_the_schema_defaults(kind) -> None:
    instance = kind()
    known = set(leaf_keys(load_schema()))
    checked = 0
    for field in dataclasses.fields(kind):
        key = FIELDS[kind].get(field.name)
        if key in known:
            assert getattr(instance, field.name) == schema_default(key), f"{kind.__name__}.{field.name}"
            checked += 1
    assert checked


def test_an_old_config_gets_the_same_model_through_every_entry_point(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(OLD_TRAIN))
    # scgenai train / config convert
    command = with_defaults(legacy_run(tmp_path / "old.yaml", "train").config)
    # snakemake --configfile old.yaml: the Snakefile's config/config.yaml, then the old keys
    shipped = yaml.safe_load((REPO / "config/config.yaml").read_text())
    by_snakemake = with_defaults(translate(resolve_paths({**shipped, **OLD_TRAIN}, tmp_path)).config)
    assert by_snakemake == command
    # the keys it sets are kept; every other key is the recommended default
    assert command["model"]["backbone"] == "gpt" and command["data"]["target_feature"] == "cell_type"
    assert command["model"]["size"] == schema_default("model.size")
    assert command["train"]["ensemble"] == schema_default("train.ensemble")


def test_the_original_preset_is_layered_on_purpose(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(OLD_TRAIN))
    preset = yaml.safe_load(ORIGINAL_PRESET.read_text())
    assert main(["config", "convert", "--original", "old.yaml"]) == 0
    converted = yaml.safe_load(capsys.readouterr().out)
    assert converted["model"]["backbone"] == "gpt"  # the file's own key wins
    assert converted["model"]["size"] == preset["model"]["size"] == "normal"
    assert converted["train"]["learning_rate"] == 1e-5 and converted["predict"]["aggregation"] == "max"
    # the same through snakemake: the preset as a config file below the old one
    layered = translate(resolve_paths({**copy.deepcopy(preset), **OLD_TRAIN}, tmp_path)).config
    assert with_defaults(layered) == with_defaults(converted)
    # every preset key is a schema key
    known = set(leaf_keys(load_schema()))
    assert {f"{s}.{k}" for s, keys in preset.items() for k in keys} <= known


def test_gpu_auto_uses_a_visible_gpu_and_asks_a_scheduler_for_none(monkeypatch, caplog) -> None:
    import logging

    import torch

    from scgenai_flow.config import gpu_request
    from scgenai_flow.runtime import gpus_of, select_device

    assert schema_default("train.gpu") == schema_default("predict.gpu") == "auto"
    assert gpu_request("auto") == 0 and gpu_request(2) == 2  # resources.gpu of the rules
    assert gpus_of("auto", 0) == "auto" and gpus_of("auto", 1) == 1  # a profile's set-resources wins
    assert gpus_of(0, 0) == 0 and gpus_of(2, 2) == 2
    caplog.set_level(logging.INFO)
    assert select_device(0, 1).type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    assert select_device("auto", 1).type == "cuda"
    assert "device: cuda (Test GPU; gpu: auto)" in caplog.text
    assert select_device(0, 1).type == "cpu"  # 0 forces the CPU

"""Project wiring: pinned environments agree, config checks, one script per rule."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from conftest import REPO

from scgenai_flow.config import check_config, unknown_keys
from scgenai_flow.io import InputError

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def pins(requirements: list[str]) -> dict[str, str]:
    parsed = {}
    for line in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line.strip())
        assert match, f"not an exact pin: {line!r}"
        parsed[match[1].lower()] = match[2]
    return parsed


def test_conda_env_pins_equal_pyproject_pins() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "envs/scgenai-flow.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins(pip_section) == pins(project["dependencies"])
    assert pins(project["dependencies"])["torch"] == "2.13.0"


def test_every_rule_names_the_env_a_log_a_benchmark_and_its_own_script() -> None:
    rules = "".join(p.read_text() for p in sorted((REPO / "workflow/rules").glob("*.smk")))
    blocks = re.split(r"\n\s*(?:rule|checkpoint) ", rules)[1:]
    assert len(blocks) >= 7
    scripts = set()
    for block in blocks:
        name = block.split(":")[0]
        for directive in ("log:", "benchmark:", "threads:", "resources:", "conda:", "script:"):
            assert directive in block, f"rule {name} lacks {directive}"
        scripts.add(re.search(r'"\.\./\.\./scripts/(\w+\.py)"', block)[1])
    assert all((REPO / "scripts" / s).is_file() for s in scripts)
    for gpu_rule in ("train", "predict"):
        block = next(b for b in blocks if b.startswith(gpu_rule + ":"))
        assert 'gpu=gpus("' in block  # the config's GPUs (auto asks the scheduler for none)


def test_misspelt_keys_get_a_suggestion() -> None:
    messages = unknown_keys({"seed": 1, "model": {"backbon": "llama"}, "trian": {}}, SCHEMA)
    assert "unknown config key 'model.backbon'; did you mean 'model.backbone'?" in messages
    assert "unknown config key 'trian'; did you mean 'train'?" in messages
    with pytest.raises(InputError, match="model.backbon"):
        check_config({"model": {"backbon": "llama"}}, SCHEMA)


def test_default_config_is_valid_and_complete() -> None:
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    check_config(config, SCHEMA)
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    assert config["preprocess"]["chunk_cells"] == 5000  # filled from the schema default


def test_window_length_limit_counts_positions() -> None:
    gpt = {"model": {"backbone": "gpt", "pair_input": "interleaved"}, "context": {"max_length": 2048}}
    with pytest.raises(InputError, match="context.max_length: 2048 is above .* expected <= 1024"):
        check_config(gpt, SCHEMA)
    check_config({**gpt, "model": {"backbone": "gpt", "pair_input": "summed"}}, SCHEMA)  # 1024 positions
    with pytest.raises(InputError, match="expected <= 2048"):
        check_config(
            {"model": {"backbone": "gpt", "pair_input": "summed"}, "context": {"max_length": 4096}}, SCHEMA
        )


def test_resampled_windows_need_sliding_windows() -> None:
    resample = {"train": {"resample_windows": True}}
    for method in ("random", "genelist"):
        check_config({**resample, "context": {"method": method}}, SCHEMA)
    with pytest.raises(InputError, match="resample_windows: true needs sliding windows; .* not 'genomic'"):
        check_config({**resample, "context": {"method": "genomic"}}, SCHEMA)
    check_config({"context": {"method": "genomic"}}, SCHEMA)  # off by default

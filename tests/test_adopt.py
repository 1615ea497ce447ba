"""What defines a model comes from its model dir: a default gives way with a note, a value the
user set otherwise is an error naming the key, both values and the model dir."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from scgenai_flow.adopt import adopt_model_settings, model_multiomics
from scgenai_flow.config import with_defaults
from scgenai_flow.finetune import finetune_config
from scgenai_flow.io import InputError

TRAINED = {
    "seed": 1,
    "data": {"target_feature": "cell_type", "multiomics": True},
    "preprocess": {"num_bins": 20, "binning": "cell_range", "adt_num_bins": 7},
    "context": {"method": "genomic", "max_length": 128, "depth": 2},
    "model": {"backbone": "gpt", "size": "small", "pooling": "cls", "pair_input": "interleaved"},
}


def model_dir(tmp_path: Path, bands: pd.DataFrame | None = None) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "train_setting.yaml").write_text(yaml.safe_dump(TRAINED))
    if bands is not None:
        bands.to_csv(directory / "context_cytobands.tsv", sep="\t", index=False)
    return directory


def test_defaults_give_way_to_the_model_with_a_note(tmp_path: Path) -> None:
    given = {"finetune": {"train": "new.h5ad"}}
    adopted, notes = adopt_model_settings(with_defaults(given), given, model_dir(tmp_path))
    for section, values in TRAINED.items():
        if isinstance(values, dict):
            assert {k: adopted[section][k] for k in values} == values
    assert adopted["finetune"]["train"] == "new.h5ad" and model_multiomics(tmp_path / "model")
    assert "preprocess.adt_num_bins: the model's 7 is used (the default is 5)" in notes
    assert any(n.startswith("data.target_feature: the model's 'cell_type'") for n in notes)


def test_a_value_set_otherwise_is_an_error_naming_key_values_and_dir(tmp_path: Path) -> None:
    directory = model_dir(tmp_path)
    given = {"preprocess": {"adt_num_bins": 9}, "model": {"backbone": "gpt", "size": "tiny"}}
    with pytest.raises(InputError) as err:
        adopt_model_settings(with_defaults(given), given, directory)
    message = str(err.value)
    assert message.startswith(f"{directory}: the settings that define a model come from its model dir")
    assert "preprocess.adt_num_bins: config 9, model 7" in message
    assert "model.size: config 'tiny', model 'small'" in message and "model.backbone" not in message
    # the label column of new data is the user's to name
    given = {"data": {"target_feature": "labels"}}
    adopted, _ = adopt_model_settings(with_defaults(given), given, directory)
    assert adopted["data"]["target_feature"] == "labels"


def test_a_reference_file_must_say_what_the_models_copy_says(tmp_path: Path) -> None:
    bands = pd.DataFrame({"gene_symbol": ["A", "B"], "cytobandID": ["1p36.33", "2q11"]})
    directory = model_dir(tmp_path, bands)
    same, other = tmp_path / "same.tsv", tmp_path / "other.tsv"
    bands.iloc[::-1].to_csv(same, sep="\t", index=False)  # the same bands in another order
    bands.assign(cytobandID=["1p36.33", "3p21"]).to_csv(other, sep="\t", index=False)
    for path, fine in ((same, True), (other, False)):
        given = {"context": {"cytobands": str(path)}}
        if fine:
            adopt_model_settings(with_defaults(given), given, directory)
        else:
            with pytest.raises(InputError, match="context.cytobands: config '.*other.tsv', model its own"):
                adopt_model_settings(with_defaults(given), given, directory)


def test_finetuning_keeps_the_models_settings_and_notes_what_differs(tmp_path: Path, caplog) -> None:
    config = with_defaults({"seed": 2, "finetune": {"num_epochs": 3}})
    with caplog.at_level("INFO"):
        merged = finetune_config(model_dir(tmp_path), config)
    assert merged["context"]["method"] == "genomic" and merged["model"]["pooling"] == "cls"
    assert merged["seed"] == 2 and merged["finetune"]["num_epochs"] == 3
    assert "context.method: the model's 'genomic' is used" in caplog.text

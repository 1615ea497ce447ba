"""Backbones, training on real cells, save/load, and best-window aggregation."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import four_type_cells

from scgenai_flow.decide import softmax_rows
from scgenai_flow.io import InputError
from scgenai_flow.metrics import selection_key
from scgenai_flow.models import SIZES, CellClassifier, ModelSpec, count_parameters, load_model, read_spec
from scgenai_flow.predict import batch_tensors, cell_log_scores, predict_cells, window_probabilities
from scgenai_flow.runtime import seed_everything
from scgenai_flow.train import LabelledWindows, Resume, TrainSettings, evaluate, fit, write_model_dir
from scgenai_flow.train.data import TrainingItems
from scgenai_flow.train.loop import cell_mean_log_probs
from scgenai_flow.train.selection import BestModel, on_cpu, stops_early
from scgenai_flow.vocab import UNK_ID

CPU = torch.device("cpu")
BACKBONE_NAMES = ["llama", "gpt", "bigbird", "scgent"]


@pytest.fixture(scope="module")
def real_windows(pbmc):
    """Windows of 120 real PBMCs from four classes (30 each), 64 tokens long."""
    vocab, parts = four_type_cells(pbmc, {"train": slice(0, 30)})
    _, windows, labels, _ = parts["train"]
    return vocab, LabelledWindows(windows, labels)


def few_windows(data: LabelledWindows, per_cell: int = 2) -> LabelledWindows:
    """Each cell's first `per_cell` windows: the same cells in a fraction of the training time."""
    cells = data.windows.cell_index
    first = np.arange(cells.size) - np.searchsorted(cells, cells) < per_cell
    return LabelledWindows(data.windows.subset(first), data.cell_labels)


def spec_for(vocab, backbone: str = "llama", size: str = "tiny", max_length: int = 64) -> ModelSpec:
    return ModelSpec(backbone, size, vocab.size, vocab.pad_id, max_length, int(vocab.classes.size))


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_training_lowers_the_loss_on_real_cells(real_windows, backbone: str) -> None:
    vocab, data = real_windows[0], few_windows(real_windows[1], 4)
    seed_everything(0)
    model = CellClassifier(spec_for(vocab, backbone))
    settings = TrainSettings(num_epochs=4, batch_size=16, learning_rate=2e-3)
    history = fit(model, data, data, settings, CPU).history
    # 4 epochs on each cell's first 4 windows end at 0.30-0.77x of the first loss (gpt the highest)
    assert history["Train Loss"].iloc[-1] < 0.9 * history["Train Loss"].iloc[0]
    assert history["Validation Accuracy"].max() > 0.35  # four balanced classes: chance is 0.25
    assert list(history["Epoch"]) == [1, 2, 3, 4]


def test_each_epoch_reports_its_speed_padding_and_model_flops_utilisation(real_windows) -> None:
    from scgenai_flow.train import flops_per_token, peak_flops

    vocab, data = real_windows[0], few_windows(real_windows[1], 4)
    seed_everything(0)
    model = CellClassifier(spec_for(vocab))
    settings = TrainSettings(num_epochs=2, batch_size=16)
    history = fit(model, data, data, settings, CPU).history
    lengths = data.windows.lengths
    # every batch is padded to its longest window: the padding share follows from the batches
    assert ((history["Padding"] >= 0) & (history["Padding"] <= 1 - lengths.mean() / 64 + 1e-9)).all()
    assert (history["Windows/s"] > 0).all() and (history["Tokens/s"] > history["Windows/s"]).all()
    ratio = history["Tokens/s"] / history["Windows/s"]
    np.testing.assert_allclose(ratio, lengths.mean(), rtol=1e-6)  # each epoch trains every window once
    assert ((history["MFU"] > 0) & (history["MFU"] < 1)).all()
    embedding = model.backbone.get_input_embeddings().weight.numel()
    dense = count_parameters(model) - embedding
    assert flops_per_token(model, 0) == 6 * dense  # + 12 x layers x width per token of length
    assert flops_per_token(model, 10) - flops_per_token(model, 0) == 12 * 2 * 128 * 10
    summed = CellClassifier(replace(spec_for(vocab), pair_input="summed"))  # two tokens a position
    assert flops_per_token(summed, 10) == pytest.approx((6 * dense + 12 * 2 * 128 * 5) / 2, rel=1e-3)
    peak_flops.cache_clear()
    torch.manual_seed(0)
    drawn = torch.rand(3)
    torch.manual_seed(0)
    peak, source = peak_flops(CPU)  # measuring must not move the random stream training seeded
    assert torch.equal(torch.rand(3), drawn)
    assert peak > 1e8 and source == "measured float32 matmul on cpu"


def test_by_length_batching_groups_similar_windows_and_pads_less(real_windows) -> None:
    from scgenai_flow.train.data import by_length

    vocab, data = real_windows
    lengths = data.windows.lengths
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data.windows))
    regrouped = by_length(order, lengths, 16, np.random.default_rng(1))
    assert sorted(regrouped) == sorted(order)  # every window once
    batches = [regrouped[i : i + 16] for i in range(0, regrouped.size, 16)]
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    shuffled = np.mean([np.ptp(lengths[order[i : i + 16]]) for i in range(0, order.size, 16)])
    assert spread < shuffled / 2, (spread, shuffled)
    if order.size % 16:
        assert batches[-1].size == order.size % 16  # the short batch stays last
    np.testing.assert_array_equal(regrouped, by_length(order, lengths, 16, np.random.default_rng(1)))
    padding = {}
    for batching in ("shuffled", "by_length"):
        seed_everything(0)
        settings = TrainSettings(num_epochs=1, batch_size=16, batching=batching)
        padding[batching] = fit(CellClassifier(spec_for(vocab)), data, data, settings, CPU).history[
            "Padding"
        ][0]
    assert padding["by_length"] < padding["shuffled"] / 2, padding


def test_large_validation_sets_are_scored_each_epoch_on_the_cells_calibration_keeps(
    real_windows, monkeypatch
) -> None:
    from scgenai_flow import models

    vocab, data = real_windows[0], few_windows(real_windows[1], 2)
    monkeypatch.setattr(models, "KEPT_CELLS", 40)
    rows = models.kept_rows(data.n_cells)
    sample = data.cells(rows)
    assert sample.n_cells == 40 and np.array_equal(sample.cell_labels, data.cell_labels[rows])
    first = np.searchsorted(data.windows.cell_index, rows)  # each kept cell keeps its windows, in order
    np.testing.assert_array_equal(sample.windows.tokens[::2], data.windows.tokens[first])
    assert data.cells(np.arange(data.n_cells)) is data
    seed_everything(0)
    settings = TrainSettings(num_epochs=2, batch_size=16)
    fitted = fit(CellClassifier(spec_for(vocab)), data, data, settings, CPU)
    assert fitted.val_scores.shape == (2, 40, vocab.classes.size)
    seed_everything(0)
    alone = fit(
        CellClassifier(spec_for(vocab)), data, sample, settings, CPU
    )  # the same as scoring the sample
    columns = ["Validation Accuracy", "Validation Macro F1", "Validation Loss"]
    pd.testing.assert_frame_equal(fitted.history[columns], alone.history[columns])


def test_cell_loss_takes_whole_cells_scored_as_predict_scores_them(real_windows) -> None:
    vocab, data = real_windows
    plan = TrainingItems.of(data, TrainSettings(loss="cell", batch_size=16))
    per_cell = np.bincount(data.windows.cell_index, minlength=data.n_cells)
    np.testing.assert_array_equal(plan.items, np.flatnonzero(per_cell > 0))
    assert plan.batch_size == round(16 * data.n_cells / len(data.windows))  # ~16 windows a step
    cells = np.random.default_rng(0).permutation(plan.items)[:9]
    rows, segment = plan.windows_of(cells)
    np.testing.assert_array_equal(data.windows.cell_index[rows], cells[segment.numpy()])
    assert rows.size == per_cell[cells].sum()  # every window of each cell, none twice
    assert np.unique(rows).size == rows.size
    # the loss's cell scores are predict's mean aggregation, up to normalisation
    seed_everything(1)
    model = CellClassifier(spec_for(vocab)).eval()
    with torch.no_grad():
        logits = model(*batch_tensors(data.windows, rows, CPU))
    scores = torch.log_softmax(cell_mean_log_probs(logits, segment, cells.size), dim=1).numpy()
    probs = torch.softmax(logits, dim=1).numpy()
    expected, _ = cell_log_scores(probs, segment.numpy(), cells.size, "mean")
    np.testing.assert_allclose(scores, np.log(softmax_rows(expected)), atol=1e-4)
    window_plan = TrainingItems.of(data, TrainSettings(batch_size=16))
    assert window_plan.items.size == len(data.windows) and window_plan.windows_of(cells)[1] is None


def test_training_on_the_cell_loss_lowers_it(real_windows) -> None:
    vocab, data = real_windows[0], few_windows(real_windows[1], 4)
    seed_everything(0)
    settings = TrainSettings(num_epochs=3, batch_size=16, learning_rate=2e-3, loss="cell")
    history = fit(CellClassifier(spec_for(vocab)), data, data, settings, CPU).history
    assert history["Train Loss"].iloc[-1] < 0.9 * history["Train Loss"].iloc[0]
    assert history["Validation Accuracy"].max() > 0.35  # four balanced classes: chance is 0.25


def test_early_stopping_counts_epochs_since_the_best_and_holds_on_resume(tmp_path, real_windows) -> None:
    rows = [
        {"Epoch": e, "Validation Accuracy": a, "Validation Macro F1": f, "Validation Loss": 1.0}
        for e, (a, f) in enumerate([(0.5, 0.4), (0.6, 0.3), (0.55, 0.35), (0.58, 0.38)], 1)
    ]
    assert stops_early(rows, TrainSettings(select_by="macro_f1", patience=3))  # best epoch 1
    assert not stops_early(rows, TrainSettings(select_by="accuracy", patience=3))  # best epoch 2
    assert not stops_early(rows, TrainSettings(select_by="macro_f1"))  # patience off
    vocab, data = real_windows[0], few_windows(real_windows[1])
    seed_everything(0)
    model = CellClassifier(spec_for(vocab))
    # learning rate 0: no epoch beats the first, so patience 2 ends training after epoch 3 of 10
    settings = TrainSettings(num_epochs=10, batch_size=32, learning_rate=0.0, patience=2)
    resume = Resume(str(tmp_path / "checkpoint.pt"), "digest")
    history = fit(model, data, data, settings, CPU, None, resume).history
    assert list(history["Epoch"]) == [1, 2, 3]
    again = fit(CellClassifier(spec_for(vocab)), data, data, settings, CPU, None, resume).history
    assert list(again["Epoch"]) == [1, 2, 3]  # the resumed run does not train on


def test_best_model_holds_the_mean_weights_of_the_best_epochs(tmp_path, real_windows) -> None:
    vocab, data = real_windows[0], few_windows(real_windows[1])
    settings = TrainSettings(
        num_epochs=5, batch_size=16, learning_rate=2e-3, select_by="macro_f1", average_best=3
    )
    written = []  # the history as fit hands it over after each epoch
    seed_everything(0)
    resume = Resume(str(tmp_path / "checkpoint.pt"), "digest")
    fitted = fit(CellClassifier(spec_for(vocab)), data, data, settings, CPU, written.append, resume)
    history = fitted.history
    pd.testing.assert_frame_equal(written[-1], history)
    assert [len(h) for h in written] == [1, 2, 3, 4, 5]
    rows = history.to_dict("records")
    ranked = sorted(rows, key=lambda r: (selection_key(r, "macro_f1"), -r["Epoch"]), reverse=True)
    epochs, weights, metrics = fitted.best.epochs, copy_weights(fitted.best.model), fitted.best.metrics
    assert next(fitted.best.model.parameters()).device == torch.device("cpu")
    assert epochs == [int(r["Epoch"]) for r in ranked[:3]]  # best first
    kept = torch.load(resume.path, weights_only=False)["state"].best
    assert [r.epoch for r in kept] == epochs
    for name, value in weights.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(r.weights[name] for r in kept) / 3)
    averaged = CellClassifier(spec_for(vocab))
    averaged.load_state_dict(weights)
    measured = evaluate(averaged, data, 64, CPU)
    assert measured == pytest.approx(metrics)  # the averaged network's own validation metrics
    assert all(measured["Validation Loss"] != r["Validation Loss"] for r in rows)  # not one epoch's
    again = fit(CellClassifier(spec_for(vocab)), data, data, settings, CPU, None, resume).best
    assert again.epochs == epochs and again.metrics == metrics  # a resumed run keeps them
    for name, value in copy_weights(again.model).items():
        torch.testing.assert_close(value, weights[name])


def test_copying_the_best_network_leaves_the_training_draws_alone(real_windows) -> None:
    """fit copies each new best network to the CPU; the copy must not draw from torch's
    generator, or dropout in the next epoch would differ from a run whose best did not change."""
    vocab = real_windows[0]
    seed_everything(0)
    best = BestModel(CellClassifier(spec_for(vocab)), [1], {})
    assert best.model.spec.dropout > 0  # building a network draws, and dropout would
    before = torch.get_rng_state()
    copied = on_cpu(best)
    assert torch.equal(torch.get_rng_state(), before)
    for name, value in copied.model.state_dict().items():
        torch.testing.assert_close(value, best.model.state_dict()[name])


def copy_weights(model: CellClassifier) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_saved_model_reloads_with_identical_logits(tmp_path, real_windows, backbone: str) -> None:
    vocab, data = real_windows
    seed_everything(1)
    model = CellClassifier(spec_for(vocab, backbone)).eval()
    vocab.save(tmp_path / "vocab")
    write_model_dir(tmp_path / "m", model, tmp_path / "vocab", {"seed": 1})
    loaded = load_model(tmp_path / "m")
    some = data.windows.subset(slice(0, 48))
    before = window_probabilities(model, some, 16, CPU)
    after = window_probabilities(loaded, some, 16, CPU)
    np.testing.assert_array_equal(before, after)
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert {
        "config.json",
        "format.json",
        "scGenAI_model.pt",
        "train_setting.yaml",
        "trained_genes.npy",
        "tokenizer.json",
    } <= names


def test_summed_input_puts_each_gene_and_its_bin_at_one_position(tmp_path, real_windows) -> None:
    vocab, data = real_windows
    seed_everything(3)
    model = CellClassifier(replace(spec_for(vocab), pair_input="summed")).eval()
    ids = torch.from_numpy(data.windows.tokens[:4].astype(np.int64))
    embed = model.backbone.get_input_embeddings()
    pairs = model.summed_pairs(ids)
    assert pairs.shape[1] == ids.shape[1] // 2 == model.spec.positions
    torch.testing.assert_close(pairs[:, 5], embed(ids[:, 10]) + embed(ids[:, 11]))
    vocab.save(tmp_path / "vocab")
    write_model_dir(tmp_path / "m", model, tmp_path / "vocab", {"seed": 3})
    loaded = load_model(tmp_path / "m")
    assert loaded.spec.pair_input == "summed"
    some = data.windows.subset(slice(0, 32))
    np.testing.assert_array_equal(
        window_probabilities(model, some, 16, CPU), window_probabilities(loaded, some, 16, CPU)
    )
    unk = torch.full((1, 8), vocab.pad_id)
    unk[0, 0] = UNK_ID  # the window of a cell without expressed genes: one token
    for pooling in ("mean", "last"):
        lone = CellClassifier(replace(model.spec, pooling=pooling)).eval()
        with torch.no_grad():
            assert torch.isfinite(lone(unk, torch.tensor([1]))).all(), pooling
            torch.testing.assert_close(lone(unk, torch.tensor([1])), lone(unk[:, :1], torch.tensor([1])))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    del config["pair_input"]  # a model dir written before the option
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert read_spec(tmp_path / "m" / "config.json").pair_input == "interleaved"


@pytest.mark.parametrize(
    ("pooling", "pair_input"),
    [("last", "interleaved"), ("mean", "interleaved"), ("mean", "summed"), ("last", "summed")],
)
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_padding_does_not_change_a_window_logits(
    real_windows, backbone: str, pooling: str, pair_input: str
) -> None:
    vocab, data = real_windows
    seed_everything(2)
    spec = replace(spec_for(vocab, backbone), pooling=pooling, pair_input=pair_input)
    model = CellClassifier(spec).eval()
    short = np.flatnonzero(data.windows.lengths < 64)[0]
    length = int(data.windows.lengths[short])
    ids = torch.from_numpy(data.windows.tokens[[short]].astype(np.int64))
    with torch.no_grad():
        padded = model(ids, torch.tensor([length]))
        trimmed = model(ids[:, :length], torch.tensor([length]))
    torch.testing.assert_close(padded, trimmed, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
@pytest.mark.parametrize("size", list(SIZES))
def test_every_backbone_and_size_builds(backbone: str, size: str) -> None:
    spec = ModelSpec(backbone, size, 500, 499, 128, 5)
    expected_hidden = SIZES[size].hidden
    with torch.device("meta"):
        model = CellClassifier(spec)
    assert model.head.in_features == expected_hidden and count_parameters(model) > 0


def test_unknown_backbone_is_refused() -> None:
    with pytest.raises(InputError, match="model.backbone 'bert' is unknown"):
        CellClassifier(ModelSpec("bert", "tiny", 50, 49, 64, 3))


def test_model_dir_with_a_missing_or_broken_file_is_refused(tmp_path, real_windows) -> None:
    vocab, _ = real_windows
    vocab.save(tmp_path / "vocab")
    write_model_dir(tmp_path / "m", CellClassifier(spec_for(vocab)), tmp_path / "vocab", {})
    (tmp_path / "m" / "scGenAI_model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="scGenAI_model.pt: cannot load weights"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").unlink()
    with pytest.raises(InputError, match="missing config.json"):
        load_model(tmp_path / "m")


def test_each_cell_takes_its_best_window() -> None:
    probs = np.array([[0.6, 0.4], [0.1, 0.9], [0.7, 0.3], [0.5, 0.5], [0.55, 0.45]], dtype=np.float32)
    cell_index = np.array([0, 0, 1, 2, 2])
    cells = predict_cells(probs, cell_index, 3, aggregation="max")  # the original rule
    np.testing.assert_array_equal(cells.window, [1, 2, 4])
    np.testing.assert_array_equal(cells.label, [1, 0, 0])
    np.testing.assert_allclose(cells.score, [0.9, 0.7, 0.55])


def test_mean_aggregation_follows_the_mean_log_probability() -> None:
    # cell 0: one confident window for class 1, two mild ones for class 0 -> mean says class 1
    probs = np.array([[0.6, 0.4], [0.1, 0.9], [0.55, 0.45], [0.7, 0.3], [0.2, 0.8]], dtype=np.float32)
    cells = predict_cells(probs, np.array([0, 0, 0, 1, 1]), 2, aggregation="mean")
    log_mean = np.log(probs[:3]).mean(axis=0)
    np.testing.assert_array_equal(cells.label, [int(log_mean.argmax()), 1])
    expected = np.exp(log_mean) / np.exp(log_mean).sum()
    assert cells.score[0] == pytest.approx(expected.max(), rel=1e-5)
    np.testing.assert_array_equal(cells.window, [1, 4])  # the window that supports the label most
    with pytest.raises(ValueError, match="aggregation"):
        predict_cells(probs, np.array([0, 0, 0, 1, 1]), 2, aggregation="vote")


def test_ties_pick_the_first_window_and_missing_windows_are_an_error() -> None:
    probs = np.array([[0.5, 0.5], [0.5, 0.5]], dtype=np.float32)
    assert predict_cells(probs, np.array([0, 0]), 1).window[0] == 0
    with pytest.raises(ValueError, match="no window"):
        predict_cells(probs, np.array([0, 0]), 2)


def test_partial_last_batch_maps_to_the_right_windows(real_windows) -> None:
    vocab, data = real_windows
    seed_everything(3)
    model = CellClassifier(spec_for(vocab)).eval()
    some = data.windows.subset(slice(0, 40))
    whole = window_probabilities(model, some, 40, CPU)
    batched = window_probabilities(model, some, 7, CPU)  # last batch is partial
    np.testing.assert_allclose(whole, batched, rtol=1e-4, atol=1e-5)


def test_macro_f1_matches_the_definition() -> None:
    from scgenai_flow.metrics import confusion, macro_f1

    true = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    # per class F1: 0 -> 2*1/(2+2)=0.5, 1 -> 2*2/(2+3)=0.8, 2 -> 2*1/(2+1)=0.667; class 3 absent
    assert macro_f1(true, predicted, 4) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert confusion(true, predicted, 4)[1].tolist() == [0, 2, 0, 0]

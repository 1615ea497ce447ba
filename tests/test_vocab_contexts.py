"""Token layout, tokenizer, label encoding and sliding-window invariants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scgenai_flow.contexts import ContextSettings, build_windows, load_windows, save_windows
from scgenai_flow.contexts.sliding import sliding_windows
from scgenai_flow.io import InputError
from scgenai_flow.preprocess import bin_rows
from scgenai_flow.vocab import PAD_TOKEN, SPECIAL_TOKENS, UNK_ID, Vocabulary, build_vocabulary

GENES = np.array(["CD3E", "MS4A1", "LYZ", "NKG7", "GNLY"])


def small_vocab(num_bins: int = 10) -> Vocabulary:
    labels = pd.Series(["T", "B", "T", "Mono"], name="celltype")
    return build_vocabulary(GENES, num_bins, labels, "test")


def test_token_layout_specials_genes_bins_pad() -> None:
    vocab = small_vocab()
    tokens = vocab.tokens()
    assert tokens[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS.values())
    assert tokens[vocab.gene_offset : vocab.bin_offset] == list(GENES)
    assert tokens[vocab.bin_offset : vocab.pad_id] == [f"<bin{b}>" for b in range(1, 12)]
    assert tokens[vocab.pad_id] == PAD_TOKEN and vocab.size == len(tokens) == len(set(tokens))
    # PAD never shares an id with an expression bin (a defect of the original)
    assert vocab.pad_id == vocab.bin_offset + 11


def test_tokenize_interleaves_gene_and_bin_in_vocabulary_order() -> None:
    vocab = small_vocab()
    binned = sp.csr_matrix(np.array([[0, 3, 0, 11, 1], [0, 0, 0, 0, 0], [2, 0, 0, 0, 0]], dtype=np.uint8))
    tokens, offsets = vocab.tokenize(binned)
    g, b = vocab.gene_offset, vocab.bin_offset - 1
    np.testing.assert_array_equal(
        tokens[offsets[0] : offsets[1]], [g + 1, b + 3, g + 3, b + 11, g + 4, b + 1]
    )
    assert offsets[1] == offsets[2]  # empty cell has no token
    np.testing.assert_array_equal(tokens[offsets[2] :], [g + 0, b + 2])


def test_hf_tokenizer_gives_the_same_ids(tmp_path) -> None:
    from transformers import PreTrainedTokenizerFast

    vocab = small_vocab()
    vocab.save(tmp_path / "vocab")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / "vocab")
    ids = tokenizer("MS4A1 <bin3> NKG7 <bin11> UNKNOWN")["input_ids"]
    g, b = vocab.gene_offset, vocab.bin_offset - 1
    assert ids == [g + 1, b + 3, g + 3, b + 11, UNK_ID]
    assert tokenizer.pad_token_id == vocab.pad_id


def test_vocabulary_round_trip_and_label_encoder(tmp_path) -> None:
    vocab = small_vocab(num_bins=5)
    vocab.save(tmp_path / "v")
    loaded = Vocabulary.load(tmp_path / "v")
    np.testing.assert_array_equal(loaded.genes, GENES)
    assert loaded.num_bins == 5 and loaded.pad_id == vocab.pad_id
    assert list(loaded.classes) == ["B", "Mono", "T"]  # sorted like a label encoder
    np.testing.assert_array_equal(loaded.encode_labels(pd.Series(["T", "B"]), "x"), [2, 0])
    with pytest.raises(InputError, match="never seen in training: NK"):
        loaded.encode_labels(pd.Series(["NK"]), "val.h5ad")
    gene_vocab = np.load(tmp_path / "v" / "gene_vocab.npy")
    assert dict(zip(gene_vocab["gene"], gene_vocab["id"]))["LYZ"] == vocab.gene_offset + 2


def test_one_class_or_missing_labels_are_refused() -> None:
    with pytest.raises(InputError, match="1 class"):
        build_vocabulary(GENES, 10, pd.Series(["T", "T"], name="celltype"), "train.h5ad")
    with pytest.raises(InputError, match="no label"):
        build_vocabulary(GENES, 10, pd.Series(["T", None], name="celltype"), "train.h5ad")


def cells_with_lengths(lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    return np.arange(offsets[-1], dtype=np.int32) + 10, offsets


@pytest.mark.parametrize("max_length", [4, 8, 10, 256])
def test_sliding_window_invariants(max_length: int) -> None:
    lengths = [0, 2, 8, 10, 30, 64, 400, 6]
    tokens, offsets = cells_with_lengths(lengths)
    stride = ContextSettings(max_length=max_length).stride
    pad = -1
    windows = sliding_windows(tokens, offsets, max_length, stride, pad)
    assert windows.tokens.shape == (len(windows), max_length)
    assert np.all(np.diff(windows.cell_index) >= 0)
    assert set(windows.cell_index) == {c for c, n in enumerate(lengths) if n}
    assert stride % 2 == 0 and stride <= max_length // 2
    for cell, n in enumerate(lengths):
        mine = np.flatnonzero(windows.cell_index == cell)
        rows, lens = windows.tokens[mine], windows.lengths[mine]
        for row, length in zip(rows, lens):
            assert np.all(row[length:] == pad)  # padding only after the real tokens
        if n == 0:
            assert len(mine) == 0  # build_windows gives such cells an <unk> window
            continue
        expected_windows = 1 if n <= max_length else -(-(n - max_length) // stride) + 1
        assert len(mine) == expected_windows
        cell_tokens = tokens[offsets[cell] : offsets[cell + 1]]
        for k, (row, length) in enumerate(zip(rows, lens)):
            # window k starts at k * stride, on a gene token
            np.testing.assert_array_equal(row[:length], cell_tokens[k * stride : k * stride + length])
        covered = np.unique(
            np.concatenate([np.arange(k * stride, k * stride + ln) for k, ln in enumerate(lens)])
        )
        np.testing.assert_array_equal(covered, np.arange(n))  # every token appears in some window
        assert (lens < max_length).sum() <= 1


def test_windows_from_real_cells_round_trip(tmp_path, pbmc) -> None:
    vocab = build_vocabulary(np.asarray(pbmc.var_names), 10, pbmc.obs["bulk_labels"], "pbmc")
    binned = bin_rows(sp.csr_matrix(pbmc.X), 10)
    settings = ContextSettings(max_length=128)
    whole = build_windows(binned, vocab, settings)
    chunked = build_windows(binned, vocab, settings, chunk_cells=33)
    np.testing.assert_array_equal(whole.tokens, chunked.tokens)
    np.testing.assert_array_equal(whole.context_ids(), chunked.context_ids())
    assert whole.tokens.dtype == np.uint16 and whole.tokens.max() <= vocab.pad_id
    labels = vocab.encode_labels(pbmc.obs["bulk_labels"], "pbmc")
    save_windows(tmp_path / "w.npz", whole, labels)
    loaded, loaded_labels = load_windows(tmp_path / "w.npz")
    np.testing.assert_array_equal(loaded.tokens, whole.tokens)
    np.testing.assert_array_equal(loaded_labels, labels)
    assert loaded.context_ids()[0] == "window_0"


@pytest.mark.parametrize("method", ["random", "genomic"])
def test_a_cell_without_tokens_gets_one_unk_window(method: str) -> None:
    vocab = small_vocab()
    binned = sp.csr_matrix(np.array([[0, 3, 0, 11, 1], [0, 0, 0, 0, 0], [2, 0, 0, 0, 0]], dtype=np.uint8))
    windows = build_windows(binned, vocab, ContextSettings(method=method, max_length=8))
    np.testing.assert_array_equal(np.unique(windows.cell_index), [0, 1, 2])
    empty = np.flatnonzero(windows.cell_index == 1)
    assert empty.size == 1 and windows.tokens[empty[0], 0] == UNK_ID and windows.lengths[empty[0]] == 1
    assert windows.context_ids()[empty[0]] == "no_expressed_gene"


@pytest.mark.parametrize("max_length", [7, 2])
def test_bad_window_length_is_refused(max_length: int) -> None:
    binned = sp.csr_matrix(np.ones((2, 5), dtype=np.uint8))
    with pytest.raises(InputError, match="max_length"):
        build_windows(binned, small_vocab(), ContextSettings(max_length=max_length))


def test_unknown_context_method_is_refused() -> None:
    binned = sp.csr_matrix(np.ones((2, 5), dtype=np.uint8))
    with pytest.raises(InputError, match="context.method 'genomix' is unknown"):
        build_windows(binned, small_vocab(), ContextSettings(method="genomix"))

"""Our own token vocabulary: special tokens, genes, expression bins, [ADT features, ADT bins], PAD."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .config import default_of, schema_default
from .io import InputError, atomic_path
from .modeldir import (
    ADT_EXPRESSION_VOCAB,
    ADT_VOCAB,
    BINNING_FILE,
    CLASSES,
    EXPRESSION_VOCAB,
    GENE_VOCAB,
    PAD_ID,
    SPECIAL_TOKENS_FILE,
    TRAINED_GENES,
    VOCAB_FILES,
)
from .preprocess import BINNINGS

# The module's API (docs/api.md): what a user or a benchmark may import.
__all__ = [
    "ADT_PREFIX",
    "PAD_TOKEN",
    "Vocabulary",
    "build_vocabulary",
    "vocabulary_from_preprocessed",
    "read_binning",
    "require_label_column",
]

SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "mask_token": "<mask>"}
PAD_TOKEN = "<pad>"
UNK_ID = 0


ADT_PREFIX = "ADT_"  # protein CD4 and gene CD4 are different tokens


def bin_token(bin_id: int) -> str:
    """Token text of an expression bin."""
    return f"<bin{bin_id}>"


def adt_bin_token(bin_id: int) -> str:
    """Token text of a protein (ADT) expression bin."""
    return f"<adtbin{bin_id}>"


@dataclass(frozen=True)
class Vocabulary:
    """Token ids of genes and bins, and the label classes, for one trained model."""

    genes: np.ndarray  # trained genes, in vocabulary order
    num_bins: int  # bins run 1..num_bins+1
    classes: np.ndarray  # label classes; index = encoded label
    adt_features: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))  # multi-omics
    adt_num_bins: int = default_of("preprocess.adt_num_bins")
    # Features added by fine-tuning, in the order of their ids after PAD: True for an ADT feature.
    # They are the last genes (and the last ADT features); every older id stays where it was.
    added_adt: tuple[bool, ...] = ()
    binning: str = "cell_range"  # how values became bins (preprocess.BINNINGS); new data follow it

    @property
    def n_added_adt(self) -> int:
        return sum(self.added_adt)

    @property
    def n_added_genes(self) -> int:
        return len(self.added_adt) - self.n_added_adt

    @property
    def n_base_genes(self) -> int:
        return self.genes.size - self.n_added_genes

    @property
    def n_base_adt(self) -> int:
        return self.adt_features.size - self.n_added_adt

    @property
    def gene_offset(self) -> int:
        return len(SPECIAL_TOKENS)

    @property
    def bin_offset(self) -> int:
        return self.gene_offset + self.n_base_genes

    @property
    def n_bin_tokens(self) -> int:
        return self.num_bins + 1

    @property
    def adt_offset(self) -> int:
        return self.bin_offset + self.n_bin_tokens

    @property
    def adt_bin_offset(self) -> int:
        return self.adt_offset + self.n_base_adt

    @property
    def n_adt_bin_tokens(self) -> int:
        return self.adt_num_bins + 1 if self.adt_features.size else 0

    @property
    def n_features(self) -> int:
        """Columns of a (RNA, then ADT) binned matrix."""
        return self.genes.size + self.adt_features.size

    @property
    def pad_id(self) -> int:
        return self.adt_bin_offset + self.n_adt_bin_tokens

    @property
    def size(self) -> int:
        return self.pad_id + 1 + len(self.added_adt)

    @property
    def token_dtype(self) -> type:
        """Smallest integer type holding every token id."""
        return np.uint16 if self.size <= np.iinfo(np.uint16).max else np.int32

    def tokens(self) -> list[str]:
        """Token texts in id order."""
        bins = [bin_token(b) for b in range(1, self.n_bin_tokens + 1)]
        adt = [ADT_PREFIX + f for f in self.adt_features.tolist()]
        adt_bins = [adt_bin_token(b) for b in range(1, self.n_adt_bin_tokens + 1)]
        added = np.empty(len(self.added_adt), dtype=object)
        kinds = np.array(self.added_adt, dtype=bool)
        added[~kinds], added[kinds] = self.genes[self.n_base_genes :], adt[self.n_base_adt :]
        base_genes = self.genes[: self.n_base_genes].tolist()
        return [
            *SPECIAL_TOKENS.values(), *base_genes, *bins, *adt[: self.n_base_adt], *adt_bins, PAD_TOKEN,
            *added.tolist(),
        ]  # fmt: skip

    def extend(
        self, genes: np.ndarray, classes: np.ndarray, adt_features: np.ndarray | None = None
    ) -> Vocabulary:
        """This vocabulary plus new genes, ADT features (of a multi-omics vocabulary) and classes
        at the end; every old id stays."""
        new_genes = np.asarray(genes, dtype=str)[~np.isin(genes, self.genes)]
        new_classes = np.asarray(classes, dtype=str)[~np.isin(classes, self.classes)]
        adt = np.asarray(adt_features if adt_features is not None else [], dtype=str)
        new_adt = adt[~np.isin(adt, self.adt_features)]
        if new_adt.size and not self.adt_features.size:
            raise InputError(
                f"ADT features ({', '.join(new_adt[:3])}) for a vocabulary without any: only a"
                " multi-omics (RNA + ADT) model takes ADT data"
            )
        return replace(
            self,
            genes=np.concatenate((self.genes, new_genes)),
            classes=np.concatenate((self.classes, new_classes)),
            adt_features=np.concatenate((self.adt_features, new_adt)),
            added_adt=(*self.added_adt, *[False] * new_genes.size, *[True] * new_adt.size),
        )

    def encode_labels(self, labels: pd.Series | np.ndarray, source: str) -> np.ndarray:
        """Label texts → class indices; a label the model does not know is an error."""
        values = np.asarray(labels, dtype=str)
        codes = pd.Index(self.classes).get_indexer(values)
        if (codes < 0).any():
            unknown = ", ".join(sorted(set(values[codes < 0]))[:5])
            raise InputError(
                f"{source}: labels never seen in training: {unknown}; expected one of the model's"
                f" {self.classes.size} classes ({', '.join(self.classes[:10])})"
            )
        return codes.astype(np.int32)

    @cached_property
    def _column_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """Per binned-matrix column: its feature token id, and the token id of its bin 0."""
        kinds = np.array(self.added_adt, dtype=bool)
        after_pad = self.pad_id + 1 + np.arange(kinds.size)  # fine-tuned features live after PAD
        ids = np.concatenate((
            self.gene_offset + np.arange(self.n_base_genes),
            after_pad[~kinds],
            self.adt_offset + np.arange(self.n_base_adt),
            after_pad[kinds],
        ))  # fmt: skip
        columns = np.arange(self.n_features)
        first_bin = np.where(columns < self.genes.size, self.bin_offset - 1, self.adt_bin_offset - 1)
        return ids.astype(self.token_dtype), first_bin.astype(self.token_dtype)

    def feature_tokens(self, columns: np.ndarray) -> np.ndarray:
        """Token ids of binned-matrix columns: the genes, then (multi-omics) the ADT features."""
        return self._column_tokens[0][columns]

    def bin_tokens(self, columns: np.ndarray, bins: np.ndarray) -> np.ndarray:
        """Token ids of expression bins (1-based) of the given columns (RNA or ADT bins)."""
        return self._column_tokens[1][columns] + bins.astype(self.token_dtype)

    def tokenize(self, binned: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Interleaved `feature, bin` token ids of all cells, and each cell's token offsets."""
        tokens = np.empty(2 * binned.nnz, dtype=self.token_dtype)
        tokens[0::2] = self.feature_tokens(binned.indices)
        tokens[1::2] = self.bin_tokens(binned.indices, binned.data)
        return tokens, 2 * binned.indptr.astype(np.int64)

    def hf_tokenizer(self):  # -> transformers.PreTrainedTokenizerFast (imported lazily: slow)
        """A Hugging Face fast tokenizer over this vocabulary (word-level, offline)."""
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {token: i for i, token in enumerate(self.tokens())}
        backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD_TOKEN, **SPECIAL_TOKENS)

    def save(self, directory: str | Path) -> None:
        """Write the vocabulary files of the output spec into `directory` (atomically)."""
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            self.write_files(tmp)

    def write_files(self, directory: Path) -> None:
        """Write the vocabulary files into an existing directory."""
        gene_ids = self.feature_tokens(np.arange(self.genes.size)).astype(np.int64)
        bins = np.arange(1, self.n_bin_tokens + 1)
        np.save(directory / GENE_VOCAB, np.rec.fromarrays([self.genes, gene_ids], names="gene,id"))
        np.save(
            directory / EXPRESSION_VOCAB,
            np.rec.fromarrays([bins, bins - 1 + self.bin_offset], names="bin,id"),
        )
        np.save(directory / PAD_ID, np.array(self.pad_id))
        np.save(directory / TRAINED_GENES, self.genes.astype(str))
        np.save(directory / CLASSES, self.classes.astype(str))
        if self.adt_features.size:
            adt_columns = self.genes.size + np.arange(self.adt_features.size)
            adt_ids = self.feature_tokens(adt_columns).astype(np.int64)
            adt_bins = np.arange(1, self.n_adt_bin_tokens + 1)
            np.save(
                directory / ADT_VOCAB,
                np.rec.fromarrays([self.adt_features, adt_ids], names="feature,id"),
            )
            np.save(
                directory / ADT_EXPRESSION_VOCAB,
                np.rec.fromarrays([adt_bins, adt_bins - 1 + self.adt_bin_offset], names="bin,id"),
            )
        binning = {"binning": self.binning, "num_bins": self.num_bins}
        (directory / BINNING_FILE).write_text(json.dumps(binning, indent=2) + "\n")
        self.hf_tokenizer().save_pretrained(directory)
        specials = {**SPECIAL_TOKENS, "pad_token": PAD_TOKEN}
        (directory / SPECIAL_TOKENS_FILE).write_text(json.dumps(specials, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> Vocabulary:
        """Read a vocabulary (or model) directory and check its ids agree."""
        directory = Path(directory)
        missing = [name for name in VOCAB_FILES if not (directory / name).is_file()]
        if missing:
            raise InputError(
                f"{directory}: missing vocabulary files {', '.join(missing)}; expected a vocabulary or"
                " model directory written by this workflow"
            )
        try:
            npy = {
                name: np.load(directory / name)
                for name in (*VOCAB_FILES, ADT_VOCAB, ADT_EXPRESSION_VOCAB)
                if name.endswith(".npy") and (directory / name).is_file()
            }
        except (OSError, ValueError, EOFError) as err:
            raise InputError(
                f"{directory}: unreadable vocabulary file ({err});"
                " expected .npy files written by this workflow"
            ) from err
        genes, classes, pad_id = (
            npy[TRAINED_GENES],
            npy[CLASSES],
            npy[PAD_ID],
        )
        adt: dict = {}
        stored_ids = npy[GENE_VOCAB]["id"]
        if ADT_VOCAB in npy:
            adt = {
                "adt_features": npy[ADT_VOCAB]["feature"].astype(str),
                "adt_num_bins": int(npy[ADT_EXPRESSION_VOCAB].size) - 1,
            }
            stored_ids = np.concatenate((stored_ids, npy[ADT_VOCAB]["id"]))
        # the added features in id order (ids after PAD), and which of them are ADT features
        after_pad = np.flatnonzero(stored_ids > int(pad_id))
        added_adt = tuple(bool(c >= genes.size) for c in after_pad[np.argsort(stored_ids[after_pad])])
        num_bins = int(npy[EXPRESSION_VOCAB].size) - 1
        vocab = cls(
            genes=genes,
            num_bins=num_bins,
            classes=classes,
            added_adt=added_adt,
            binning=read_binning(directory),
            **adt,
        )
        if int(pad_id) != vocab.pad_id or not np.array_equal(
            stored_ids, vocab.feature_tokens(np.arange(vocab.n_features))
        ):
            raise InputError(
                f"{directory}: {GENE_VOCAB} / {PAD_ID} disagree with the other vocabulary files;"
                " expected the files of one vocabulary"
            )
        return vocab


def read_binning(directory: Path) -> str:
    """The binning a vocabulary directory records; `cell_range` (the original) without the file."""
    path = directory / BINNING_FILE
    if not path.is_file():
        return "cell_range"
    try:
        binning = json.loads(path.read_text())["binning"]
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path}: unreadable ({err!r}); expected JSON with a 'binning' key") from err
    if binning not in BINNINGS:
        raise InputError(f"{path}: binning {binning!r}; expected one of {', '.join(BINNINGS)}")
    return binning


def build_vocabulary(
    genes: np.ndarray,
    num_bins: int,
    labels: pd.Series,
    source: str,
    adt_features: np.ndarray | None = None,
    adt_num_bins: int = schema_default("preprocess.adt_num_bins"),
    binning: str = "cell_range",
) -> Vocabulary:
    """Vocabulary of the preprocessed training data; classes sorted like a label encoder."""
    adt = np.asarray(adt_features if adt_features is not None else [], dtype=str)
    bad = [g for g in [*genes, *adt] if not g or any(c.isspace() for c in g)]
    if bad:
        raise InputError(f"{source}: gene names {bad[:5]}; expected non-empty names without whitespace")
    present = labels.dropna()
    if present.size < labels.size:
        raise InputError(
            f"{source}: {labels.size - present.size} cells have no label in '{labels.name}';"
            " expected a label for every cell"
        )
    classes = np.unique(np.asarray(present, dtype=str))
    if classes.size < 2:
        raise InputError(f"{source}: column '{labels.name}' has {classes.size} class; expected at least 2")
    return Vocabulary(
        genes=np.asarray(genes, dtype=str),
        num_bins=num_bins,
        classes=classes,
        adt_features=adt,
        adt_num_bins=adt_num_bins,
        binning=binning,
    )


def require_label_column(obs: pd.DataFrame, column: str, source: str) -> pd.Series:
    """The label column of `obs`, or an error listing the columns there are."""
    if column not in obs.columns:
        raise InputError(
            f"{source}: obs has no column '{column}' (data.target_feature); expected one of its"
            f" columns: {', '.join(map(str, obs.columns)) or '(none)'}"
        )
    return obs[column]


def vocabulary_from_preprocessed(
    path: str | Path, target_feature: str, adt_path: str | Path | None = None
) -> Vocabulary:
    """Vocabulary of a preprocessed training file (genes in its column order), with the
    ADT features of its preprocessed ADT file in multi-omics mode."""
    import anndata as ad

    adata = ad.read_h5ad(path, backed="r")
    labels = require_label_column(adata.obs, target_feature, str(path))
    adt: dict = {}
    if adt_path:
        proteins = ad.read_h5ad(adt_path, backed="r")
        adt = {
            "adt_features": np.asarray(proteins.var_names),
            "adt_num_bins": int(proteins.uns["preprocess"]["num_bins"]),
        }
        proteins.file.close()
    settings = adata.uns["preprocess"]
    vocab = build_vocabulary(
        np.asarray(adata.var_names),
        int(settings["num_bins"]),
        labels,
        str(path),
        binning=str(settings.get("binning", "cell_range")),
        **adt,
    )
    adata.file.close()
    return vocab

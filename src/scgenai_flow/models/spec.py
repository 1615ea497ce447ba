"""What defines a network (`ModelSpec`, saved as config.json): backbones, sizes, pooling and
pair input, and the registry of backbone builders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..io import InputError


@dataclass(frozen=True)
class Size:
    """Width and depth of a backbone."""

    hidden: int
    layers: int
    heads: int
    ffn: int


SIZES = {
    "tiny": Size(128, 2, 4, 512),  # ours: for tests and laptops
    "small": Size(256, 6, 4, 1024),
    "normal": Size(768, 12, 12, 3072),
    "large": Size(1024, 24, 16, 4096),
}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a classifier; saved as `config.json`."""

    backbone: str
    size: str
    vocab_size: int
    pad_token_id: int
    max_length: int
    num_classes: int
    dropout: float = 0.1
    pooling: str = "last"  # model dirs written before pooling existed used the last token
    pair_input: str = "interleaved"  # model dirs written before it fed gene and bin tokens in turn
    members: int = 1  # networks of an ensemble (train.ensemble); 1: a single network

    def __post_init__(self) -> None:
        for key, value, known in (
            ("pooling", self.pooling, POOLINGS),
            ("pair_input", self.pair_input, PAIR_INPUTS),
        ):
            if value not in known:
                raise InputError(f"model.{key} '{value}' is unknown; expected one of {', '.join(known)}")
        if not (isinstance(self.members, int) and self.members >= 1):
            raise InputError(f"model members {self.members!r}: expected a whole number >= 1")

    @property
    def dims(self) -> Size:
        if self.size not in SIZES:
            raise InputError(f"model.size '{self.size}' is unknown; expected one of {', '.join(SIZES)}")
        return SIZES[self.size]

    @property
    def positions(self) -> int:
        """Sequence positions of a full window: its tokens, or its token pairs when summed."""
        return self.max_length // 2 if self.pair_input == "summed" else self.max_length


# last: the hidden state at each window's last real token (the original scGenAI head);
# mean: the mean hidden state over the window's real tokens.
POOLINGS = ("last", "mean")
# interleaved: a gene token, then its bin token, each at its own position (the original);
# summed: one position per gene holding its embedding plus its bin's, so a value is bound to its gene.
PAIR_INPUTS = ("interleaved", "summed")

Backbone = Callable[[ModelSpec], nn.Module]
BACKBONES: dict[str, Backbone] = {}


def register(name: str) -> Callable[[Backbone], Backbone]:
    """Register a backbone builder under a config name."""

    def add(builder: Backbone) -> Backbone:
        BACKBONES[name] = builder
        return builder

    return add
